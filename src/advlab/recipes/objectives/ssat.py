"""SSAT (Chen et al., ICASSP 2020): maximise a mutual-information bound between the representations of x and x'.

The encoder is fine-tuned so the representation of an image and of its adversarial example x' (made by the
``pgd-knn`` perturbation against the kNN classifier) stay together: the loss is a contrastive InfoNCE bound
(``advlab.recipes.contrastive``; SimCLR's NT-Xent by default) with (x, x') as the positive pair and the other
images of the batch, clean and adversarial, as negatives. As in the official notebook only the x' that fool
the kNN enter the term (``keep: fooled``; ``keep: all`` uses every pair). The official code used AMDIM's
global-to-local NCE terms (methods.md part B 3.3); register such a loss in ``CONTRASTIVE_LOSSES`` to use it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ...options import option
from ..base import ObjectivePart, Step, TermSpec, register
from ..contrastive import check_loss_name, contrastive_loss


@dataclass
class SSATOptions:
    loss: str = "nt-xent"  # advlab.recipes.contrastive.CONTRASTIVE_LOSSES
    temperature: float = option(0.5, low=0, low_open=True)
    keep: Literal["fooled", "all"] = "fooled"  # which (x, x') pairs enter the term: those that fool the kNN (official), or all


def mutual_information_term(z_clean: torch.Tensor, z_adv: torch.Tensor, keep: torch.Tensor, loss: str,
                            temperature: float) -> torch.Tensor:
    """Per-sample term (B,): the contrastive loss of the kept pairs (x_i, x'_i) among the kept rows, times
    B / n_kept, so the batch mean is the mean over the kept pairs; 0 for the others. With fewer than two kept
    pairs (no negative) the term is 0 (with a graph, so backward still runs). z_*: (B, D); keep: (B,) bool."""
    per_sample = torch.zeros(len(z_clean), device=z_clean.device, dtype=torch.float32) + 0.0 * z_clean.float().sum()
    n = int(keep.sum())
    if n < 2:
        return per_sample
    kept = contrastive_loss(loss)(z_clean[keep], z_adv[keep], temperature)
    return per_sample.masked_scatter(keep, kept * (len(z_clean) / n))


@register("objective", "ssat")
class SSATObjective(ObjectivePart):
    """``mutual-information``: the contrastive loss of (representation of x, of x'), over the pairs kept."""

    Options = SSATOptions
    pairs_with = {"perturbation": "pgd-knn"}  # which x' fool the kNN
    forward_views = ("clean", "adv")
    target_views = ()
    representation = True
    term_specs = (TermSpec("mutual-information", ("clean", "adv"), supervised=False),)
    needs_views = {"adv": frozenset({"fooled"})}
    distributed = False  # its negatives would be this rank's shard only, not the global batch (not gathered yet)

    def __init__(self, options, env) -> None:
        super().__init__(options, env)
        check_loss_name(options.loss, "objective.loss")

    def terms(self, step: Step) -> dict[str, torch.Tensor]:
        o = self.options
        fooled = step.views["adv"].fooled
        keep = fooled if o.keep == "fooled" else torch.ones_like(fooled)
        return {"mutual-information": mutual_information_term(step.outputs["clean"], step.outputs["adv"], keep,
                                                              o.loss, o.temperature)}

    def correct(self, step: Step) -> torch.Tensor:
        """The kNN's hard vote still right on x' (the training accuracy in the log is the kNN's robust one)."""
        return ~step.views["adv"].fooled
