"""Training over several processes (torchrun, DistributedDataParallel, gloo on the CPU) is the run of one
process with the same global batch (docs/DISTRIBUTED.md).

Each test starts ``python -m torch.distributed.run --nproc_per_node=2`` (2 processes, 1 thread each) on a
tiny Fashion-MNIST config and compares with the same code in one process. The config avoids what is drawn
per rank (the attack's random start: ``random_start=none``; dropout: ``dropout=0``; small-cnn has no batch
norm), so the runs agree up to the floating-point order of sums: the parameters within ``PARAM_ATOL``.
The global batch is 25 over 110 images: shards of 13 and 12, and a last batch of 10 (5 and 5).

The meta-learning parts (FRL's duals, CAAT's meta-net) are tested twice: as 2 ranks in threads of this process
(``tests/thread_ranks.py``) on a linear model in float64 against one process, number for number; and in runs
of 2 processes under torchrun (rank-identical state, and the numbers of one process within float tolerance).
"""
from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from thread_ranks import run_ranks
from torch import nn

from advlab.crashpoints import ENV as CRASH_ENV
from advlab.distributed import Collective, shard_bounds
from advlab.recipes import RecipeEnv, create_recipe, compute_loss

pytestmark = [pytest.mark.usefixtures("fashion_mnist"),
              pytest.mark.skipif(sys.platform == "win32", reason="gloo on Windows, SIGKILL")]

HERE = Path(__file__).resolve().parent
WORKER = HERE / "ddp_worker.py"
PARAM_ATOL = 1e-6  # parameters of a 2-process epoch vs one process (seen: ~3e-8)
# Over several epochs the attack's sign(gradient) can turn a difference of 1e-8 into a pixel moved by a whole
# step, so a run continued on another number of processes is close, not bit-equal: seen 3.8e-5 in the
# parameters (of magnitude up to 1.6) and 1.2e-6 relative in a training loss after 3 epochs.
RUN_PARAM_ATOL = 2e-4
RUN_RTOL = 1e-4
TINY = ["data.train_size=110", "batch_size=25", "perturbation.steps=2", "perturbation.random_start=none",
        "model.options.dropout=0", "validation.n=21", "validation.batch_size=4", "evaluation.n=21",
        "evaluation.batch_size=4", "evaluation.attacks=[pgd20]", "device=cpu", "schedule.name=constant"]
TIMING = {"seconds", "train_seconds", "images_per_second"}

_PGD_AT = "test_one_epoch_of_pgd_at_on_2_processes_is_that_of_one"
_GLOBAL_WEIGHTS = "test_weights_normalised_over_the_global_batch_give_the_steps_of_one_process"
_FRL = "test_frl_on_2_processes_keeps_the_duals_and_the_steps_of_one_process"
_CAAT = "test_caat_on_2_processes_keeps_the_meta_net_identical_on_every_rank_and_close_to_one_process"
_PER_SAMPLE = "test_per_sample_parts_on_2_processes_take_the_steps_of_one_process"
TORCHRUN_CHECKS = {
    ("labels", "hard"): _PGD_AT, ("perturbation", "pgd"): _PGD_AT, ("weighting", "uniform"): _PGD_AT,
    ("objective", "ce"): _PGD_AT,
    ("labels", "sglr"): "test_sglr_bank_is_identical_on_both_ranks_and_equal_to_one_process",
    ("labels", "noilin"): "test_noilin_rate_schedule_is_identical_on_both_ranks_and_that_of_one_process",
    ("labels", "self-adaptive"): _GLOBAL_WEIGHTS, ("weighting", "self-adaptive"): _GLOBAL_WEIGHTS,
    ("weighting", "gair"): _GLOBAL_WEIGHTS,
    ("weighting", "frl"): _FRL, ("objective", "trades"): _FRL,
    ("perturbation", "caat"): _CAAT, ("weighting", "caat"): _CAAT, ("objective", "caat"): _CAAT,
    ("perturbation", "fat"): _PER_SAMPLE, ("objective", "mart"): _PER_SAMPLE, ("perturbation", "fgsm"): _PER_SAMPLE,
    ("perturbation", "none"): _PER_SAMPLE, ("perturbation", "n-fgsm"): _PER_SAMPLE,
    ("objective", "grad-align"): _PER_SAMPLE,
}
"""Every part that trains under torchrun (``distributed = True``) -> the test of this file that shows its steps
over 2 processes equal to one process. tests/part_coverage.py checks that each registered part has one, unless it
pairs only with a part refused under torchrun (then it never runs there). The loaders have theirs beside the parts':
test_one_epoch_on_a_folder_over_2_processes_is_that_of_one (a folder streamed, each rank decoding only its shard of
each global batch, and held in memory)."""


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in (CRASH_ENV, "WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent / "src"), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra or {})
    return env


def _launch(args: list[str], processes: int, extra_env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """``args`` (a script or ``-m module`` and its arguments) in ``processes`` processes: torchrun for 2+."""
    if processes == 1:
        command = [sys.executable, *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                   "--standalone", "--max_restarts=0", *args]
    return _run_group(command, _env(extra_env), timeout)


def _run_group(command: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """``command`` in its own process group; on a timeout the whole group (torchrun and its workers) is killed,
    so a hanging test leaves no process behind, then TimeoutExpired is raised."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def _worker(mode: str, out: Path, overrides: list[str], processes: int) -> list[dict]:
    done = _launch([str(WORKER), mode, str(out), *overrides], processes)
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(processes)]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


# -- the shard rule -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,world", [(25, 2), (10, 2), (7, 3), (2, 2), (5, 4), (0, 3)])
def test_shards_cover_every_item_once_sizes_within_one(n, world):
    pieces = [shard_bounds(n, r, world) for r in range(world)]
    assert [i for a, b in pieces for i in range(a, b)] == list(range(n))
    sizes = [b - a for a, b in pieces]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_backend_auto_and_nccl_without_cuda_is_one_clear_error():
    from advlab.distributed import pick_backend
    from advlab.errors import ConfigError

    assert pick_backend("auto", torch.device("cpu")) == "gloo"
    with pytest.raises(ConfigError, match=r"distributed.backend: nccl needs CUDA devices; this run trains on cpu"):
        pick_backend("nccl", torch.device("cpu"))


def test_loader_shards_cover_each_global_batch_once_and_refuse_an_empty_shard():
    from advlab.data import DeviceLoader
    from advlab.errors import DataError

    images, labels = torch.zeros(11, 1, 4, 4, dtype=torch.uint8), torch.arange(11)
    # the last global batch of 1 image cannot be split over 2 processes: refused when sharding
    with pytest.raises(DataError, match=r"fewer than the 2 processes; choose batch_size >= 2"):
        DeviceLoader(images, labels, 5, seed=1).shard(0, 2)
    images, labels = torch.zeros(12, 1, 4, 4, dtype=torch.uint8), torch.arange(12)
    whole = DeviceLoader(images, labels, 5, seed=1)
    parts = [DeviceLoader(images, labels, 5, seed=1) for _ in range(2)]
    for rank, loader in enumerate(parts):
        loader.shard(rank, 2)
    for batch, a, b in zip(whole, *parts):
        assert torch.equal(torch.cat([a.index, b.index]), batch.index)
        assert len(a.index) - len(b.index) in (0, 1)


def _as_rank_0_of_2(args: list[str]) -> subprocess.CompletedProcess:
    """``advlab train`` told by the environment it is rank 0 of 2 (refused before any process group forms)."""
    env = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    command = [sys.executable, "-m", "advlab", "train", "--preset", "pgd-at", "--quiet", *args]
    merged = {**_env(), **env}
    return subprocess.run(command, env=merged, capture_output=True, text=True, timeout=60)


@pytest.mark.slow
@pytest.mark.parametrize("override,message", [
    ("distributed.sync_batchnorm=true", "distributed.sync_batchnorm: SyncBatchNorm needs CUDA devices; this run "
                                        "trains on cpu"),
    ("distributed.backend=nccl", "distributed.backend: nccl needs CUDA devices; this run trains on cpu; use "
                                 "gloo or auto"),
    ("compile=default", "compile: torch.compile is not combined with training over several processes yet"),
])
def test_what_several_processes_cannot_do_is_one_clear_error_before_anything_starts(tmp_path, override, message):
    done = _as_rank_0_of_2(["--out", str(tmp_path / "run"), "device=cpu", override])
    assert done.returncode == 2
    assert f"advlab train: error (rank 0 of 2): {message}" in done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_advlab_eval_under_torchrun_is_refused_not_run_by_every_process(tmp_path):
    env = {**_env(), "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}
    done = subprocess.run([sys.executable, "-m", "advlab", "eval", str(tmp_path / "nothing.pt")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "advlab eval: error (rank 1 of 2): advlab eval runs in one process; start it without torchrun" in done.stderr


# -- training ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_one_epoch_of_pgd_at_on_2_processes_is_that_of_one(tmp_path):
    one = _worker("epoch", tmp_path / "one", TINY, 1)[0]
    two = _worker("epoch", tmp_path / "two", TINY, 2)
    assert _max_diff(two[0]["model"], two[1]["model"]) == 0  # DDP keeps the ranks identical
    assert _max_diff(one["model"], two[0]["model"]) <= PARAM_ATOL
    assert two[0]["row"]["train_loss"] == pytest.approx(one["row"]["train_loss"], rel=1e-6)
    assert two[0]["row"]["train_acc"] == one["row"]["train_acc"]


@pytest.mark.slow
@pytest.mark.parametrize("loader,workers", [("stream", 1), ("memory", 0)])
def test_one_epoch_on_a_folder_over_2_processes_is_that_of_one(tmp_path, loader, workers):
    """A folder of PNGs (tests/layouts.py), streamed (each rank decodes only its shard of each global batch, in its
    own worker process) or held in memory: 2 processes train the epoch of one."""
    from layouts import write_folder

    write_folder(tmp_path / "imgs", train=40, test=2, size=16)
    config = TINY + ["data.dataset=folder", f"data.root={tmp_path / 'imgs'}", "data.val_per_class=1",
                     "model.options.image_size=16", f"data.loader={loader}", f"data.workers={workers}"]
    one = _worker("epoch", tmp_path / "one", config, 1)[0]
    two = _worker("epoch", tmp_path / "two", config, 2)
    assert _max_diff(two[0]["model"], two[1]["model"]) == 0
    assert _max_diff(one["model"], two[0]["model"]) <= PARAM_ATOL
    assert two[0]["row"]["train_loss"] == pytest.approx(one["row"]["train_loss"], rel=1e-6)
    assert two[0]["row"]["train_acc"] == one["row"]["train_acc"]


@pytest.mark.slow
@pytest.mark.parametrize("parts", [
    ["objective.name=mart"],
    ["perturbation.name=fat", "perturbation.steps=2", "perturbation.random_start=none"],
    ["perturbation.name=fgsm", "perturbation.random_start=none"],
    ["perturbation.name=none"],
    ["perturbation.name=n-fgsm", "perturbation.noise=0"],  # its noise drawn per rank otherwise
    # its eta is drawn per rank (equal to one process in distribution only, docs/DISTRIBUTED.md): the check runs
    # its double backprop under DDP with the alignment term weighted 0, so the steps are exactly one process's
    ["objective.name=grad-align", "objective.align_weight=0"],
], ids=["mart", "fat", "fgsm", "none", "n-fgsm", "grad-align"])
def test_per_sample_parts_on_2_processes_take_the_steps_of_one_process(tmp_path, parts):
    """Parts whose step reads nothing beyond each sample (no state, no batch statistic) need no exchange: DDP's
    gradient average of the loss scaled per shard is the step of one process. (A part named after TINY's
    perturbation options starts afresh, so its own options are given again: a random start per rank would make
    the runs equal in distribution only.)"""
    config = TINY + parts + ["data.train_size=50"]
    one = _worker("epoch", tmp_path / "one", config, 1)[0]
    two = _worker("epoch", tmp_path / "two", config, 2)
    assert _max_diff(two[0]["model"], two[1]["model"]) == 0
    assert _max_diff(one["model"], two[0]["model"]) <= PARAM_ATOL
    assert two[0]["row"]["train_loss"] == pytest.approx(one["row"]["train_loss"], rel=1e-6)


@pytest.mark.slow
def test_sglr_bank_is_identical_on_both_ranks_and_equal_to_one_process(tmp_path):
    config = TINY + ["labels.name=sglr", "labels.start_epoch=0"]
    one = _worker("epoch", tmp_path / "one", config, 1)[0]
    two = _worker("epoch", tmp_path / "two", config, 2)
    banks = [r["parts"]["labels"]["bank"] for r in two]
    assert torch.equal(banks[0]["targets"], banks[1]["targets"])
    assert torch.equal(banks[0]["given"], banks[1]["given"])
    assert bool((banks[0]["given"] >= 0).all())  # every sample seen once: no sample dropped
    assert torch.equal(banks[0]["given"], one["parts"]["labels"]["bank"]["given"])
    assert (banks[0]["targets"] - one["parts"]["labels"]["bank"]["targets"]).abs().max() <= 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("parts", [
    ["weighting.name=gair", "weighting.burn_in=0"],
    ["labels.name=self-adaptive", "labels.start_epoch=0", "labels.momentum=0", "weighting.name=self-adaptive"],
], ids=["gair", "self-adaptive"])
def test_weights_normalised_over_the_global_batch_give_the_steps_of_one_process(tmp_path, parts):
    # 2 steps (50 images): over more steps a difference of 1e-8 can flip a sign of the attack's gradient and
    # move a pixel of x_adv by a whole step (seen at the 4th step with GAIR: kappa, weights and parameters
    # then differ by up to 2e-2, 2e-2 and 2e-5), which says nothing about the exchange tested here
    config = TINY + parts + ["data.train_size=50"]
    one = _worker("epoch", tmp_path / "one", config, 1)[0]
    two = _worker("epoch", tmp_path / "two", config, 2)
    assert _max_diff(two[0]["model"], two[1]["model"]) == 0
    assert _max_diff(one["model"], two[0]["model"]) <= PARAM_ATOL
    assert two[0]["row"]["train_loss"] == pytest.approx(one["row"]["train_loss"], rel=1e-6)
    assert two[0]["metrics"] == two[1]["metrics"] == one["metrics"]  # GAIR's kappa histogram and weight stats


@pytest.mark.slow
def test_noilin_rate_schedule_is_identical_on_both_ranks_and_that_of_one_process(tmp_path):
    config = TINY + ["labels.name=noilin", "labels.tau=1", "labels.gamma=0.5", "labels.half_cap_until=null",
                     "epochs=3"]
    one = _worker("fit", tmp_path / "one", config, 1)[0]
    two = _worker("fit", tmp_path / "two", config, 2)
    states = [r["parts"]["labels"] for r in two]
    assert states[0]["rate"] == states[1]["rate"] == one["parts"]["labels"]["rate"]
    assert states[0]["window"] == states[1]["window"] == one["parts"]["labels"]["window"]
    assert torch.equal(states[0]["generator"], states[1]["generator"])  # the same noise stream on every rank
    assert torch.equal(states[0]["generator"], one["parts"]["labels"]["generator"])
    noise = lambda h: [(row["noise_rate"], row["noise_rate_next"], row["noise_flipped"], row["val_clean"],  # noqa: E731
                        row["val_robust"]) for row in h]
    assert noise(two[0]["history"]) == noise(two[1]["history"]) == noise(one["history"])
    assert not (tmp_path / "two" / "run" / "rank1").exists()
    assert sorted(p.name for p in (tmp_path / "two" / "run").iterdir()) == sorted(
        p.name for p in (tmp_path / "one" / "run").iterdir())


def _metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


@pytest.mark.slow
def test_2_process_run_killed_and_resumed_on_1_process_ends_as_the_uninterrupted_run(tmp_path):
    config = ["--preset", "pgd-at", "--quiet", "epochs=3", *TINY]
    whole = _launch(["-m", "advlab", "train", "--out", str(tmp_path / "whole"), *config], 2)
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = _launch(["-m", "advlab", "train", "--out", str(tmp_path / "part"), *config], 2,
                     {CRASH_ENV: "batch@7"})  # both ranks die in the 2nd of 5 batches of epoch 2
    assert killed.returncode != 0
    assert len(_metrics(tmp_path / "part")) == 1
    resumed = _launch(["-m", "advlab", "train", "--resume", str(tmp_path / "part"), "--quiet"], 1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = _metrics(tmp_path / "whole"), _metrics(tmp_path / "part")
    assert len(a) == len(b) == 3
    for row_a, row_b in zip(a, b):
        assert row_a.keys() == row_b.keys()
        for key in row_a:
            assert row_b[key] == pytest.approx(row_a[key], rel=RUN_RTOL, abs=1e-7), (row_a["epoch"], key)
    sa, sb = (json.loads((tmp_path / r / "summary.json").read_text()) for r in ("whole", "part"))
    for which in ("best", "last"):
        assert sb[which]["clean"]["acc"] == sa[which]["clean"]["acc"]
        assert sb[which]["robust"]["acc"] == sa[which]["robust"]["acc"]
    pa, pb = (torch.load(tmp_path / r / "last.pt", weights_only=True)["model"] for r in ("whole", "part"))
    assert _max_diff(pa, pb) <= RUN_PARAM_ATOL


def test_a_signal_on_one_rank_stops_every_rank_at_the_same_step_and_the_run_resumes_exactly(tmp_path):
    # 11 batches an epoch; rank 1 alone gets SIGTERM after batch 2 of epoch 2; the ranks agree every 10 steps,
    # so both stop after batch 10, rank 0 writes the mid-epoch checkpoint, and 2 processes resume it to the
    # numbers of the uninterrupted 2-process run (each rank's RNG and sums are its own)
    config = ["--preset", "pgd-at", "--quiet", "--no-eval", "epochs=2", *TINY, "batch_size=10",
              "distributed.timeout_s=90"]  # ranks that disagreed would wait for each other: fail (30 s aborted a
    # rank once in 16 runs on 2 cores at load average 7, where a rank can lag the other by that long)
    whole = _launch(["-m", "advlab", "train", "--out", str(tmp_path / "whole"), *config], 2)
    assert whole.returncode == 0, whole.stderr[-3000:]
    stopped = _launch(["-m", "advlab", "train", "--out", str(tmp_path / "part"), *config], 2,
                      {CRASH_ENV: "batch@13:SIGTERM", "ADVLAB_CRASH_RANK": "1"})
    assert stopped.returncode != 0
    line = (f"advlab train: stopped by a signal on another process in epoch 2/2 after batch 10 of 11; saved to "
            f"{tmp_path / 'part' / 'mid-epoch.pt'}; continue with: advlab train --resume {tmp_path / 'part'}")
    assert stopped.stderr.count(line) == 1, stopped.stderr[-3000:]  # printed by rank 0 only
    saved = torch.load(tmp_path / "part" / "mid-epoch.pt", weights_only=True)["mid_epoch"]
    assert (saved["epoch"], saved["batch"], len(saved["ranks"])) == (1, 10, 2)
    resumed = _launch(["-m", "advlab", "train", "--resume", str(tmp_path / "part"), "--quiet", "--no-eval"], 2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _metrics(tmp_path / "part") == _metrics(tmp_path / "whole")
    pa, pb = (torch.load(tmp_path / r / "last.pt", weights_only=True)["model"] for r in ("whole", "part"))
    assert _max_diff(pa, pb) == 0


# -- the meta-learning parts: FRL and CAAT ------------------------------------------------------------------
# The unit tests run 2 ranks as threads of this process (tests/thread_ranks.py: the Collective interface without
# a process group) on a linear model in float64, against the same code with the one-process Collective; the runs
# below use torchrun, gloo and DistributedDataParallel.
class _Linear(nn.Module):
    """A linear classifier of 1 x 2 x 3 images into 3 classes (inputs cast to the weights' dtype)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1).to(self.fc.weight.dtype))


def _equal(a: Any, b: Any) -> bool:
    """Bit for bit: tensors (torch.equal), dicts, lists and numbers, recursively."""
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_all_reduce_sum_list_sums_tensors_of_any_shape_and_dtype_in_rank_order():
    from advlab.distributed import all_reduce_sum_list

    def tensors(rank: int) -> list[torch.Tensor]:
        return [torch.full((2, 3), rank + 1.0), torch.tensor([rank], dtype=torch.float64), torch.tensor(2.0 * rank)]

    for out in run_ranks(2, lambda rank, c: all_reduce_sum_list(c, tensors(rank))):
        assert [t.dtype for t in out] == [torch.float32, torch.float64, torch.float32]
        assert torch.equal(out[0], torch.full((2, 3), 3.0)) and out[1].item() == 1.0 and out[2].item() == 2.0
    assert all(torch.equal(a, b) for a, b in zip(all_reduce_sum_list(Collective(), tensors(0)), tensors(0)))
    assert all_reduce_sum_list(Collective(), []) == []


def test_frl_meta_split_errors_dealt_over_2_ranks_are_those_of_one_process():
    from advlab.recipes.weighting.frl import class_errors

    torch.manual_seed(0)
    model = _Linear().double()
    images = torch.randint(0, 256, (9, 1, 2, 3), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2] * 3)

    def errors(collective: Collective, net: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # batches of 4: 4 + 4 + 1, dealt to ranks 0, 1, 0; each rank skips the others' random starts
        generator = torch.Generator().manual_seed(7)
        clean, boundary = class_errors(net, images, labels, 3, 0.3, "linf", 3, 4, torch.device("cpu"), generator,
                                       collective)
        return clean, boundary, generator.get_state()

    clean, boundary, state = errors(Collective(), model)
    assert float(clean.sum()) > 0 and float(boundary.sum()) > 0
    for rank in run_ranks(2, lambda rank, c: errors(c, copy.deepcopy(model))):
        assert torch.equal(rank[0], clean) and torch.equal(rank[1], boundary)
        assert torch.equal(rank[2], state)  # every rank's generator went through the draws of one process


def test_the_look_ahead_over_2_ranks_steps_with_the_global_batch_mean_gradient():
    from advlab.recipes.weighting.lookahead import global_mean_gradient, sgd_lookahead

    torch.manual_seed(0)
    model = _Linear().double()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.01)
    x, y = torch.rand(7, 1, 2, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()  # momentum buffers exist
    weight = torch.rand(7, dtype=torch.float64, requires_grad=True)  # per-sample weights, as the meta-net's
    probe = torch.randn(3, 6, dtype=torch.float64)

    def ahead(rows: slice, collective: Collective) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The look-ahead parameters from this rank's samples ``rows``, and the gradient w.r.t. the weights of
        a fixed function of them (what the meta-gradient flows through)."""
        params = dict(model.named_parameters())
        loss = (weight[rows] * nn.functional.cross_entropy(model(x[rows]), y[rows], reduction="none")).mean()
        grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()), create_graph=True)))
        new = sgd_lookahead(model, global_mean_gradient(grads, len(y[rows]), len(y), collective), opt)
        (meta,) = torch.autograd.grad((new["fc.weight"] * probe).sum(), [weight])
        return {name: w.detach() for name, w in new.items()}, meta

    whole, meta_whole = ahead(slice(None), Collective())
    ranks = run_ranks(2, lambda rank, c: ahead(c.shard(len(y)), c))  # shards of 4 and 3 samples
    for new, _ in ranks:  # the step of the global-batch mean gradient (what DDP's update uses), on both ranks
        for name in whole:
            assert torch.allclose(new[name], whole[name], rtol=0, atol=1e-12), name
    # the graph reaches each rank's own samples: the ranks' meta-gradients sum to one process's
    assert torch.allclose(ranks[0][1] + ranks[1][1], meta_whole, rtol=0, atol=1e-12)
    assert float(ranks[0][1][4:].abs().sum()) == 0 and float(ranks[1][1][:4].abs().sum()) == 0


def _caat_steps(collective: Collective, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """Epoch 0 (FRL's duals from the meta split) and two steps of the ``caat`` recipe, a meta step in each, on
    this rank's shard of (x, y); DDP's update emulated (gradients averaged over the ranks). What the ranks
    must agree on, after each step and at the end."""
    meta_images = torch.randint(0, 256, (9, 1, 2, 3), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.01)
    env = RecipeEnv(num_train=len(y), num_classes=3, epochs=2, eps=1e-12, norm="linf", device=torch.device("cpu"),
                    class_counts=[3, 2, 2], meta_images=meta_images, meta_labels=torch.tensor([0, 1, 2] * 3),
                    model=model, optimizer=opt, collective=collective)
    spec = {"labels": ("hard", {}), "perturbation": ("caat", {"steps": 2, "random_start": "none"}),
            "weighting": ("caat", {"temperature": 1.0, "meta_every": 1, "meta_batch_size": 9, "batch_size": 4}),
            "objective": ("caat", {})}
    recipe = create_recipe(spec, env)
    weighting = recipe.weighting
    weighting.meta_net.double()
    for _, part in recipe.parts():
        part.on_epoch_start(0)
    rows = collective.shard(len(y))
    steps = []
    for _ in range(2):
        step = compute_loss(model.train(), x[rows], y[rows], torch.arange(len(y))[rows], 0, recipe)
        steps.append({"meta_grads": [p.grad.clone() for p in weighting.meta_net.parameters()],
                      "weights": {k: v.detach().clone() for k, v in step.weights.items()}})
        opt.zero_grad()
        (step.loss * (collective.world_size * len(step.y) / len(y))).backward()
        for p in model.parameters():
            p.grad = collective.all_reduce_sum(p.grad) / collective.world_size
        opt.step()
    state = weighting.state_dict()
    return {"steps": steps, "rows": rows, "meta_net": state["meta_net"], "adam": state["meta_optimizer"],
            "frl": state["frl"], "loss_sum": state["loss_sum"], "loss_count": state["loss_count"],
            "metrics": {kind: part.epoch_metrics() for kind, part in recipe.parts()}}


def test_a_caat_meta_step_over_2_ranks_is_that_of_one_process():
    # eps 1e-12: the adv view starts at x, where the KL's gradient is zero, so its first step is the sign of
    # rounding noise, which differs with the batch's shape; this small a bound makes that noise invisible
    torch.manual_seed(3)
    model = _Linear().double()
    x, y = torch.rand(7, 1, 2, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    one = _caat_steps(Collective(), copy.deepcopy(model), x, y)
    ranks = run_ranks(2, lambda rank, c: _caat_steps(c, copy.deepcopy(model), x, y))  # shards of 4 and 3

    def close(a: torch.Tensor, b: torch.Tensor) -> bool:
        return torch.allclose(a.double(), b.double(), rtol=0, atol=1e-12)

    assert float(one["frl"]["lam0"].abs().sum()) > 0  # FRL's class weights are not uniform
    for k in range(2):
        grads = [r["steps"][k]["meta_grads"] for r in ranks]
        assert all(torch.equal(a, b) for a, b in zip(*grads))  # the same Adam step on both ranks
        assert all(close(a, b) for a, b in zip(grads[0], one["steps"][k]["meta_grads"]))  # that of one process
        assert max(float(g.abs().max()) for g in grads[0]) > 1e-5
        for name, w in one["steps"][k]["weights"].items():  # a * FRL's w0, a * w1, b: each rank its rows
            assert close(torch.cat([r["steps"][k]["weights"][name] for r in ranks]), w), (k, name)
    for key in ("meta_net", "adam", "frl", "loss_sum", "loss_count", "metrics"):
        assert _equal(ranks[0][key], ranks[1][key]), key
    assert all(close(one["meta_net"][n], ranks[0]["meta_net"][n]) for n in one["meta_net"])  # incl. batch norm
    assert close(one["loss_sum"], ranks[0]["loss_sum"]) and torch.equal(one["loss_count"], ranks[0]["loss_count"])
    assert _equal(one["frl"], ranks[0]["frl"])
    assert one["metrics"]["perturbation"] == ranks[0]["metrics"]["perturbation"]  # bounds of the global batch
    for name in ("caat_a_mean", "caat_b_mean", "caat_meta_loss"):
        assert ranks[0]["metrics"]["weighting"][name] == pytest.approx(one["metrics"]["weighting"][name], abs=1e-12)


# Epoch 1's duals come from the initial model, epoch 2's from the model trained on 2 processes; the meta split
# (60 images) is evaluated in batches of 25: 25 + 25 + 10, dealt to ranks 0, 1, 0.
META = ["data.meta_size=60", "weighting.attack_steps=2", "weighting.batch_size=25", "epochs=2"]


@pytest.mark.slow
def test_frl_on_2_processes_keeps_the_duals_and_the_steps_of_one_process(tmp_path):
    # TRADES with FRL's ReWeight; the attack on the cross-entropy (TRADES' KL has a zero gradient at its start,
    # x with random_start none, so its first step is the sign of rounding noise, which differs with the shard)
    config = ["--preset", "trades", *TINY, "weighting.name=frl", "perturbation.loss=ce", *META]
    one = _worker("fit", tmp_path / "one", config, 1)[0]
    two = _worker("fit", tmp_path / "two", config, 2)
    duals = [r["parts"]["weighting"]["frl"] for r in (one, *two)]
    assert _equal(duals[1], duals[2]) and _equal(duals[0], duals[1])  # lam0..2 and the meta errors, exactly
    assert float(duals[0]["lam1"].abs().sum()) > 0 and float(duals[0]["lam0"].abs().sum()) > 0
    frl = lambda h: [{k: v for k, v in row.items() if k.startswith("frl_")} for row in h]  # noqa: E731
    assert frl(two[0]["history"]) == frl(two[1]["history"]) == frl(one["history"])
    assert _max_diff(two[0]["model"], two[1]["model"]) == 0
    # ReWeight's class weights normalised over the global batch: the update of one process
    assert _max_diff(one["model"], two[0]["model"]) <= PARAM_ATOL


@pytest.mark.slow
def test_caat_on_2_processes_keeps_the_meta_net_identical_on_every_rank_and_close_to_one_process(tmp_path):
    # eps 1e-6: the adv view's first step is the sign of rounding noise (see above), invisible at this bound;
    # 5 steps an epoch, a meta step every 2: 2 meta steps in epoch 1, 3 in epoch 2. Temperature 1: at the code's
    # 0.001 the official meta-gradient (features attached) is carried by the few samples within about T of the
    # meta-net's decision boundary, so float32 rounding between one and two processes grows over a run (seen:
    # Adam's first moment 96-136% off one process's after 5 meta steps, against 0.3% at temperature 1); each
    # step is exact at any temperature (test_a_caat_meta_step_over_2_ranks_is_that_of_one_process, float64)
    config = ["--preset", "caat", *TINY, "eps=0.000001", *META, "weighting.meta_every=2",
              "weighting.meta_batch_size=30", "weighting.temperature=1"]
    one = _worker("fit", tmp_path / "one", config, 1)[0]
    two = _worker("fit", tmp_path / "two", config, 2)
    a, b, ref = (r["parts"]["weighting"] for r in (*two, one))
    # meta-net (parameters and batch-norm statistics), its Adam state and meta-batch generator, FRL's duals,
    # the class losses and counts: bit for bit on both ranks, and so the logged numbers
    assert _equal(a, b)
    untimed = lambda h: [{k: v for k, v in row.items() if k not in TIMING} for row in h]  # noqa: E731
    assert untimed(two[0]["history"]) == untimed(two[1]["history"])
    assert [row["caat_meta_steps"] for row in two[0]["history"]] == [2, 3] == [
        row["caat_meta_steps"] for row in one["history"]]
    assert _max_diff(two[0]["model"], two[1]["model"]) == 0
    # and that of one process, up to the floating-point order of sums carried through second derivatives:
    assert _equal(a["frl"], ref["frl"]) and a["steps_done"] == ref["steps_done"] == 10
    assert torch.equal(a["loss_count"], ref["loss_count"])  # every sample counted once, by its class
    # Adam moves each parameter by about its lr (1e-4) per meta step whatever the gradient's size: its first
    # moment, the running mean of the meta-gradient, is the sharp measure (seen: within 0.33% of its largest
    # entry; with the look-ahead on the local gradient, detached features: 2.6% to 95% per tensor)
    state = ref["meta_optimizer"]["state"]
    mean = torch.cat([a["meta_optimizer"]["state"][i]["exp_avg"].flatten() for i in state])
    mean_ref = torch.cat([state[i]["exp_avg"].flatten() for i in state])
    assert (mean - mean_ref).abs().max() <= 0.02 * mean_ref.abs().max()
    assert _max_diff(a["meta_net"], ref["meta_net"]) <= 1e-4  # seen: 8e-6
    assert _max_diff(one["model"], two[0]["model"]) <= 1e-4  # seen: 1.4e-5


# -- evaluation ----------------------------------------------------------------------------------------------
def _untimed(checks: list[dict]) -> list[dict]:
    return [{**c, "details": {k: v for k, v in c.get("details", {}).items() if k != "seconds"}} for c in checks]


@pytest.mark.slow
def test_evaluation_over_2_ranks_of_21_points_equals_one_process_exactly(tmp_path):
    from advlab.models import create_model

    torch.manual_seed(5)
    torch.save(create_model("small-cnn", num_classes=10, in_channels=1).state_dict(), tmp_path / "model.pt")
    one = _worker("eval", tmp_path / "one", [], 1)[0]
    two = _worker("eval", tmp_path / "two", [], 2)
    for rank in two:
        assert torch.equal(rank["clean"], one["clean"]) and len(one["clean"]) == 21
        assert rank["attacks"].keys() == one["attacks"].keys()
        for name in one["attacks"]:
            assert torch.equal(rank["attacks"][name], one["attacks"][name]), name
        assert _untimed(rank["sanity"]) == _untimed(one["sanity"])
        assert rank["worst"] == one["worst"]
    # each rank attacked only its batches (round-robin), each point from the random start of one process
    assert sorted(two[0]["starts"]) != sorted(two[1]["starts"])
    assert sorted([*two[0]["starts"], *two[1]["starts"]]) == sorted(one["starts"]) and len(one["starts"]) == 21
    for rank in two:
        for key, start in rank["starts"].items():
            assert torch.equal(start, one["starts"][key]), key


# -- errors --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_failing_rank_ends_the_job_with_its_message_not_a_hang(tmp_path):
    start = time.perf_counter()
    done = _launch([str(WORKER), "fail", str(tmp_path), "--preset", "pgd-at", *TINY, "epochs=2"], 2, timeout=90)
    assert done.returncode != 0
    assert "advlab train: error (rank 1 of 2): planted failure on rank 1" in done.stderr
    assert time.perf_counter() - start < 60


@pytest.mark.slow
def test_a_rank_that_stops_answering_ends_the_job_after_the_collective_timeout(tmp_path):
    start = time.perf_counter()
    done = _launch([str(WORKER), "hang", str(tmp_path), "--preset", "pgd-at", *TINY, "epochs=2",
                    "distributed.timeout_s=10"], 2, timeout=120)
    assert done.returncode != 0
    assert time.perf_counter() - start < 60  # rank 0's collective gave up after 10 s; torchrun stopped rank 1


# -- benchmark -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_overhead_benchmark_smoke(tmp_path):
    done = _run_group([sys.executable, str(HERE.parent / "benchmarks" / "distributed_overhead.py"), "--smoke",
                       "--out", str(tmp_path)], _env(), 120)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "distributed_overhead.json").read_text())
    assert [(r["processes"], r["threads"]) for r in report["results"]] == [(1, 2), (2, 1)]
    assert all(r["images_per_second"] > 0 and r["epochs"] == 2 for r in report["results"])
    lines = (tmp_path / "distributed_overhead.md").read_text().splitlines()
    assert len(lines) == 4 and lines[2].startswith("| 1x2-threads | 1 x 2 |") and lines[3].startswith("| 2x1-thread |")
