"""Short readable text: an architecture in one line (the summary, the report, the dashboard, the dry run), a
number of things (`3 images`); counts and bytes (`1.23M`, `48 KiB`) are blocks.text's."""

from __future__ import annotations

from blocks import ArchSpec

# Keys a space may search that change the design but not its B/C/F/K/P letters: named only when they differ
# from ArchSpec's default, so the common design stays short and two different designs never read alike.
NAMED_WHEN_SET = ("stem", "shortcut", "head")


def arch_brief(arch: dict) -> str:
    """A short one-line description of an architecture dict (W= per-stage widths when filled)."""
    blocks = arch.get("blocks")
    width = f"W={arch['widths']}" if arch.get("widths") else f"C={arch.get('width')}"
    parts = [f"{arch.get('block', ArchSpec.block)}", f"B={blocks}", width,
             f"F={arch.get('kernel', ArchSpec.kernel)}", f"K={arch.get('skip_kernel', ArchSpec.skip_kernel)}",
             f"P={arch.get('pool')}"]
    if arch.get("separable"):
        parts.append("sep")
    parts += [f"{key}={arch[key]}" for key in NAMED_WHEN_SET if arch.get(key, getattr(ArchSpec, key)) !=
              getattr(ArchSpec, key)]
    return " ".join(parts)


def plural(n: int, noun: str, many: str | None = None) -> str:
    """3, 'image' -> '3 images'; 1, 'image' -> '1 image'; 2, 'class', 'classes' -> '2 classes' (1,024: a comma)."""
    return f"{n:,} {noun if n == 1 else many or noun + 's'}"
