"""The one place that decides where calibration and verification data come from.

Precedence (the same for ``build``, ``quantize`` and ``verify``):

* **calibration** (static int8): ``--calibration`` (.npz/.npy or an image folder), else the ``val`` split of
  the model's dataset (registered, or the user's .npz / image folder the checkpoint was trained on), else
  none — static int8 is then skipped and the report says why.
* **verification**: ``--data`` (with ``--labels``), else the ``test`` split of the model's dataset, else the
  calibration data (int8 must be judged on the inputs it will see: generated noise lies outside every
  calibrated range), else seeded generated inputs (``--samples`` of them).
* **text models** (Hugging Face folders with a tokenizer): ``--data`` / ``--calibration`` may also be a text file
  (one example per line) or ``.jsonl``; without them, the built-in English sentences take the place of the
  dataset — one half calibrates, the other verifies — never generated token ids.

Each source is opened once per plan, however many stages ask for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from deployopt.data.calibration import BatchSource, Preprocess, as_eval_data, load_calibration
from deployopt.data.eval_data import EvalData, dataset_data, generate_data, load_data, sized_to_data
from deployopt.data.text import builtin_sentences, is_text_file, text_data
from deployopt.errors import UsageError
from deployopt.sources.huggingface import TextEncoding
from deployopt.sources.signature import Signature


@dataclass(frozen=True)
class DataSources:
    """What the user named (all optional) and how many samples each use takes."""

    data: Path | None = None
    labels: Path | None = None
    calibration: Path | None = None
    preprocess: Preprocess | None = None
    dataset: str | None = None  # registered name or a user dataset path; from the checkpoint when not given
    samples: int = 64  # generated verification samples
    calibration_samples: int = 128
    split: str = "test"
    seed: int = 0
    text: TextEncoding | None = None  # a text model's tokenizer: text files and the built-in sentences


@dataclass
class DataPlan:
    """Resolves :class:`DataSources` for one model signature, loading each source at most once."""

    signature: Signature
    sources: DataSources = field(default_factory=DataSources)

    def __post_init__(self) -> None:
        s = self.sources
        if s.labels is not None and s.data is None and s.dataset is None:
            raise UsageError("--labels needs --data: labels only make sense for real validation inputs")
        if s.labels is not None and s.data is not None and is_text_file(s.data):
            raise UsageError(f'--labels: the labels of {s.data} go in its lines (.jsonl with a "label" field)')
        for path in (s.data, s.calibration):
            if path is not None and is_text_file(path) and s.text is None:
                raise UsageError(
                    f"{path}: text files feed Hugging Face text models (a folder with a tokenizer); for this model "
                    "pass an .npz with one array per input name"
                )

    def _text(self, path: Path) -> EvalData:
        return sized_to_data(text_data(self.sources.text, self.signature, path))

    @cached_property
    def _calibration_source(self) -> BatchSource | None:
        s = self.sources
        if s.calibration is not None:
            if is_text_file(s.calibration):
                return self._text(s.calibration)
            return load_calibration(self.signature, s.calibration, s.preprocess)
        if s.dataset is not None:
            return dataset_data(self.signature, s.dataset, "val")
        if s.text is not None:
            return sized_to_data(builtin_sentences(s.text, self.signature, "calibration"))
        return None

    def check(self) -> None:
        """Read and check the user's data files now, so a bad one is refused before any stage runs or writes.
        (A registered dataset that does not fit is an --input mistake, which the export step names better.)"""
        if self.sources.data is not None or self.sources.calibration is not None:
            _ = self.verification, self.calibration

    @cached_property
    def calibration(self) -> EvalData | None:
        """At most ``calibration_samples`` calibration samples, or None when there is no calibration source."""
        source = self._calibration_source
        if source is None:
            return None
        if self._verifies_on_calibration:  # already decoded once for verification: take its first samples
            source = self.verification
        return sized_to_data(as_eval_data(source, self.signature, self.sources.calibration_samples))

    @property
    def _verifies_on_calibration(self) -> bool:
        s = self.sources
        return s.data is None and s.dataset is None and s.calibration is not None

    @cached_property
    def verification(self) -> EvalData:
        s = self.sources
        if s.data is not None:
            if is_text_file(s.data):
                return self._text(s.data)
            return sized_to_data(load_data(self.signature, s.data, s.labels))
        if s.dataset is not None:
            return sized_to_data(dataset_data(self.signature, s.dataset, s.split, s.seed))
        if self._verifies_on_calibration:
            limit = max(s.samples, s.calibration_samples)
            return sized_to_data(as_eval_data(self._calibration_source, self.signature, limit))
        if s.text is not None:
            return sized_to_data(builtin_sentences(s.text, self.signature, "verification"))
        return generate_data(self.signature, s.samples, s.seed)

    def calibration_overlap_note(self) -> str | None:
        """A warning when int8 would be judged on the very samples its ranges were fit to (no held-apart data)."""
        s = self.sources
        if s.calibration is None:
            return None
        same_file = s.data is not None and s.data.resolve() == s.calibration.resolve()
        if not (self._verifies_on_calibration or same_file):
            return None
        return (
            f"int8: calibration and verification use the same samples ({s.calibration}): the int8 check is "
            "optimistic; pass held-apart samples with --data"
        )

    @property
    def real_inputs(self) -> EvalData | None:
        """The verification data when it is real (a file, a dataset, calibration, text), else None (generated)."""
        s = self.sources
        return self.verification if (s.data or s.dataset or s.calibration or s.text) else None

    @property
    def signature_for_generated_inputs(self) -> Signature:
        """The signature inputs are generated from: dynamic dims sized like the real data when there is some
        (a model with a dynamic ``seq`` needs no ``seq=N`` in ``--input`` when ``--data`` fixes it)."""
        real = self.real_inputs
        return real.signature if real is not None else self.signature
