"""Robustness evaluation you can trust: named attacks, per-sample flags, verification, sanity checks.

``evaluate(model, images, labels, eps)`` returns an :class:`EvalResult`; ``advlab eval`` is its CLI.
Accuracies are fractions in [0, 1] everywhere (JSON and Python); the text table shows them in %.

JSON (``EvalResult.to_dict()``)::

    n, eps, norm, num_classes, seed, accuracy_unit ("fraction"), seconds
    clean:     {acc, per_class: {"<class>": acc}, seconds}
    attacks:   {<name>: {acc, per_class, max_perturbation, seconds, <settings>}}
               PGD settings: steps, step_size, loss, random_start, restarts, stop[, logit_scale][, clamped_inputs]
               knn-guide (a kNN classifier's guide attack, ``knn_attack``): the same plus guides, target
               AutoAttack / square: version, package, attacks, attacks_run, seed, apgd, apgd_t, fab,
               square, [warnings][, clamped_inputs]
               clamped_inputs (only when > 0): image values the attack found a rounding error outside
               [0, 1] and clamped (``advlab.attacks.box``)
    robust:    {acc, per_class, worst_class: {class, acc, n}, over: ["clean", <names>]}
               (per-sample AND of clean and every attack)
    defence_success_rate: {<name>: DSR, ..., "robust": DSR}
               Chen et al. 2020's defence success rate: among the points correct clean, the fraction still
               correct under that attack (robust: under every attack) = robust acc / clean acc; null when no
               point is correct clean. The official test.py took the first 100 correct test images; here it
               is every correct point of the evaluated set (the same number, not a subsample)
    fairness:  {<name>: {over: ["clean", <name>], natural: E, boundary: E, robust: E}, ...,
                "robust": {over: ["clean", <names>], natural: E, boundary: E, robust: E}}
               one entry per attack in order, then the per-sample AND; E = {average, worst, worst_class,
               overall, per_class: {"<class>": error}}: class-wise error rates (fractions), FRL's definitions
               (``advlab.evaluation.fairness``): natural = 1 - clean acc; boundary = correct clean but wrong
               under the attack(s) = clean acc - robust acc; robust = 1 - robust acc (robust: correct clean AND
               under the attack(s)) = natural + boundary. average: the mean over the classes present
               (class-balanced); worst: the largest per-class error; worst_class: its class (ties: the
               smallest index; None without points); overall: the error over all points
    sanity:    [{name, status: "passed"|"failed"|"not run", message, details: {...}}]
    per_sample: {"clean": [0/1...], <name>: [...], "robust": [...]}
    version:   {advlab, torch, pyautoattack}
    inputs:    {clamped, tolerance}: the number of image values outside [0, 1] by at most ``tolerance`` (a
               rounding error: 1e-6 for float32 / float64 images, one unit in the last place at 1 for float16 /
               bfloat16; ``advlab.attacks.box``) that were clamped to [0, 1] before the evaluation; values
               further out are refused
    meta:      (optional) where the model and data came from, e.g. written by ``advlab eval``; there also
               classifier: what was evaluated (``describe_classifier``: {kind: linear} or the kNN's
               k, metric, vote, temperature, bank size, what predicts and what gives the gradients)
"""
from __future__ import annotations

from .classifier import CLASSIFIERS, as_classifier, classifier_kind, describe_classifier
from .fairness import class_errors
from .result import AttackOutcome, EvalResult
from .robustness import DEFAULT_ATTACKS, evaluate
from .estimate import EvaluationEstimate, estimate_evaluation, format_duration
from .model_checks import check_model
from .suite import (AA_REDUCED_VERSIONS, AA_VERSIONS, EVAL_ATTACKS, AttackEntry, AttackSetup, eval_attack_names, knn_attacks,
                    register_attack, white_box_attacks)
from .threat import verify_threat_model

__all__ = ["EvaluationEstimate", "estimate_evaluation", "format_duration", "check_model", "AA_REDUCED_VERSIONS",
           "knn_attacks", "white_box_attacks", "register_attack", "AttackEntry", "CLASSIFIERS", "as_classifier", "classifier_kind", "describe_classifier", "AA_VERSIONS", "evaluate", "EvalResult", "AttackOutcome", "DEFAULT_ATTACKS", "EVAL_ATTACKS", "AttackSetup",
           "class_errors", "eval_attack_names", "verify_threat_model"]
