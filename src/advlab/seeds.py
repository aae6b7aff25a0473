"""Seeds of independent random streams, mixed from (seed, epoch, stream): the same inputs give the same seed.

Every random stream that must be the same after a restart (the loader's order and augmentation, the
self-supervised views, each rank's stream under torchrun) draws from a generator seeded here with numbers
it knows after a resume, never from a state carried over from an earlier epoch.
"""
from __future__ import annotations

_MASK64 = (1 << 64) - 1


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """A 63-bit seed mixed from (seed, epoch, stream) with splitmix64 steps; same inputs, same seed."""
    z = 0
    for part in (seed, epoch, stream):
        z = (z + (part & _MASK64) + 0x9E3779B97F4A7C15) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        z ^= z >> 31
    return z >> 1
