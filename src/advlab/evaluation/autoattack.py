"""AutoAttack (Croce & Hein 2020) and its Square attack through the ``pyautoattack`` package, never a rewrite."""
from __future__ import annotations

import logging
import sys
from typing import Any

import torch

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


class AutoAttackEval:
    """AutoAttack (Croce & Hein 2020) through the ``pyautoattack`` package, one batch at a time.

    Versions: ``standard``, ``plus``, ``rand`` (pyautoattack's own) and advlab's reduced ones for CPU budgets,
    which name exactly what runs: ``fast`` (APGD-CE then APGD-T), ``apgd`` (APGD-CE then APGD-DLR) and
    ``apgd-ce`` (APGD-CE alone), each with one restart and no FAB-T or Square. The numbers of target classes are capped at num_classes - 1. Its log is
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
        targets = min(9, setup.num_classes - 1)
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
        needs_dlr = {"apgd-dlr", "apgd-t"} & set(aa.attacks_to_run)
        if needs_dlr and setup.num_classes < 4:
            raise AdvlabError(f"AutoAttack's {', '.join(sorted(needs_dlr))} need at least 4 classes, the model has "
                              f"{setup.num_classes}; use the square attack or PGD")
        aa.apgd_targeted.n_target_classes = targets
        aa.fab.n_target_classes = targets
        if square_queries is not None:
            aa.square.n_queries = square_queries
            aa.square.rescale_schedule = True  # fit the schedule of the square size to the budget
        self.aa = aa
        self.attacks_run: list[str] = []
        self.warnings: list[str] = []

    def _check_model(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """AdvlabError unless the model maps x (B, ...) to logits (B, C), differentiably if a gradient attack
        is to run: what pyautoattack assumes without checking."""
        where = f"AutoAttack ({self.version})"
        if set(self.aa.attacks_to_run) <= {"square"}:
            with torch.no_grad():
                forward_logits(self.aa.model, x, where)
            return
        check_autograd_model(self.aa.model, where)
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            out = forward_logits(self.aa.model, xg, where)
            input_gradient(ce_loss(out, y), xg, where)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The adversarial batch (B, ...) for images x in [0, 1] (B, ...) and integer labels y (B,).

        Raises:
            AdvlabError: bad labels, a model that does not return logits (B, C), or (for the gradient attacks)
                whose output does not depend on its input through autograd.
        """
        y = as_labels(y, "labels y", len(x))
        with outside_inference_mode(), eval_mode(self.aa.model):
            x, y = autograd_tensor(x), autograd_tensor(y)
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
        return out


register_attack("autoattack", lambda s: AutoAttackEval(s), white_box=False)
register_attack("square", lambda s: AutoAttackEval(s, version="custom", attacks=["square"],
                                                  square_queries=s.square_queries), white_box=False)
