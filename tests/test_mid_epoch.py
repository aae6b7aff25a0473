"""Long epochs are never lost: the loader continues an epoch from any batch, ``checkpoint.every`` is checked, a run
stopped by a signal in the middle of an epoch resumes to the numbers of a run never stopped (parts with per-epoch
hooks included: NoiLIn, SGLR, FRL), and the whole run's time is estimated beside the epoch bar.

The kills by SIGKILL and the signals from outside, in their own processes, are in tests/test_kill_resume.py.
"""
from __future__ import annotations

import pytest
import torch

from advlab import data
from advlab.config import checkpoint_interval, load_config
from advlab.errors import ConfigError, DataError

TINY = ["data.train_size=200", "batch_size=50", "perturbation.steps=2", "validation.n=50", "device=cpu",
        "epochs=2"]  # 4 steps an epoch, 8 in all


# ---------------------------------------------------------------- the loader continues an epoch
def _dataset(n=103):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, 6, 6), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("world", [1, 2])
def test_start_at_gives_the_remaining_batches_of_an_uninterrupted_epoch(world):
    images, labels = _dataset()
    for rank in range(world):
        whole = data.DeviceLoader(images, labels, 16, crop_padding=2, flip=True, seed=3)
        resumed = data.DeviceLoader(images, labels, 16, crop_padding=2, flip=True, seed=3)  # a new process
        if world > 1:
            whole.shard(rank, world)
            resumed.shard(rank, world)
        whole.set_epoch(4)
        expected = list(whole)
        resumed.set_epoch(4)
        resumed.start_at(5)
        got = list(resumed)
        assert len(got) == len(expected) - 5 == 2
        for a, b in zip(expected[5:], got):
            assert torch.equal(a.index, b.index) and torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
        assert len(list(resumed)) == 7  # the next iteration is a whole epoch again
        resumed.start_at(7)
        assert list(resumed) == []  # after the last batch: nothing left, validation is next


def test_start_at_refuses_a_batch_outside_the_epoch_and_num_items_counts_the_whole_split():
    images, labels = _dataset()
    loader = data.DeviceLoader(images, labels, 16)
    for bad in (-1, 8, 2.0, True):
        with pytest.raises(DataError, match=r"start_at: batch must be an integer in \[0, 7\]"):
            loader.start_at(bad)
    loader.shard(1, 2)
    assert loader.num_items == 103 and len(loader) == 7


# ---------------------------------------------------------------- checkpoint.every
@pytest.mark.parametrize("given, kept, interval", [
    ("500", 500, ("steps", 500.0)), ("30m", "30m", ("seconds", 1800.0)), ("2h", "2h", ("seconds", 7200.0)),
    ("90s", "90s", ("seconds", 90.0)), ("1.5h", "1.5h", ("seconds", 5400.0)), ("off", None, None),
    ("null", None, None), ("'off'", None, None), ("'500'", 500, ("steps", 500.0)),
])
def test_checkpoint_every_is_steps_or_a_duration_or_off(given, kept, interval):
    config = load_config("pgd-at", [f"checkpoint.every={given}"])
    assert config.checkpoint.every == kept
    assert checkpoint_interval(config.checkpoint.every) == interval
    assert load_config("pgd-at").checkpoint.every == "30m"  # the default: 30 minutes


@pytest.mark.parametrize("given, message", [
    ("0", "checkpoint.every: a number of steps must be >= 1, got 0"),
    ("-3", "checkpoint.every: a number of steps must be >= 1, got -3"),
    ("0.5s", "checkpoint.every: a duration must be >= 1s, got '0.5s'"),
    ("30", None), ("30x", "checkpoint.every: expected a number of steps (500), a duration with a unit of s, m, h"),
    ("m", "checkpoint.every: expected a number of steps"), ("true", "checkpoint.every: expected a number of steps"),
    ("nanm", "checkpoint.every: expected a number of steps"), ("[1]", "checkpoint.every: expected an integer or"),
])
def test_a_bad_checkpoint_every_is_one_error_naming_the_key(given, message):
    if message is None:
        assert load_config("pgd-at", [f"checkpoint.every={given}"]).checkpoint.every == 30
        return
    with pytest.raises(ConfigError) as caught:
        load_config("pgd-at", [f"checkpoint.every={given}"])
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


# ---------------------------------------------------------------- stopped mid-epoch, resumed exactly
@pytest.mark.usefixtures("fashion_mnist")
@pytest.mark.parametrize("preset, extra", [
    ("noilin", ["labels.rate=0.3"]),  # noise counts of the epoch in progress
    ("sglr", ["labels.start_epoch=0"]),  # the bank's rows touched this epoch
    ("frl", ["data.meta_size=60", "weighting.attack_steps=2", "weighting.batch_size=30"]),  # duals: once an epoch
])
def test_a_run_stopped_mid_epoch_resumes_to_the_uninterrupted_metrics(preset, extra, tmp_path, one_thread,
                                                                      whole_and_resumed_mid_epoch, training_rows):
    from advlab.runs import MID_EPOCH, load_checkpoint

    config = load_config(preset, TINY + extra)

    def stopped_in_epoch_2(run_dir):
        saved = load_checkpoint(run_dir / MID_EPOCH)
        assert saved["epoch"] == 1 and saved["mid_epoch"]["epoch"] == 1
        assert (saved["mid_epoch"]["batch"], saved["mid_epoch"]["batches"]) == (2, 4)
        assert len(training_rows(run_dir)) == 1

    whole, resumed = whole_and_resumed_mid_epoch(config, tmp_path, stop_at=6, on_stop=stopped_in_epoch_2)
    a, b = training_rows(whole), training_rows(resumed)
    assert a == b  # every logged number: loss, accuracy, each part's metrics of the epoch stopped in
    assert not (resumed / MID_EPOCH).exists()  # removed once its epoch finished
    ma, mb = load_checkpoint(whole / "last.pt"), load_checkpoint(resumed / "last.pt")
    for k in ma["model"]:
        assert torch.equal(ma["model"][k], mb["model"][k]), k
    if preset == "noilin":
        assert all(row["noise_flipped"] > 0 for row in a)
    if preset == "frl":
        assert a[1]["frl_lambda0"] != a[0]["frl_lambda0"]  # the duals moved: a second update would show


# ---------------------------------------------------------------- the run's time
class _Clock:
    """A clock the test moves by hand (seconds)."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_the_run_clock_estimates_steps_and_validations_left():
    from tqdm import tqdm

    from advlab.engine.run_clock import ESTIMATE_AFTER, RunClock

    run_clock_format = tqdm.format_interval
    now = _Clock()
    # a resumed run: 10 of 3 x 40 steps done, 3 validations to go, 50 s spent before this process
    clock = RunClock(total_steps=120, steps_done=10, validations_left=3, elapsed_before=50.0, now=now)
    assert clock.remaining() is None and clock.text() == "00:50<?"
    now.t += 7.0
    clock.step()  # the first step is not timed (warm-up)
    for _ in range(ESTIMATE_AFTER):
        now.t += 0.5
        clock.step()
    assert clock.step_seconds() == pytest.approx(0.5)
    left = (120 - 10 - 1 - ESTIMATE_AFTER) * 0.5  # validation not timed yet
    assert clock.remaining() == pytest.approx(left)
    line = clock.start_line()
    total = 50.0 + 7.0 + 0.5 * ESTIMATE_AFTER + left
    assert line.startswith(f"advlab: estimated run time {run_clock_format(total)}: about {run_clock_format(left)}")
    assert f"to go for {120 - 11 - ESTIMATE_AFTER} steps at 0.5 s each" in line and "3 validations" in line
    assert clock.start_line() is None  # once
    now.t += 4.0
    clock.validation(4.0)  # an epoch's validation: not step time, and 2 more to come
    assert clock.step_seconds() == pytest.approx(0.5)
    assert clock.remaining() == pytest.approx(left + 2 * 4.0)
    assert clock.elapsed() == pytest.approx(50.0 + 7.0 + 0.5 * ESTIMATE_AFTER + 4.0)


@pytest.mark.usefixtures("fashion_mnist")
def test_the_epoch_bar_shows_the_run_time_and_a_line_gives_the_estimate(tmp_path, one_thread, capsys, monkeypatch):
    from advlab.engine import run_clock
    from advlab.engine.train import train

    monkeypatch.setattr(run_clock, "ESTIMATE_AFTER", 3)
    train(load_config("pgd-at", TINY), tmp_path / "run", progress=True, evaluate=False)
    err = capsys.readouterr().err
    assert err.count("advlab: estimated run time") == 1
    estimate = next(line for line in err.splitlines() if line.startswith("advlab: estimated run time"))
    assert "to go for 4 steps at" in estimate and "(timed over 3) and 2 validations, not timed yet" in estimate
    bars = [part for part in err.replace("\r", "\n").splitlines() if part.startswith("epoch 2/2") and "run=" in part]
    assert bars and all("<" in bar.split("run=")[1] for bar in bars)
