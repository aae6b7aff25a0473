"""Several processes training one model (torchrun, DistributedDataParallel): who is who, and the collectives.

A run started by ``torchrun`` (the environment holds ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``) with
``WORLD_SIZE > 1`` trains one model over all processes; without it nothing changes. This module is the one
place that knows about process groups; everything else asks a :class:`Collective`:

- :class:`Collective`: one process; every collective is the identity (the default everywhere);
- :class:`GroupCollective`: the processes of ``torch.distributed``'s default group.

The shard rule (:func:`shard_bounds`) splits ``n`` items into ``world_size`` contiguous pieces whose sizes
differ by at most one, the first ``n % world_size`` pieces one larger (``torch.tensor_split``'s rule): nothing
is dropped or repeated. A global batch of 25 over 2 processes is 13 + 12.

It sits at the bottom of the layers (torch and ``advlab.errors`` only), so data, recipes, evaluation and the
engine may all use it.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

from .errors import ConfigError

ENV_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """``(start, stop)`` of ``rank``'s contiguous piece of ``n`` items split over ``world_size`` processes.

    Sizes differ by at most one; ranks below ``n % world_size`` get the larger size; the pieces cover
    ``0..n-1`` exactly once, in rank order. ValueError for a rank outside ``0..world_size-1``.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
    base, extra = divmod(int(n), int(world_size))
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


@dataclass(frozen=True)
class Launch:
    """What the launcher (torchrun) says about this process: ``rank`` of ``world_size``, ``local_rank`` on
    its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launch_from_env(environ: dict[str, str] | None = None) -> Launch:
    """The launch described by torchrun's environment variables; one process when they are absent.

    ConfigError (naming the variable) for values that are not integers or out of range.
    """
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return Launch()
    values = {}
    for name in ENV_VARS:
        raw = env.get(name, "0")
        try:
            values[name] = int(raw)
        except ValueError:
            raise ConfigError(f"environment variable {name}: expected an integer, got {raw!r}") from None
    world, rank, local = values["WORLD_SIZE"], values["RANK"], values["LOCAL_RANK"]
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ConfigError(f"environment: RANK {rank}, LOCAL_RANK {local} and WORLD_SIZE {world} do not fit "
                          "(0 <= RANK < WORLD_SIZE)")
    return Launch(rank=rank, world_size=world, local_rank=local)


def rank_note(environ: dict[str, str] | None = None) -> str:
    """`` (rank R of W)`` for a torchrun worker of several, else empty: what the CLI adds to an error."""
    env = os.environ if environ is None else environ
    world = env.get("WORLD_SIZE", "1")
    if world in ("", "1", "0"):
        return ""
    return f" (rank {env.get('RANK', '?')} of {world})"


def is_main_process() -> bool:
    """True unless this process is a torchrun worker of rank > 0 (for printing in the CLI)."""
    return os.environ.get("RANK", "0") in ("", "0")


# -- backends: name -> (check of the device, description) --------------------------------------------------
def _needs_cuda(device: torch.device) -> str | None:
    return None if device.type == "cuda" else f"nccl needs CUDA devices; this run trains on {device.type}"


def _any_device(device: torch.device) -> str | None:
    return None


BACKENDS: dict[str, Callable[[torch.device], str | None]] = {"nccl": _needs_cuda, "gloo": _any_device}
"""Process-group backends by name, each with the check of the training device (a reason it cannot, or None)."""


def pick_backend(name: str, device: torch.device) -> str:
    """``auto`` is nccl on CUDA and gloo elsewhere; a named backend must suit ``device``.

    ConfigError naming ``distributed.backend`` otherwise (e.g. nccl on a CPU run).
    """
    if name == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if name not in BACKENDS:
        raise ConfigError(f"distributed.backend: unknown backend {name!r}; allowed: auto, {', '.join(BACKENDS)}")
    reason = BACKENDS[name](device)
    if reason:
        raise ConfigError(f"distributed.backend: {reason}; use gloo or auto")
    return name


def process_device(device: torch.device, launch: Launch) -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` for a CUDA run under torchrun, else ``device``.

    ConfigError when LOCAL_RANK names no visible GPU.
    """
    if not launch.distributed or device.type != "cuda":
        return device
    if launch.local_rank >= torch.cuda.device_count():
        raise ConfigError(f"device: LOCAL_RANK {launch.local_rank} but only {torch.cuda.device_count()} GPUs "
                          "are visible; start at most that many processes per machine (--nproc_per_node)")
    return torch.device("cuda", launch.local_rank)


# -- collectives ---------------------------------------------------------------------------------------------
class Collective:
    """One process: rank 0 of 1, every collective returns its input. The interface of :class:`GroupCollective`."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this process is rank 0, the one that writes the run directory and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, n: int) -> slice:
        """This rank's contiguous piece of ``n`` items (:func:`shard_bounds`)."""
        start, stop = shard_bounds(n, self.rank, self.world_size)
        return slice(start, stop)

    def all_gather_cat(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's ``tensor`` (sizes along dim 0 may differ, other dims must agree) concatenated along
        dim 0 in rank order; the same result on every rank."""
        return tensor

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The elementwise sum of every rank's ``tensor`` (a new tensor; the input is not changed)."""
        return tensor.clone()

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's picklable ``obj``, in rank order."""
        return [obj]

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s picklable ``obj`` on every rank."""
        return obj

    def barrier(self) -> None:
        """Wait until every rank is here."""

    def close(self, wait: bool = True) -> None:
        """Tear down the process group if this object started it; ``wait``: after every rank got here (the
        normal end: no rank tears down while another still talks to it); False on the way out of an error."""

    def __enter__(self) -> "Collective":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        """``with collective:`` closes it at the end: after every rank got there, or at once on an error."""
        self.close(wait=exc_type is None)
        return False


class GroupCollective(Collective):
    """The processes of ``torch.distributed``'s default group (initialised by :func:`start`).

    Tensors travel on ``device`` (the GPU for nccl, the CPU for gloo) and come back on the caller's device.
    """

    def __init__(self, device: torch.device, owns_group: bool) -> None:
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.device = device
        self.owns_group = owns_group

    def all_gather_cat(self, tensor: torch.Tensor) -> torch.Tensor:
        sizes = torch.tensor([tensor.shape[0]], device=self.device, dtype=torch.long)
        all_sizes = [torch.zeros_like(sizes) for _ in range(self.world_size)]
        dist.all_gather(all_sizes, sizes)
        counts = [int(s.item()) for s in all_sizes]
        width = max(counts)
        local = tensor.detach().to(self.device)
        if local.dtype == torch.bool:  # not every backend gathers bool
            local = local.to(torch.uint8)
        padded = local.new_zeros((width, *local.shape[1:]))
        padded[: local.shape[0]] = local
        pieces = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(pieces, padded.contiguous())
        out = torch.cat([p[:c] for p, c in zip(pieces, counts)])
        return out.to(tensor.device, tensor.dtype)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.detach().to(self.device, copy=True)
        dist.all_reduce(out)
        return out.to(tensor.device)

    def all_gather_object(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        box = [obj if self.rank == src else None]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def barrier(self) -> None:
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index or 0])
        else:
            dist.barrier()

    def close(self, wait: bool = True) -> None:
        if self.owns_group and dist.is_initialized():
            if wait:
                self.barrier()
            dist.destroy_process_group()
            self.owns_group = False


def start(launch: Launch, device: torch.device, backend: str = "auto", timeout_s: float = 600.0) -> Collective:
    """The collective of this process: :class:`Collective` for one process, else the default group, which it
    initialises (``env://``, torchrun's rendezvous) unless the caller already did.

    ``timeout_s``: how long a collective waits for the other ranks before it fails (so a rank that died in
    a way the launcher did not notice ends the job instead of hanging it). ConfigError for a backend that
    does not suit ``device``.
    """
    if not launch.distributed:
        return Collective()
    name = pick_backend(backend, device)
    owns = not dist.is_initialized()
    if owns:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(name, timeout=datetime.timedelta(seconds=float(timeout_s)),
                                **({"device_id": device} if device.type == "cuda" else {}))
    if dist.get_world_size() != launch.world_size or dist.get_rank() != launch.rank:
        raise ConfigError(f"the process group has rank {dist.get_rank()} of {dist.get_world_size()}, the "
                          f"environment says {launch.rank} of {launch.world_size}")
    return GroupCollective(device, owns)


def sync_rows(collective: Collective, index: torch.Tensor, tensors: dict[str, torch.Tensor]) -> None:
    """Make per-sample state identical on every rank after a step: each rank's rows ``index`` (its own shard
    of the global batch, disjoint from the others') of every tensor (rows = dataset index, dim 0) are
    gathered and written on every rank. Tensors are changed in place; a no-op for one process."""
    if not collective.distributed or not tensors:
        return
    all_index = collective.all_gather_cat(index.to(torch.long))
    for tensor in tensors.values():
        rows = collective.all_gather_cat(tensor[index.to(tensor.device, torch.long)])
        tensor[all_index.to(tensor.device)] = rows.to(tensor.dtype)


def all_reduce_sum_list(collective: Collective, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The elementwise sums over the ranks of several tensors, in ONE collective: each (any shape; dtypes may
    differ) is flattened into one buffer of their common dtype, summed, and cut back to its shape and dtype.

    Returns new tensors without graph, on each input's device; every rank must pass tensors of the same
    shapes in the same order. The identity (copies) for one process; an empty list gives an empty list.
    """
    if not tensors:
        return []
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    flat = torch.cat([t.detach().reshape(-1).to(tensors[0].device, dtype) for t in tensors])
    total = collective.all_reduce_sum(flat)
    out, offset = [], 0
    for t in tensors:
        n = t.numel()
        out.append(total[offset:offset + n].reshape(t.shape).to(t.device, t.dtype))
        offset += n
    return out
