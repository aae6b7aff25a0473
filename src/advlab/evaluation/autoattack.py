"""AutoAttack (Croce & Hein 2020) and its Square attack through the ``pyautoattack`` package, never a rewrite."""
from __future__ import annotations

import logging
import sys
from typing import Any, Sequence

import torch
from torch import nn

from ..attacks.box import clamp_to_box
from ..attacks.context import eval_mode
from ..attacks.losses import as_labels, ce_loss
from ..attacks.model_output import (autograd_tensor, check_autograd_model, forward_logits, input_gradient,
                                    outside_inference_mode)
from ..errors import AdvlabError
from .attack_registry import AttackSetup, register_attack


class _Capture(logging.Handler):
    """Collects the records of pyautoattack's logger instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


# pyautoattack's own versions, and advlab's reduced ones (sub-attacks of AutoAttack with one restart each)
AA_PACKAGE_VERSIONS = ("standard", "plus", "rand")
AA_REDUCED_VERSIONS = {"fast": ["apgd-ce", "apgd-t"], "apgd": ["apgd-ce", "apgd-dlr"], "apgd-ce": ["apgd-ce"]}
AA_VERSIONS = ("standard", *AA_REDUCED_VERSIONS, "plus", "rand")

AA_MIN_CLASSES = {"apgd-ce": 2, "apgd-dlr": 3, "apgd-t": 4, "fab": 2, "fab-t": 2, "square": 2}
"""The fewest classes (logits) each sub-attack of pyautoattack 0.2.0 runs with, read from its source and checked
against it running (tests/test_autoattack_classes.py): ``apgd-dlr``'s DLR loss divides by z_pi1 - z_pi3, the
third largest logit (autopgd_base.py, ``APGDAttack.dlr_loss``: ``x_sorted[:, -3]``), an IndexError with 2;
``apgd-t``'s targeted DLR loss by z_pi1 - (z_pi3 + z_pi4) / 2 (``APGDAttack_targeted.dlr_loss_targeted``:
``x_sorted[:, -4]``), an IndexError with 2 or 3. APGD-T and FAB-T attack the target classes ranked 2 ..
n_target_classes + 1 by the clean logits (``output.sort(dim=1)[1][:, -target_class]``), so they need
n_target_classes <= C - 1, which :class:`AutoAttackEval` always keeps (it caps them at C - 1); with that, FAB-T
runs with 2 classes, as do apgd-ce, fab and square. 2 is the least of every attack: one class cannot be
misclassified (``evaluate`` refuses fewer). pyautoattack's own ``checks.check_n_classes`` only logs a warning
(with 3 classes it warns about the targeted DLR loss even when only apgd-dlr runs, which works)."""


def autoattack_class_problem(attacks: Sequence[str], classes: int, version: str) -> str | None:
    """Why pyautoattack cannot run ``attacks`` (names of its sub-attacks) on a model of ``classes`` logits, in
    one line naming each sub-attack that needs more (:data:`AA_MIN_CLASSES`) and the versions of
    :data:`AA_VERSIONS` that fit; None when it can."""
    short = [a for a in attacks if classes < AA_MIN_CLASSES.get(a, 2)]
    if not short:
        return None
    fits = [v for v in AA_VERSIONS if all(classes >= AA_MIN_CLASSES.get(a, 2) for a in _version_attacks(v))]
    needs = ", ".join(f"{a} needs at least {AA_MIN_CLASSES.get(a, 2)}" for a in short)
    return (f"AutoAttack ({version}): {needs} classes, the model has {classes} (pyautoattack's DLR losses read "
            f"the 3rd / 4th largest logit); with {classes} classes use "
            + (f"--autoattack-version {' or '.join(fits)}, " if fits else "") + "the square attack or PGD")


def _version_attacks(version: str) -> list[str]:
    """The sub-attacks a version of :data:`AA_VERSIONS` runs (pyautoattack's own versions read from it)."""
    if version in AA_REDUCED_VERSIONS:
        return list(AA_REDUCED_VERSIONS[version])
    from pyautoattack import AutoAttack

    return list(AutoAttack(nn.Identity(), version=version).attacks_to_run)


class AutoAttackEval:
    """AutoAttack (Croce & Hein 2020) through the ``pyautoattack`` package, one batch at a time.

    Versions: ``standard``, ``plus``, ``rand`` (pyautoattack's own) and advlab's reduced ones for CPU budgets,
    which name exactly what runs: ``fast`` (APGD-CE then APGD-T), ``apgd`` (APGD-CE then APGD-DLR) and
    ``apgd-ce`` (APGD-CE alone), each with one restart and no FAB-T or Square. The numbers of target classes are
    capped at C - 1, and a version is refused (AdvlabError, naming the versions that fit) exactly where
    pyautoattack cannot run it: a sub-attack on fewer logits than :data:`AA_MIN_CLASSES` gives it (APGD-DLR 3,
    APGD-T 4, the others 2), counted on the model's logits as pyautoattack counts them. Its log is
    captured (not printed); the attacks that actually ran and any warnings are kept in ``settings()``.
    The global torch RNG, which pyautoattack reseeds, and any ``sys.settrace`` hook (coverage, debuggers),
    which its dynamic-defense check removes, are restored afterwards. Points it does not break come back
    unchanged, so its ``max_perturbation`` is over the points it broke. The model runs in eval mode (every
    submodule's flag restored after) and is checked before pyautoattack sees it: it must return logits
    (B, C) and, for the gradient attacks (all but Square), be differentiable in its input.
    """

    def __init__(self, setup: AttackSetup, *, version: str | None = None, attacks: list[str] | None = None,
                 square_queries: int | None = None) -> None:
        try:
            import pyautoattack
            from pyautoattack import AutoAttack
        except ImportError:
            raise AdvlabError("AutoAttack needs the pyautoattack package: pip install pyautoattack") from None
        self.package_version = getattr(pyautoattack, "__version__", "unknown")
        version = version or setup.autoattack_version
        self.version = version
        self.device = setup.device
        norm = {"linf": "Linf", "l2": "L2"}[setup.norm]
        classes = setup.outputs or setup.num_classes
        targets = min(9, setup.num_classes - 1, classes - 1)
        if attacks is not None:
            aa = AutoAttack(setup.model, eps=setup.eps, norm=norm, version="custom", attacks=list(attacks),
                            seed=setup.seed, device=setup.device)
        elif version in AA_REDUCED_VERSIONS:
            aa = AutoAttack(setup.model, eps=setup.eps, norm=norm, version="custom",
                            attacks=list(AA_REDUCED_VERSIONS[version]), seed=setup.seed, device=setup.device)
            aa.apgd.n_restarts = 1
        elif version in AA_PACKAGE_VERSIONS:
            aa = AutoAttack(setup.model, eps=setup.eps, norm=norm, version=version, seed=setup.seed,
                            device=setup.device)
        else:
            raise AdvlabError(f"unknown AutoAttack version {version!r}; allowed: {', '.join(AA_VERSIONS)}")
        problem = autoattack_class_problem(aa.attacks_to_run, classes, version)
        if problem:
            raise AdvlabError(problem)
        aa.apgd_targeted.n_target_classes = targets
        aa.fab.n_target_classes = targets
        if square_queries is not None:
            aa.square.n_queries = square_queries
            aa.square.rescale_schedule = True  # fit the schedule of the square size to the budget
        self.aa = aa
        self.attacks_run: list[str] = []
        self.warnings: list[str] = []
        self.clamped = 0  # input values a rounding error outside [0, 1], clamped (attacks.box), over all batches

    def _check_model(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """AdvlabError unless the model maps x (B, ...) to logits (B, C), differentiably if a gradient attack
        is to run, with as many logits as the sub-attacks need (:data:`AA_MIN_CLASSES`, counted as pyautoattack
        counts them) and no more target classes than C - 1: what pyautoattack assumes without checking."""
        where = f"AutoAttack ({self.version})"
        if set(self.aa.attacks_to_run) <= {"square"}:
            with torch.no_grad():
                out = forward_logits(self.aa.model, x, where)
        else:
            check_autograd_model(self.aa.model, where)
            xg = x.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                out = forward_logits(self.aa.model, xg, where)
                input_gradient(ce_loss(out, y), xg, where)
        problem = autoattack_class_problem(self.aa.attacks_to_run, out.shape[1], self.version)
        if problem:
            raise AdvlabError(problem)
        for attack in (self.aa.apgd_targeted, self.aa.fab):
            attack.n_target_classes = min(attack.n_target_classes, out.shape[1] - 1)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The adversarial batch (B, ...) for images x in [0, 1] (B, ...) and integer labels y (B,). Values of x
        a rounding error outside [0, 1] (``attacks.box``) are clamped (the batch pyautoattack attacks) and counted
        in ``settings()["clamped_inputs"]``.

        Raises:
            AdvlabError: bad labels, images further outside [0, 1], a model that does not return logits (B, C),
                or (for the gradient attacks) whose output does not depend on its input through autograd, or
                with fewer logits than a sub-attack needs (:data:`AA_MIN_CLASSES`).
        """
        y = as_labels(y, "labels y", len(x))
        with outside_inference_mode(), eval_mode(self.aa.model):
            x, y = autograd_tensor(x), autograd_tensor(y)
            x, clamped = clamp_to_box(x, f"AutoAttack ({self.version}) input x")
            self.clamped += clamped
            self._check_model(x, y)
            return self._run(x, y)

    def _run(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """pyautoattack on one batch, its log captured, the global RNG and any trace hook restored."""
        logger = logging.getLogger("auto-attack")
        capture = _Capture()
        saved = logger.level, logger.propagate
        logger.addHandler(capture)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        trace = sys.gettrace()  # pyautoattack's dynamic-defense check ends with sys.settrace(None)
        try:
            with torch.random.fork_rng(devices=cuda):
                x_adv, _ = self.aa.run_standard_evaluation(x, y, batch_size=len(x))
        finally:
            logger.removeHandler(capture)
            logger.setLevel(saved[0])
            logger.propagate = saved[1]
            if trace is not None:
                sys.settrace(trace)
        for record in capture.records:
            message = record.getMessage()
            if message.startswith("running "):
                name = message[len("running "):]
                if name not in self.attacks_run:
                    self.attacks_run.append(name)
            elif record.levelno >= logging.WARNING and message not in self.warnings:
                self.warnings.append(message)
        return x_adv

    def settings(self) -> dict[str, Any]:
        aa = self.aa
        planned = list(aa.attacks_to_run)
        out: dict[str, Any] = {
            "version": self.version, "package": f"pyautoattack {self.package_version}",
            "attacks": planned, "attacks_run": [a for a in planned if a in self.attacks_run],
            "seed": aa.seed,
        }
        if {"apgd-ce", "apgd-dlr"} & set(planned):
            out["apgd"] = {"iterations": aa.apgd.n_iter, "restarts": aa.apgd.n_restarts}
        if "apgd-t" in planned:
            out["apgd_t"] = {"iterations": aa.apgd_targeted.n_iter, "target_classes": aa.apgd_targeted.n_target_classes}
        if {"fab", "fab-t"} & set(planned):
            out["fab"] = {"iterations": aa.fab.n_iter, "target_classes": aa.fab.n_target_classes}
        if "square" in planned:
            out["square"] = {"queries": aa.square.n_queries, "p_init": aa.square.p_init,
                             "rescaled_schedule": bool(aa.square.rescale_schedule)}
        if self.warnings:
            out["warnings"] = list(self.warnings)
        if self.clamped:
            out["clamped_inputs"] = self.clamped
        return out


register_attack("autoattack", lambda s: AutoAttackEval(s), white_box=False)
register_attack("square", lambda s: AutoAttackEval(s, version="custom", attacks=["square"],
                                                  square_queries=s.square_queries), white_box=False)
