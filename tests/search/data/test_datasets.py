"""Data loading and augmentation: every dataset read from miniature fixtures, offline, with one-line errors."""

from __future__ import annotations

import os
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from search.config import DataConfig, check_data_values
from search.data import augment, sources
from search.data import datasets as data
from search.data.augment import build_transforms, count_transforms, policy_names, policy_steps, validate_augment
from search.data.datasets import (
    CIFAR10_MEAN,
    dataset_info,
    drops_little,
    loader_workers,
    make_loaders,
    make_predict_loader,
    split_indices,
)
from search.data.sources import CIFAR10Files, synthetic_images, tiny_imagenet_unlabeled_test
from search.errors import UserError
from tests.helpers.datasets import corrupt_one, make_cifar10, make_imagefolder, make_tiny_imagenet

STEPS = [
    {"PadIfNeeded": {"min_height": 40, "min_width": 40}},
    {"RandomCrop": {"height": 32, "width": 32}},
    {"HorizontalFlip": {"p": 0.5}},
    {"CoarseDropout": {"num_holes_range": [1, 2], "hole_height_range": [4, 8], "hole_width_range": [4, 8]}},
]


def _all(loader: torch.utils.data.DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """Every batch of a loader, concatenated."""
    xs, ys = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cifar10(tmp_path_factory.mktemp("cifar"), n_train_per_batch=20, n_test=20)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_imagenet(tmp_path_factory.mktemp("tiny"), n_classes=3, n_train=6, n_val=2, n_test=3)


def test_cifar10_fixture_is_the_official_pickle_format(cifar_root: Path) -> None:
    batch = cifar_root / "cifar-10-batches-py" / "data_batch_1"
    with open(batch, "rb") as f:  # the loader on the CIFAR web page
        entry = pickle.load(f, encoding="bytes")
    assert set(entry) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert entry[b"data"].dtype == np.uint8 and entry[b"data"].shape == (20, 3072)
    ds = CIFAR10Files(str(cifar_root), train=True)  # torchvision's own reader (encoding="latin1")
    assert ds.data.shape == (100, 32, 32, 3) and len(ds.targets) == 100 and ds.classes[0] == "airplane"


def test_cifar10_loaders(cifar_root: Path) -> None:
    cfg = DataConfig("cifar10", str(cifar_root), download=False, val_fraction=0.2, num_workers=0)
    loaders = make_loaders(cfg, STEPS, 16, seed=0, test=True)
    assert (len(loaders.train.dataset), len(loaders.val.dataset), len(loaders.test.dataset)) == (80, 20, 20)
    assert len(loaders.train) == 5  # drop_last
    x, y = next(iter(loaders.train))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    xt, yt = _all(loaders.test)
    raw = CIFAR10Files(str(cifar_root), train=False)
    assert yt.tolist() == raw.targets  # the official test batch, in order, unaugmented
    expected = (raw.data[0, 0, 0] / 255 - np.array(CIFAR10_MEAN)) / np.array(loaders.info.std)
    assert np.allclose(xt[0, :, 0, 0].numpy(), expected, atol=1e-5)
    assert loaders.info.num_classes == 10 and loaders.info.image_size == 32


def test_cifar10_missing_without_download(tmp_path: Path) -> None:
    cfg = DataConfig("cifar10", str(tmp_path / "data"), download=False)
    with pytest.raises(UserError) as err:
        make_loaders(cfg, [], 8, seed=0)
    msg, data_dir = str(err.value), tmp_path / "data"
    assert msg.startswith(f"cifar10 not found in '{data_dir}' (expected {data_dir / 'cifar-10-batches-py'}/)")
    assert "data.download: true" in msg and "\n" not in msg


def test_download_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CIFAR10Files, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")  # refused at once
    with pytest.raises(UserError, match=r"^cannot download cifar10 into") as err:
        make_loaders(DataConfig("cifar10", str(tmp_path), download=True), [], 8, seed=0)
    assert "\n" not in str(err.value)
    monkeypatch.setattr(sources, "TINY_URL", "http://127.0.0.1:9/tiny-imagenet-200.zip")
    with pytest.raises(UserError, match=r"^cannot download tiny_imagenet into") as err:
        make_loaders(DataConfig("tiny_imagenet", str(tmp_path), download=True), [], 8, seed=0)
    assert "\n" not in str(err.value)


def test_cifar10_corrupt_batch_is_named(tmp_path: Path) -> None:
    root = make_cifar10(tmp_path)
    corrupt_one(root / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(UserError, match=r"^cannot read cifar10 file '.*data_batch_3'") as err:
        make_loaders(DataConfig("cifar10", str(root), download=False, num_workers=0), [], 8, seed=0)
    assert "\n" not in str(err.value)


def test_split_is_seeded_disjoint_and_subset_sized() -> None:
    train, val = split_indices(1000, 0.1, seed=3)
    assert len(train) == 900 and len(val) == 100 and not set(train) & set(val)
    assert np.array_equal(val, split_indices(1000, 0.1, seed=3)[1])  # the same split for every trial
    assert not np.array_equal(val, split_indices(1000, 0.1, seed=4)[1])
    sub, val2 = split_indices(1000, 0.1, seed=3, subset=50)
    assert len(sub) == 50 and set(sub) <= set(train)
    assert len(val2) == 6 and set(val2) <= set(val)  # validation shrinks in proportion: 50 x 0.1 / 0.9
    assert np.array_equal(val2, split_indices(1000, 0.1, seed=3, subset=50)[1])
    with pytest.raises(UserError, match="data.subset: 901"):
        split_indices(1000, 0.1, seed=3, subset=901)


def test_subset_and_train_on_val_sizes(cifar_root: Path) -> None:
    cfg = DataConfig("cifar10", str(cifar_root), download=False, val_fraction=0.2, subset=30, num_workers=0)
    loaders = make_loaders(cfg, [], 8, seed=0)
    assert len(loaders.train.dataset) == 30 and len(loaders.val.dataset) == 8  # 30 x 0.2 / 0.8 = 7.5
    full = make_loaders(DataConfig("cifar10", str(cifar_root), download=False, val_fraction=0.2, num_workers=0),
                        [], 8, seed=0, train_on_val=True)
    assert len(full.train.dataset) == 100 and full.val is None and full.test is None


def test_tiny_imagenet_loaders(tiny_root: Path) -> None:
    cfg = DataConfig("tiny_imagenet", str(tiny_root), download=False, val_fraction=0.25, num_workers=0)
    info = dataset_info(cfg)
    wnids = (tiny_root / "tiny-imagenet-200" / "wnids.txt").read_text().split()
    assert info.num_classes == 3 and info.image_size == 64 and info.class_names == tuple(wnids)
    loaders = make_loaders(cfg, [{"HorizontalFlip": None}], 4, seed=1, test=True)
    assert len(loaders.train.dataset) + len(loaders.val.dataset) == 18
    x, y = _all(loaders.train)
    assert x.shape[1:] == (3, 64, 64) and y.min() >= 0 and y.max() < 3  # the greyscale JPEG is RGB too
    xt, yt = _all(loaders.test)  # the official val set, labelled by val_annotations.txt
    ann = (tiny_root / "tiny-imagenet-200" / "val" / "val_annotations.txt").read_text().splitlines()
    assert xt.shape == (6, 3, 64, 64) and yt.tolist() == [wnids.index(line.split("\t")[1]) for line in ann]
    grey = xt[0]  # val_0.JPEG is greyscale: three equal channels before normalisation
    rgb = grey * torch.tensor(info.std).view(3, 1, 1) + torch.tensor(info.mean).view(3, 1, 1)
    assert torch.allclose(rgb[0], rgb[1], atol=1e-5) and torch.allclose(rgb[1], rgb[2], atol=1e-5)


def test_tiny_imagenet_unlabeled_test_for_predict(tiny_root: Path) -> None:
    paths = tiny_imagenet_unlabeled_test(tiny_root)
    assert [p.name for p in paths] == ["test_0.JPEG", "test_1.JPEG", "test_2.JPEG"]
    cfg = DataConfig("tiny_imagenet", str(tiny_root), download=False, num_workers=0)
    x, idx = _all(make_predict_loader(cfg, paths, 2))
    assert x.shape == (3, 3, 64, 64) and idx.tolist() == [0, 1, 2]


def test_tiny_imagenet_layout_errors(tmp_path: Path) -> None:
    root = make_tiny_imagenet(tmp_path)
    folder = root / "tiny-imagenet-200"
    cfg = DataConfig("tiny_imagenet", str(root), download=False, num_workers=0)
    ann = folder / "val" / "val_annotations.txt"
    good = ann.read_text()
    ann.write_text(good + "val_0.JPEG\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(UserError, match=r"val_annotations.txt:7: unknown wnid 'n99999999'"):
        make_loaders(cfg, [], 4, seed=0)
    ann.write_text(good)
    wnid = (folder / "wnids.txt").read_text().split()[1]
    for f in (folder / "train" / wnid / "images").iterdir():
        f.unlink()
    with pytest.raises(UserError, match=rf"no images in '.*{wnid}/images'"):
        make_loaders(cfg, [], 4, seed=0)
    with pytest.raises(UserError, match=r"^tiny_imagenet not found in .*data.download: true"):
        make_loaders(DataConfig("tiny_imagenet", str(tmp_path / "nothing"), download=False), [], 4, seed=0)


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    root = make_tiny_imagenet(tmp_path, n_classes=2, n_train=2)
    bad = corrupt_one(next((root / "tiny-imagenet-200" / "train").glob("*/images/*_1.JPEG")))
    cfg = DataConfig("tiny_imagenet", str(root), download=False, val_fraction=0.0, num_workers=0)
    with pytest.raises(UserError) as err:
        _all(make_loaders(cfg, [], 2, seed=0).train)
    assert str(err.value).startswith(f"cannot read image '{bad}': ") and "\n" not in str(err.value)


def test_imagefolder_sizes_classes_and_errors(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "f", classes=3, per_class=4, size=(40, 30), vary=True)
    cfg = DataConfig("imagefolder", str(root), val_fraction=0.25, num_workers=0)
    info = dataset_info(cfg)
    assert info.num_classes == 3 and info.image_size == 30 and info.class_names == ("class_0", "class_1", "class_2")
    loaders = make_loaders(cfg, [{"HorizontalFlip": None}], 3, seed=0, test=True)
    x, _ = _all(loaders.train)
    xt, yt = _all(loaders.test)
    assert x.shape[1:] == (3, 30, 30) and xt.shape == (6, 3, 30, 30) and yt.tolist() == [0, 0, 1, 1, 2, 2]
    sized = make_loaders(DataConfig("imagefolder", str(root), image_size=24, num_workers=0), [], 4, seed=0)
    assert next(iter(sized.train))[0].shape == (4, 3, 24, 24)
    (root / "test").rename(root / "val")  # root/val serves as the test set when there is no root/test
    assert _all(make_loaders(cfg, [], 3, seed=0, test=True).test)[1].tolist() == [0, 0, 1, 1, 2, 2]
    for f in (root / "train" / "class_1").iterdir():
        f.unlink()
    with pytest.raises(UserError, match=r"imagefolder: .*class_1"):
        make_loaders(cfg, [], 4, seed=0)
    with pytest.raises(UserError, match=r"imagefolder: no class folders in '.*none/train'"):
        make_loaders(DataConfig("imagefolder", str(tmp_path / "none")), [], 4, seed=0)


def test_unknown_transform_and_bad_argument_are_one_line() -> None:
    where = "spaces/x.yaml: augment"
    with pytest.raises(UserError) as err:
        build_transforms([{"HorizontalFlip": None}, {"HorizntalFlip": {"p": 0.5}}], where)
    assert str(err.value) == (
        "spaces/x.yaml: augment[1]: unknown albumentations transform 'HorizntalFlip' (did you mean 'HorizontalFlip'?)"
    )
    cases = [
        ({"RandomCrop": {"height": "abc", "width": 32}}, "RandomCrop: argument 'height' = 'abc'"),
        ({"RandomCrop": {"height": 32}}, "RandomCrop: missing required argument 'width'"),
        ({"CoarseDropout": {"max_holes": 8}}, "CoarseDropout: unknown argument 'max_holes'"),
        ({"HorizontalFlip": {"p": 2}}, "HorizontalFlip: argument 'p' = 2: Input should be less than or equal to 1"),
        ({"OneOf": {"transforms": [{"Blurr": None}]}}, "augment[0].transforms[0]: unknown albumentations transform"),
        ({"Normalize": None}, "added automatically"),
    ]
    for step, expected in cases:
        with pytest.raises(UserError) as err:
            build_transforms([step], where)
        assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_policies_validate_eagerly_and_count() -> None:
    section = {"policies": {"light": [{"HorizontalFlip": None}], "strong": [*STEPS, {"OneOf": {"transforms": [
        {"Blur": {"blur_limit": 3}}, "GaussNoise"]}}]}}
    assert policy_names(section) == ["light", "strong"] and policy_steps(section, "light") == [{"HorizontalFlip": None}]
    assert validate_augment(section, "f.yaml: augment") == {"light": 1, "strong": 6}
    assert policy_names(STEPS) == ["default"] and count_transforms(STEPS) == 4
    section["policies"]["broken"] = [{"RandomCrop": {"height": -1, "width": 32}}]
    with pytest.raises(UserError, match=r"^f.yaml: augment.policies.broken\[0\]: RandomCrop: argument 'height'"):
        validate_augment(section, "f.yaml: augment")
    with pytest.raises(UserError, match="unknown policy 'nope'"):
        policy_steps(section, "nope")


def test_policy_that_cannot_batch_fails_before_training() -> None:
    cfg = DataConfig(synthetic_train=40, synthetic_size=16, num_workers=0)
    with pytest.raises(UserError, match=r"augment: fails on a 16x16 image"):
        make_loaders(cfg, [{"RandomCrop": {"height": 32, "width": 32}}], 8, seed=0)


def test_augmentation_is_seeded_and_varies_across_workers() -> None:
    cfg = DataConfig(synthetic_train=64, synthetic_size=16, val_fraction=0.0, num_workers=2)
    steps = [{"HorizontalFlip": None}, {"CoarseDropout": {"p": 0.5}}]
    a = _all(make_loaders(cfg, steps, 8, seed=5).train)[0]
    b = _all(make_loaders(cfg, steps, 8, seed=5).train)[0]
    c = _all(make_loaders(cfg, steps, 8, seed=6).train)[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Forked workers start with a copy of one random state: without reseeding, worker 0 and
    # worker 1 would give the same augmentation to the same image.
    img = np.tile(np.arange(16, dtype=np.uint8)[None, :, None] * 15, (16, 1, 3))
    split = sources.Split(np.zeros(16, dtype=np.int64), images=np.stack([img] * 16))
    tf = augment.train_pipeline([{"RandomBrightnessContrast": {"p": 1.0}}], "t", seed=0)
    info = data.dataset_info(DataConfig())
    loader = data._loader(data.ImageDataset(split, tf), 4, info, train=False, seed=0, device="cpu",
                          workers=2)
    batches = [x for x, _ in loader]  # batch 0 from worker 0, batch 1 from worker 1
    assert not torch.equal(batches[0], batches[1])


def test_transforms_in_a_policy_draw_independently() -> None:
    # albumentations 2.0.8's Compose(seed=s) seeds each transform alike, so both flips fire together.
    img = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    tf = augment.train_pipeline([{"HorizontalFlip": None}, {"VerticalFlip": None}], "t", seed=0)
    outcomes = {tuple(tf(image=img)["image"][[0, 3], 0, 0].tolist()) for _ in range(64)}
    assert len(outcomes) == 4  # none, horizontal, vertical, both


def test_cuda_loader_settings() -> None:
    cfg = DataConfig(synthetic_train=44, synthetic_size=8, num_workers=1, augment_on="workers")  # 40 training images: 5 full batches
    loaders = make_loaders(cfg, [], 8, seed=0, device="cuda")  # settings only: nothing is iterated
    on_device = make_loaders(replace(cfg, augment_on="auto"), [], 8, seed=0, device="cuda").train
    assert on_device.loader.pin_memory and on_device.loader.batch_sampler.drop_last and on_device.device.type == "cuda"
    assert loaders.train.pin_memory and loaders.train.persistent_workers and loaders.train.batch_sampler.drop_last
    assert not loaders.val.drop_last and loaders.val.batch_size == 16
    cpu = make_loaders(cfg, [], 8, seed=0)
    assert not cpu.train.pin_memory and not cpu.train.persistent_workers


def test_synthetic_is_deterministic_and_learnable() -> None:
    x1, y1 = synthetic_images(50, 10, 16, seed=0, stream=0)
    x2, y2 = synthetic_images(50, 10, 16, seed=0, stream=0)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2) and x1.shape == (50, 16, 16, 3) and x1.dtype == np.uint8
    assert not np.array_equal(x1, synthetic_images(50, 10, 16, seed=0, stream=1)[0])
    torch.manual_seed(0)
    cfg = DataConfig(synthetic_train=600, synthetic_size=16, val_fraction=0.2, num_workers=0)
    loaders = make_loaders(cfg, [{"HorizontalFlip": None}], 32, seed=0, test=True)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(3):
        net.train()
        for x, y in loaders.train:
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        x, y = _all(loaders.val)
        acc = (net(x).argmax(1) == y).float().mean().item()
    assert acc > 0.5, acc  # chance is 0.1


def test_last_partial_batch_is_dropped_only_when_it_is_small() -> None:
    assert not drops_little(500, 256)  # a subset of 500 at batch 256 would lose 244 images an epoch
    assert drops_little(45_000, 256)  # CIFAR-10's training split loses 200 images (0.4%)
    assert not drops_little(200, 256)  # smaller than a batch: one partial batch
    loaders = make_loaders(DataConfig(synthetic_train=556, synthetic_size=8, num_workers=0), [], 256, seed=0)
    assert len(loaders.train.dataset) == 500 and len(loaders.train) == 2 and not loaders.train.batch_sampler.drop_last


def test_num_workers_auto_and_above_the_cores(capsys: pytest.CaptureFixture) -> None:
    cores = len(os.sched_getaffinity(0))
    assert DataConfig().num_workers == "auto" and loader_workers("auto") == cores
    assert loader_workers(0) == 0 and loader_workers(1) == 1
    assert loader_workers(cores + 7) == cores and loader_workers(cores + 7) == cores
    err = capsys.readouterr().err
    assert err == f"note: data.num_workers {cores + 7} is more than the {cores} CPU cores here; using {cores}\n"
    for bad in (-1, "many", True):
        with pytest.raises(UserError, match="data.num_workers: .* must be auto or a number"):
            check_data_values(DataConfig(num_workers=bad))
