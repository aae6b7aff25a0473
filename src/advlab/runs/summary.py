"""``summary.json`` as text: the final evaluation of a run's checkpoints, with what its training split was."""
from __future__ import annotations

from typing import Any

from .checkpoint import CHECKPOINT_NAMES


def summary_table(summary: dict[str, Any]) -> str:
    """A plain-text table of the final evaluation of best and last (``summary.json``'s ``tables``), after a line
    on the training split when it was not the plain one (imbalance, label noise, a meta split)."""
    lines = []
    record = summary.get("data") or {}
    if record.get("imbalance") or record.get("label_noise") or record.get("meta_size"):
        lines.append(f"training split: {record.get('size')} images, per class {record.get('class_counts')}"
                     + (f"; meta split {record['meta_size']} images" if record.get("meta_size") else ""))
    noise = record.get("label_noise")
    if noise:
        per_class = ", ".join(f"{r:.3f}" for r in noise["realised_rate_per_class"])
        lines.append(f"label noise: {noise['kind']}, realised rate {noise['realised_rate']:.4f} (per class {per_class})")
    for which in CHECKPOINT_NAMES:
        if which not in summary:
            continue
        lines.append(f"== {which} checkpoint (epoch {summary[which]['epoch']}) ==")
        lines.append(summary["tables"][which])
    return "\n".join(lines)
