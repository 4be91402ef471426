"""Augmentation policies from YAML: albumentations transforms by name, validated to one-line errors."""

from __future__ import annotations

import difflib
import inspect
import os
import random
from collections.abc import Sequence
from functools import cache
from typing import Any

# albumentations asks PyPI for a newer version at import time; runs are often offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from albumentations.core.composition import BaseCompose  # noqa: E402
from albumentations.core.transforms_interface import BasicTransform  # noqa: E402

from blocks.text import one_line  # noqa: E402
from search.errors import UserError  # noqa: E402

DEFAULT_POLICY = "default"  # the name of the single pipeline when `augment` is a plain list
# Done per batch by NormalizeCollate (Normalize, ToTensorV2, ToFloat: policies work on uint8 images),
# or not expressible in YAML (Lambda, Compose).
_RESERVED = {"Normalize", "ToTensorV2", "ToTensor3D", "ToFloat", "FromFloat", "Lambda", "Compose", "ReplayCompose",
             "BaseCompose"}


@cache
def _transform_classes() -> dict[str, type]:
    """Every albumentations transform or composition class a policy may name."""
    return {
        name: obj
        for name, obj in vars(A).items()
        if inspect.isclass(obj) and issubclass(obj, (BasicTransform, BaseCompose)) and name not in _RESERVED
    }


def _split_step(item: Any, loc: str) -> tuple[str, dict[str, Any]]:
    """One YAML step (`{Name: {args}}`, `{Name: null}` or a bare `Name`) as name and kwargs."""
    if isinstance(item, str):
        return item, {}
    if not isinstance(item, dict) or len(item) != 1:
        raise UserError(f"{loc}: expected a one-key mapping like {{HorizontalFlip: {{p: 0.5}}}}, got {item!r}")
    ((name, args),) = item.items()
    if args is None:
        args = {}
    if not isinstance(name, str) or not isinstance(args, dict):
        raise UserError(f"{loc}: '{name}' needs a mapping of arguments (or nothing), got {args!r}")
    return name, dict(args)


def _lookup(name: str, loc: str) -> type:
    """The albumentations class called `name`, or a UserError with the closest name."""
    classes = _transform_classes()
    if name in classes:
        return classes[name]
    if name in _RESERVED:
        raise UserError(f"{loc}: '{name}' cannot be used here (normalisation and tensors are added automatically)")
    close = difflib.get_close_matches(name, classes, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise UserError(f"{loc}: unknown albumentations transform '{name}'{hint}")


def _accepts_strict(cls: type) -> bool:
    """Whether the class validates its arguments with a pydantic schema that honours `strict=True`."""
    owner = next(k for k in cls.__mro__ if "__init__" in vars(k))
    return "InitSchema" in vars(owner)


def _condense(exc: BaseException) -> str:
    """A one-line reason from an albumentations/pydantic validation error."""
    cause = exc.__cause__
    if cause is not None and hasattr(cause, "errors"):
        errors = cause.errors()
        if errors:
            loc = errors[0]["loc"]
            arg = str(loc[0]) if loc else ""
            same = [e for e in errors if (str(e["loc"][0]) if e["loc"] else "") == arg]
            msgs = " or ".join(dict.fromkeys(e["msg"].removeprefix("Value error, ") for e in same))
            if not arg:
                return msgs
            if same[0].get("type") == "missing":
                return f"missing required argument '{arg}'"
            return f"argument '{arg}' = {same[0].get('input')!r}: {msgs}"
    return one_line(exc)


def _build_one(item: Any, loc: str) -> BasicTransform | BaseCompose:
    """Build one transform (recursively for OneOf/SomeOf/Sequential...) or raise a one-line UserError."""
    name, args = _split_step(item, loc)
    cls = _lookup(name, loc)
    params = inspect.signature(cls).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        for arg in args:
            if arg not in params or arg == "strict":
                valid = [p for p in params if p not in ("self", "strict")]
                close = difflib.get_close_matches(arg, valid, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"valid: {', '.join(valid)}"
                raise UserError(f"{loc}: {name}: unknown argument '{arg}' ({hint})")
    if issubclass(cls, BaseCompose):
        inner = args.get("transforms")
        if not isinstance(inner, list) or not inner:
            raise UserError(f"{loc}: {name}: argument 'transforms' must be a non-empty list of transforms")
        args["transforms"] = [_build_one(sub, f"{loc}.transforms[{i}]") for i, sub in enumerate(inner)]
    elif _accepts_strict(cls):
        args["strict"] = True  # turn albumentations' warn-and-use-defaults into an error
    try:
        return cls(**args)
    except UserError:
        raise
    except Exception as exc:  # albumentations raises ValueError (pydantic) or TypeError
        raise UserError(f"{loc}: {name}: {_condense(exc)}") from None


def build_transforms(steps: list, where: str) -> list[BasicTransform]:
    """Albumentations transforms for a YAML step list; `where` locates the list in messages."""
    if steps is None:
        return []
    if not isinstance(steps, list):
        raise UserError(f"{where}: expected a list of transforms, got {type(steps).__name__}")
    return [_build_one(item, f"{where}[{i}]") for i, item in enumerate(steps)]


def count_transforms(steps: list) -> int:
    """How many transforms a step list uses, counting those inside OneOf/SomeOf/... (for the augment rule)."""
    total = 0
    for item in steps or []:
        name, args = _split_step(item, "augment")
        inner = args.get("transforms")
        cls = _transform_classes().get(name)
        if cls is not None and issubclass(cls, BaseCompose) and isinstance(inner, list):
            total += count_transforms(inner)
        else:
            total += 1
    return total


def _policies(section: Any, where: str = "augment") -> dict[str, list]:
    """The policies of an `augment` section: a plain list is the one policy 'default'."""
    if section is None:
        return {DEFAULT_POLICY: []}
    if isinstance(section, list):
        return {DEFAULT_POLICY: section}
    if isinstance(section, dict):
        extra = set(section) - {"policies"}
        if extra:
            raise UserError(f"{where}: unknown key '{sorted(extra)[0]}' (expected a list of transforms or 'policies')")
        policies = section.get("policies")
        if not isinstance(policies, dict) or not policies:
            raise UserError(f"{where}.policies: expected a mapping of policy name to a list of transforms")
        for name, steps in policies.items():
            if not isinstance(steps, list):
                raise UserError(f"{where}.policies.{name}: expected a list of transforms, got {steps!r}")
        return {str(name): steps for name, steps in policies.items()}
    raise UserError(f"{where}: expected a list of transforms or a mapping with 'policies', got {section!r}")


def policy_names(augment_section: Any) -> list[str]:
    """Names of the augmentation policies in an `augment` section, in file order."""
    return list(_policies(augment_section))


def policy_steps(augment_section: Any, name: str) -> list:
    """The step list of one named policy."""
    policies = _policies(augment_section)
    if name not in policies:
        raise UserError(f"augment: unknown policy '{name}' (have: {', '.join(policies)})")
    return policies[name]


def validate_augment(section: Any, where: str) -> dict[str, int]:
    """Build every policy once so errors show before training; returns transforms per policy."""
    policies = _policies(section, where)
    plain = isinstance(section, list) or section is None
    counts = {}
    for name, steps in policies.items():
        build_transforms(steps, where if plain else f"{where}.policies.{name}")
        counts[name] = count_transforms(steps)
    return counts


def reseed(pipeline: A.Compose, seed: int) -> None:
    """Seed a pipeline with one shared generator, so its transforms draw independent decisions."""
    # Compose(seed=s) gives every child transform its own generator seeded with s, so all
    # p=0.5 transforms fire together (albumentations 2.0.8); share one stream instead.
    pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))


def train_pipeline(steps: list, where: str, *, pre: list | None = None, seed: int = 0) -> A.Compose:
    """`pre` + the policy's transforms, seeded; uint8 HWC in and out (NormalizeCollate finishes the batch)."""
    pipeline = A.Compose([*(pre or []), *build_transforms(steps, where)])
    reseed(pipeline, seed)
    return pipeline


def eval_pipeline(*, pre: list | None = None) -> A.Compose:
    """`pre` only: what validation, test and prediction images go through before NormalizeCollate."""
    return A.Compose(list(pre or []))


def square(size: int) -> list:
    """Resize the shorter side to `size` (keeping the aspect ratio) and keep the centre square."""
    return [A.SmallestMaxSize(max_size=size), A.CenterCrop(height=size, width=size)]


def check_batchable(pipeline: A.Compose, size: int, where: str) -> None:
    """Run a training pipeline on blank images so a policy that cannot batch fails now, not in a worker."""
    shapes = set()
    for _ in range(4):  # random crops of varying size would show as several shapes
        try:
            out = pipeline(image=np.zeros((size, size, 3), dtype=np.uint8))["image"]
        except Exception as exc:
            raise UserError(f"{where}: fails on a {size}x{size} image: {_condense(exc)}") from None
        if out.dtype != np.uint8 or out.ndim != 3 or out.shape[2] != 3:
            raise UserError(f"{where}: must give HxWx3 uint8 images, gives {out.dtype} of shape {out.shape}")
        shapes.add(out.shape)
    if len(shapes) > 1:
        raise UserError(f"{where}: gives images of different sizes {sorted(shapes)}; add a fixed-size crop or resize")


class NormalizeCollate:
    """DataLoader collate_fn: (uint8 HWC image, label) samples -> normalised float (N, 3, H, W) and int64 labels."""

    # One numpy pass over the batch costs ~5 us an image at 32x32 against ~80 us for albumentations'
    # per-image Normalize + ToTensorV2, for the same numbers; numpy also keeps off torch's thread pool.
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1) * 255.0
        self.std = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1) * 255.0

    def __call__(self, samples: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        images = np.ascontiguousarray(np.stack([image for image, _ in samples]).transpose(0, 3, 1, 2), np.float32)
        images -= self.mean
        images /= self.std
        return torch.from_numpy(images), torch.tensor([label for _, label in samples], dtype=torch.int64)
