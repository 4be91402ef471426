"""search/rules.py: a space's rules reject the designs that break them, before and after building."""

from __future__ import annotations

from blocks import ArchSpec, complexity
from search.config import load_config
from search.rules import arch_violation, module_violation
from tests.helpers.spaces import ROOT


def test_tiny_rules_reject_what_breaks_them() -> None:
    cfg = load_config(ROOT / "spaces" / "tiny_26m.yaml")
    ok = ArchSpec.from_dict({"stages": 4, "blocks": 2, "width": 64, "skip_kernel": 3, "head": "conv",
                             "num_classes": 200, "input_size": 64})
    assert arch_violation(ok, complexity(ok), cfg) is None
    assert module_violation(__import__("blocks").build(ok), cfg) is None
    cases = {  # each design breaks one rule, and the reason names that rule (not merely some rule)
        "breaks rules.head: conv": ok.replace(head="linear"),
        "widening 1x1 conv(s) break rules.widening_1x1: false": ok.replace(skip_kernel=1),
        "breaks rules.dropout: false": ok.replace(dropout=0.2),
        # 256 channels into the 200-class conv head: narrower, that head is itself a widening 1x1 conv, the rule
        # that refused this case before it said which
        "receptive field 3 < rules.min_receptive_field 64": ok.replace(stages=1, blocks=[1], kernel=1, width=256,
                                                                       stem="cifar"),
        f"> budget {cfg.budget.params:,}": ok.replace(width=512),
    }
    for says, spec in cases.items():
        reason = arch_violation(spec, complexity(spec), cfg)
        assert reason is not None and says in reason, (says, reason)
    from blocks import build

    assert "fully connected" in module_violation(build(ok.replace(head="linear")), cfg)
    assert "dropout" in module_violation(build(ok.replace(dropout=0.2)), cfg)
    assert "1x1" in module_violation(build(ok.replace(skip_kernel=1)), cfg)
