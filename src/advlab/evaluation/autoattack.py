"""AutoAttack (Croce & Hein 2020) and its Square attack through the ``pyautoattack`` package, never a rewrite."""
from __future__ import annotations

import logging
import re
import sys
from typing import Any, Callable, Sequence

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
    """Collects the records of pyautoattack's logger instead of printing them, and hands each to ``on_record``
    as it comes (the live progress)."""

    def __init__(self, on_record: Callable[[logging.LogRecord], None] | None = None) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.on_record = on_record

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if self.on_record is not None:
            self.on_record(record)


class _Counted(nn.Module):
    """The attacked model, calling ``tick()`` at each forward pass: what the progress bar counts."""

    def __init__(self, model: nn.Module, tick: Callable[[], None]) -> None:
        super().__init__()
        self.model = model
        self.tick = tick

    def forward(self, x: torch.Tensor) -> Any:
        self.tick()
        return self.model(x)


_PERTURBED = re.compile(r"^(\S+) - \d+/\d+ - (\d+) out of (\d+) successfully perturbed")
_INITIAL = re.compile(r"^initial accuracy: ([\d.]+)%")


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
        self.num_classes = setup.outputs or setup.num_classes  # the logits FAB differentiates
        self.progress = setup.progress
        self._bar: Any = None  # the progress bar of the batch being attacked (progress only)
        model = _Counted(setup.model, self._on_forward)
        norm = {"linf": "Linf", "l2": "L2"}[setup.norm]
        classes = setup.outputs or setup.num_classes
        targets = min(9, setup.num_classes - 1, classes - 1)
        if attacks is not None:
            aa = AutoAttack(model, eps=setup.eps, norm=norm, version="custom", attacks=list(attacks),
                            seed=setup.seed, device=setup.device)
        elif version in AA_REDUCED_VERSIONS:
            aa = AutoAttack(model, eps=setup.eps, norm=norm, version="custom",
                            attacks=list(AA_REDUCED_VERSIONS[version]), seed=setup.seed, device=setup.device)
            aa.apgd.n_restarts = 1
        elif version in AA_PACKAGE_VERSIONS:
            aa = AutoAttack(model, eps=setup.eps, norm=norm, version=version, seed=setup.seed,
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
        for runner in (aa.apgd, aa.apgd_targeted, aa.fab, aa.square):  # one call = one restart (of one target)
            runner.attack_single_run = self._counting_runs(runner.attack_single_run)

    attacks_correct_only = True  # pyautoattack attacks only the points classified correctly clean

    def cost(self) -> dict[str, tuple[int, int]]:
        """Model passes per point of each sub-attack of this version at most (every point still robust when it
        starts): ``{sub-attack: (forwards, backwards)}``, read from pyautoattack's settings (iterations,
        restarts, target classes, queries, EOT draws). Counted on pyautoattack 0.2.0 (tests/test_model_sources.py
        counts them): an APGD run takes n_iter + 1 forward and backward passes (times its EOT draws; APGD-T one
        forward more for its target), a FAB-T run 2 n_iter + 3 forwards and n_iter backwards, an untargeted FAB
        run 2 n_iter + 2 forwards and n_iter backwards per class, a Square run n_queries + 2 forwards; each
        sub-attack adds two forwards (its first prediction, and pyautoattack's check of what it returned)."""
        aa, out = self.aa, {}
        for name in aa.attacks_to_run:
            if name in ("apgd-ce", "apgd-dlr"):
                runs, per = aa.apgd.n_restarts, (aa.apgd.n_iter + 1) * aa.apgd.eot_iter
                out[name] = (runs * per + 2, runs * per)
            elif name == "apgd-t":
                t = aa.apgd_targeted
                runs, per = t.n_target_classes * t.n_restarts, (t.n_iter + 1) * t.eot_iter
                out[name] = (runs * (per + 1) + 2, runs * per)
            elif name == "fab-t":
                runs = aa.fab.n_target_classes  # pyautoattack runs FAB-T with one restart per target
                out[name] = (runs * (2 * aa.fab.n_iter + 3) + 2, runs * aa.fab.n_iter)
            elif name == "fab":
                runs = aa.fab.n_restarts
                out[name] = (runs * (2 * aa.fab.n_iter + 2) + 2, runs * aa.fab.n_iter * self.num_classes)
            elif name == "square":
                out[name] = (aa.square.n_restarts * (aa.square.n_queries + 2) + 2, 0)
        return out

    # -- progress inside a batch (setup.progress): the sub-attack, its restart or target, the points left, an ETA
    def _counting_runs(self, run: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            if self._bar is not None:
                self._run_index += 1
                self._show()
            return run(*args, **kwargs)
        return counted

    def _on_forward(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def _runs_of(self, name: str) -> tuple[int, int]:
        """(targets, restarts) of a sub-attack: the units its progress counts."""
        aa = self.aa
        return {"apgd-ce": (1, aa.apgd.n_restarts), "apgd-dlr": (1, aa.apgd.n_restarts),
                "apgd-t": (aa.apgd_targeted.n_target_classes, aa.apgd_targeted.n_restarts),
                "fab-t": (aa.fab.n_target_classes, 1), "fab": (1, aa.fab.n_restarts),
                "square": (1, aa.square.n_restarts)}.get(name, (1, 1))

    def _show(self) -> None:
        if self._current is None:
            return
        targets, restarts = self._runs_of(self._current)
        i = max(self._run_index - 1, 0)
        where = f"restart {i % restarts + 1}/{restarts}"
        if targets > 1:
            where = f"target {min(i // restarts + 1, targets)}/{targets} " + where
        left = f", {self._left}/{self._batch} points left" if self._left is not None else ""
        self._bar.set_description_str(f"autoattack {self._current} ({self._step}/{len(self._plan)}) {where}",
                                      refresh=False)
        self._bar.set_postfix_str(left.lstrip(", "))

    def _on_record(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("running "):
            name = message[len("running "):]
            self._current, self._run_index = name, 0
            self._step = self._plan.index(name) + 1 if name in self._plan else self._step + 1
            later = sum(self._passes.get(a, 0) for a in self._plan[self._step - 1:])
            self._bar.total = self._bar.n + later  # what is left: this sub-attack and the ones after it
            self._show()
            return
        found = _INITIAL.match(message)
        if found:
            self._left = round(float(found.group(1)) / 100 * self._batch)
            return
        found = _PERTURBED.match(message)
        if found and self._left is not None:
            self._left -= int(found.group(2))
            self._show()
        elif message.startswith("no robust datapoints left"):
            self._left = 0
            self._bar.total = self._bar.n
            self._show()

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
        capture = _Capture(self._on_record if self.progress else None)
        if self.progress:
            self._open_bar(len(x))
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
            if self._bar is not None:
                self._bar.close()
                self._bar = None
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

    def _open_bar(self, batch: int) -> None:
        """A progress bar over the model's forward passes of this batch (at most the planned ones: points
        broken early leave less to do), with an estimate of the time left."""
        from tqdm.auto import tqdm

        self._plan = list(self.aa.attacks_to_run)
        self._passes = {name: forwards for name, (forwards, _) in self.cost().items()}
        self._current, self._run_index, self._step, self._left, self._batch = None, 0, 0, None, batch
        self._bar = tqdm(total=sum(self._passes.values()) + 10, desc=f"autoattack {self.version}: checks",
                         unit="pass", file=sys.stderr, leave=False, dynamic_ncols=True, mininterval=0.5)

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
