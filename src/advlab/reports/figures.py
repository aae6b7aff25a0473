"""The report's figures, drawn with matplotlib (Agg, no display) and returned as PNG bytes.

Accuracies come in as fractions in [0, 1] and are drawn in %. Every function takes plain data (metrics rows,
summary entries) and never reads the disk.
"""
from __future__ import annotations

import io
import math
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

DPI = 80


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _number(value: Any) -> float:
    """A metrics value as a float for plotting: bools as 0/1, None and non-numbers as NaN."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return math.nan


def _column(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of ``key`` over the rows that have it as a number."""
    xs, ys = [], []
    for i, row in enumerate(rows):
        y = _number(row.get(key))
        if not math.isnan(y):
            xs.append(_number(row.get("epoch", i + 1)))
            ys.append(y)
    return xs, ys


def training_curves(rows: Sequence[dict[str, Any]], best_epoch: int | None) -> bytes:
    """Three panels over epochs: training loss; training, validation clean and validation robust accuracy
    (%) with ``best_epoch`` marked; the learning rate at the end of each epoch."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    loss_ax, acc_ax, lr_ax = axes
    xs, ys = _column(rows, "train_loss")
    loss_ax.plot(xs, ys, marker="o", color="tab:gray")
    loss_ax.set(title="training loss", xlabel="epoch")
    for key, label, color in (("train_acc", "train", "tab:gray"), ("val_clean", "val clean", "tab:blue"),
                              ("val_robust", "val robust", "tab:red")):
        xs, ys = _column(rows, key)
        if xs:
            acc_ax.plot(xs, [100 * y for y in ys], marker="o", label=label, color=color)
    if best_epoch is not None and best_epoch > 0:
        acc_ax.axvline(best_epoch, color="tab:green", linestyle="--", label=f"best (epoch {best_epoch})")
        best_rows = [r for r in rows if r.get("epoch") == best_epoch]
        if best_rows and isinstance(best_rows[0].get("val_robust"), (int, float)):
            acc_ax.plot([best_epoch], [100 * best_rows[0]["val_robust"]], marker="*", markersize=14,
                        color="tab:green")
    acc_ax.set(title="accuracy (%)", xlabel="epoch")
    acc_ax.legend(fontsize=7)
    xs, ys = _column(rows, "lr")
    lr_ax.plot(xs, ys, marker="o", color="tab:purple")
    lr_ax.set(title="learning rate", xlabel="epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return _png(fig)


def part_diagnostics(prefix: str, rows: Sequence[dict[str, Any]], scalars: Sequence[str],
                     lists: Sequence[str]) -> bytes:
    """One part's own metrics over epochs: each scalar column (numbers, bools as 0/1) as a line, each list
    column (e.g. a histogram per epoch) as an image, epochs down and list positions across."""
    panels = len(lists) + (1 if scalars else 0)
    fig, axes = plt.subplots(1, max(panels, 1), figsize=(4.5 * max(panels, 1), 3.2), squeeze=False)
    axes = list(axes[0])
    if scalars:
        ax = axes.pop(0)
        for key in scalars:
            xs, ys = _column(rows, key)
            if xs:
                ax.plot(xs, ys, marker="o", label=key)
        ax.set(title=f"{prefix} metrics", xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for key, ax in zip(lists, axes):
        epochs, grid = [], []
        for i, row in enumerate(rows):
            value = row.get(key)
            if isinstance(value, list) and value:
                epochs.append(row.get("epoch", i + 1))
                grid.append([_number(v) for v in value])
        width = max((len(r) for r in grid), default=1)
        grid = [r + [math.nan] * (width - len(r)) for r in grid] or [[math.nan]]
        image = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest",
                          extent=(-0.5, width - 0.5, (epochs[-1] if epochs else 1) + 0.5,
                                  (epochs[0] if epochs else 1) - 0.5))
        fig.colorbar(image, ax=ax)
        ax.set(title=key, xlabel="position in the list (e.g. histogram bin)", ylabel="epoch")
    fig.tight_layout()
    return _png(fig)


def per_class_accuracy(entries: dict[str, dict[str, Any]]) -> bytes:
    """Per-class clean and robust accuracy (%) of each evaluated checkpoint (``{"best": entry, "last": entry}``
    with summary entries holding ``clean.per_class`` and ``robust.per_class``); the worst robust class of each
    checkpoint is outlined in black."""
    names = list(entries)
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 3.2), squeeze=False)
    for ax, which in zip(axes[0], names):
        entry = entries[which]
        clean = entry.get("clean", {}).get("per_class", {})
        robust = entry.get("robust", {}).get("per_class", {})
        classes = sorted(set(clean) | set(robust), key=int)
        xs = range(len(classes))
        ax.bar([x - 0.2 for x in xs], [100 * clean.get(c, math.nan) for c in classes], width=0.4,
               label="clean", color="tab:blue")
        bars = ax.bar([x + 0.2 for x in xs], [100 * robust.get(c, math.nan) for c in classes], width=0.4,
                      label="robust", color="tab:red")
        worst = (entry.get("robust", {}).get("worst_class") or {}).get("class")
        if worst is not None and str(worst) in classes:
            bar = bars[classes.index(str(worst))]
            ax.bar([bar.get_x() + bar.get_width() / 2], [bar.get_height()], width=bar.get_width(), fill=False,
                   edgecolor="black", linewidth=2)
            ax.annotate("worst", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                        va="bottom", fontsize=8)
        ax.set_xticks(list(xs), classes)
        ax.set(title=f"{which} (epoch {entry.get('epoch', '?')})", xlabel="class", ylabel="accuracy (%)",
               ylim=(0, 105))
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return _png(fig)


def validation_curves(groups: dict[str, list[Sequence[dict[str, Any]]]]) -> bytes:
    """Validation clean and robust accuracy (%) over epochs, one colour per group: the mean over the group's
    runs as a line, the range (min to max) over its runs as a band."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, runs) in enumerate(groups.items()):
        color = colors[i % len(colors)]
        for ax, key in zip(axes, ("val_clean", "val_robust")):
            by_epoch: dict[float, list[float]] = {}
            for rows in runs:
                for x, y in zip(*_column(rows, key)):
                    by_epoch.setdefault(x, []).append(100 * y)
            if not by_epoch:
                continue
            xs = sorted(by_epoch)
            ax.plot(xs, [sum(by_epoch[x]) / len(by_epoch[x]) for x in xs], marker="o", color=color,
                    label=f"{name} ({len(runs)} run{'s' if len(runs) != 1 else ''})")
            if len(runs) > 1:
                ax.fill_between(xs, [min(by_epoch[x]) for x in xs], [max(by_epoch[x]) for x in xs], color=color,
                                alpha=0.2)
    for ax, title in zip(axes, ("validation clean (%)", "validation robust (%)")):
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)
