"""SimCLR's two-view augmentation, batched on the batch's device: random resized crop, horizontal flip, colour
jitter and random grayscale (Chen et al. 2020, appendix A; torchvision's transforms re-implemented, no
torchvision).

Each view of a batch is drawn in two steps, so the draws can be read and tested apart from the pixels:

    params = draw_params(n, settings, generator)     # per-sample parameters (B,), drawn on the CPU generator
    view = apply_params(x, params, settings)         # pixels (B, C, H, W) in [0, 1] on x's device

- **Crop**: area fraction s ~ U(scale), aspect ratio r log-uniform in ``ratio``; the crop is w x h of the
  image's width x height with w = clip(sqrt(s r), s, 1) and h = s / w, so its area is exactly s of the image
  and it always fits (torchvision instead retries up to 10 draws and falls back to a centre crop); its corner is
  uniform over the positions where it fits. The crop is resized to the input size by bilinear sampling
  (``F.affine_grid`` + ``F.grid_sample``, one call for the batch); bilinear weights are convex, so pixels stay
  in [0, 1] (clamped against rounding).
- **Flip**: horizontal, probability 1/2, when ``settings.flip`` (digits and text must not flip).
- **Colour jitter** with probability ``jitter_p``: brightness, contrast, saturation and hue factors drawn
  uniformly in [max(0, 1 - 0.8 s), 1 + 0.8 s] (hue: a shift in [-0.2 s, 0.2 s] of the hue circle, at most
  0.5), s the strength (SimCLR: 0.5 for CIFAR -> (0.4, 0.4, 0.4, 0.1)), applied in a random order per sample
  as torchvision's ``ColorJitter``. Saturation and hue exist for colour (3-channel) images only: on other
  images (1-channel Fashion-MNIST, MNIST) only brightness and contrast are applied.
- **Grayscale** with probability ``grayscale_p`` (colour images only): ITU-R 601 luma 0.299 R + 0.587 G +
  0.114 B in every channel.

Every parameter is drawn for every sample in a fixed order whatever the settings (flip and colour draws are
masked afterwards), so turning one augmentation off does not change the draws of the others; the generator is
a CPU ``torch.Generator`` (the draws are a few numbers per image) and the pixels never leave the device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import AdvlabError

LUMA = (0.299, 0.587, 0.114)
"""ITU-R 601-2 luma weights of R, G, B (torchvision's ``rgb_to_grayscale``)."""

JITTER_OPS = ("brightness", "contrast", "saturation", "hue")
"""The colour-jitter operations, in the order of their factors in :class:`ViewParams` ``factors``."""


def jitter_ops(channels: int) -> tuple[str, ...]:
    """The colour-jitter operations applied to images of ``channels`` channels: all four for colour (3), brightness
    and contrast otherwise (saturation and hue have no meaning without colour)."""
    return JITTER_OPS if channels == 3 else JITTER_OPS[:2]


@dataclass(frozen=True)
class ViewAugment:
    """SimCLR's augmentation of one view.

    ``scale``: range of the crop's area as a fraction of the image, 0 < min <= max <= 1 (SimCLR: (0.08, 1) on
    ImageNet; (0.2, 1) here for small images, as SimCLR's CIFAR code); ``ratio``: range of the crop's aspect
    ratio width / height, 0 < min <= max; ``flip``: random horizontal flips; ``jitter``: colour-jitter strength
    s >= 0 (factors 0.8 s, hue 0.2 s); ``jitter_p``, ``grayscale_p``: probabilities in [0, 1].
    """

    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    jitter: float = 0.5
    jitter_p: float = 0.8
    grayscale_p: float = 0.2

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise AdvlabError(f"augmentation scale must satisfy 0 < min <= max <= 1, got {self.scale}")
        lo, hi = self.ratio
        if not 0 < lo <= hi < math.inf:
            raise AdvlabError(f"augmentation ratio must satisfy 0 < min <= max, got {self.ratio}")
        if not 0 <= self.jitter < math.inf:
            raise AdvlabError(f"augmentation jitter strength must be >= 0, got {self.jitter}")
        for name in ("jitter_p", "grayscale_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise AdvlabError(f"augmentation {name} must be in [0, 1], got {getattr(self, name)}")

    def factor_ranges(self) -> tuple[tuple[float, float], ...]:
        """``(low, high)`` of the brightness, contrast and saturation factors and of the hue shift."""
        b = 0.8 * self.jitter
        h = min(0.2 * self.jitter, 0.5)
        return ((max(0.0, 1 - b), 1 + b),) * 3 + ((-h, h),)


@dataclass
class ViewParams:
    """The per-sample draws of one view of a batch of B images (CPU tensors).

    ``crop`` (B, 4): x0, y0, w, h as fractions of the width and height (the crop covers columns
    [x0, x0 + w] and rows [y0, y0 + h]); ``flip`` (B,) bool; ``jitter`` (B,) bool, whether colour jitter is
    applied; ``factors`` (B, 4): brightness, contrast, saturation factors and hue shift; ``order`` (B, 4) int64:
    each sample's permutation of :data:`JITTER_OPS`; ``gray`` (B,) bool.
    """

    crop: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    factors: torch.Tensor
    order: torch.Tensor
    gray: torch.Tensor

    @property
    def area(self) -> torch.Tensor:
        """(B,) the crop's area as a fraction of the image."""
        return self.crop[:, 2] * self.crop[:, 3]


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def draw_params(n: int, settings: ViewAugment, generator: torch.Generator) -> ViewParams:
    """The draws of one view of ``n`` images from ``generator`` (CPU), in a fixed order: area, log-ratio,
    corner (x, y), flip, jitter, the four factors, the order of the jitter operations, grayscale."""
    if generator.device.type != "cpu":
        raise AdvlabError("draw_params needs a CPU torch.Generator (the draws are a few numbers per image)")
    s = _uniform(n, *settings.scale, generator)
    log_r = _uniform(n, math.log(settings.ratio[0]), math.log(settings.ratio[1]), generator)
    w = torch.sqrt(s * log_r.exp()).clamp(min=s, max=torch.ones_like(s))  # s <= w <= 1, so h = s / w <= 1
    h = s / w
    corner = torch.rand(2, n, generator=generator, dtype=torch.float64)
    x0, y0 = corner[0] * (1 - w), corner[1] * (1 - h)
    flip = torch.rand(n, generator=generator) < 0.5
    jitter = torch.rand(n, generator=generator) < settings.jitter_p
    u = torch.rand(n, 4, generator=generator, dtype=torch.float64)
    ranges = torch.tensor(settings.factor_ranges(), dtype=torch.float64)
    factors = ranges[:, 0] + (ranges[:, 1] - ranges[:, 0]) * u
    order = torch.rand(n, 4, generator=generator).argsort(dim=1)
    gray = torch.rand(n, generator=generator) < settings.grayscale_p
    return ViewParams(crop=torch.stack([x0, y0, w, h], 1).float(), flip=flip & settings.flip,
                      jitter=jitter & (settings.jitter > 0), factors=factors.float(), order=order, gray=gray)


def crop_and_flip(x: torch.Tensor, crop: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Each image of x (B, C, H, W) cropped to ``crop`` (B, 4) (x0, y0, w, h fractions), resized bilinearly
    to H x W and mirrored where ``flip`` (B,) is set; pixels clamped to [0, 1]."""
    b = len(x)
    crop = crop.to(x.device, x.dtype)
    x0, y0, w, h = crop.unbind(1)
    sign = 1 - 2 * flip.to(x.device, x.dtype)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = w * sign  # output column u in [-1, 1] reads input column cx + w u (mirrored: - w u)
    theta[:, 0, 2] = 2 * x0 + w - 1
    theta[:, 1, 1] = h
    theta[:, 1, 2] = 2 * y0 + h - 1
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.clamp_(0, 1)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luma of colour images (B, 3, H, W); images of other channel counts: their channel mean."""
    if x.shape[1] == 3:
        weights = torch.tensor(LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * weights).sum(1, keepdim=True)
    return x.mean(1, keepdim=True)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> HSV in [0, 1] (hue as a fraction of the circle)."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    hr = ((g - b) / safe) % 6
    hg = (b - r) / safe + 2
    hb = (r - g) / safe + 4
    hue = torch.where(maxc == r, hr, torch.where(maxc == g, hg, hb))
    hue = torch.where(delta > 0, hue / 6, torch.zeros_like(hue)) % 1.0
    return torch.stack([hue, s, maxc], 1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) HSV in [0, 1] -> RGB in [0, 1]."""
    h, s, v = x.unbind(1)
    h6 = (h % 1.0) * 6
    i = h6.floor()
    f = h6 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    # sector i -> (r, g, b): 0 (v,t,p) 1 (q,v,p) 2 (p,v,t) 3 (p,q,v) 4 (t,p,v) 5 (v,p,q)
    candidates = torch.stack([v, q, p, p, t, v, t, v, v, q, p, p, p, p, t, v, v, q], 1)
    candidates = candidates.view(x.shape[0], 3, 6, *x.shape[2:])
    return candidates.gather(2, i[:, None, None].expand(-1, 3, 1, *i.shape[1:])).squeeze(2)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp(0, 1)


def adjust(x: torch.Tensor, op: str, factor: torch.Tensor) -> torch.Tensor:
    """One colour-jitter operation ``op`` (:data:`JITTER_OPS`) on x (B, C, H, W) with per-sample ``factor`` (B,),
    as torchvision's functional ``adjust_*``: brightness scales, contrast blends with the image's mean luma,
    saturation with its grayscale image, hue shifts the hue circle (colour images only)."""
    if op == "brightness":
        return (x * factor.view(-1, 1, 1, 1)).clamp(0, 1)
    if op == "contrast":
        return _blend(x, grayscale(x).mean((1, 2, 3), keepdim=True), factor)
    if op == "saturation":
        return _blend(x, grayscale(x), factor)
    if op == "hue":
        hsv = rgb_to_hsv(x)
        hsv = torch.cat([(hsv[:, :1] + factor.view(-1, 1, 1, 1)) % 1.0, hsv[:, 1:]], 1)
        return hsv_to_rgb(hsv).clamp(0, 1)
    raise AdvlabError(f"unknown colour-jitter operation {op!r}; allowed: {', '.join(JITTER_OPS)}")


def colour(x: torch.Tensor, params: ViewParams) -> torch.Tensor:
    """Colour jitter (each sample's operations in its own order) then grayscale, on the samples that draw them;
    colour images only get saturation, hue and grayscale (see :func:`jitter_ops`)."""
    ops = jitter_ops(x.shape[1])
    jitter = params.jitter.to(x.device)
    if bool(params.jitter.any()):
        order = params.order.to(x.device)
        factors = params.factors.to(x.device, x.dtype)
        for position in range(len(JITTER_OPS)):
            for k, op in enumerate(JITTER_OPS):
                if op not in ops:
                    continue
                chosen = (jitter & (order[:, position] == k)).nonzero().squeeze(1)
                if len(chosen):
                    x = x.index_copy(0, chosen, adjust(x.index_select(0, chosen), op, factors[chosen, k]))
    if x.shape[1] == 3 and bool(params.gray.any()):
        gray = params.gray.to(x.device).view(-1, 1, 1, 1)
        x = torch.where(gray, grayscale(x).expand_as(x), x)
    return x


def apply_params(x: torch.Tensor, params: ViewParams) -> torch.Tensor:
    """The view of x (B, C, H, W) float in [0, 1] given its draws: crop and resize, flip, colour; same shape,
    dtype and device, pixels in [0, 1]. x is not modified."""
    if x.dim() != 4 or not x.is_floating_point():
        raise AdvlabError(f"augmentation needs float images (B, C, H, W) in [0, 1], got {x.dtype} {tuple(x.shape)}")
    if len(params.flip) != len(x):
        raise AdvlabError(f"augmentation parameters of {len(params.flip)} images for a batch of {len(x)}")
    return colour(crop_and_flip(x, params.crop, params.flip), params)


def augment(x: torch.Tensor, settings: ViewAugment, generator: torch.Generator) -> tuple[torch.Tensor, ViewParams]:
    """One augmented view of x (B, C, H, W) in [0, 1] and its draws (from ``generator``, a CPU generator)."""
    params = draw_params(len(x), settings, generator)
    return apply_params(x, params), params
