"""An evaluation as a RobustBench entry (``advlab eval --model-card``), beside advlab's own JSON.

The top-level fields are exactly those of RobustBench's ``model_info/<dataset>/<threat model>/<Name>.json``
files (github.com/RobustBench/robustbench, e.g. ``model_info/cifar10/Linf/Wong2020Fast.json``), in their order:
``link``, ``name``, ``authors``, ``additional_data``, ``number_forward_passes``, ``dataset``, ``venue``,
``architecture``, ``eps`` (a string: ``"8/255"``), ``clean_acc``, ``reported``, ``autoattack_acc`` (percent
strings with two decimals), and ``footnote`` where something needs saying (RobustBench's optional field).
What advlab cannot know (link, name, authors, venue, the accuracy the paper reported) is left empty and listed in
``advlab.to_fill``.

advlab's extras stay under the separate key ``advlab``: the threat model, the number of points, the AutoAttack
version and package that ran, the classifier, and the model checks that flagged something. ``autoattack_acc`` is
only ever the accuracy under AutoAttack's ``standard`` version (or ``rand``, RobustBench's choice for a
randomised model, said in the footnote): a reduced version (``fast``, ``apgd``, ``apgd-ce``) or ``plus`` leaves it
null, its number under ``advlab.autoattack_version_acc`` and the footnote saying so.
"""
from __future__ import annotations

from typing import Any

from ..errors import AdvlabError
from .suite import AA_REDUCED_VERSIONS

THREAT_MODELS = {"linf": "Linf", "l2": "L2"}
ROBUSTBENCH_FIELDS = ("link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                      "architecture", "eps", "clean_acc", "reported", "autoattack_acc")
"""The fields of a RobustBench ``model_info`` entry, in their order (``footnote`` is added when needed)."""
TO_FILL = ("link", "name", "authors", "venue", "reported")
"""Fields only the model's authors know: left empty."""
AUTOATTACK_ACC_VERSIONS = ("standard", "rand")
"""The AutoAttack versions whose accuracy RobustBench lists as ``autoattack_acc``."""
TEST_SET_SIZES = {"cifar10": 10000, "cifar100": 10000, "fashion-mnist": 10000, "mnist": 10000, "svhn": 26032}
"""Test-set sizes, to say when fewer points were evaluated (RobustBench evaluates the whole test set, ImageNet's
5,000-image subset aside)."""


def _pct(value: Any) -> str | None:
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def robustbench_eps(eps: float, norm: str) -> str:
    """eps as RobustBench writes it: ``8/255`` for a linf eps on the 1/255 grid, else the number (``0.1``,
    ``0.5``)."""
    if norm == "linf":
        k = eps * 255
        if abs(k - round(k)) < 1e-6 * max(1.0, k) and round(k) >= 1:
            return f"{round(k)}/255"
    return f"{eps:g}"


def _architecture(spec: dict[str, Any] | None) -> str:
    if not spec:
        return "unknown"
    skip = ("name", "num_classes", "in_channels", "registered_in")
    extra = {k: v for k, v in spec.items() if k not in skip and v not in (None, {})}
    options = ", ".join(f"{k}={v}" for k, v in extra.items())
    return f"{spec.get('name', '?')}" + (f" ({options})" if options else "")


def model_card(result: dict[str, Any], model_spec: dict[str, Any] | None = None,
               dataset: str | None = None) -> dict[str, Any]:
    """The RobustBench entry of one evaluation (module docs), advlab's extras under ``advlab``.

    ``result`` is ``EvalResult.to_dict()`` (or a ``summary.json`` entry of a checkpoint); ``model_spec`` and
    ``dataset`` default to ``result["meta"]``. Accuracies in % as strings with two decimals (RobustBench's
    format). AdvlabError if ``result`` holds no clean accuracy.
    """
    if not isinstance(result.get("clean"), dict) or "acc" not in result["clean"]:
        raise AdvlabError("a model card needs an evaluation with a clean accuracy")
    meta = result.get("meta") or {}
    model_spec = model_spec if model_spec is not None else meta.get("model_spec")
    dataset = dataset or meta.get("dataset") or "unknown"
    norm = result.get("norm", "linf")
    eps = float(result["eps"])
    aa = (result.get("attacks") or {}).get("autoattack")
    version = aa.get("version", "?") if aa else None
    notes: list[str] = []
    extras: dict[str, Any] = {"threat_model": THREAT_MODELS.get(norm, norm), "eps": eps,
                              "number_of_points": result.get("n")}
    card: dict[str, Any] = {
        "link": "", "name": "", "authors": "", "additional_data": False, "number_forward_passes": 1,
        "dataset": dataset, "venue": "", "architecture": _architecture(model_spec),
        "eps": robustbench_eps(eps, norm), "clean_acc": _pct(result["clean"]["acc"]), "reported": "",
        "autoattack_acc": None,
    }
    if aa and version in AUTOATTACK_ACC_VERSIONS:
        card["autoattack_acc"] = _pct(aa.get("acc"))
        if version == "rand":
            notes.append("AutoAttack's rand version (APGD-CE and APGD-DLR with EOT over 20 draws), for a randomised "
                         "model")
    elif aa:
        extras["autoattack_version_acc"] = _pct(aa.get("acc"))
        if version in AA_REDUCED_VERSIONS:
            notes.append(f"not an autoattack_acc: AutoAttack reduced to version {version!r} "
                         f"({' + '.join(AA_REDUCED_VERSIONS[version])}, one restart, no FAB-T or Square) gave "
                         f"{extras['autoattack_version_acc']}%, an upper bound on the standard AutoAttack accuracy, "
                         "not comparable with RobustBench's numbers")
        else:
            notes.append(f"not an autoattack_acc: AutoAttack version {version!r}, not the standard one, gave "
                         f"{extras['autoattack_version_acc']}%")
    else:
        notes.append("AutoAttack did not run: no autoattack_acc, only clean accuracy")
    if aa:
        extras["autoattack"] = {"version": version, "package": aa.get("package", "?"),
                                "attacks": aa.get("attacks", []), "attacks_run": aa.get("attacks_run", [])}
        skipped = [a for a in aa.get("attacks", []) if a not in aa.get("attacks_run", [])]
        if skipped:
            notes.append(f"not run because no robust point was left: {', '.join(skipped)}")
        for warning in aa.get("warnings", []):
            notes.append(f"pyautoattack warned: {warning}")
    full = TEST_SET_SIZES.get(dataset)
    n = result.get("n")
    if full and isinstance(n, int) and n < full and meta.get("split", "test") == "test":
        notes.append(f"evaluated on the first {n} of the {full} test points (RobustBench uses all of them)")
    classifier = meta.get("classifier") or result.get("classifier") or {"kind": "linear"}
    if classifier.get("kind") == "knn":  # RobustBench's entries are linear-head classifiers: say what this one is
        extras["classifier"] = (f"k nearest neighbours (k={classifier.get('k')}, {classifier.get('metric')}, "
                                f"{classifier.get('vote')} vote) over {classifier.get('bank')} training features")
        notes.append("classified by k nearest neighbours over the training split's features (the hard vote); "
                     "the attacks' gradients come from the soft vote")
    flagged = [c for c in result.get("model_checks") or [] if c.get("status") == "flagged"]
    if flagged:
        extras["model_checks_flagged"] = [f"{c['name']}: {c['message']}" for c in flagged]
        notes.append("model checks flagged: " + ", ".join(c["name"] for c in flagged))
    if notes:
        card["footnote"] = "; ".join(notes)
    extras["to_fill"] = list(TO_FILL)
    card["advlab"] = extras
    return card


def model_card_rows(result: dict[str, Any], model_spec: dict[str, Any] | None = None,
                    dataset: str | None = None) -> list[list[str]]:
    """The model card as ``[field, value]`` rows for a table (advlab's extras as ``advlab.<key>``)."""
    card = model_card(result, model_spec, dataset)
    rows = []

    def add(key: str, value: Any) -> None:
        if isinstance(value, dict):
            value = ", ".join(f"{k} {' + '.join(v) if isinstance(v, list) else v}" for k, v in value.items())
        elif isinstance(value, list):
            value = "; ".join(map(str, value))
        rows.append([key, "-" if value in (None, "") else str(value)])

    for key, value in card.items():
        if key == "advlab":
            for sub, v in value.items():
                add(f"advlab.{sub}", v)
        else:
            add(key, value)
    return rows
