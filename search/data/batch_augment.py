"""Batched twins of albumentations transforms: whole uint8 batches augmented on the training device.

A policy's longest tail of steps that all have a twin here runs on the device, one batch at a time;
the steps before it run through albumentations in DataLoader workers, as before. Each twin draws the
same random decisions, from the same distributions, as the albumentations transform it stands for
(albumentations 2.0: `RandomCrop.get_params_dependent_on_data`, `CoarseDropout.calculate_hole_dimensions`),
so a policy means the same thing wherever it runs; tests/search/data/test_batch_augment.py compares the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import albumentations as A
import cv2
import torch
from albumentations.augmentations.geometric.functional import adjust_padding_by_position, get_padding_params
from albumentations.core.transforms_interface import BasicTransform

Generator = torch.Generator
# cv2 border mode -> how an out-of-range row/column index maps back into the image (see _border_index).
BORDERS = {cv2.BORDER_CONSTANT: "constant", cv2.BORDER_REPLICATE: "replicate", cv2.BORDER_REFLECT: "reflect",
           cv2.BORDER_WRAP: "wrap", cv2.BORDER_REFLECT_101: "reflect101"}


def _border_index(i: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """Source index in [0, n) of a padded position i (any integer), as cv2.copyMakeBorder maps it."""
    if mode == "replicate" or n == 1:
        return i.clamp(0, n - 1)
    if mode == "wrap":
        return i.remainder(n)
    if mode == "reflect":  # fedcba|abcdefgh|hgfedcb: the edge pixel repeats, period 2n
        m = i.remainder(2 * n)
        return torch.where(m < n, m, 2 * n - 1 - m)
    m = i.remainder(2 * n - 2)  # reflect101, gfedcb|abcdefgh|gfedcba: period 2n - 2
    return torch.where(m < n, m, 2 * n - 2 - m)


def _fill_value(fill: float | Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """A scalar or per-channel fill as a (1, C, 1, 1) tensor in the batch's dtype and device."""
    value = torch.as_tensor(fill, dtype=torch.float32).flatten()
    return value.to(like.device, like.dtype).reshape(1, -1, 1, 1).expand(1, like.shape[1], 1, 1)


@dataclass(frozen=True)
class Pad:
    """PadIfNeeded(min_height, min_width, position fixed, border_mode, fill), p = 1."""

    min_height: int
    min_width: int
    position: str
    border: str
    fill: float | tuple

    def amounts(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) padding of an h x w image, by albumentations' own functions."""
        top, bottom, left, right = get_padding_params((h, w), self.min_height, self.min_width, None, None)
        return adjust_padding_by_position(top, bottom, left, right, self.position, None)

    def __call__(self, x: torch.Tensor, g: Generator) -> torch.Tensor:
        h, w = x.shape[-2:]
        top, bottom, left, right = self.amounts(h, w)
        if top == bottom == left == right == 0:
            return x
        rows = torch.arange(-top, h + bottom, device=x.device)
        cols = torch.arange(-left, w + right, device=x.device)
        out = x.index_select(2, _border_index(rows, h, self.border))
        out = out.index_select(3, _border_index(cols, w, self.border))
        if self.border == "constant":
            inside = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]
            out = torch.where(inside, out, _fill_value(self.fill, out))
        return out


@dataclass(frozen=True)
class Crop:
    """RandomCrop(height, width), p = 1: offsets uniform over [0, H - height] x [0, W - width], per image."""

    height: int
    width: int

    def offsets(self, n: int, h: int, w: int, g: Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(top, left) of each image's window in an h x w batch, drawn as albumentations draws them."""
        if self.height > h or self.width > w:
            raise ValueError(f"RandomCrop {self.height}x{self.width} is larger than the {h}x{w} batch")
        top = torch.randint(0, h - self.height + 1, (n,), generator=g)
        return top, torch.randint(0, w - self.width + 1, (n,), generator=g)

    def __call__(self, x: torch.Tensor, g: Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        top, left = (t.to(x.device) for t in self.offsets(n, h, w, g))
        return _window(x, top[:, None] + torch.arange(self.height, device=x.device),
                       left[:, None] + torch.arange(self.width, device=x.device))


def _window(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Per-image rows (n, h') then columns (n, w') of a batch, as two gathers (no padded copy is made)."""
    n, c, _, w = x.shape
    x = x.gather(2, rows[:, None, :, None].expand(n, c, rows.shape[1], w))
    return x.gather(3, cols[:, None, None, :].expand(n, c, rows.shape[1], cols.shape[1]))


@dataclass(frozen=True)
class PadCrop:
    """PadIfNeeded then RandomCrop in one pass: the crop's rows and columns mapped through the border."""

    pad: Pad
    crop: Crop

    def __call__(self, x: torch.Tensor, g: Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        top, bottom, left, right = self.pad.amounts(h, w)
        oy, ox = (t.to(x.device) for t in self.crop.offsets(n, h + top + bottom, w + left + right, g))
        rows = oy[:, None] + torch.arange(self.crop.height, device=x.device) - top  # in the unpadded image
        cols = ox[:, None] + torch.arange(self.crop.width, device=x.device) - left
        out = _window(x, _border_index(rows, h, self.pad.border), _border_index(cols, w, self.pad.border))
        if self.pad.border == "constant":
            inside = ((rows >= 0) & (rows < h))[:, None, :, None] & ((cols >= 0) & (cols < w))[:, None, None, :]
            out = torch.where(inside, out, _fill_value(self.pad.fill, out))
        return out


@dataclass(frozen=True)
class Flip:
    """HorizontalFlip(p): each image mirrored left-right with probability p."""

    p: float

    def __call__(self, x: torch.Tensor, g: Generator) -> torch.Tensor:
        flip = (torch.rand(x.shape[0], generator=g) < self.p).to(x.device)
        return torch.where(flip[:, None, None, None], x.flip(-1), x)


@dataclass(frozen=True)
class Holes:
    """CoarseDropout(num_holes_range, hole_height_range, hole_width_range, fill numeric, p)."""

    num_holes: tuple[int, int]
    hole_height: tuple[float, float]
    hole_width: tuple[float, float]
    fill: float | tuple
    p: float

    def _sizes(self, n: int, k: int, side: int, span: tuple[float, float], g: Generator) -> torch.Tensor:
        """(n, k) hole sides in px: integers in [lo, min(hi, side)] when hi >= 1, else int(side * U(lo, hi))."""
        lo, hi = span
        if hi >= 1:
            return torch.randint(int(lo), int(min(hi, side)) + 1, (n, k), generator=g)
        return (side * (lo + (hi - lo) * torch.rand((n, k), generator=g, dtype=torch.float64))).long()

    def __call__(self, x: torch.Tensor, g: Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        k = self.num_holes[1]
        on = torch.rand(n, generator=g) < self.p
        count = torch.randint(self.num_holes[0], k + 1, (n,), generator=g)
        hh, ww = self._sizes(n, k, h, self.hole_height, g), self._sizes(n, k, w, self.hole_width, g)
        # y in [0, h - hole height], x in [0, w - hole width], inclusive, as numpy's integers(0, h - hh + 1)
        y0 = (torch.rand((n, k), generator=g, dtype=torch.float64) * (h - hh + 1)).long()
        x0 = (torch.rand((n, k), generator=g, dtype=torch.float64) * (w - ww + 1)).long()
        used = (torch.arange(k)[None, :] < count[:, None]) & on[:, None]  # (n, k)
        dev = x.device
        r, col = torch.arange(h, device=dev), torch.arange(w, device=dev)
        y0, hh, x0, ww, used = (t.to(dev) for t in (y0, hh, x0, ww, used))
        in_rows = (r[None, None, :] >= y0[..., None]) & (r[None, None, :] < (y0 + hh)[..., None])  # (n, k, h)
        in_cols = (col[None, None, :] >= x0[..., None]) & (col[None, None, :] < (x0 + ww)[..., None])  # (n, k, w)
        hole = ((in_rows & used[..., None])[..., :, None] & in_cols[..., None, :]).any(1)  # (n, h, w)
        return torch.where(hole[:, None], _fill_value(self.fill, x), x)


TWINS = ("PadIfNeeded", "RandomCrop", "HorizontalFlip", "CoarseDropout")
Twin = Pad | Crop | PadCrop | Flip | Holes  # a batched transform: (uint8 batch, generator) -> batch


def twin(t: BasicTransform) -> Twin | None:
    """The batched twin of one built albumentations transform, or None when it has none."""
    fill = _numeric(getattr(t, "fill", None))
    if type(t) is A.HorizontalFlip:
        return Flip(float(t.p))
    if type(t) is A.PadIfNeeded and t.p == 1 and t.pad_height_divisor is None and t.pad_width_divisor is None \
            and t.position != "random" and t.border_mode in BORDERS and t.min_height and t.min_width \
            and fill is not None:
        return Pad(int(t.min_height), int(t.min_width), t.position, BORDERS[t.border_mode], fill)
    if type(t) is A.RandomCrop and t.p == 1 and not t.pad_if_needed:
        return Crop(int(t.height), int(t.width))
    if type(t) is A.CoarseDropout and fill is not None:
        return Holes(tuple(t.num_holes_range), tuple(t.hole_height_range), tuple(t.hole_width_range), fill, float(t.p))
    return None


def _numeric(fill: object) -> float | tuple | None:
    """A numeric fill (scalar or per channel) as a float or tuple; None for 'random', 'inpaint_...'."""
    if isinstance(fill, (int, float)):
        return float(fill)
    if isinstance(fill, (tuple, list)) and all(isinstance(v, (int, float)) for v in fill):
        return tuple(float(v) for v in fill)
    return None


def split_policy(transforms: list[BasicTransform]) -> tuple[list[BasicTransform], list[Twin]]:
    """(albumentations transforms for workers, twins for the device): the device gets the longest tail of twins."""
    twins = [twin(t) for t in transforms]
    start = len(transforms)
    while start > 0 and twins[start - 1] is not None:
        start -= 1
    fused: list[Twin] = []
    for op in twins[start:]:
        if isinstance(op, Crop) and fused and isinstance(pad := fused[-1], Pad):
            fused[-1] = PadCrop(pad, op)  # a pad followed by a crop: one pass, no padded copy
        elif op is not None:  # (none is, past `start`)
            fused.append(op)
    return transforms[:start], fused


class BatchAugment:
    """uint8 (N, C, H, W) batch -> the twins in order -> float32 normalised as (x / 255 - mean) / std."""

    def __init__(self, twins: Sequence[Twin], mean: Sequence[float], std: Sequence[float]) -> None:
        self.twins = list(twins)
        self.mean = torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1) * 255.0

    def __call__(self, x: torch.Tensor, g: Generator) -> torch.Tensor:
        for op in self.twins:
            x = op(x, g)
        out = x.to(torch.float32, memory_format=torch.contiguous_format)  # fit makes it channels_last
        return out.sub_(self.mean.to(x.device)).div_(self.std.to(x.device))
