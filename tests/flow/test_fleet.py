"""``deployopt run`` of several models: one table, JUnit file and exit code; ``--jobs``; bad fleets refused before
anything is written; ``deployopt recommend`` on a finished build."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.flow.fleets import SMALL, fleet_pipeline, write_pipeline
from tests.flow.test_isolation import leftovers


def test_jobs_two_builds_every_model_with_one_table_junit_and_exit_code(two_models, run_cli, tmp_path):
    miss = {"verify": {"budget": {"max_abs_error": 0.0}}}  # ONNX Runtime cannot match PyTorch exactly
    pipeline = fleet_pipeline(tmp_path, two_models, **{"digits-a": miss})
    code, out, err = run_cli(
        "run", pipeline, "--jobs", "2", "--junit", tmp_path / "junit.xml", "--summary", tmp_path / "s.md"
    )
    assert code == 1, err  # one model's miss fails the fleet …
    assert "digits-a" in out and "FAIL (1)" in out and "digits-b" in out and "PASS (0)" in out  # … and hides nothing
    assert "FAIL digits-a: onnx-fp32: output: max_abs_error" in err
    assert "FAIL: 1 of 2 models passed" in err
    b = json.loads((tmp_path / "digits-b" / "report.json").read_text())
    assert b["passed"] and b["recommendations"] and any("--jobs 2" in note for note in b["notes"])
    assert all(row["measured_on"]["isa_flags"] is not None for v in b["variants"] for row in v["latency"].values())
    suites = ET.parse(tmp_path / "junit.xml").getroot()
    assert [s.get("name") for s in suites] == ["deployopt digits-a", "deployopt digits-b"]
    assert suites.get("failures") == "1"
    summary = (tmp_path / "s.md").read_text()
    assert "❌ FAIL: 2 models" in summary and "❌ **digits-a**" in summary and "✅ **digits-b**" in summary


def test_a_models_list_lays_each_entrys_build_over_the_shared_one(two_models, tmp_path):
    from deployopt.api import fleet_members

    pipeline = fleet_pipeline(tmp_path, two_models, **{"digits-b": {"bench": {"repeats": 3}}})
    a, b = fleet_members([pipeline])
    assert (a.config.bench.repeats, b.config.bench.repeats) == (1, 3)
    assert a.config.bench.batch_sizes == b.config.bench.batch_sizes == (1,)  # the rest of the section is shared
    assert a.run_root == (tmp_path / "digits-a").resolve() and a.source.is_absolute()


def test_two_models_writing_one_run_directory_are_refused_before_anything(two_models, run_cli, tmp_path):
    models = [{"model": str(path)} for path in two_models.values()]
    pipeline = write_pipeline(tmp_path / "p.yaml", {"models": models, "build": SMALL | {"out": str(tmp_path / "run")}})
    code, _, err = run_cli("run", pipeline)
    assert code == 2
    assert err.count("\n") == 1 and "would both write the run directory" in err and "build.out" in err
    assert not (tmp_path / "run").exists()


def test_a_missing_pipeline_or_model_in_the_list_is_refused_before_anything(two_models, run_cli, tmp_path):
    good = fleet_pipeline(tmp_path, {"digits-a": two_models["digits-a"]})
    code, _, err = run_cli("run", good, tmp_path / "missing.yaml")
    assert code == 3 and err.count("\n") == 1 and "missing.yaml: pipeline file not found" in err
    listed = write_pipeline(tmp_path / "p.yaml", {"models": ["gone.pt"], "build": SMALL})
    code, _, err = run_cli("run", listed)
    assert code == 3 and "p.yaml:2: key 'models.0.model': file" in err and "gone.pt not found" in err
    assert not (tmp_path / "digits-a").exists()


def test_every_model_is_checked_before_any_builds(two_models, digits_state_dict, run_cli, tmp_path):
    """A state_dict without --arch is refused (exit 3) before the first model's build starts."""
    pipeline = fleet_pipeline(tmp_path, {"digits-a": two_models["digits-a"], "weights": digits_state_dict})
    code, _, err = run_cli("run", pipeline, "--jobs", "2")
    assert code == 3 and "state_dict holds weights only" in err
    assert not (tmp_path / "digits-a").exists()


def test_ray_without_the_package_exits_5_having_written_nothing(two_models, run_cli, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # `import ray` raises ImportError
    pipeline = fleet_pipeline(tmp_path, two_models)
    code, _, err = run_cli("run", pipeline, "--ray", "127.0.0.1:6379")
    assert code == 5 and err.count("\n") == 1 and "pip install 'deployopt[ray]'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fleet.yaml"]


def test_bench_on_without_ray_is_a_usage_error(two_models, run_cli, tmp_path):
    code, _, err = run_cli("run", fleet_pipeline(tmp_path, two_models), "--bench-on", "cpu_amx")
    assert code == 2 and "--bench-on names a Ray resource" in err


def test_recommend_measures_again_and_writes_this_cpus_recommendation(digits_checkpoint, run_cli, tmp_path):
    from deployopt.platform.machine import cpu_key, this_machine

    pipeline = write_pipeline(tmp_path / "p.yaml", {"model": str(digits_checkpoint), "build": SMALL | {"out": "run"}})
    assert run_cli("run", pipeline)[0] == 0
    code, out, err = run_cli("recommend", tmp_path / "run", "--repeats", "2")
    assert code == 0, err
    entry = json.loads((tmp_path / "run" / "recommendations" / f"{cpu_key(this_machine())}.json").read_text())
    assert entry["machine"]["isa_flags"] == this_machine()["isa_flags"] and entry["recommendations"]
    assert entry["bench"]["repeats"] == 2 and "onnx-fp32" in entry["latency"]
    assert any(note.startswith("the build machine's CPU model and flags") for note in entry["notes"])
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert list(report["recommendations_elsewhere"]) == [cpu_key(this_machine())]
    assert "### Measured again on" in (tmp_path / "run" / "report.md").read_text()
    assert 'id="machines"' in (tmp_path / "run" / "report.html").read_text()
    assert "measured on" in out and entry["recommendations"][0]["variant"] in out


def test_recommend_of_a_folder_without_a_build_is_one_line(run_cli, tmp_path):
    code, _, err = run_cli("recommend", tmp_path)
    assert code == 3 and err.count("\n") == 1 and "no report.json here" in err


@pytest.mark.parametrize("seven_bit", [True, False])
def test_a_weight_range_chosen_for_the_build_cpu_is_named_on_a_cpu_that_chooses_otherwise(seven_bit):
    """Both sides of VNNI, through the function the int8 stage decides with (``lacks_vnni``)."""
    from deployopt.flow.remeasure import baked_decisions
    from deployopt.platform.cpu import lacks_vnni
    from deployopt.reports.model import BuildReport

    avx2 = {"processor": "AMD EPYC (AVX2 only)", "isa_flags": ["avx2"], "host": "ci", "node": None}
    amx = {"processor": "Intel Xeon (AMX)", "isa_flags": ["avx2", "avx512f", "avx512_vnni", "amx_int8"], "host": "prod"}
    built_on, target = (avx2, amx) if seven_bit else (amx, avx2)
    assert lacks_vnni(built_on["isa_flags"]) is seven_bit and lacks_vnni(target["isa_flags"]) is not seven_bit
    manifest = {"stages": {"int8": {"config": {"weight_bits": "auto"}, "inputs": {"seven_bit_weights": seven_bit}}}}
    report = BuildReport("m", "run", {}, "generated", 8, [1], 1, verified_on=built_on)
    (note,) = baked_decisions(manifest, report, target)
    assert ("--weight-bits 8" if seven_bit else "--weight-bits 7") in note and built_on["processor"] in note
    assert baked_decisions(manifest, report, built_on) == []  # on the CPU it was made for, nothing to name
    fixed = {"stages": {"int8": {"config": {"weight_bits": "7"}, "inputs": {"seven_bit_weights": True}}}}
    assert baked_decisions(fixed, report, target) == []  # asked for by the user: not the build CPU's choice


def test_a_tensorrt_pipeline_is_made_on_a_gpu_node_of_the_label_and_a_cpu_pipeline_anywhere(two_models, tmp_path):
    from deployopt.api import fleet_members
    from deployopt.flow.ray_fleet import gpus_for, make_placement

    pipeline = fleet_pipeline(tmp_path, two_models, **{"digits-b": {"target": "tensorrt"}})
    cpu, tensorrt = fleet_members([pipeline])
    assert (gpus_for(cpu), gpus_for(tensorrt)) == (0, 1)
    assert make_placement(cpu, "gpu_h100") == {"num_gpus": 0}
    assert make_placement(tensorrt, "gpu_h100") == {"num_gpus": 1, "resources": {"gpu_h100": 1}}
    assert make_placement(tensorrt, None) == {"num_gpus": 1}


def test_a_terminated_jobs_run_stops_every_build_at_once_and_leaves_nothing_half_written(two_models, tmp_path):
    """SIGTERM while two models build in their own processes: exit 130 promptly, every build process gone, no .lock
    and no partial file in either run directory."""
    checkpoints = {"digits-a": two_models["digits-a"], "digits-c": tmp_path / "digits-c.pt"}
    checkpoints["digits-c"].write_bytes(checkpoints["digits-a"].read_bytes())  # calibrated on the digits dataset
    int8 = {name: {"quantize": {"make": ["int8"]}} for name in checkpoints}  # a search long enough to be stopped in
    pipeline = fleet_pipeline(tmp_path, checkpoints, **int8)
    command = [sys.executable, "-m", "deployopt", "run", str(pipeline), "--jobs", "2"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    searching = set()
    for line in process.stderr:  # both int8 searches under way
        searching |= {name for name in checkpoints if f"[{name}] int8" in line}
        if len(searching) == 2:
            break
    builds = _descendants(process.pid)
    assert len(builds) >= 3  # the command, and one process per model building
    process.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    process.communicate(timeout=60)
    assert process.returncode == 130 and time.monotonic() - stopped < 20
    for name in checkpoints:
        assert leftovers(tmp_path / name) == []
    time.sleep(0.5)
    assert [pid for pid in builds if pid in _living()] == []


def _living() -> dict[int, int]:
    """pid → parent pid of every process not yet dead (a zombie waiting for its parent is dead)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state, parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            except (OSError, ValueError):
                continue
            if state != "Z":
                parents[int(entry.name)] = int(parent)
    return parents


def _descendants(root: int) -> set[int]:
    parents = _living()
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def test_every_file_a_build_reads_is_checked_on_the_ray_nodes(two_models, tmp_path):
    """The shared-path check covers the data files a build reads, not only the models (no cluster needed)."""
    import numpy as np

    from deployopt.api import fleet_members
    from deployopt.flow.ray_fleet import _paths_to_share

    np.savez(tmp_path / "inputs.npz", input=np.zeros((4, 1, 8, 8), np.float32))
    data = {"verify": {"data": str(tmp_path / "inputs.npz")}}
    paths = _paths_to_share(fleet_members([fleet_pipeline(tmp_path, two_models, **{"digits-b": data})]))
    assert set(paths) == {*(p.resolve() for p in two_models.values()), (tmp_path / "inputs.npz").resolve(), tmp_path}
