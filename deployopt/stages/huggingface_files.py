"""A Hugging Face source's tokenizer / processor / sentence-transformers files, copied beside the artifacts: a
deployment needs them to turn text (or images) into the graph's inputs exactly as the original model did."""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from deployopt.stages.base import BuildContext

SUPPORT_FOLDER = "preprocessing"


class SupportFiles(BaseModel):
    """Where the copies go (the stage's only setting, part of its cache key)."""

    model_config = ConfigDict(frozen=True)

    folder: str = SUPPORT_FOLDER


class HuggingFaceFilesStep:
    """``build``'s step for Hugging Face folders: ``preprocessing/`` gets the files a deployment needs."""

    name = "preprocessing"

    def run(self, ctx: BuildContext) -> None:
        source = ctx.source
        files = source.huggingface.support_files()
        outputs = {
            f"file{i}": f"{SUPPORT_FOLDER}/{path.relative_to(source.huggingface.root)}" for i, path in enumerate(files)
        }

        def work(out: dict[str, Path]) -> dict:
            for label, path in zip(outputs, files, strict=True):
                shutil.copyfile(path, out[label])
            return {"files": sorted(outputs.values())}

        outcome = ctx.run.run_stage(self.name, SupportFiles(), {"source": source.sha256}, outputs, work)
        loader = "AutoTokenizer" if source.text else "AutoImageProcessor"
        summary = f"{len(files)} tokenizer/processor files copied to {SUPPORT_FOLDER}/ (load them with "
        ctx.record(self.name, outcome, summary + f"{loader}.from_pretrained('{SUPPORT_FOLDER}'))")
