"""ArchSpec: the frozen, typed description of one parametric ResNet."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

BLOCK_KINDS = ("basic", "bottleneck")
STEM_KINDS = ("cifar", "imagenet", "conv_s2")
HEAD_KINDS = ("linear", "conv")
SHORTCUT_KINDS = ("projection", "zero_pad")

# The stems' geometry, once: each stem's conv (kernel, stride), then the imagenet stem's max-pool (kernel, stride);
# Stem, its complexity twin, stage_sizes and STEM_STRIDE all read these.
STEM_CONV = {"cifar": (3, 1), "conv_s2": (3, 2), "imagenet": (7, 2)}
STEM_POOL = {"imagenet": (3, 2)}
STEM_STRIDE = {kind: s * STEM_POOL.get(kind, (1, 1))[1] for kind, (_, s) in STEM_CONV.items()}  # 1, 2, 4
# Bounds that keep complexity() and build() finite and quick (ResNet-1202 has 600 blocks; resnet50's
# widest layer 2048 channels): beyond them a spec is a typo, not a design.
MAX_STAGES = 16
MAX_BLOCKS = 2048  # all stages together
MAX_CHANNELS = 2**16  # the widest layer


class SpecError(ValueError):
    """An architecture value that cannot be built; `key` is the ArchSpec key it names."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _stage_out(size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded odd-kernel conv or pool with this stride."""
    return (size - 1) // stride + 1


@dataclass(frozen=True)
class ArchSpec:
    """A ResNet in the design space: N stages of B_i blocks, widths, kernels F/K, pool P."""

    stages: int = 4  # N: number of residual stages
    blocks: tuple[int, ...] = (2, 2, 2, 2)  # B_i: blocks in stage i
    width: int = 64  # C: channels of stage 1; doubles per stage unless `widths` is given
    widths: tuple[int, ...] | None = None  # explicit per-stage widths (inner width for bottleneck)
    kernel: int = 3  # F: conv kernel inside the blocks (odd)
    skip_kernel: int = 1  # K: kernel of a projection shortcut (odd)
    pool: int | None = None  # P: average-pool kernel before the head; None = global average
    block: str = "basic"  # basic | bottleneck
    expansion: int | None = None  # bottleneck output = width * expansion; None = 1 basic, 4 bottleneck
    separable: bool = False  # depthwise-separable convs inside the blocks
    shortcut: str = "projection"  # projection (KxK conv + BN) | zero_pad (parameter-free)
    stem: str = "cifar"  # cifar (3x3/1) | imagenet (7x7/2 + 3x3/2 max-pool) | conv_s2 (3x3/2)
    head: str = "linear"  # linear (pool + fully connected) | conv (1x1 conv to classes + global pool)
    strides: tuple[int, ...] | None = None  # per-stage stride; None = 1 for stage 1, then 2
    dropout: float = 0.0  # dropout probability before the head (0 = no dropout layer)
    num_classes: int = 10
    input_size: int = 32  # H = W of the input images, in pixels
    in_channels: int = 3

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ArchSpec:
        """Build and validate a spec from a plain dict (YAML keys); unknown keys are errors."""
        if not isinstance(d, Mapping):
            raise ValueError(f"architecture must be a mapping of keys, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown architecture key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        kw = dict(d)
        stages = kw.get("stages", cls.stages)
        if not isinstance(stages, int) or isinstance(stages, bool) or stages < 1:
            # checked here because the defaults below multiply by it (int(None) is a TypeError)
            raise SpecError("stages", f"invalid architecture key 'stages' = {stages!r}: expected an integer >= 1")
        if "blocks" in kw and isinstance(kw["blocks"], int) and not isinstance(kw["blocks"], bool):
            kw["blocks"] = [kw["blocks"]] * int(stages)  # one number = the same depth in every stage
        if "stages" not in kw and isinstance(kw.get("blocks"), (list, tuple)):
            kw["stages"] = len(kw["blocks"])  # stages follow from an explicit blocks list
        if "stages" in kw and "blocks" not in kw:
            kw["blocks"] = [2] * int(stages)
        for key in ("blocks", "widths", "strides"):
            if isinstance(kw.get(key), list):
                kw[key] = tuple(kw[key])
        spec = cls(**kw)
        spec.validate()
        return spec

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, not tuples) that `from_dict` turns back into this spec."""
        out = dataclasses.asdict(self)
        for key in ("blocks", "widths", "strides"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out

    def replace(self, **changes: Any) -> ArchSpec:
        """A validated copy with some keys changed."""
        d = self.to_dict()
        d.update(changes)
        return ArchSpec.from_dict(d)

    # ---- derived values -------------------------------------------------------------------
    @property
    def stage_widths(self) -> tuple[int, ...]:
        """Inner width of each stage (C, 2C, 4C, ... unless `widths` is given)."""
        if self.widths is not None:
            return tuple(self.widths)
        return tuple(self.width * 2**i for i in range(self.stages))

    @property
    def block_expansion(self) -> int:
        """Output channels of a block divided by its inner width."""
        if self.expansion is not None:
            return self.expansion
        return 4 if self.block == "bottleneck" else 1

    @property
    def stage_strides(self) -> tuple[int, ...]:
        """Stride of the first block of each stage."""
        if self.strides is not None:
            return tuple(self.strides)
        return tuple(1 if i == 0 else 2 for i in range(self.stages))

    @property
    def stem_width(self) -> int:
        """Channels out of the stem: the first stage's inner width, as in torchvision."""
        return self.stage_widths[0]

    def stage_sizes(self) -> list[int]:
        """Spatial size (H = W) of each stage's output feature map."""
        size = _stage_out(self.input_size, STEM_CONV[self.stem][1])
        if self.stem in STEM_POOL:
            size = _stage_out(size, STEM_POOL[self.stem][1])
        sizes = []
        for s in self.stage_strides:
            size = _stage_out(size, s)
            sizes.append(size)
        return sizes

    # ---- validation -------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ValueError naming the key for any spec that cannot be built."""

        def need(ok: bool, key: str, msg: str) -> None:
            if not ok:
                raise SpecError(key, f"invalid architecture key {key!r} = {getattr(self, key)!r}: {msg}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        need(is_int(self.stages) and 1 <= self.stages <= MAX_STAGES, "stages",
             f"expected an integer in [1, {MAX_STAGES}]")
        need(isinstance(self.blocks, tuple) and all(is_int(b) for b in self.blocks), "blocks",
             "expected a list of integers (one per stage) or one integer")
        need(len(self.blocks) == self.stages, "blocks", f"expected {self.stages} entries, one per stage")
        need(all(b >= 1 for b in self.blocks), "blocks", "every stage needs at least 1 block")
        need(sum(self.blocks) <= MAX_BLOCKS, "blocks", f"expected at most {MAX_BLOCKS} blocks in all")
        need(is_int(self.width) and 1 <= self.width <= MAX_CHANNELS, "width",
             f"expected an integer in [1, {MAX_CHANNELS}]")
        if self.widths is not None:
            need(isinstance(self.widths, tuple) and all(is_int(w) and w >= 1 for w in self.widths),
                 "widths", "expected a list of integers >= 1")
            need(len(self.widths) == self.stages, "widths", f"expected {self.stages} entries, one per stage")
        for key in ("kernel", "skip_kernel"):
            v = getattr(self, key)
            need(is_int(v) and v >= 1 and v % 2 == 1, key, "expected an odd integer >= 1 (1, 3, 5, 7, ...)")
        need(self.block in BLOCK_KINDS, "block", f"expected one of {', '.join(BLOCK_KINDS)}")
        need(self.expansion is None or (is_int(self.expansion) and self.expansion >= 1), "expansion",
             "expected an integer >= 1 or null")
        need(max(self.stage_widths) * self.block_expansion <= MAX_CHANNELS, "width",
             f"the widest layer would have more than {MAX_CHANNELS} channels")
        need(isinstance(self.separable, bool), "separable", "expected true or false")
        need(self.shortcut in SHORTCUT_KINDS, "shortcut", f"expected one of {', '.join(SHORTCUT_KINDS)}")
        need(self.stem in STEM_KINDS, "stem", f"expected one of {', '.join(STEM_KINDS)}")
        need(self.head in HEAD_KINDS, "head", f"expected one of {', '.join(HEAD_KINDS)}")
        if self.strides is not None:
            need(isinstance(self.strides, tuple) and all(is_int(s) and s in (1, 2) for s in self.strides),
                 "strides", "expected a list of 1s and 2s")
            need(len(self.strides) == self.stages, "strides", f"expected {self.stages} entries, one per stage")
        need(isinstance(self.dropout, (int, float)) and not isinstance(self.dropout, bool)
             and 0.0 <= self.dropout < 1.0, "dropout", "expected a probability in [0, 1)")
        need(is_int(self.num_classes) and self.num_classes >= 2, "num_classes", "expected an integer >= 2")
        need(is_int(self.in_channels) and self.in_channels >= 1, "in_channels", "expected an integer >= 1")
        need(is_int(self.input_size) and self.input_size >= 1, "input_size", "expected an integer >= 1")
        if self.shortcut == "zero_pad":
            outs = [w * self.block_expansion for w in self.stage_widths]
            ins = [self.stem_width] + outs[:-1]
            need(all(o >= i for i, o in zip(ins, outs, strict=True)), "shortcut",
                 "zero_pad needs block output channels that never shrink (it can only pad, not project)")
        final = self.stage_sizes()[-1]
        if self.pool is not None:
            need(is_int(self.pool) and self.pool >= 1, "pool", "expected an integer >= 1 or null (global average)")
            need(self.pool <= final, "pool",
                 f"larger than the final {final}x{final} feature map (input {self.input_size}, "
                 f"{self.stages} stages)")
