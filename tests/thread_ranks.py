"""Several ranks in one process, as threads, for unit tests of code that talks through a Collective.

:func:`run_ranks` runs ``fn(rank, collective)`` in ``world_size`` threads, each with a
:class:`ThreadCollective` whose collectives exchange tensors with the other threads (sums in rank order, as
the result is the same on every rank). No process group, no port: a test of what a part computes over
several ranks costs milliseconds. Processes and gloo are tested end to end in ``tests/test_distributed.py``.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

import torch

from advlab.distributed import Collective

TIMEOUT_S = 60.0  # a rank that never reaches a collective breaks the others' wait instead of hanging the test


class ThreadGroup:
    """What the threads of one run share: a barrier and one slot per rank."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.barrier = threading.Barrier(world_size, timeout=TIMEOUT_S)
        self.slots: list[Any] = [None] * world_size

    def exchange(self, rank: int, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order (a collective: every rank must call it)."""
        self.barrier.wait()
        self.slots[rank] = value
        self.barrier.wait()
        out = list(self.slots)
        self.barrier.wait()
        return out


class ThreadCollective(Collective):
    """Rank ``rank`` of a :class:`ThreadGroup`: the interface of :class:`advlab.distributed.Collective`."""

    def __init__(self, group: ThreadGroup, rank: int) -> None:
        self.group = group
        self.rank = rank
        self.world_size = group.world_size

    def all_gather_cat(self, tensor: torch.Tensor) -> torch.Tensor:
        parts = self.group.exchange(self.rank, tensor.detach().clone())
        return torch.cat([p.to(tensor.device, tensor.dtype) for p in parts])

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        parts = self.group.exchange(self.rank, tensor.detach().clone())
        total = parts[0].clone()
        for part in parts[1:]:
            total += part
        return total.to(tensor.device)

    def all_gather_object(self, obj: Any) -> list[Any]:
        return self.group.exchange(self.rank, obj)

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        return self.group.exchange(self.rank, obj)[src]

    def barrier(self) -> None:
        self.group.exchange(self.rank, None)


def run_ranks(world_size: int, fn: Callable[[int, Collective], Any]) -> list[Any]:
    """``fn(rank, collective)`` on ``world_size`` threads; their results in rank order. The first exception of
    any rank is raised (the others' waits are broken, not left hanging)."""
    group = ThreadGroup(world_size)
    results: list[Any] = [None] * world_size
    errors: list[BaseException] = []

    def target(rank: int) -> None:
        try:
            results[rank] = fn(rank, ThreadCollective(group, rank))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            errors.append(exc)
            group.barrier.abort()

    threads = [threading.Thread(target=target, args=(r,)) for r in range(world_size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)), errors[0])
    return results
