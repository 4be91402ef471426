"""Seeded random ArchSpecs over every option, cheap enough to build and trace hundreds of times."""

from __future__ import annotations

import random
from typing import Any

from blocks import ArchSpec
from blocks.spec import STEM_STRIDE

N_DRAWS = 320  # seeded draws; the few that from_dict rejects are counted, the rest (>= 300) tested
MAX_CHANNELS = 256  # widths are halved until every block output is at most this (keeps it fast)
MAX_STAGE_COST = 4e6  # ... and until every stage's (width * max(kernel, expansion) * side)^2 is at most this
DEPTHS = (1, 1, 2, 2, 3, 4, 5, 6)  # blocks per stage, shallow more often: fvcore traces ~1 ms per conv


def draw_arch(rng: random.Random) -> dict[str, Any]:
    """One random architecture dict over every option of ArchSpec (it may be invalid)."""
    stages = rng.randint(1, 5)
    block = rng.choice(["basic", "bottleneck"])
    d: dict[str, Any] = {
        "stages": stages, "blocks": [rng.choice(DEPTHS) for _ in range(stages)], "block": block,
        "width": rng.randint(8, 128), "kernel": rng.choice([1, 3, 5, 7]), "skip_kernel": rng.choice([1, 3, 5]),
        "separable": rng.random() < 0.4, "shortcut": rng.choice(["projection", "zero_pad"]),
        "stem": rng.choice(["cifar", "imagenet", "conv_s2"]), "head": rng.choice(["linear", "conv"]),
        "input_size": rng.randint(16, 64), "num_classes": rng.choice([10, 200]),
    }
    if block == "bottleneck" and rng.random() < 0.5:
        d["expansion"] = rng.randint(1, 4)
    if rng.random() < 0.3:
        d["widths"] = sorted(rng.randint(8, 64) for _ in range(stages))
        if rng.random() < 0.25:
            rng.shuffle(d["widths"])  # may shrink: invalid with zero_pad
    if rng.random() < 0.4:
        d["strides"] = [rng.choice([1, 2]) for _ in range(stages)]
    if rng.random() < 0.1:
        d["dropout"] = 0.1
    if rng.random() < 0.1:
        d["in_channels"] = 1
    _shrink(d)
    if rng.random() < 0.5:
        try:
            d["pool"] = rng.randint(1, ArchSpec.from_dict(d).stage_sizes()[-1])
        except ValueError:
            d["pool"] = 1  # the draw is invalid anyway; from_dict will say why
    return d


def _shrink(d: dict[str, Any]) -> None:
    """Halve the widths, then the input, until the model is cheap to build and trace hundreds of times."""
    e = d.get("expansion") or (4 if d["block"] == "bottleneck" else 1)
    while True:
        ws = d.get("widths") or [d["width"] * 2**i for i in range(d["stages"])]
        sides, side = [], d["input_size"] // STEM_STRIDE[d["stem"]]
        for s in d.get("strides") or [1] + [2] * (d["stages"] - 1):
            side = -(-side // s)
            sides.append(side)
        cost = max((w * max(d["kernel"], e) * n) ** 2 for w, n in zip(ws, sides, strict=True))
        if max(ws) * e <= MAX_CHANNELS and cost <= MAX_STAGE_COST:
            return
        if min(ws) >= 16:
            d["width"] //= 2
            if "widths" in d:
                d["widths"] = [w // 2 for w in d["widths"]]
        elif d["input_size"] >= 32:
            d["input_size"] //= 2
        else:
            return


def _draw_specs(n: int, seed: int) -> tuple[list[ArchSpec], int]:
    """The valid specs among `n` seeded draws, and how many draws from_dict rejected."""
    rng, specs, invalid = random.Random(seed), [], 0
    for _ in range(n):
        try:
            specs.append(ArchSpec.from_dict(draw_arch(rng)))
        except ValueError:
            invalid += 1
    return specs, invalid


SPECS, INVALID = _draw_specs(N_DRAWS, seed=1234)
