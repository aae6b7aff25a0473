"""The result of an evaluation: per-sample flags, accuracies (fractions in [0, 1]), JSON and a text table."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..attacks.box import BOX_TOLERANCE
from .fairness import ERRORS, class_errors


@dataclass
class AttackOutcome:
    """One attack over the whole evaluation set: which points it left correctly classified, and how."""

    name: str
    correct: torch.Tensor  # bool (n,), on the CPU
    seconds: float
    max_perturbation: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def acc(self) -> float:
        return accuracy(self.correct)


def accuracy(correct: torch.Tensor) -> float:
    """Fraction of True flags (0.0 for no points)."""
    return float(correct.float().mean()) if len(correct) else 0.0


def standard_error(acc: float, n: int) -> float:
    """Binomial standard error of an accuracy measured on ``n`` points."""
    return math.sqrt(max(acc * (1 - acc), 0.0) / max(n, 1))


def per_class(correct: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy per class present in ``labels``, keyed by the class index as a string (JSON keys)."""
    out = {}
    for c in torch.unique(labels).tolist():
        out[str(c)] = accuracy(correct[labels == c])
    return out


def worst_class(correct: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """The class with the lowest accuracy: ``{"class", "acc", "n"}`` (ties: the smallest index)."""
    classes = per_class(correct, labels)
    if not classes:
        return {"class": None, "acc": None, "n": 0}
    c = min(classes, key=lambda k: (classes[k], int(k)))
    return {"class": int(c), "acc": classes[c], "n": int((labels == int(c)).sum())}


@dataclass
class EvalResult:
    """Everything an evaluation found. Accuracies are fractions in [0, 1].

    ``robust`` is the per-sample AND of ``clean`` and every attack run: a point is robust only if it is
    classified correctly clean and under each attack.
    """

    eps: float
    norm: str
    labels: torch.Tensor
    clean: AttackOutcome
    attacks: dict[str, AttackOutcome]
    num_classes: int
    seed: int = 0
    sanity: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    clamped: int = 0  # image values a rounding error outside [0, 1], clamped before the evaluation (attacks.box)
    clamp_tolerance: float = BOX_TOLERANCE  # how far outside a value could be and still be clamped
    model_checks: list[dict[str, Any]] = field(default_factory=list)  # advlab.evaluation.model_checks, when run

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def robust_correct(self) -> torch.Tensor:
        """Per-sample AND of clean and every attack (bool, n)."""
        flags = self.clean.correct.clone()
        for outcome in self.attacks.values():
            flags &= outcome.correct
        return flags

    def accuracy(self, name: str = "robust") -> float:
        """Accuracy (fraction) under ``name``: ``clean``, ``robust`` or an attack name."""
        if name == "robust":
            return accuracy(self.robust_correct)
        if name == "clean":
            return self.clean.acc
        return self.attacks[name].acc

    def defence_success_rate(self) -> dict[str, float | None]:
        """The defence success rate (DSR) of Chen et al. 2020: among the points classified correctly clean, the
        fraction still classified correctly under the attack, = robust accuracy (correct clean AND under the
        attack) / clean accuracy. ``{<attack>: fraction, ..., "robust": fraction}`` (``robust``: under every
        attack, the per-sample AND); None for every entry when no point is correct clean.

        The official ``test.py`` computes it on the first 100 correctly classified test images; this is over
        every correctly classified point of the evaluated set.
        """
        clean = self.clean.correct
        n = int(clean.sum())

        def rate(flags: torch.Tensor) -> float | None:
            return int((clean & flags).sum()) / n if n else None

        out = {name: rate(o.correct) for name, o in self.attacks.items()}
        out["robust"] = rate(self.robust_correct)
        return out

    def fairness(self) -> dict[str, dict[str, Any]]:
        """Class-wise natural, boundary and robust error (FRL's definitions, ``advlab.evaluation.fairness``).

        Returns ``{<attack>: {"over": ["clean", <attack>], "natural": s, "boundary": s, "robust": s}}`` for each
        attack in order, then ``"robust"`` for the per-sample AND of clean and every attack (``over`` as in
        ``to_dict()["robust"]``); ``s`` is ``{"average", "worst", "worst_class", "overall", "per_class"}``,
        errors as fractions in [0, 1], ``average`` the mean over the classes present.
        """
        out: dict[str, dict[str, Any]] = {}
        for name, o in self.attacks.items():
            out[name] = {"over": ["clean", name], **class_errors(self.clean.correct, o.correct, self.labels)}
        out["robust"] = {"over": ["clean", *self.attacks],
                         **class_errors(self.clean.correct, self.robust_correct, self.labels)}
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready report (see the module docs of ``advlab.evaluation`` for the schema)."""
        robust = self.robust_correct
        attacks = {}
        for name, o in self.attacks.items():
            attacks[name] = {"acc": o.acc, "per_class": per_class(o.correct, self.labels),
                             "max_perturbation": o.max_perturbation, "seconds": o.seconds, **o.settings}
        per_sample = {"clean": _bits(self.clean.correct)}
        per_sample.update({name: _bits(o.correct) for name, o in self.attacks.items()})
        per_sample["robust"] = _bits(robust)
        out = {
            "n": self.n, "eps": self.eps, "norm": self.norm, "num_classes": self.num_classes, "seed": self.seed,
            "accuracy_unit": "fraction",
            "clean": {"acc": self.clean.acc, "per_class": per_class(self.clean.correct, self.labels),
                      "seconds": self.clean.seconds},
            "attacks": attacks,
            "robust": {"acc": accuracy(robust), "per_class": per_class(robust, self.labels),
                       "worst_class": worst_class(robust, self.labels), "over": ["clean", *self.attacks]},
            "defence_success_rate": self.defence_success_rate(),
            "fairness": self.fairness(),
            "sanity": self.sanity,
            "per_sample": per_sample,
            "version": dict(self.versions),
            "seconds": self.seconds,
            "inputs": {"clamped": self.clamped, "tolerance": self.clamp_tolerance},
        }
        if self.model_checks:
            out["model_checks"] = self.model_checks
        if self.meta:
            out["meta"] = self.meta
        return out

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def table(self) -> str:
        """A plain-text table: one row per attack plus the per-sample AND, then the sanity checks."""
        eps_255 = f" = {self.eps * 255:.4g}/255" if self.norm == "linf" else ""
        lines = [f"{self.n} points, eps {self.eps:.6g}{eps_255}, norm {self.norm}; accuracy in % of the points"]
        if self.clamped:
            lines.append(f"{self.clamped} input values a rounding error outside [0, 1] (by at most "
                         f"{self.clamp_tolerance:.2g}) were clamped to it")
        header = f"{'attack':<14} {'acc %':>7} {'correct':>11} {'worst class':>16}  settings"
        lines += [header, "-" * len(header)]

        def row(name: str, correct: torch.Tensor, settings: str) -> str:
            worst = worst_class(correct, self.labels)
            w = f"{worst['class']} ({100 * worst['acc']:.1f}%)" if worst["class"] is not None else "-"
            count = f"{int(correct.sum())}/{len(correct)}"
            return f"{name:<14} {100 * accuracy(correct):>7.2f} {count:>11} {w:>16}  {settings}".rstrip()

        lines.append(row("clean", self.clean.correct, ""))
        for name, o in self.attacks.items():
            lines.append(row(name, o.correct, _describe(o)))
        lines.append(row("robust (AND)", self.robust_correct, "correct clean and under every attack above"))
        lines.append(self.dsr_line())
        lines += ["", *self.fairness_table()]
        if self.model_checks:
            lines.append("")
            lines.append("model checks (before attacking):")
            for check in self.model_checks:
                lines.append(f"  {check['name']:<16} {check['status']:<8} {check.get('message', '')}".rstrip())
        if self.sanity:
            lines.append("")
            lines.append("sanity checks:")
            for check in self.sanity:
                lines.append(f"  {check['name']:<16} {check['status']:<8} {check.get('message', '')}".rstrip())
        return "\n".join(lines)

    def dsr_line(self) -> str:
        """The defence success rates in one line of :meth:`table` (in % of the points correct clean)."""
        n = int(self.clean.correct.sum())
        dsr = self.defence_success_rate()
        if not n:
            return "defence success rate: - (no point is correct clean)"
        cells = ", ".join(f"{'robust (AND)' if k == 'robust' else k} {100 * v:.2f}" for k, v in dsr.items())
        return f"defence success rate, % of the {n} points correct clean still correct under attack: {cells}"

    def fairness_table(self) -> list[str]:
        """Lines of the fairness block of :meth:`table`: average / worst-class error in % (worst class)."""
        fair = self.fairness()
        k = len(fair["robust"]["natural"]["per_class"])
        lines = [f"class-wise error in %, FRL's definitions: average over the {k} classes / worst class (its index)",
                 "boundary = correct clean, wrong under attack; robust = natural + boundary"]
        header = f"{'attack':<14} " + " ".join(f"{kind:>22}" for kind in ERRORS)
        lines += [header, "-" * len(header)]
        for name, entry in fair.items():
            label = "robust (AND)" if name == "robust" else name
            lines.append(f"{label:<14} " + " ".join(f"{_cell(entry[kind]):>22}" for kind in ERRORS))
        return lines


def _cell(summary: dict[str, Any]) -> str:
    """``average / worst (class)`` in %, or ``-`` without points."""
    if summary["worst_class"] is None:
        return "-"
    return f"{100 * summary['average']:.2f} / {100 * summary['worst']:.2f} ({summary['worst_class']})"


def _bits(flags: torch.Tensor) -> list[int]:
    return flags.to(torch.int8).tolist()


def _describe(o: AttackOutcome) -> str:
    """Settings of an attack as one short line of the table."""
    s = o.settings
    if "attacks_run" in s:
        ran = ", ".join(s["attacks_run"]) or "none"
        skipped = [a for a in s["attacks"] if a not in s["attacks_run"]]
        text = f"AutoAttack {s['version']}: ran {ran}"
        if skipped:
            text += f" (not run, no robust points left: {', '.join(skipped)})"
        if "square" in s:
            text += f"; square {s['square']['queries']} queries"
    else:
        keys = ("steps", "step_size", "loss", "guides", "restarts", "logit_scale")
        text = " ".join(f"{k}={s[k]:.4g}" if isinstance(s[k], float) else f"{k}={s[k]}" for k in keys if k in s)
    return f"{text}; max pert {o.max_perturbation:.4g}"
