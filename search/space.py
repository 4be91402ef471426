"""One typed path from a space to a design: each searched value chosen by a Pick (an Optuna trial, the lowest
value, the middle one), the widths solved to fill the budget, the result checked against budgets and rules."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from blocks import ArchSpec, Complexity, complexity
from blocks.resnet import arena_bound

from .config import SearchConfig, TrainSpec
from .data.augment import policy_names
from .distributions import Dist, Pick
from .rules import arch_violation, train_violation

MIN_WIDTH = 8  # solved widths are multiples of this many channels
WIDTH_DEFAULT = "solve"  # space.width left out: fill the budget (spaces/README.md states it)
FILL_DEFAULT = 1.0  # space.fill left out: the share of the params budget the solved width aims for
MAX_WIDTH = 4096
SHAPE_KEYS = ("stages", "blocks", "width", "fill")  # space keys resolved on their own, not one parameter each


@dataclass(frozen=True)
class Resolved:
    """A design that may be trained: its spec, training settings and analytic complexity."""

    spec: ArchSpec
    train: TrainSpec
    cx: Complexity

    def as_dicts(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The ArchSpec and TrainSpec keys a trial records: every key, defaults included."""
        return self.spec.to_dict(), self.train.to_dict()


@dataclass(frozen=True)
class Rejected:
    """A design that may not be trained: why, the design when it resolved (over a budget, against a rule), and
    the keys as picked."""

    reason: str
    design: Resolved | None = None
    arch: dict[str, Any] = field(default_factory=dict)  # the ArchSpec keys as picked (widths solved where they fit)
    train: dict[str, Any] = field(default_factory=dict)  # the TrainSpec keys as picked

    def as_dicts(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The keys a trial records: the resolved design's, else those picked."""
        return self.design.as_dicts() if self.design is not None else (self.arch, self.train)


def resolve(cfg: SearchConfig, pick: Pick, num_classes: int, input_size: int, *,
            space: Mapping[str, Any] | None = None, train: Mapping[str, Any] | None = None) -> Resolved | Rejected:
    """The design `space` (cfg.space unless given) resolves to when `pick` chooses each searched value, checked
    against the budgets and rules; `train` holds training values that replace the picked ones (a baseline's).

    The picks are made in a fixed order under stable names (stages, blocks or blocks_s1.., the other space keys
    in YAML order, width or fill, the train keys, augment_policy): a study on disk resumes with the same parameters.
    """
    arch, reason = _arch(cfg, cfg.space if space is None else space, pick, num_classes, input_size)
    train_d = {**draw_train(cfg, pick), **(train or {})}
    if reason is not None:
        return Rejected(reason, arch=arch, train=train_d)
    try:
        spec, train_spec = ArchSpec.from_dict(arch), TrainSpec.from_dict(train_d)
    except (ValueError, TypeError) as e:
        return Rejected(str(e), arch=arch, train=train_d)
    design = Resolved(spec, train_spec, complexity(spec))
    why = arch_violation(spec, design.cx, cfg) or train_violation(spec, train_spec, cfg)
    return design if why is None else Rejected(why, design, arch, train_d)


def train_space(cfg: SearchConfig) -> dict[str, Any]:
    """The training keys to resolve: the YAML's, plus a choice of augmentation policy when it has several."""
    space = dict(cfg.train)
    if isinstance(cfg.augment, dict) and "augment_policy" not in space:
        space["augment_policy"] = Dist("choice", choices=tuple(policy_names(cfg.augment)))
    return space


def draw_train(cfg: SearchConfig, pick: Pick) -> dict[str, Any]:
    """The training keys, each searched one chosen by `pick`."""
    return {key: _value(pick, key, value) for key, value in train_space(cfg).items()}


def _arch(cfg: SearchConfig, space: Mapping[str, Any], pick: Pick, num_classes: int,
          input_size: int) -> tuple[dict[str, Any], str | None]:
    """The ArchSpec keys `pick` resolves `space` to, widths solved where width is 'solve'; and why none fits, or None."""
    d: dict[str, Any] = {"stages": int(_value(pick, "stages", space.get("stages", 4)))}
    blocks = space.get("blocks", 2)
    if isinstance(blocks, Dist) and blocks.kind == "int":  # depth of each stage searched on its own
        d["blocks"] = [int(pick(f"blocks_s{i + 1}", blocks)) for i in range(d["stages"])]
    else:
        d["blocks"] = _value(pick, "blocks", blocks)
    d.update({key: _value(pick, key, value) for key, value in space.items() if key not in SHAPE_KEYS})
    d.setdefault("head", cfg.rules.head or "linear")
    d["num_classes"], d["input_size"] = num_classes, input_size
    width = space.get("width", WIDTH_DEFAULT)
    if width != "solve":
        return {**d, "width": int(_value(pick, "width", width))}, None
    if d.get("widths") is not None:
        return d, None  # explicit per-stage widths: nothing to solve
    return _filled(cfg, d, float(_value(pick, "fill", space.get("fill", FILL_DEFAULT))))


def _filled(cfg: SearchConfig, d: dict[str, Any], fill: float) -> tuple[dict[str, Any], str | None]:
    """`d` with widths filling the share `fill` of the params budget; or `d` and why even MIN_WIDTH does not fit."""
    try:
        ArchSpec.from_dict({**d, "width": MIN_WIDTH})
    except ValueError as e:
        return d, str(e)
    budget = cfg.budget
    solved = fill_widths(d, fill * budget.params, budget.flops, cfg.rules.widening_1x1, budget.peak_activations,
                         budget.arena)
    if solved is not None:
        return solved, None
    if solve_width(d, budget.params, budget.flops, budget.peak_activations, budget.arena) is None:
        return d, f"even width {MIN_WIDTH} is over the hard budget for this shape"
    return d, (f"even width {MIN_WIDTH} is over the sampled fill share ({fill:.0%} of the budget, "
               f"{fill * budget.params:,.0f} params) for this shape; the hard budget itself is not broken")


def _value(pick: Pick, name: str, value: Any) -> Any:
    """A fixed value as it is, or `pick`'s choice for a Dist; a list where a choice holds a tuple."""
    if isinstance(value, Dist):
        value = pick(name, value)
    return list(value) if isinstance(value, tuple) else value


def solve_width(d: dict[str, Any], max_params: float, max_flops: float | None,
                max_peak: int | None = None, max_arena: int | None = None) -> int | None:
    """The largest multiple of MIN_WIDTH whose network fits the limits, or None if even MIN_WIDTH does not."""
    fits = _fits(d, max_params, max_flops, max_peak=max_peak, max_arena=max_arena)
    hi = _largest(lambda k: fits({"width": k * MIN_WIDTH}), MAX_WIDTH // MIN_WIDTH)
    return None if hi == 0 else hi * MIN_WIDTH


def fill_widths(d: dict[str, Any], max_params: float, max_flops: float | None,
                widening_1x1: bool = True, max_peak: int | None = None,
                max_arena: int | None = None) -> dict[str, Any] | None:
    """Solve C (doubling per stage), then widen stages from the last in steps of MIN_WIDTH while it fits.

    Doubling alone leaves up to a quarter of the budget unused (C moves in steps of 8 and the last
    stage, which holds most parameters, in steps of 8 * 2^(N-1)); widening each stage on its own,
    widest first, keeps the widths non-decreasing and lands within one step of the first stage.
    With `widening_1x1` false (a rule), no widening may add a 1x1 conv that increases the channel
    count: separable convs then keep whole width ratios between stages, so those designs stay doubled.
    `max_peak` caps the peak activation memory (elements) too, `max_arena` the arena head bound (bytes,
    blocks.resnet.arena_bound): a stage widens only while every limit holds.
    Returns the dict with `width` and per-stage `widths`, or None when even width MIN_WIDTH does not fit.
    """
    c = solve_width(d, max_params, max_flops, max_peak, max_arena)
    if c is None:
        return None
    base = None if widening_1x1 else complexity(ArchSpec.from_dict({**d, "width": c})).widening_1x1
    fits = _fits(d, max_params, max_flops, base, max_peak, max_arena)

    def fits_widened(widths: list[int], i: int) -> Callable[[int], bool]:
        """Whether `widths` with stage i widened by k steps of MIN_WIDTH still fits, as a function of k."""
        return lambda k: fits(_widened(widths, i, k))

    widths = [c * 2**i for i in range(int(d["stages"]))]
    for i in reversed(range(len(widths))):
        k = _largest(fits_widened(widths, i), (MAX_WIDTH - widths[i]) // MIN_WIDTH)
        widths = _widened(widths, i, k)["widths"]
    return {**d, "width": widths[0], "widths": widths}


def _widened(widths: list[int], i: int, k: int) -> dict[str, Any]:
    """The keys `width` and `widths` for `widths` with stage i widened by k steps of MIN_WIDTH."""
    new = [*widths[:i], widths[i] + k * MIN_WIDTH, *widths[i + 1:]]
    return {"width": new[0], "widths": new}


def _fits(d: dict[str, Any], max_params: float, max_flops: float | None, max_widening: int | None = None,
          max_peak: int | None = None, max_arena: int | None = None) -> Callable[[dict[str, Any]], bool]:
    """A test of whether `d` with some keys changed fits the limits (and widening 1x1 cap), analytically."""

    def fits(changes: dict[str, Any]) -> bool:
        try:
            spec = ArchSpec.from_dict({**d, **changes})
            cx = complexity(spec)
        except ValueError:  # e.g. zero_pad shortcuts need widths that never shrink
            return False
        return (cx.params <= max_params and (max_flops is None or cx.flops <= max_flops)
                and (max_widening is None or cx.widening_1x1 <= max_widening)
                and (max_peak is None or cx.peak_activations <= max_peak)
                and (max_arena is None or arena_bound(spec) <= max_arena))

    return fits


def _largest(ok: Callable[[int], bool], hi: int) -> int:
    """The largest k in [0, hi] with ok(k), for ok true up to some k and false after (0 if ok(1) is false)."""
    lo = 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo
