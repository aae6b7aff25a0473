"""Every built-in evaluation attack, registered: import this module to have them all in
:data:`advlab.evaluation.attack_registry.EVAL_ATTACKS` (the PGD family, AutoAttack and Square, the kNN's
guide attack)."""
from __future__ import annotations

from . import autoattack, knn_attack, pgd_attacks  # noqa: F401  (each registers its attacks)
from .attack_registry import (EVAL_ATTACKS, AttackEntry, AttackSetup, EvalAttack, eval_attack_names, knn_attacks,
                              register_attack, white_box_attacks)
from .autoattack import (AA_MIN_CLASSES, AA_PACKAGE_VERSIONS, AA_REDUCED_VERSIONS, AA_VERSIONS, AutoAttackEval,
                         autoattack_class_problem)
from .knn_attack import GuideAttack
from .pgd_attacks import PGDEval

__all__ = ["EVAL_ATTACKS", "AttackEntry", "AttackSetup", "EvalAttack", "eval_attack_names", "knn_attacks",
           "register_attack", "white_box_attacks", "AA_MIN_CLASSES", "autoattack_class_problem", "AA_PACKAGE_VERSIONS", "AA_REDUCED_VERSIONS", "AA_VERSIONS",
           "AutoAttackEval", "GuideAttack", "PGDEval"]
