"""``knn-guide``: the guide-sample attack on a k-nearest-neighbour classifier, in representation space.

Chen et al. (ICASSP 2020) attack their kNN classifier with a "PGD-kNN" guide-sample attack whose code is missing
from the official repository (its notebook calls ``DKNNPGDAttack`` with m = 300, guide = 2; see
docs/methods/ssat.md). advlab's own
definition, for a :class:`advlab.models.KNNClassifier` with encoder f, bank (features b_i, labels l_i) and
similarity s (its metric: cosine, or minus the Euclidean distance):

1. **guides**, once per input x of label y, from its clean representation f(x) (no gradient): for each class
   c != y that has bank rows, the m bank rows of class c most similar to f(x) (m = the kNN's k by default,
   cut to the smallest class count of the bank); the **target class** t is the class whose m rows have the
   highest mean similarity to f(x); the guides G(x) are those m rows of t.
2. **objective**: the mean similarity ``(1/m) sum_{g in G(x)} s(f(x'), g)`` of the adversarial representation
   to its guides (:func:`advlab.models.knn.guide_similarity`), maximised by :func:`advlab.attacks.pgd` in the
   threat model (linf sign steps or l2 normalised steps, eps in pixel units, 20 steps of eps / 4 as
   ``pgd20``, a uniform random start from a generator seeded with the evaluation's seed), with the encoder
   in eval mode.
3. **stop**: each sample stops at its first iterate the kNN's hard vote misclassifies (pgd's ``classify``
   judges the kNN's scores of the representation; ``early_stop=0``), as ``pgd20`` does on logits.

It pulls the representation toward the nearest training features of the most similar other class, so the
hard vote, which has no useful gradient, flips without any gradient through it. It attacks only a
``KNNClassifier``; on any other model it is an AdvlabError.
"""
from __future__ import annotations

from typing import Any

import torch

from ..attacks import get_norm, pgd
from ..attacks.context import eval_mode
from ..attacks.losses import as_labels
from ..attacks.model_output import autograd_tensor, check_autograd_model, forward_logits, outside_inference_mode
from ..errors import AdvlabError
from ..models import KNNClassifier
from ..models.knn import guide_count, guide_features, guide_similarity
from .attack_registry import AttackSetup, register_attack

class GuideAttack:
    """``knn-guide`` (module docs): PGD on the mean similarity to m guide features of the most similar other
    class, stopping each sample at its first iterate the kNN's hard vote misclassifies.

    Args:
        setup: the evaluation's AttackSetup; its model must be a :class:`advlab.models.KNNClassifier`.
        steps, step_size: PGD's (default 20 steps of eps / 4, as ``pgd20``).
        guides: m (default: the kNN's k), cut to the smallest class count of the bank.

    Raises:
        AdvlabError: the model is not a KNNClassifier.
    """

    def __init__(self, setup: AttackSetup, *, steps: int = 20, step_size: float | None = None,
                 guides: int | None = None) -> None:
        if not isinstance(setup.model, KNNClassifier):
            raise AdvlabError(f"knn-guide attacks a k-nearest-neighbour classifier, got {type(setup.model).__name__}; "
                              "evaluate with --classifier knn (advlab.evaluation.as_classifier(model, 'knn', ...))")
        self.knn: KNNClassifier = setup.model
        self.eps, self.norm, self.steps = setup.eps, setup.norm, steps
        self.step_size = self.eps / 4 if step_size is None else step_size
        self.guides = guide_count(self.knn, self.knn.k if guides is None else guides)
        self.generator = torch.Generator().manual_seed(setup.seed)
        self.can_skip = True  # one random start per batch: another rank's batch is replayed by drawing its noise

    def skip(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Advance the random state as attacking the batch x (B, ...) would, without attacking it."""
        eps = torch.full((len(x),), float(self.eps), dtype=x.dtype, device=x.device)
        get_norm(self.norm).random(x, eps, self.generator)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The adversarial batch (B, ...) for images x in [0, 1] (B, ...) and integer labels y (B,).

        Raises:
            AdvlabError: bad labels; an encoder that does not return features (B, D) or is not differentiable.
        """
        y = as_labels(y, "labels y", len(x))
        knn = self.knn
        metric = knn.metric
        with outside_inference_mode():
            check_autograd_model(knn, "knn-guide")
            x, y = autograd_tensor(x), autograd_tensor(y)
            with eval_mode(knn), torch.no_grad():
                features = forward_logits(knn.encoder, x, "knn-guide (the kNN's encoder)")
            guides, _, _ = guide_features(knn, features, y, self.guides)

            def loss(representation: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
                return guide_similarity(representation, target, metric)

            result = pgd(knn.encoder, x, y, eps=self.eps, step_size=self.step_size, steps=self.steps,
                         norm=self.norm, loss=loss, target=guides, random_start="uniform", early_stop=0,
                         model_mode="eval", generator=self.generator, classify=knn.scores)
        return result.x_adv

    def cost(self) -> dict[str, tuple[int, int]]:
        """Model passes per point at most, as :meth:`PGDEval.cost` (one restart), plus the guides' forward."""
        return {"knn-guide": (self.steps + 3, self.steps)}

    def settings(self) -> dict[str, Any]:
        return {"steps": self.steps, "step_size": self.step_size, "loss": f"guide-{self.knn.metric}",
                "objective": f"mean {self.knn.metric} similarity of the representation to its guides",
                "guides": self.guides, "target": "the other class whose guides are most similar (clean point)",
                "random_start": "uniform", "restarts": 1, "stop": "first iterate the kNN's hard vote misclassifies"}


register_attack("knn-guide", lambda s: GuideAttack(s, steps=20), white_box=True, needs_knn=True)
