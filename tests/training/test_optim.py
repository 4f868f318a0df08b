"""Learning-rate schedules: warm-up, the shapes of step/cosine/one-cycle, plateau's cut, resumable state."""

from __future__ import annotations

import itertools

import pytest

from deployopt.training.optim import PLATEAU_FACTOR, LearningRate, make_optimizer


def _rates(schedule: str, total: int = 30, warmup: int = 5) -> list[float]:
    import torch

    optimizer = make_optimizer([torch.nn.Parameter(torch.zeros(1))], "sgd", 1.0, 0.0)
    lr = LearningRate(optimizer, schedule, total, warmup)
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        lr.step()
    return rates


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine", "plateau"])
def test_warmup_rises_linearly_to_the_peak(schedule):
    rates = _rates(schedule)
    assert rates[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])


def test_schedule_shapes():
    assert _rates("constant")[5:] == pytest.approx([1.0] * 25)
    step = _rates("step")
    assert step[5] == pytest.approx(1.0) and step[-1] == pytest.approx(0.01)
    assert sorted(set(round(r, 6) for r in step[5:])) == [0.01, 0.1, 1.0]
    cosine = _rates("cosine")
    assert all(a >= b for a, b in itertools.pairwise(cosine[5:])) and cosine[-1] < 0.01
    onecycle = _rates("onecycle")
    peak = onecycle.index(max(onecycle))
    assert 3 <= peak <= 6 and onecycle[0] < 0.1 and onecycle[-1] < 1e-3


def test_plateau_cuts_the_rate_after_patience_epochs_without_gain_and_state_round_trips():
    import torch

    optimizer = make_optimizer([torch.nn.Parameter(torch.zeros(1))], "sgd", 1.0, 0.0)
    lr = LearningRate(optimizer, "plateau", total_steps=100, warmup_steps=0, plateau_patience=2)
    for accuracy in (50.0, 60.0, 60.0):  # improve, improve, one flat epoch: no cut yet
        lr.end_epoch(accuracy)
        optimizer.step()
        lr.step()
    assert lr.current == pytest.approx(1.0)
    lr.end_epoch(59.0)  # second epoch without gain
    optimizer.step()
    lr.step()
    assert lr.current == pytest.approx(PLATEAU_FACTOR)
    saved = lr.state_dict()
    other = LearningRate(
        make_optimizer([torch.nn.Parameter(torch.zeros(1))], "sgd", 1.0, 0.0), "plateau", 100, 0, plateau_patience=2
    )
    other.load_state_dict(saved)
    assert other.state_dict() == saved and other.best_val == 60.0
