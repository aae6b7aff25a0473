"""Named evaluation attacks: the same names in the Python API, the CLI and the JSON.

Each name maps to a factory ``factory(setup: AttackSetup) -> EvalAttack``; an EvalAttack attacks one batch
(``attack(x, y) -> x_adv``) and describes its settings (``attack.settings() -> dict``, JSON-ready).
Register your own with ``EVAL_ATTACKS.register(name, factory)``.

The contract every EvalAttack keeps (tests/test_attack_contracts.py checks each registered name): x is not
modified; x_adv is in the eps-ball around x and in [0, 1]; integer labels of any dtype are accepted; a batch
is attacked like its samples one by one; every submodule's train/eval flag, the parameters and buffers and
the global torch RNG are as before; the same setup gives the same x_adv; it works under ``torch.no_grad()``
and ``torch.inference_mode()``; a model that does not return logits (B, C) is an AdvlabError.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
from torch import nn

from ..attacks import pgd, skip_start
from ..attacks.box import clamp_to_box
from ..attacks.context import eval_mode
from ..attacks.losses import as_labels, ce_loss
from ..attacks.model_output import (autograd_tensor, check_autograd_model, forward_logits, input_gradient,
                                    outside_inference_mode)
from ..errors import AdvlabError
from ..registry import Registry
from .knn_attack import GuideAttack


@dataclass
class AttackSetup:
    """What a factory needs to build an attack for one evaluation."""

    model: nn.Module
    eps: float
    norm: str
    device: torch.device
    seed: int
    num_classes: int
    autoattack_version: str = "standard"
    square_queries: int = 1000


class EvalAttack(Protocol):
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def settings(self) -> dict[str, Any]: ...


EVAL_ATTACKS: Registry[Callable[[AttackSetup], EvalAttack]] = Registry("attack")


class PGDEval:
    """PGD with uniform random start(s); each sample stops at its first misclassified iterate.

    Stopping there (``early_stop=0``) makes the attack at least as strong as the usual final-iterate PGD of
    the same budget. With restarts, a point counts as robust only if no restart fools it.
    """

    def __init__(self, setup: AttackSetup, *, steps: int = 20, step_size: float | None = None, loss: str = "ce",
                 logit_scale: float = 1.0, restarts: int = 1, eps: float | None = None) -> None:
        self.model, self.norm = setup.model, setup.norm
        self.eps = setup.eps if eps is None else eps
        self.steps, self.loss, self.logit_scale, self.restarts = steps, loss, logit_scale, restarts
        self.step_size = self.eps / 4 if step_size is None else step_size
        self.generator = torch.Generator().manual_seed(setup.seed)
        # one restart draws one start for every point of a batch: a batch attacked elsewhere (another rank)
        # is replayed by drawing the same noise; more restarts draw for the points not yet fooled
        self.can_skip = restarts == 1
        self.clamped = 0  # input values a rounding error outside [0, 1], clamped (attacks.box), over all batches

    def skip(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Advance the random state as attacking the batch x (B, ...) would, without attacking it (exact for
        one restart: ``can_skip``)."""
        skip_start(x, float(self.eps), norm=self.norm, random_start="uniform", generator=self.generator)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The adversarial batch (B, ...) for images x in [0, 1] (B, ...) and integer labels y (B,) (pgd checks
        both, and the model, and runs under no_grad and inference_mode). Values of x a rounding error outside
        [0, 1] (``attacks.box``) are clamped and counted in ``settings()["clamped_inputs"]``.

        Raises:
            AdvlabError: bad labels, images further outside [0, 1], a model that does not return logits (B, C)
                or is not differentiable.
        """
        x_best = x.clone()
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(self.restarts):
            todo = (~fooled).nonzero().squeeze(1)
            if len(todo) == 0:
                break
            result = pgd(self.model, x[todo], y[todo], eps=self.eps, step_size=self.step_size, steps=self.steps,
                         norm=self.norm, loss=self.loss, random_start="uniform", early_stop=0, bn_mode="eval",
                         logit_scale=self.logit_scale, generator=self.generator)
            x_best[todo] = result.x_adv
            fooled[todo] = result.first_wrong != -1
            if len(todo) == len(x):
                self.clamped += result.clamped  # the first restart sees every point
        return x_best

    def settings(self) -> dict[str, Any]:
        out = {"steps": self.steps, "step_size": self.step_size, "loss": self.loss, "random_start": "uniform",
               "restarts": self.restarts, "stop": "first misclassified iterate"}
        if self.logit_scale != 1.0:
            out["logit_scale"] = self.logit_scale
        if self.clamped:
            out["clamped_inputs"] = self.clamped
        return out


EVAL_ATTACKS.register("pgd20", lambda s: PGDEval(s, steps=20, loss="ce"))
EVAL_ATTACKS.register("cw20", lambda s: PGDEval(s, steps=20, loss="cw"))
EVAL_ATTACKS.register("pgd20-scaled", lambda s: PGDEval(s, steps=20, loss="ce", logit_scale=10.0))
EVAL_ATTACKS.register("pgd-knn", lambda s: GuideAttack(s, steps=20))  # a KNNClassifier's: evaluation/knn_attack.py


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
        self.clamped = 0  # input values a rounding error outside [0, 1], clamped (attacks.box), over all batches

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
        """The adversarial batch (B, ...) for images x in [0, 1] (B, ...) and integer labels y (B,). Values of x
        a rounding error outside [0, 1] (``attacks.box``) are clamped (the batch pyautoattack attacks) and counted
        in ``settings()["clamped_inputs"]``.

        Raises:
            AdvlabError: bad labels, images further outside [0, 1], a model that does not return logits (B, C),
                or (for the gradient attacks) whose output does not depend on its input through autograd.
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


EVAL_ATTACKS.register("autoattack", lambda s: AutoAttackEval(s))
EVAL_ATTACKS.register("square", lambda s: AutoAttackEval(s, version="custom", attacks=["square"],
                                                         square_queries=s.square_queries))


def eval_attack_names() -> list[str]:
    """Every attack name ``evaluate`` accepts (``clean`` included)."""
    return ["clean", *EVAL_ATTACKS.names()]
