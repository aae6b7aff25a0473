"""``evaluate``: clean accuracy and accuracy under each named attack, the per-sample AND, sanity checks."""
from __future__ import annotations

import numbers
import time
from typing import Any, Sequence

import torch
from torch import nn

from ..attacks.box import box_tolerance, clamp_to_box
from ..attacks.context import eval_mode
from ..attacks.losses import as_labels
from ..attacks.model_output import forward_logits
from ..devices import pick_device
from ..distributed import Collective
from ..errors import AdvlabError
from .result import EvalResult
from .runner import EvalData, run_attack, run_clean
from .sanity import run_sanity
from .suite import EVAL_ATTACKS, AttackSetup, eval_attack_names
from .threat import check_eps

DEFAULT_ATTACKS = ("pgd20", "cw20", "autoattack")


def attack_names(attacks: str | Sequence[str]) -> list[str]:
    """Validated attack names in order, without duplicates and without ``clean`` (always computed)."""
    if isinstance(attacks, str):
        attacks = [a.strip() for a in attacks.split(",") if a.strip()]
    if not isinstance(attacks, (list, tuple)) or not all(isinstance(a, str) for a in attacks):
        raise AdvlabError(f"attacks must be a list of names or a comma-separated string, got {attacks!r}")
    names: list[str] = []
    for name in attacks:
        if name != "clean" and name not in EVAL_ATTACKS:
            raise AdvlabError(f"unknown attack {name!r}; allowed: {', '.join(eval_attack_names())}")
        if name != "clean" and name not in names:
            names.append(name)
    return names


def as_images(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Float images in [0, 1] (uint8 is divided by 255), int64 labels (from any integer dtype), and the number
    of float image values a rounding error outside [0, 1] (within ``attacks.box.box_tolerance`` of their
    dtype: 1e-6 in float32 / float64), which are clamped.

    Raises:
        AdvlabError: not tensors, shapes that do not match, bool/float labels, images of another dtype, float
            images with NaN or infinite values or further outside [0, 1] (the message gives the smallest and
            largest value and how far outside they are).
    """
    if not torch.is_tensor(images) or not torch.is_tensor(labels):
        raise AdvlabError("images and labels must be torch tensors")
    if images.dim() < 2 or labels.dim() != 1 or len(images) != len(labels):
        raise AdvlabError(f"need images (N, ...) and labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}")
    labels = as_labels(labels, "labels")
    clamped = 0
    if images.dtype == torch.uint8:
        images = images.float() / 255
    elif images.is_floating_point():
        images, clamped = clamp_to_box(images, "float images")
    else:
        raise AdvlabError(f"images must be uint8 or float in [0, 1], got {images.dtype}")
    return images, labels, clamped


def _device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        param = next(iter(model.parameters()), None)
        return param.device if param is not None else torch.device("cpu")
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise AdvlabError(f"device must be a name such as cpu or cuda:0, got {device!r}")
    return pick_device(device)


def _int_at_least(value: Any, low: int | None, name: str) -> int:
    """``value`` as an int if it is an integer >= ``low`` (None: any; bools refused); an AdvlabError naming it
    otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (low is not None and value < low):
        raise AdvlabError(f"{name} must be an integer{'' if low is None else f' >= {low}'}, got {value!r}")
    return int(value)


def _versions() -> dict[str, str]:
    from .. import __version__

    try:
        import pyautoattack
        aa = getattr(pyautoattack, "__version__", "unknown")
    except ImportError:
        aa = "not installed"
    return {"advlab": __version__, "torch": torch.__version__, "pyautoattack": aa}


def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    norm: str = "linf",
    attacks: str | Sequence[str] = DEFAULT_ATTACKS,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    sanity: bool = True,
    seed: int = 0,
    progress: bool = True,
    num_classes: int | None = None,
    autoattack_version: str = "standard",
    square_queries: int = 1000,
    collective: Collective | None = None,
) -> EvalResult:
    """Robustness of ``model`` on (images, labels) within the ``norm`` ball of radius ``eps``.

    Args:
        model: maps float images in [0, 1] to logits; run in eval mode (each submodule's flag is restored
            after). With ``device`` given the model is moved there (``model.to``); None: the model's device.
        images: uint8 (divided by 255) or float in [0, 1], (N, C, H, W); float values a rounding error outside
            [0, 1] (within ``advlab.attacks.box.box_tolerance``: 1e-6 in float32 / float64, one unit in the last
            place at 1 in float16 / bfloat16) are clamped and counted (``inputs`` of the result's JSON), values
            further out refused. labels: integer (N,), any integer dtype (used as int64); bool and float labels
            are refused.
        eps, norm: the threat model; linf eps in (0, 1], l2 eps > 0.
        attacks: names among ``eval_attack_names()`` (a list or a comma-separated string): ``pgd20``, ``cw20``,
            ``pgd20-scaled``, ``autoattack``, ``square``, ``knn-guide`` (a :class:`advlab.models.KNNClassifier`
            only); ``clean`` is always computed.
        batch_size: points per attacked batch.
        sanity: run the sanity checks that cost extra attacks (large-eps, more-steps); the free ones always run.
        seed: seeds every attack's random start (and AutoAttack), independently of the global RNG.
        progress: a progress bar per attack on stderr.
        num_classes: number of classes (chance level, AutoAttack's target classes); default: the logit width.
        autoattack_version: ``standard`` (default), ``plus`` or ``rand`` (pyautoattack's), or the reduced
            ``fast``, ``apgd``, ``apgd-ce`` (see ``advlab.evaluation.suite.AA_REDUCED_VERSIONS``).
        square_queries: query budget of the standalone ``square`` attack.
        collective: the processes evaluating together under torchrun (``advlab.distributed``; None: this one).
            Every rank passes the same arguments; the batches are dealt over the ranks and the flags gathered,
            so every rank returns the result of one process, flag for flag (attacks whose random draws cannot
            be replayed for another rank's batch, such as PGD with restarts or AutoAttack, run every batch on
            every rank).

    Returns:
        EvalResult: per-sample flags, accuracies as fractions in [0, 1], sanity checks, ``to_json()``,
        ``table()``. Every adversarial batch is verified to be in the ball and in [0, 1] (AdvlabError if not).

    Raises:
        AdvlabError: bad arguments (each named: a model that is no nn.Module, eps, norm, attack names,
            batch_size, seed, square_queries or num_classes of the wrong type or range, an unknown device,
            images or labels as :func:`as_images` refuses them, labels outside [0, num_classes)); a model that does not return a float logits tensor (B, C); a model whose
            output does not depend on its input through autograd, for the gradient attacks and the sanity
            checks that run PGD (only square, with ``sanity=False``, runs on such a model).

    Works the same under ``torch.no_grad()`` and ``torch.inference_mode()``.
    """
    start = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise AdvlabError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    eps = check_eps(eps, norm)
    names = attack_names(attacks)
    batch_size = _int_at_least(batch_size, 1, "batch_size")
    seed = _int_at_least(seed, None, "seed")
    square_queries = _int_at_least(square_queries, 1, "square_queries")
    if num_classes is not None:
        num_classes = _int_at_least(num_classes, 2, "num_classes")
    images, labels, clamped = as_images(images, labels)
    if len(labels) == 0:
        raise AdvlabError("no points to evaluate")
    dev = _device(model, device)
    if device is not None and device != "auto":
        model.to(dev)
    data = EvalData(model, images, labels, batch_size, dev, progress, collective or Collective())
    with eval_mode(model):
        try:
            with torch.no_grad():
                width = forward_logits(model, images[:1].to(dev), "evaluate").shape[1]
        except RuntimeError as exc:
            raise AdvlabError(f"the model cannot process inputs of shape {tuple(images.shape[1:])}: {exc}") from None
        num_classes = int(num_classes or width)
        if int(labels.max()) >= num_classes or int(labels.min()) < 0:
            raise AdvlabError(f"labels must be in [0, {num_classes}), got {int(labels.min())}..{int(labels.max())}")
        setup = AttackSetup(model, eps, norm, dev, seed, num_classes, autoattack_version, square_queries, width,
                            progress=progress)
        built = {name: EVAL_ATTACKS.get(name)(setup) for name in names}  # fail early on a bad setup
        clean = run_clean(data)
        outcomes = {name: run_attack(name, attack, data, eps, norm) for name, attack in built.items()}
        checks = run_sanity(data, setup, clean, outcomes, extra=sanity)
    return EvalResult(eps=eps, norm=norm, labels=labels.cpu(), clean=clean, attacks=outcomes,
                      num_classes=num_classes, seed=seed, sanity=checks, versions=_versions(),
                      seconds=time.perf_counter() - start, clamped=clamped,
                      clamp_tolerance=box_tolerance(images.dtype))
