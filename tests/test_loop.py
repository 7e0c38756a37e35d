"""The shared epoch loop: the learning-rate schedule, resuming from ``last`` and keeping the best-scoring weights."""

import json
import math

import numpy as np
import pytest
import torch
from timm.utils import ModelEmaV3

from xray_xai.training.loop import Schedule, Validation, best_weights, lr_scheduler, run_epochs

SCHEDULE = Schedule(epochs=3, batch_size=4, lr=0.05, warmup_epochs=0.5, seed=1)
# Validation scores by epoch: the best is epoch 2's raw weights.
SCORES = {1: {"raw": 0.3, "ema": 0.5}, 2: {"raw": 0.9, "ema": 0.2}, 3: {"raw": 0.4, "ema": 0.6}}
X = torch.linspace(-1, 1, 30).reshape(10, 3)
Y = X @ torch.tensor([0.5, -1.0, 2.0]) + 0.3


class Interrupted(Exception):
    """Stands for a run killed during an epoch."""


class Run:
    """A tiny linear regression trained through ``run_epochs``, recording what the loop did."""

    def __init__(self, work, stop_at: int | None = None, config: dict | None = None):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(3, 1)
        self.ema = ModelEmaV3(self.model, decay=0.9)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=SCHEDULE.lr)
        self.work, self.stop_at, self.config = work, stop_at, config or {"lr": SCHEDULE.lr}
        self.epochs_validated: list[int] = []
        self.weights: dict[tuple[int, str], dict[str, torch.Tensor]] = {}

    def batch_loss(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = X[index] + 0.05 * torch.randn(X[index].shape, generator=generator)
        return ((self.model(x).squeeze(1) - Y[index]) ** 2).mean()

    def validate(self, candidates: dict[str, torch.nn.Module]) -> Validation:
        epoch, self.next_epoch = self.next_epoch, self.next_epoch + 1
        if epoch == self.stop_at:
            raise Interrupted
        self.epochs_validated.append(epoch)
        for name, module in candidates.items():
            self.weights[epoch, name] = {k: v.clone() for k, v in module.state_dict().items()}
        return Validation(SCORES[epoch], {"score_raw": SCORES[epoch]["raw"]}, f"score {SCORES[epoch]['raw']}")

    def __call__(self) -> dict:
        last = self.work / "last.json"
        self.next_epoch = 1 + (json.loads(last.read_text())["epoch"] if last.is_file() else 0)
        return run_epochs(
            self.model,
            self.ema,
            self.optimizer,
            work=self.work,
            schedule=SCHEDULE,
            config=self.config,
            n_train=len(X),
            batch_loss=self.batch_loss,
            validate=self.validate,
            best_key="best_score",
        )


def test_resume_continues_after_the_last_finished_epoch_and_keeps_the_best(tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(Interrupted):
        Run(work, stop_at=3)()  # two epochs finish, the third is killed
    assert json.loads((work / "last.json").read_text())["epoch"] == 2

    resumed = Run(work)
    meta = resumed()
    assert "resuming after epoch 2" in capsys.readouterr().out
    assert resumed.epochs_validated == [3]
    assert [h["epoch"] for h in meta["history"]] == [1, 2, 3]
    assert [h["score_raw"] for h in meta["history"]] == [0.3, 0.9, 0.4]
    assert meta["best"] == {"epoch": 2, "weights": "raw"} and meta["best_score"] == 0.9

    # Resuming reproduces the uninterrupted run exactly (model, EMA and optimizer state, batch order).
    (tmp_path / "straight").mkdir()
    straight = Run(tmp_path / "straight")
    straight_meta = straight()
    assert straight.epochs_validated == [1, 2, 3]
    for name in ("raw", "ema"):
        for key, value in straight.weights[3, name].items():
            assert torch.equal(resumed.weights[3, name][key], value), (name, key)
    assert [h["train_loss"] for h in meta["history"]] == [h["train_loss"] for h in straight_meta["history"]]

    # The best checkpoint holds epoch 2's raw weights, not the last or the EMA ones.
    best = best_weights(work)
    expected = straight.weights[2, "raw"]
    assert best.keys() == expected.keys() and all(torch.equal(best[k], expected[k]) for k in best)
    assert not torch.equal(best["weight"], straight.weights[3, "raw"]["weight"])


def test_a_finished_run_trains_no_more_and_another_configuration_is_refused(tmp_path):
    Run(tmp_path)()
    again = Run(tmp_path)
    assert again()["epoch"] == 3 and again.epochs_validated == []
    with pytest.raises(SystemExit, match="another configuration"):
        Run(tmp_path, config={"lr": 0.1})()


def former_lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """The hand-written schedule the loop used before timm's CosineLRScheduler."""
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def scheduled_lrs(schedule: Schedule, steps_per_epoch: int, steps) -> np.ndarray:
    optimizer = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=123.0)  # the schedule's lr wins
    scheduler = lr_scheduler(optimizer, schedule, steps_per_epoch)
    rates = []
    for step in steps:
        scheduler.step_update(step)
        rates.append(optimizer.param_groups[0]["lr"])
    return np.array(rates)


@pytest.mark.parametrize(
    "steps_per_epoch, epochs, warmup_epochs", [(139, 8, 1.0), (10, 10, 1.0), (7, 6, 0.5), (5, 3, 0.0), (1, 2, 1.0)]
)
def test_lr_schedule_warms_up_then_decays_to_zero_as_the_former_schedule(steps_per_epoch, epochs, warmup_epochs):
    base = 2e-3
    schedule = Schedule(epochs=epochs, batch_size=32, lr=base, warmup_epochs=warmup_epochs, seed=0)
    total, warmup = steps_per_epoch * epochs, int(warmup_epochs * steps_per_epoch)
    lrs = scheduled_lrs(schedule, steps_per_epoch, range(total))
    former = np.array([former_lr_at(step, total, warmup, base) for step in range(total)])
    # The cosine decay is the former one exactly; the warm-up ramps linearly from base / warmup to
    # base, as before, but reaches it one step later (at most base / warmup off, 0.7% at 139 steps).
    assert lrs[warmup:] == pytest.approx(former[warmup:], rel=1e-12, abs=0)
    assert np.all(np.abs(lrs[:warmup] - former[:warmup]) <= base / max(1, warmup) * (1 - 1 / max(1, warmup)) + 1e-15)
    if warmup:
        assert lrs[0] == pytest.approx(base / warmup) and np.all(np.diff(lrs[:warmup]) > 0)
    assert lrs[warmup] == pytest.approx(base) and np.all(np.diff(lrs[warmup:]) <= 0)
    assert lrs[-1] < 0.01 * base or total - warmup < 50  # decays towards zero at the last step


def test_lr_of_a_step_does_not_depend_on_the_steps_before():
    schedule = Schedule(epochs=4, batch_size=8, lr=0.1, warmup_epochs=1.0, seed=0)
    in_order = scheduled_lrs(schedule, 10, range(40))
    assert (
        scheduled_lrs(schedule, 10, [25, 3, 39, 10]).tolist() == in_order[[25, 3, 39, 10]].tolist()
    )  # as after a resume
