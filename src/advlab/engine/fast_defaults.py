"""``precision: auto`` and ``channels_last: auto``: the fastest settings measured to keep fp32's robustness.

A setting is taken only where a measurement says it trains models as robust as fp32 (2 seeds, the difference of
the validation means no larger than the sum of the two standard deviations, the rule of ``advlab compare``);
elsewhere ``auto`` is fp32. Each entry of :data:`MEASURED` names its measurement. The choice and its reason are
written in the run: ``config.yaml`` holds the chosen values (so a resumed run keeps them on any machine), the
start line and ``summary.json`` (``fast_defaults``) the reason.

- channels-last changes the memory format, not the arithmetic (fp32 stays fp32): it is taken wherever it was
  measured faster (small-cnn 1.22-1.48x, preact-resnet18 1.12x on 2 CPU cores; benchmarks/README.md), for
  models with 4-D inputs.
- bf16 changes the arithmetic: on a CPU it is taken where the CPU has bf16 kernels (oneDNN's, AVX512-BF16 or
  AMX) and :data:`MEASURED` holds a parity measurement for CPUs; on CUDA where it holds one for CUDA.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..config import TrainConfig

AUTO = "auto"


@dataclass(frozen=True)
class Measured:
    """What ``auto`` takes on one device type: ``precision`` and whether ``channels_last``, with ``evidence``
    (the benchmark and its figures) for the precision; ``precision`` fp32 where bf16 was not measured to keep
    fp32's robustness."""

    precision: str
    channels_last: bool
    evidence: str


MEASURED: dict[str, Measured] = {
    # the demo's regime, 2 seeds: validation AutoAttack accuracy 72.0 +- 0.5 in fp32, 71.1 +- 0.2 in bf16 (a
    # difference above the spread): bf16 is not taken on CPUs
    "cpu": Measured("fp32", True, "bf16 measured 0.9 points less robust than fp32 on validation (2 seeds, "
                    "benchmarks/PRECISION.md)"),
    "cuda": Measured("fp32", True, "no parity measurement of bf16 against fp32 on CUDA yet"),
}
"""By device type (``torch.device.type``); a device type not here takes fp32 without channels-last."""


def cpu_has_bf16_kernels() -> bool:
    """Whether this CPU has fast bf16 kernels (oneDNN's check: AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_fast_defaults(config: TrainConfig, device: torch.device) -> tuple[TrainConfig, str | None]:
    """``config`` with ``precision: auto`` and ``channels_last: auto`` replaced by what :data:`MEASURED` says for
    ``device``, and the reason (None when neither is ``auto``). Other values are kept as given."""
    wants_precision, wants_layout = config.precision == AUTO, config.channels_last == AUTO
    if not (wants_precision or wants_layout):
        return config, None
    entry = MEASURED.get(device.type, Measured("fp32", False, f"nothing measured on {device.type}"))
    precision, reasons = config.precision, []
    if wants_precision:
        precision = entry.precision
        if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16_kernels():
            precision = "fp32"
            reasons.append("precision fp32: this CPU has no bf16 kernels (AVX512-BF16 or AMX)")
        else:
            reasons.append(f"precision {precision}: {entry.evidence}")
    channels_last = config.channels_last
    if wants_layout:
        channels_last = entry.channels_last
        reasons.append(f"channels_last {str(channels_last).lower()}: "
                       + ("measured faster, the same fp32 arithmetic (benchmarks/README.md)" if channels_last
                          else f"not measured on {device.type}"))
    chosen = dataclasses.replace(config, precision=precision, channels_last=channels_last)
    return chosen, f"auto on {device.type}: " + "; ".join(reasons)
