"""Batched twins against albumentations: same crop offsets, flip rate, hole sizes and places, border pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency

from search.data import augment
from search.data.batch_augment import BatchAugment, split_policy, twin

N = 3000  # images per side: enough for 81 offsets x 2 flips to all show, a few ms batched


def coordinate_image(size: int = 32) -> np.ndarray:
    """HWC uint8: channel 0 = 7 x row, channel 1 = 7 x column, channel 2 = fixed noise (pixel-exact checks)."""
    r, c = np.mgrid[:size, :size]
    noise = np.random.default_rng(0).integers(0, 256, (size, size))
    return np.stack([7 * r, 7 * c, noise], -1).astype(np.uint8)


def albumentations_outputs(steps: list, image: np.ndarray, n: int = N) -> np.ndarray:
    """(n, H, W, C) outputs of the albumentations pipeline, one image at a time."""
    tf = augment.train_pipeline(steps, "test", seed=1)
    return np.stack([tf(image=image)["image"] for _ in range(n)])


def batched_outputs(steps: list, image: np.ndarray, n: int = N) -> np.ndarray:
    """(n, H, W, C) uint8 outputs of the twins on a batch of n copies (before normalisation)."""
    transforms = augment.build_transforms(steps, "test")
    host, twins = split_policy(transforms)
    assert not host and twins
    x = torch.from_numpy(image).permute(2, 0, 1)[None].repeat(n, 1, 1, 1)
    g = torch.Generator().manual_seed(2)
    for op in twins:
        x = op(x, g)
    return x.permute(0, 2, 3, 1).numpy()


def crop_params(out: np.ndarray, pad: int = 4) -> list[tuple[int, int, bool]]:
    """(top, left, flipped) of each pad-crop-flip output of coordinate_image, read at its centre."""
    rows, cols = out[:, 16, 16, 0] // 7, out[:, 16, 16, 1] // 7
    flipped = out[:, 16, 17, 1].astype(int) < out[:, 16, 16, 1].astype(int)
    left = np.where(flipped, cols - (31 - 16) + pad, cols - 16 + pad)
    return list(zip((rows - 16 + pad).tolist(), left.tolist(), flipped.tolist(), strict=True))


def same_distribution(a: list, b: list) -> float:
    """p-value of a chi-square test that two samples of discrete outcomes share one distribution."""
    keys = sorted(set(a) | set(b))
    table = np.array([[a.count(k) for k in keys], [b.count(k) for k in keys]])
    return chi2_contingency(table)[1]


@pytest.mark.parametrize("border_mode,fill", [(0, 17), (1, 0), (2, 0), (3, 0), (4, 0)])
def test_pad_crop_flip_match_albumentations(border_mode: int, fill: int) -> None:
    steps = [{"PadIfNeeded": {"min_height": 40, "min_width": 40, "border_mode": border_mode, "fill": fill}},
             {"RandomCrop": {"height": 32, "width": 32}}, {"HorizontalFlip": {"p": 0.5}}]
    image = coordinate_image()
    ref, ours = albumentations_outputs(steps, image), batched_outputs(steps, image)
    p_ref, p_ours = crop_params(ref), crop_params(ours)
    assert {(t, left) for t, left, _ in p_ours} == {(t, left) for t in range(9) for left in range(9)}
    assert same_distribution(p_ref, p_ours) > 1e-3  # offsets uniform over [0, 8]^2, flips at p = 0.5
    assert abs(np.mean([f for *_, f in p_ours]) - 0.5) < 4 * 0.5 / np.sqrt(N)
    # Border pixels: every batched output equals the albumentations output drawn with the same offsets.
    by_params = dict(zip(p_ref, ref, strict=True))
    assert all(np.array_equal(out, by_params[p]) for p, out in zip(p_ours, ours, strict=True) if p in by_params)
    assert len(set(p_ours) & set(by_params)) == 162


def holes(out: np.ndarray) -> list[tuple]:
    """(top, left, height, width) of the zeroed rectangle of each output of a white image, or None."""
    found = []
    for img in out[..., 0]:
        ys, xs = np.nonzero(img == 0)
        found.append(None if len(ys) == 0 else (ys.min(), xs.min(), ys.max() - ys.min() + 1, xs.max() - xs.min() + 1))
    return found


@pytest.mark.parametrize("height_range", [[3, 9], [0.1, 0.3]])
def test_coarse_dropout_holes_match_albumentations(height_range: list) -> None:
    width_range = [2, 6] if height_range[1] >= 1 else [0.05, 0.2]
    steps = [{"CoarseDropout": {"num_holes_range": [1, 1], "hole_height_range": height_range,
                                "hole_width_range": width_range, "p": 0.5}}]
    white = np.full((32, 32, 3), 255, np.uint8)
    ref, ours = holes(albumentations_outputs(steps, white)), holes(batched_outputs(steps, white))
    assert abs(sum(h is not None for h in ours) / N - 0.5) < 4 * 0.5 / np.sqrt(N)
    assert same_distribution([h is None for h in ref], [h is None for h in ours]) > 1e-3
    ref, ours = [h for h in ref if h is not None], [h for h in ours if h is not None]
    for k in range(4):  # top, left, height, width: each the same distribution
        assert same_distribution([h[k] for h in ref], [h[k] for h in ours]) > 1e-3, k
    assert {h[2] for h in ours} == {h[2] for h in ref}  # the same hole heights reach both ends
    assert max(h[0] + h[2] for h in ours) == 32  # a hole can touch the bottom edge (inclusive range)


def test_several_holes_and_per_channel_fill() -> None:
    steps = [{"CoarseDropout": {"num_holes_range": [1, 3], "hole_height_range": [4, 8],
                                "hole_width_range": [4, 8], "fill": [10, 20, 30], "p": 1.0}}]
    white = np.full((32, 32, 3), 255, np.uint8)
    ref, ours = albumentations_outputs(steps, white), batched_outputs(steps, white)
    assert set(map(tuple, ours.reshape(-1, 3).tolist())) == {(255, 255, 255), (10, 20, 30)}
    area_ref, area_ours = (ref[..., 0] != 255).sum((1, 2)), (ours[..., 0] != 255).sum((1, 2))
    assert abs(area_ours.mean() - area_ref.mean()) < 0.05 * area_ref.mean()  # 1-3 holes, overlaps included


def test_policy_split_and_normalisation() -> None:
    steps = [{"ColorJitter": None}, {"PadIfNeeded": {"min_height": 36, "min_width": 36}},
             {"RandomCrop": {"height": 32, "width": 32}}, {"HorizontalFlip": None}, {"CoarseDropout": None}]
    host, twins = split_policy(augment.build_transforms(steps, "t"))
    assert [type(t).__name__ for t in host] == ["ColorJitter"]
    assert [type(t).__name__ for t in twins] == ["PadCrop", "Flip", "Holes"]  # pad + crop fused into one pass
    # a step without a twin in the middle keeps everything before it in the workers
    host, twins = split_policy(augment.build_transforms([steps[3], steps[0], steps[3]], "t"))
    assert len(host) == 2 and len(twins) == 1
    assert twin(augment.build_transforms([{"CoarseDropout": {"fill": "random"}}], "t")[0]) is None
    x = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    out = BatchAugment([], (0.5, 0.5, 0.5), (0.25, 0.5, 1.0))(x, torch.Generator())
    assert out.dtype == torch.float32 and out[:, :, 0, 0].tolist() == [[2.0, 1.0, 0.5]] * 2


def test_loaders_gather_uint8_batches_and_augment_on_the_device() -> None:
    from search.config import DataConfig
    from search.data.batches import ArrayBatches, DeviceBatches
    from search.data.datasets import make_loaders
    from search.errors import UserError

    cfg = DataConfig(synthetic_train=100, synthetic_size=16, num_workers=0)
    steps = [{"PadIfNeeded": {"min_height": 20, "min_width": 20}}, {"RandomCrop": {"height": 16, "width": 16}},
             {"HorizontalFlip": None}]
    train = make_loaders(cfg, steps, 8, seed=3).train
    assert isinstance(train, DeviceBatches) and isinstance(train.dataset, ArrayBatches)
    x, y = next(iter(train))
    assert x.dtype == torch.float32 and x.shape == (8, 3, 16, 16) and y.dtype == torch.int64
    first, again = (torch.cat([b for b, _ in make_loaders(cfg, steps, 8, seed=3).train]) for _ in range(2))
    assert torch.equal(first, again)  # seeded: the same batches, the same augmentation
    mixed = make_loaders(cfg, [{"ColorJitter": None}, *steps], 8, seed=3).train
    assert isinstance(mixed, DeviceBatches) and len(mixed.dataset.transform.transforms) == 1  # ColorJitter
    with pytest.raises(UserError, match="augment_on: device, but .*ColorJitter has no batched twin"):
        make_loaders(DataConfig(**{**vars(cfg), "augment_on": "device"}), [{"ColorJitter": None}, *steps], 8, seed=3)
    old = make_loaders(DataConfig(**{**vars(cfg), "augment_on": "workers"}), steps, 8, seed=3).train
    assert isinstance(old, torch.utils.data.DataLoader)


@pytest.mark.parametrize("border_mode", [0, 2, 4])
def test_fused_pad_crop_equals_pad_then_crop(border_mode: int) -> None:
    steps = [{"PadIfNeeded": {"min_height": 44, "min_width": 41, "border_mode": border_mode, "fill": 5}},
             {"RandomCrop": {"height": 30, "width": 32}}]
    pad, crop = (twin(t) for t in augment.build_transforms(steps, "t"))
    (fused,) = split_policy(augment.build_transforms(steps, "t"))[1]
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (64, 3, 32, 32), dtype=np.uint8))
    apart = crop(pad(x, torch.Generator().manual_seed(4)), torch.Generator().manual_seed(4))
    assert torch.equal(fused(x, torch.Generator().manual_seed(4)), apart) and apart.shape == (64, 3, 30, 32)
