"""Short readable text for counts and architectures (the summary, the report, the dashboard, the dry run)."""

from __future__ import annotations


def fmt_count(n: float | int | None) -> str:
    """1234567 -> '1.23M' (k, M, G)."""
    if n is None:
        return "-"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def arch_brief(arch: dict) -> str:
    """A short one-line description of an architecture dict (W= per-stage widths when filled)."""
    blocks = arch.get("blocks")
    width = f"W={arch['widths']}" if arch.get("widths") else f"C={arch.get('width')}"
    parts = [f"{arch.get('block', 'basic')}", f"B={blocks}", width,
             f"F={arch.get('kernel', 3)}", f"K={arch.get('skip_kernel', 1)}", f"P={arch.get('pool')}"]
    if arch.get("separable"):
        parts.append("sep")
    return " ".join(parts)
