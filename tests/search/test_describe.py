"""The one-line design text of the summary, the report and the dashboard tells every searched design apart."""

from __future__ import annotations

import pytest

from search.describe import arch_brief, plural

RESNET8 = {"stages": 3, "blocks": [1, 1, 1], "widths": [16, 32, 64], "kernel": 3, "skip_kernel": 1, "pool": None,
           "block": "basic", "separable": False, "shortcut": "projection", "stem": "cifar", "head": "linear"}


@pytest.mark.parametrize("key, other", [("stem", "conv_s2"), ("stem", "imagenet"), ("shortcut", "zero_pad"),
                                        ("head", "conv")])
def test_designs_differing_in_one_searched_key_read_differently(key: str, other: str) -> None:
    line = arch_brief(RESNET8 | {key: other})
    assert line != arch_brief(RESNET8) and f"{key}={other}" in line


def test_default_stem_shortcut_and_head_are_not_spelled_out() -> None:
    assert arch_brief(RESNET8) == "basic B=[1, 1, 1] W=[16, 32, 64] F=3 K=1 P=None"
    assert arch_brief({k: v for k, v in RESNET8.items() if k not in ("stem", "shortcut", "head")}) == \
        arch_brief(RESNET8)  # a record written before these keys existed reads as their defaults


@pytest.mark.parametrize("n, noun, many, text", [(1, "image", None, "1 image"), (0, "row", None, "0 rows"),
                                                 (2, "class", "classes", "2 classes"), (1024, "row", None, "1,024 rows")])
def test_plural(n: int, noun: str, many: str | None, text: str) -> None:
    assert plural(n, noun, many) == text
