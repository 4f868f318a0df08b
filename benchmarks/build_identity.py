"""Prove a refactor kept behaviour: fingerprint the builds of the demo model and resnet18, compare with another.

A fingerprint is, per build, the sha256 of every artifact, the set of report.json key paths, the variant
names/precisions/verdicts and each step's summary text with timings removed. Benchmarking is off
(timings are never identical), so everything compared is deterministic.

    python benchmarks/build_identity.py --out before.json                 # on the old commit
    python benchmarks/build_identity.py --out after.json --compare before.json   # on the new one: exit 1 on a diff
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _key_paths(value, prefix: str = "") -> set[str]:
    """Every key path of a JSON document (list items collapse to [])."""
    paths = {prefix} if prefix else set()
    if isinstance(value, dict):
        for key, item in value.items():
            paths |= _key_paths(item, f"{prefix}.{key}" if prefix else key)
    elif isinstance(value, list):
        for item in value:
            paths |= _key_paths(item, f"{prefix}[]")
    return paths


def _stable(text: str) -> str:
    """A step summary without its wall-clock figures and run-specific paths."""
    text = re.sub(r"\d+(\.\d+)? (ms|s)\b", "<t>", text)
    return re.sub(r"/tmp/[^\s,;)]+", "<tmp>", text)


def _run(args: list[str]) -> None:
    completed = subprocess.run([sys.executable, "-m", "deployopt", *args], capture_output=True, text=True)
    if completed.returncode not in (0, 1):
        sys.exit(f"deployopt {' '.join(args)} failed ({completed.returncode}):\n{completed.stderr}")


def fingerprint_build(run_dir: Path) -> dict:
    report = json.loads((run_dir / "report.json").read_text())
    artifacts = {
        path.name: _sha(path) for path in sorted(run_dir.iterdir()) if path.suffix in (".onnx", ".pt", ".plan")
    }
    return {
        "artifacts": artifacts,
        "report_keys": sorted(_key_paths(report)),
        "variants": [(v["name"], v["precision"], v["passed"], v["size_bytes"]) for v in report["variants"]],
        "steps": [(s["stage"], _stable(s["summary"])) for s in report["stages"]],
        "passed": report["passed"],
    }


def fingerprint(work: Path) -> dict:
    import numpy as np
    import torch
    import torchvision

    _run(["demo", "-o", str(work / "demo"), "--no-bench"])
    result = {"demo": fingerprint_build(work / "demo" / "digits-cnn")}

    torch.manual_seed(0)
    resnet = work / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), resnet)
    calibration = work / "calib.npz"
    np.savez(calibration, input=np.random.default_rng(0).standard_normal((32, 3, 224, 224)).astype(np.float32))
    args = ["build", str(resnet), "--arch", "torchvision:resnet18", "--input", "input:batch,3,224,224"]
    args += ["--calibration", str(calibration), "--no-bench", "-o", str(work / "resnet18"), "--int8-format", "qdq"]
    _run(args)
    result["resnet18"] = fingerprint_build(work / "resnet18")
    return result


def compare(before: dict, after: dict) -> list[str]:
    problems = []
    for build in sorted(set(before) | set(after)):
        old, new = before.get(build, {}), after.get(build, {})
        for field in sorted(set(old) | set(new)):
            before_value, after_value = old.get(field), new.get(field)
            if before_value == after_value:
                continue
            if field == "report_keys":  # say which keys came or went, not two long lists
                added = sorted(set(after_value or ()) - set(before_value or ()))
                removed = sorted(set(before_value or ()) - set(after_value or ()))
                problems.append(f"{build}.report_keys: added {added}, removed {removed}")
            else:
                problems.append(f"{build}.{field}: {json.dumps(before_value)} != {json.dumps(after_value)}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="where to write this checkout's fingerprint")
    parser.add_argument("--compare", type=Path, help="an earlier fingerprint; exit 1 when anything differs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        result = fingerprint(Path(work))
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True))
    if args.compare is None:
        return 0
    problems = compare(json.loads(args.compare.read_text()), json.loads(json.dumps(result)))
    for problem in problems:
        print(problem)
    print("identical" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
