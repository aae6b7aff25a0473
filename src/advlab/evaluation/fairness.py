"""Class-wise fairness of robustness: natural, boundary and robust error per class, their average and worst class.

The definitions of FRL (Xu et al., ICML 2021, "To be robust or to be fair"), as its code and CAAT's compute them
(``utils.py`` ``evaluate``: ``class_clean_error = 1 - acc``, ``class_bndy_error = acc - acc_adv``,
``class_total_error = 1 - acc_adv``), from per-sample flags. For the points of class ``c``:

- natural error  = 1 - clean accuracy = share of points misclassified clean;
- boundary error = share of points classified correctly clean but wrongly under the attack
  = clean accuracy - robust accuracy;
- robust error   = 1 - robust accuracy = natural error + boundary error,

where a point is *robust* when it is classified correctly clean AND under the attack (the per-sample AND). FRL's
code counts ``acc_adv`` without the AND; the two agree unless an attack turns a clean mistake into a correct
prediction, which the AND rules out, so that boundary error is exactly "correct clean, wrong under attack" and
never negative.

``average`` is the mean over the classes present in the labels (class-balanced, FRL's "Avg."; FRL's and CAAT's
code take it over points, which is the same on their balanced test sets), ``worst`` the largest per-class error,
``worst_class`` its class (ties: the smallest index, as ``report.worst_class``) and ``overall`` the error over
all points. All errors are fractions in [0, 1]; a class absent from the labels has no entry.
"""
from __future__ import annotations

from typing import Any

import torch

ERRORS = ("natural", "boundary", "robust")


def error_summary(per_class: dict[str, float], overall: float | None) -> dict[str, Any]:
    """``{"average", "worst", "worst_class", "overall", "per_class"}`` of per-class errors (fractions).

    ``per_class`` is keyed by the class index as a string; ``average`` is the unweighted mean over its classes,
    ``worst`` the largest error and ``worst_class`` its class as an int (ties: the smallest index). Without
    classes, ``average``, ``worst`` and ``worst_class`` are None.
    """
    if not per_class:
        return {"average": None, "worst": None, "worst_class": None, "overall": overall, "per_class": {}}
    worst = min(per_class, key=lambda k: (-per_class[k], int(k)))
    return {"average": sum(per_class.values()) / len(per_class), "worst": per_class[worst],
            "worst_class": int(worst), "overall": overall, "per_class": dict(per_class)}


def class_errors(clean_correct: torch.Tensor, attack_correct: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Natural, boundary and robust error (FRL's definitions, see the module docs) per class and summarised.

    Args:
        clean_correct: bool (n,), the point is classified correctly without attack.
        attack_correct: bool (n,), the point is classified correctly under the attack (or under every attack).
            It is ANDed with ``clean_correct`` here.
        labels: int (n,), the true class of each point.

    Returns:
        ``{"natural": s, "boundary": s, "robust": s}``, each ``s`` from :func:`error_summary`.

    Raises:
        ValueError: the three tensors are not 1-D of the same length.
    """
    if not (clean_correct.dim() == attack_correct.dim() == labels.dim() == 1
            and len(clean_correct) == len(attack_correct) == len(labels)):
        raise ValueError(f"need three 1-D tensors of one length, got {tuple(clean_correct.shape)}, "
                         f"{tuple(attack_correct.shape)} and {tuple(labels.shape)}")
    clean = clean_correct.bool().cpu()
    robust = clean & attack_correct.bool().cpu()
    labels = labels.cpu()
    wrong = {"natural": ~clean, "boundary": clean & ~robust, "robust": ~robust}
    n = len(labels)
    classes = torch.unique(labels).tolist()
    out = {}
    for kind in ERRORS:
        flags = wrong[kind]
        per_class = {str(c): int(flags[labels == c].sum()) / int((labels == c).sum()) for c in classes}
        out[kind] = error_summary(per_class, int(flags.sum()) / n if n else None)
    return out
