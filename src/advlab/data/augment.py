"""Batched random crop + horizontal flip by table lookup: one gather per batch, no per-image loop.

The images are zero-padded once (``pad_images``). Each of the ``(2p+1)^2 * 2`` possible (row shift,
column shift, flip) choices is a fixed map from output pixel to padded-image pixel, precomputed in
``view_table``; a batch is then ``gather(padded[index], table[choice])``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_images(images: torch.Tensor, padding: int) -> torch.Tensor:
    """``N x C x (H+2p) x (W+2p)`` zero-padded copy (the tensor itself when ``padding`` is 0)."""
    return F.pad(images, (padding,) * 4).contiguous() if padding else images


def view_table(height: int, width: int, padding: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``((2p+1)^2 * 2) x (H*W)`` int64: for choice ``(dy*(2p+1) + dx)*2 + flip``, where output pixel
    (i, j) reads in the padded image: ``(i + dy, j + dx)``, or ``(i + dy, W-1-j + dx)`` when flipped.

    ``dy``/``dx`` range over ``0..2p`` (``p`` = no shift), i.e. a crop then a horizontal flip.
    """
    k = 2 * padding + 1
    dy = torch.arange(k).repeat_interleave(2 * k)
    dx = torch.arange(k).repeat_interleave(2).repeat(k)
    flip = torch.tensor([False, True]).repeat(k * k)
    rows = dy[:, None] + torch.arange(height)
    cols = torch.arange(width).expand(len(flip), width)
    cols = torch.where(flip[:, None], width - 1 - cols, cols) + dx[:, None]
    pixel = rows[:, :, None] * (width + 2 * padding) + cols[:, None, :]
    return pixel.reshape(len(flip), height * width).to(device)


def choices(n: int, padding: int, crop: bool, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """``n`` random choices (rows of :func:`view_table`): uniform shifts when ``crop``, flips with
    probability 1/2 when ``flip``; drawn from ``generator`` in a fixed order (shifts, then flips)."""
    k = 2 * padding + 1
    if crop and padding:
        dy, dx = torch.randint(0, k, (2, n), generator=generator)
    else:
        dy = dx = torch.full((n,), padding, dtype=torch.long)
    mirrored = (torch.rand(n, generator=generator) < 0.5).long() if flip else torch.zeros(n, dtype=torch.long)
    return (dy * k + dx) * 2 + mirrored


def augmented_batch(padded: torch.Tensor, index: torch.Tensor, table: torch.Tensor, choice: torch.Tensor,
                    height: int, width: int) -> torch.Tensor:
    """uint8 ``B x C x H x W``: the samples ``index`` of ``padded``, each viewed through ``table[choice]``."""
    b, c = len(index), padded.shape[1]
    src = padded.index_select(0, index).reshape(b, c, -1)
    pixel = table.index_select(0, choice)[:, None, :].expand(b, c, height * width)
    return torch.gather(src, 2, pixel).view(b, c, height, width)
