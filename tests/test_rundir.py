"""Run directory: caching by content, atomic outputs, the lock, and leftovers of killed runs."""

import pytest
from pydantic import BaseModel

from deployopt.errors import RunDirectoryLockedError
from deployopt.rundir import RunDirectory


class Cfg(BaseModel):
    factor: int = 2


def _writer(calls):
    def work(out):
        calls.append(1)
        out["result"].write_text("payload")
        return {"wrote": True}

    return work


def test_same_inputs_reuse_and_changes_rerun(tmp_path):
    calls = []
    with RunDirectory(tmp_path / "run") as run:
        first = run.run_stage("s", Cfg(), {"in": "aaa"}, {"result": "r.txt"}, _writer(calls))
        again = run.run_stage("s", Cfg(), {"in": "aaa"}, {"result": "r.txt"}, _writer(calls))
        assert (first.cached, again.cached, len(calls)) == (False, True, 1)
        assert run.run_stage("s", Cfg(factor=3), {"in": "aaa"}, {"result": "r.txt"}, _writer(calls)).cached is False
        assert run.run_stage("s", Cfg(factor=3), {"in": "bbb"}, {"result": "r.txt"}, _writer(calls)).cached is False
    assert len(calls) == 3
    with RunDirectory(tmp_path / "run") as run:  # the manifest persists across processes / runs
        assert run.run_stage("s", Cfg(factor=3), {"in": "bbb"}, {"result": "r.txt"}, _writer(calls)).cached
        record = run.manifest["stages"]["s"]
        assert record["config"] == {"factor": 3} and record["outputs"]["result"]["sha256"]
        assert "deployopt" in record["tools"]


def test_tampered_output_is_rebuilt_and_force_reruns(tmp_path):
    calls = []
    with RunDirectory(tmp_path) as run:
        run.run_stage("s", Cfg(), {}, {"result": "r.txt"}, _writer(calls))
        (tmp_path / "r.txt").write_text("tampered")
        assert run.run_stage("s", Cfg(), {}, {"result": "r.txt"}, _writer(calls)).cached is False
    with RunDirectory(tmp_path, force=True) as run:
        assert run.run_stage("s", Cfg(), {}, {"result": "r.txt"}, _writer(calls)).cached is False
    assert len(calls) == 3


def test_failed_stage_leaves_nothing_behind(tmp_path):
    def broken(out):
        out["result"].write_text("half")
        raise RuntimeError("killed mid-way")

    with RunDirectory(tmp_path) as run:
        with pytest.raises(RuntimeError):
            run.run_stage("s", Cfg(), {}, {"result": "r.txt"}, broken)
        assert "s" not in run.manifest["stages"]
    assert not (tmp_path / "r.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def test_leftovers_of_a_killed_run_are_removed(tmp_path):
    (tmp_path / ".model.onnx.abc.partial").write_text("half-written")
    with RunDirectory(tmp_path):
        pass
    assert not (tmp_path / ".model.onnx.abc.partial").exists()


def test_second_writer_is_refused(tmp_path):
    with RunDirectory(tmp_path), pytest.raises(RunDirectoryLockedError, match="another deployopt process"):
        RunDirectory(tmp_path).__enter__()
    with RunDirectory(tmp_path):  # released after the first one exits
        pass
