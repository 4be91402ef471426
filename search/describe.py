"""A short readable architecture (the summary, the report, the dashboard, the dry run); counts: blocks.text."""

from __future__ import annotations


def arch_brief(arch: dict) -> str:
    """A short one-line description of an architecture dict (W= per-stage widths when filled)."""
    blocks = arch.get("blocks")
    width = f"W={arch['widths']}" if arch.get("widths") else f"C={arch.get('width')}"
    parts = [f"{arch.get('block', 'basic')}", f"B={blocks}", width,
             f"F={arch.get('kernel', 3)}", f"K={arch.get('skip_kernel', 1)}", f"P={arch.get('pool')}"]
    if arch.get("separable"):
        parts.append("sep")
    return " ".join(parts)
