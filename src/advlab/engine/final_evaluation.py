"""The final evaluation: the chosen checkpoints (``evaluation.checkpoints``: best, last) on the test split.

The test split is read here and nowhere else in training: nothing of a run is chosen on it.
"""
from __future__ import annotations

import sys
from typing import Any

from .. import data as datasets
from ..crashpoints import crash_point
from ..evaluation import check_model, describe_classifier, evaluate
from ..runs import SUMMARY, RunDir, load_model
from .run import Run
from .state import TrainingState


def evaluate_checkpoints(run: Run, state: TrainingState, run_dir: RunDir) -> dict[str, Any]:
    """Evaluate the configured checkpoints of ``run_dir`` on the first ``evaluation.n`` test points with the
    configured attacks (:func:`advlab.evaluate`: per-sample AND, sanity checks); write ``summary.json`` and
    return it. A checkpoint of the same epoch as one already evaluated (best = last) is evaluated once."""
    c, e = run.config, run.config.evaluation
    test_images, test_labels, converted, preprocessing = datasets.run_split(c.data, "test", e.n)  # only these n decoded
    summary: dict[str, Any] = {"preset": c.preset, "run_dir": str(run_dir.path), "best_epoch": state.best["epoch"],
                               "last_epoch": state.epoch, "evaluation_n": len(test_labels), "data": run.data.split.record,
                               "history_tail": state.history[-1:] if state.history else []}
    if run.fast_defaults:
        summary["fast_defaults"] = run.fast_defaults  # what precision / channels_last: auto chose, and why
    if state.stopped:
        summary["stopped"] = state.stopped
    collapses = [row["epoch"] for row in state.history if row.get("collapsed")]
    if collapses:
        summary["collapsed_epochs"] = collapses  # catastrophic overfitting (advlab.engine.collapse)
    results: dict[int, dict[str, Any]] = {}
    for which in e.checkpoints:
        model, checkpoint = load_model(run_dir.path, which, device=run.device)
        model = run.classifier(model)
        epoch = int(checkpoint["epoch"])
        if epoch not in results:
            if run.progress:
                print(f"evaluating {which} (epoch {epoch}) on {len(test_labels)} test points: {', '.join(e.attacks)}",
                      file=sys.stderr, flush=True)
            checks = check_model(model, test_images, run.data.num_classes, run.device)  # the pitfalls, reported
            result = evaluate(model, test_images, test_labels, eps=c.eps, norm=c.norm, attacks=tuple(e.attacks),
                              batch_size=e.batch_size, device=run.device, sanity=e.sanity, seed=c.seed,
                              progress=run.progress, autoattack_version=e.autoattack_version,
                              collective=run.collective)
            result.model_checks = checks
            result.meta = {"dataset": c.data.dataset, "split": "test", "first_n": len(test_labels),
                           "preprocessing": preprocessing, "converted_images": converted}
            results[epoch] = {"epoch": epoch, "classifier": describe_classifier(model), **result.to_dict()}
            crash_point("evaluation")  # test hook (advlab.crashpoints); a no-op unless set
            summary.setdefault("tables", {})[which] = result.table()
        else:
            summary.setdefault("tables", {})[which] = f"(same checkpoint as epoch {epoch}, shown above)"
        summary[which] = results[epoch]
    if run.collective.is_main:
        run_dir.write_json(SUMMARY, summary)
    return summary
