"""``deployopt run --ray`` / ``recommend --ray`` against a real two-node Ray cluster on 127.0.0.1, started here: a head
node, and a second node that advertises the custom resource ``cpu_target`` (the machines a build targets)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.flow.fleets import SMALL, fleet_pipeline, write_pipeline
from tests.ray_cluster import free_port, start_local_cluster, stop_local_cluster

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'deployopt[ray]')")
LABEL = "cpu_target"


@pytest.fixture(scope="module")
def cluster():
    """(address, labelled node id): a head with 1 CPU and no label, a node with 1 CPU and ``cpu_target: 1``."""
    temp_dir = tempfile.mkdtemp(prefix="ray-dt-", dir="/tmp")  # short: Ray's socket paths live under it
    try:
        address = start_local_cluster(temp_dir, LABEL)
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        (labelled,) = [n["NodeID"] for n in ray.nodes() if n["Alive"] and LABEL in n["Resources"]]
        ray.shutdown()
        yield address, labelled
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        stop_local_cluster(temp_dir)


@pytest.fixture(scope="module")
def fleet_run(cluster, two_models, tmp_path_factory):
    """Both models built on the cluster, judged and benchmarked on the labelled node; and the same built here."""
    from deployopt.api import run_fleet

    address, _ = cluster
    folder = tmp_path_factory.mktemp("ray-fleet")
    (folder / "ray").mkdir(), (folder / "local").mkdir()
    on_ray = run_fleet([fleet_pipeline(folder / "ray", two_models)], ray_address=address, bench_on=LABEL)
    local = run_fleet([fleet_pipeline(folder / "local", two_models)])
    return folder, on_ray, local


def test_every_figure_is_measured_on_the_labelled_node(cluster, fleet_run):
    _, labelled = cluster
    folder, on_ray, _ = fleet_run
    assert on_ray.passed and "Ray cluster" in on_ray.mode
    for name in ("digits-a", "digits-b"):
        report = json.loads((folder / "ray" / name / "report.json").read_text())
        rows = [row for v in report["variants"] for row in v["latency"].values()]
        assert rows and all(row["measured_on"]["node"] == labelled for row in rows)
        assert report["verified_on"]["node"] == labelled and report["measured_on"]["isa_flags"]
        assert any(note.startswith("artifacts made on") for note in report["notes"])
        assert report["recommendations"]


def test_the_run_directories_equal_a_local_builds(fleet_run):
    folder, _, local = fleet_run
    assert local.passed
    for name in ("digits-a", "digits-b"):
        remote, here = (folder / "ray" / name, folder / "local" / name)
        manifests = [json.loads((run / "manifest.json").read_text()) for run in (remote, here)]
        assert _hashes(manifests[0]) == _hashes(manifests[1]) and _hashes(manifests[1])
        assert sorted(p.name for p in remote.iterdir()) == sorted(p.name for p in here.iterdir())
        verdicts = [[(v["name"], v["passed"]) for v in _report(run)["variants"]] for run in (remote, here)]
        assert verdicts[0] == verdicts[1]


def _report(run: Path) -> dict:
    return json.loads((run / "report.json").read_text())


def _hashes(manifest: dict) -> dict:
    stages = {(s, label): o["sha256"] for s, r in manifest["stages"].items() for label, o in r["outputs"].items()}
    return stages | {name: a["sha256"] for name, a in manifest["artifacts"].items()}


def test_a_worker_killed_mid_build_is_retried_and_the_reports_are_complete(cluster, two_models, tmp_path):
    from deployopt.api import run_fleet

    address, _ = cluster
    pipeline = fleet_pipeline(tmp_path, two_models)
    killed: list[int] = []

    def kill_the_first_make() -> None:
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            for entry in Path("/proc").iterdir():
                with contextlib.suppress(OSError):
                    if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"ray::make digits-a"):
                        time.sleep(0.5)  # mid-build: the task has started its stages
                        os.kill(int(entry.name), signal.SIGKILL)
                        killed.append(int(entry.name))
                        return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_first_make)
    killer.start()
    outcome = run_fleet([pipeline], ray_address=address, bench_on=LABEL)
    killer.join()
    assert killed, "the make task's worker was never seen"
    assert outcome.passed, outcome.to_json()
    for name in ("digits-a", "digits-b"):
        run = tmp_path / name
        assert {"report.json", "report.md", "report.html", "manifest.json", "model-fp32.onnx"} <= {
            p.name for p in run.iterdir()
        }
        assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # no partial file, no stale lock
        assert json.loads((run / "report.json").read_text())["passed"]


def test_recommend_on_the_labelled_node_writes_its_cpus_recommendation(cluster, fleet_run, run_cli):
    from deployopt.platform.machine import cpu_key

    address, labelled = cluster
    folder, _, _ = fleet_run
    run = folder / "local" / "digits-b"
    code, out, err = run_cli("recommend", run, "--ray", address, "--bench-on", LABEL, "--repeats", "1")
    assert code == 0, err
    (entry_file,) = (run / "recommendations").iterdir()
    entry = json.loads(entry_file.read_text())
    assert entry["machine"]["node"] == labelled and entry_file.stem == cpu_key(entry["machine"])
    assert all(row["measured_on"]["node"] == labelled for rows in entry["latency"].values() for row in rows.values())
    assert "Ray node" in out


def test_a_resource_no_node_has_is_one_line_listing_those_it_has(cluster, two_models, run_cli, tmp_path):
    address, _ = cluster
    code, _, err = run_cli("run", fleet_pipeline(tmp_path, two_models), "--ray", address, "--bench-on", "cpu_amx")
    assert code == 2 and err.count("\n") == 1
    assert "--bench-on cpu_amx: no node" in err and LABEL in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fleet.yaml"]


def test_an_unreachable_address_is_one_line_and_exit_5(two_models, run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYOPT_RAY_ADDRESS", f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    code, _, err = run_cli("run", fleet_pipeline(tmp_path, two_models))
    assert code == 5 and err.count("\n") == 1 and "no Ray cluster answers there" in err
    assert time.monotonic() - started < 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fleet.yaml"]


def test_a_path_a_node_cannot_see_is_refused(cluster, digits_checkpoint, run_cli, tmp_path, monkeypatch):
    """A node that sees another file at the model's path (as without a shared file system): one line, exit 2."""
    from deployopt.flow import ray_fleet

    address, _ = cluster
    pipeline = write_pipeline(tmp_path / "p.yaml", {"models": [str(digits_checkpoint)], "build": SMALL})
    monkeypatch.setattr(ray_fleet, "_stat", lambda path: ["as seen here"])  # the nodes' probe still reads the disk
    code, _, err = run_cli("run", pipeline, "--ray", address)
    assert code == 2 and err.count("\n") == 1 and "does not see this file as this machine does" in err
    assert yaml.safe_load((tmp_path / "p.yaml").read_text())  # the input is untouched


def test_a_task_ray_gave_up_on_is_that_models_stage_error_not_an_internal_one():
    """A worker that died on every retry (or Ray's memory monitor) is the model's exit 4, named; the fleet goes on."""
    import types

    from deployopt.errors import StageError
    from deployopt.flow.ray_fleet import Cluster

    def get(ref):
        raise ray.exceptions.WorkerCrashedError()

    cluster = Cluster(types.SimpleNamespace(get=get, exceptions=ray.exceptions), "127.0.0.1:1", None, [], [])
    error = cluster._result(object(), "digits-a")
    assert isinstance(error, StageError) and error.exit_code == 4
    assert str(error).startswith("digits-a: Ray could not run it (WorkerCrashedError")
