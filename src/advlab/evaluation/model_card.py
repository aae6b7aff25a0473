"""An evaluation as a RobustBench-style model entry (``advlab eval --model-card``).

RobustBench lists a model by its threat model, eps, clean and AutoAttack accuracy (in %, as strings with two
decimals), architecture and dataset. advlab adds what its leaderboard assumes and a local evaluation may
change: the number of test points, the AutoAttack version and package that ran, and a footnote when that
version is reduced (not the standard APGD-CE, APGD-T, FAB-T, Square) or when attacks were skipped.
"""
from __future__ import annotations

from typing import Any

from ..errors import AdvlabError
from .suite import AA_REDUCED_VERSIONS

THREAT_MODELS = {"linf": "Linf", "l2": "L2"}


def _pct(value: Any) -> str | None:
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _eps_text(eps: float, norm: str) -> str:
    if norm == "linf":
        return f"{eps:.6g} (= {eps * 255:.4g}/255)"
    return f"{eps:.6g}"


def _architecture(spec: dict[str, Any] | None) -> str:
    if not spec:
        return "unknown"
    extra = {k: v for k, v in spec.items() if k not in ("name", "num_classes", "in_channels") and v not in (None, {})}
    options = ", ".join(f"{k}={v}" for k, v in extra.items())
    return f"{spec.get('name', '?')}" + (f" ({options})" if options else "")


def model_card(result: dict[str, Any], model_spec: dict[str, Any] | None = None,
               dataset: str | None = None) -> dict[str, Any]:
    """The RobustBench-style entry of one evaluation.

    ``result`` is ``EvalResult.to_dict()`` (or a ``summary.json`` entry of a checkpoint); ``model_spec`` and
    ``dataset`` default to ``result["meta"]``. Accuracies are returned in % as strings with two decimals
    (RobustBench's format); ``autoattack_acc`` is None when AutoAttack did not run. A kNN classifier (the
    result's ``meta.classifier`` or ``classifier``, from ``describe_classifier``) is named in ``classifier`` and
    the footnote. AdvlabError if ``result`` holds no clean accuracy.
    """
    if not isinstance(result.get("clean"), dict) or "acc" not in result["clean"]:
        raise AdvlabError("a model card needs an evaluation with a clean accuracy")
    meta = result.get("meta") or {}
    model_spec = model_spec if model_spec is not None else meta.get("model_spec")
    dataset = dataset or meta.get("dataset")
    norm = result.get("norm", "linf")
    aa = (result.get("attacks") or {}).get("autoattack")
    notes = []
    card: dict[str, Any] = {
        "threat_model": THREAT_MODELS.get(norm, norm), "eps": _eps_text(float(result["eps"]), norm),
        "dataset": dataset or "unknown", "architecture": _architecture(model_spec),
        "clean_acc": _pct(result["clean"]["acc"]), "autoattack_acc": _pct(aa.get("acc")) if aa else None,
        "number_of_points": result.get("n"), "additional_data": False, "number_forward_passes": 1,
    }
    classifier = meta.get("classifier") or result.get("classifier") or {"kind": "linear"}
    if classifier.get("kind") == "knn":  # RobustBench's entries are linear-head classifiers: say what this one is
        card["classifier"] = (f"k nearest neighbours (k={classifier.get('k')}, {classifier.get('metric')}, "
                              f"{classifier.get('vote')} vote) over {classifier.get('bank')} training features")
        notes.append("classified by k nearest neighbours over the training split's features (the hard vote); "
                     "the attacks' gradients come from the soft vote")
    if aa:
        version = aa.get("version", "?")
        card["autoattack"] = {"version": version, "package": aa.get("package", "?"),
                              "attacks": aa.get("attacks", []), "attacks_run": aa.get("attacks_run", [])}
        if version in AA_REDUCED_VERSIONS:
            notes.append(f"AutoAttack reduced to version {version!r} ({' + '.join(AA_REDUCED_VERSIONS[version])}, "
                         "one restart, no FAB-T or Square): an upper bound on the standard AutoAttack accuracy, "
                         "not comparable with RobustBench's numbers")
        elif version != "standard":
            notes.append(f"AutoAttack version {version!r}, not the standard one")
        skipped = [a for a in aa.get("attacks", []) if a not in aa.get("attacks_run", [])]
        if skipped:
            notes.append(f"not run because no robust point was left: {', '.join(skipped)}")
        for warning in aa.get("warnings", []):
            notes.append(f"pyautoattack warned: {warning}")
    else:
        notes.append("AutoAttack did not run: this is no RobustBench entry, only clean accuracy is given")
    card["footnote"] = "; ".join(notes) if notes else None
    return card


def model_card_rows(result: dict[str, Any], model_spec: dict[str, Any] | None = None,
                    dataset: str | None = None) -> list[list[str]]:
    """The model card as ``[field, value]`` rows for a table."""
    card = model_card(result, model_spec, dataset)
    rows = []
    for key, value in card.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {' + '.join(v) if isinstance(v, list) else v}" for k, v in value.items())
        rows.append([key, "-" if value is None else str(value)])
    return rows
