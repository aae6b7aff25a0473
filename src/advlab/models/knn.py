"""A k-nearest-neighbour classifier over an encoder's representation, as an ``nn.Module`` attacks can run on.

Self-supervised adversarial training (Chen et al., ICASSP 2020) classifies by kNN over a frozen encoder's
features instead of a trained linear head. :class:`KNNClassifier` holds the encoder and a bank of training
features and labels and returns class scores (B, C), so ``advlab.evaluate`` attacks it like any classifier:

- the prediction (argmax of the scores) is the **hard vote** over the k nearest bank features: ``majority``
  (the most frequent label among them; ties broken by the soft vote) or ``weighted`` (the class with the
  largest sum of ``exp(similarity / temperature)`` over them);
- gradients flow through the **soft vote** ``p`` (B, C): each class's share of ``exp(similarity / temperature)``
  over the k nearest features. ``majority`` returns ``(counts + p / 2) / k``: piecewise constant counts plus
  a term of at most half a vote, so the argmax is the majority vote whatever ``p`` is (a count ahead by one
  vote stays ahead by at least half a vote, also after float rounding and when ``p`` underflows to 0 or 1),
  ties of the count go to the larger soft vote (to float32 resolution, then the smallest class index), and
  the input gradient is the soft vote's. ``weighted`` returns ``p`` itself.

The neighbours are chosen without gradients (``topk``); the similarities of the chosen ones carry them. The
official code builds its DkNN over the whole training set at every step (methods.md part B 3.6); here the bank
is built once (:func:`knn_classifier`, :func:`encode`) and refreshed by whoever owns it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AdvlabError

KNN_METRICS = ("cosine", "l2")
"""Similarity of a representation to a bank feature: ``cosine`` (of the two vectors) or ``l2`` (minus their
Euclidean distance; the paper's DkNN-L2)."""

KNN_VOTES = ("majority", "weighted")
"""The hard vote that predicts: ``majority`` of the k labels, or ``weighted`` by exp(similarity / temperature)."""


def similarity(features: torch.Tensor, bank: torch.Tensor, metric: str) -> torch.Tensor:
    """Similarity (B, N) float32 of features (B, D) to bank rows (N, D): cosine, or minus the Euclidean
    distance. Cosine normalises both (a bank stored normalised, or replaced by its owner, is right either way)."""
    if metric == "cosine":
        return F.normalize(features.float(), dim=1) @ F.normalize(bank.float(), dim=1).T
    if metric == "l2":
        return -torch.cdist(features.float(), bank.float())
    raise AdvlabError(f"metric must be one of {', '.join(KNN_METRICS)}, got {metric!r}")


def guide_similarity(features: torch.Tensor, guides: torch.Tensor, metric: str) -> torch.Tensor:
    """Mean similarity (B,) of each representation (B, D) to its own guide features (B, m, D), in the kNN's
    ``metric``: the mean cosine, or minus the mean Euclidean distance (the objective ``knn-guide`` maximises)."""
    f = features.float()[:, None, :]
    g = guides.float()
    if metric == "cosine":
        return F.cosine_similarity(f, g, dim=2).mean(1)
    if metric == "l2":
        return -(f - g).norm(dim=2).mean(1)
    raise AdvlabError(f"metric must be one of {', '.join(KNN_METRICS)}, got {metric!r}")


def guide_count(knn: "KNNClassifier", m: int) -> int:
    """The number of guides used for a requested ``m``: ``min(m, the smallest class count of the bank)``
    (classes without bank rows aside). AdvlabError unless m is a positive integer."""
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise AdvlabError(f"knn-guide guides must be a positive integer, got {m!r}")
    counts = torch.bincount(knn.bank_labels, minlength=knn.num_classes)
    return min(m, int(counts[counts > 0].min()))


def guide_features(knn: "KNNClassifier", features: torch.Tensor, y: torch.Tensor, m: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The guides of representations (B, D) of labels y (B,): ``(guides (B, m', D), target classes (B,),
    mean similarities (B, C))``, without gradient; ``m' = guide_count(knn, m)``. The mean similarity of class
    c is that of its m' bank rows most similar to the representation (-inf for y and for classes without bank
    rows); the target is the class of the largest (ties: the smallest index); the guides are its m' rows.

    Raises:
        AdvlabError: m not a positive integer, or a label whose bank holds no other class.
    """
    m = guide_count(knn, m)
    labels = knn.bank_labels
    b = len(features)
    with torch.no_grad():
        sims = knn.similarities(features)  # (B, N)
        mean = torch.full((b, knn.num_classes), float("-inf"), device=sims.device)
        rows = torch.zeros(knn.num_classes, b, m, dtype=torch.long, device=sims.device)  # bank indices
        for c in torch.unique(labels).tolist():
            members = (labels == c).nonzero().squeeze(1)
            top = sims[:, members].topk(m, dim=1)
            mean[:, c] = top.values.mean(1)
            rows[c] = members[top.indices]
        mean.scatter_(1, y[:, None], float("-inf"))
        if not bool(torch.isfinite(mean.max(1).values).all()):
            raise AdvlabError("knn-guide: the kNN's bank holds no class other than a point's label")
        target = mean.argmax(1)
        index = rows[target, torch.arange(b, device=sims.device)]  # (B, m)
    return knn.bank_features[index], target, mean


class KNNClassifier(nn.Module):
    """kNN over ``encoder``'s features: ``forward(x)`` (B, C, H, W) pixels in [0, 1] -> class scores (B, C).

    Args:
        encoder: maps pixels to features (B, D) (``advlab.models.representation.feature_extractor``).
        bank_features: (N, D) float features of the training split; bank_labels: (N,) integer labels in [0, C).
        num_classes: C >= 2. k: neighbours, an integer in [1, N]. metric: :data:`KNN_METRICS`. vote:
            :data:`KNN_VOTES`. temperature: of the soft vote's exp(similarity / temperature), > 0 (cosine
            similarities are in [-1, 1]; L2 similarities are minus distances in the features' own units).

    The bank lives in buffers (moved by ``.to``, not in the state dict: it is rebuilt from the encoder and the
    training split), detached, float32, L2-normalised rows for cosine. Raises AdvlabError for bad arguments;
    see the module docs for what the scores are.
    """

    def __init__(self, encoder: nn.Module, bank_features: torch.Tensor, bank_labels: torch.Tensor,
                 num_classes: int, k: int = 75, metric: str = "cosine", vote: str = "majority",
                 temperature: float = 0.1) -> None:
        super().__init__()
        if not isinstance(encoder, nn.Module):
            raise AdvlabError(f"encoder must be an nn.Module, got {type(encoder).__name__}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise AdvlabError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if metric not in KNN_METRICS:
            raise AdvlabError(f"knn metric must be one of {', '.join(KNN_METRICS)}, got {metric!r}")
        if vote not in KNN_VOTES:
            raise AdvlabError(f"knn vote must be one of {', '.join(KNN_VOTES)}, got {vote!r}")
        if not (isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
                and 0 < temperature < math.inf):
            raise AdvlabError(f"knn temperature must be a finite number > 0, got {temperature!r}")
        if not (torch.is_tensor(bank_features) and torch.is_tensor(bank_labels)):
            raise AdvlabError("the bank needs tensors: features (N, D) and labels (N,)")
        if (bank_features.dim() != 2 or bank_labels.dim() != 1 or len(bank_features) != len(bank_labels)
                or not bank_features.is_floating_point() or bank_labels.is_floating_point()
                or bank_labels.dtype == torch.bool):
            raise AdvlabError(f"the bank needs float features (N, D) and integer labels (N,), got "
                              f"{bank_features.dtype} {tuple(bank_features.shape)} and {bank_labels.dtype} "
                              f"{tuple(bank_labels.shape)}")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(bank_labels):
            raise AdvlabError(f"knn k must be an integer in [1, {len(bank_labels)}] (the bank's size), got {k!r}")
        if int(bank_labels.min()) < 0 or int(bank_labels.max()) >= num_classes:
            raise AdvlabError(f"bank labels must be in [0, {num_classes}), got {int(bank_labels.min())}.."
                              f"{int(bank_labels.max())}")
        self.encoder = encoder
        self.num_classes, self.k, self.metric, self.vote = num_classes, k, metric, vote
        self.temperature = float(temperature)
        with torch.inference_mode(False):  # normal tensors, even when built under inference_mode: attackable
            bank = bank_features.detach().float().clone()
            bank = F.normalize(bank, dim=1) if metric == "cosine" else bank
            labels = bank_labels.detach().long().clone()
        self.register_buffer("bank_features", bank, persistent=False)
        self.register_buffer("bank_labels", labels, persistent=False)

    def similarities(self, features: torch.Tensor) -> torch.Tensor:
        """Similarity (B, N) of features (B, D) to every bank row, in the kNN's metric (with the features'
        gradient)."""
        return similarity(features, self.bank_features, self.metric)

    def neighbours(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The k nearest bank rows of features (B, D): similarities (B, k) (with the features' gradient),
        their labels (B, k) and bank indices (B, k), nearest first."""
        sims = self.similarities(features)
        index = sims.detach().topk(self.k, dim=1).indices
        return sims.gather(1, index), self.bank_labels[index], index

    def votes(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(counts, soft)`` (B, C): the k neighbours' label counts (no gradient) and the soft vote p (rows sum to 1)."""
        sims, labels, _ = self.neighbours(features)
        weights = torch.softmax(sims / self.temperature, dim=1)  # exp(s/T) normalised over the k neighbours
        soft = torch.zeros(len(features), self.num_classes, device=features.device, dtype=weights.dtype)
        soft = soft.scatter_add(1, labels, weights)
        counts = torch.zeros_like(soft).scatter_add_(1, labels, torch.ones_like(weights))
        return counts, soft

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """Class scores (B, C) of representations (B, D): what ``forward`` returns for their images."""
        counts, soft = self.votes(features)
        if self.vote == "weighted":
            return soft
        return (counts + 0.5 * soft) / self.k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        if not torch.is_tensor(features) or features.dim() != 2 or features.shape[1] != self.bank_features.shape[1]:
            got = tuple(features.shape) if torch.is_tensor(features) else type(features).__name__
            raise AdvlabError(f"the kNN's encoder returned {got}; it must return features (B, "
                              f"{self.bank_features.shape[1]}) like its bank's")
        return self.scores(features)

    def extra_repr(self) -> str:
        return (f"bank={tuple(self.bank_features.shape)}, k={self.k}, metric={self.metric}, vote={self.vote}, "
                f"temperature={self.temperature}")


@torch.no_grad()
def encode(encoder: nn.Module, images: torch.Tensor, batch_size: int = 500,
           device: torch.device | str | None = None) -> torch.Tensor:
    """Features (N, D) float32 of images (N, C, H, W) (uint8, divided by 255, or float in [0, 1]) by
    ``encoder`` in eval mode (its train/eval flags restored), in batches of ``batch_size``, on ``device``
    (default: the encoder's)."""
    if device is None:
        param = next(encoder.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    was = [m.training for m in encoder.modules()]
    encoder.eval()
    try:
        out = []
        for start in range(0, len(images), batch_size):
            xb = images[start:start + batch_size].to(device)
            xb = xb.float().div(255) if xb.dtype == torch.uint8 else xb.float()
            out.append(encoder(xb).float())
        return torch.cat(out) if out else torch.zeros(0, 0, device=device)
    finally:
        for m, flag in zip(encoder.modules(), was):
            m.training = flag


def knn_classifier(encoder: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int, *,
                   batch_size: int = 500, device: torch.device | str | None = None, **options) -> KNNClassifier:
    """A :class:`KNNClassifier` whose bank is ``encoder``'s features of (images, labels) (the training split),
    built once; ``options``: k, metric, vote, temperature."""
    bank = encode(encoder, images, batch_size, device)
    return KNNClassifier(encoder, bank, labels.to(bank.device), num_classes, **options)
