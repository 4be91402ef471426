"""The docs a newcomer reads: a README that fits two screens, relative links that lead somewhere, and Python
examples that import names the package has (read as text: nothing is imported or run)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.helpers.layers import declared_layers

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", ROOT / "spaces" / "README.md", ROOT / "results" / "README.md",
        *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 220  # the front door, not the manual (issue 15: "at most ~200 lines")
FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str, keep_code: bool = False) -> list[str]:
    """The lines of a Markdown text outside fenced code blocks, inline code spans blanked unless `keep_code`."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            lines.append(line if keep_code else re.sub(r"`[^`]*`", "", line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, repeated headings numbered as GitHub does (`-1`, `-2`)."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose(path.read_text(), keep_code=True):  # a heading's code spans are part of its anchor
        if m := re.match(r"^#{1,6}\s+(.*)$", line):
            base = slug(m.group(1))
            out.add(base if base not in seen else f"{base}-{seen[base]}")
            seen[base] = seen.get(base, 0) + 1
    return out


def broken_links(path: Path) -> list[str]:
    """The relative links of `path` whose file or heading does not exist."""
    bad = []
    code_free = "\n".join(prose(path.read_text()))
    for target in LINK.findall(code_free):
        if re.match(r"^[a-z]+:", target):
            continue  # http:, https:, mailto: are not checked offline
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            bad.append(f"{target}: no such heading")
    return bad


def python_blocks(text: str) -> list[str]:
    """The bodies of the ```python blocks of a Markdown text."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def defined_names(module: str) -> set[str] | None:
    """Top-level names a module of this repository defines or imports (None: no such module here)."""
    base = ROOT.joinpath(*module.split("."))
    path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
    if not path.exists():
        return None
    names = {p.stem for p in base.glob("*.py")} if base.is_dir() else set()  # submodules of a package
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def missing_imports(path: Path) -> list[str]:
    """`from search...`/`from blocks...` imports in the Python examples of `path` that name nothing there."""
    bad = []
    for block in python_blocks(path.read_text()):
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("search", "blocks"):
                names = defined_names(node.module)
                if names is None:
                    bad.append(f"{node.module}: no such module")
                else:
                    bad += [f"{node.module}.{a.name}" for a in node.names if a.name not in names]
    return bad


def test_readme_fits_two_screens() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= README_MAX_LINES


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    assert broken_links(path) == []


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_examples_import_what_exists(path: Path) -> None:
    assert missing_imports(path) == []


def readme_layers() -> list[str]:
    """The numbered items of the README's Layout section, one string per layer."""
    section = (ROOT / "README.md").read_text().split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return [m.replace("\n", " ") for m in re.findall(r"^\d+\. (.*?)(?=^\d+\. |^$)", section, flags=re.S | re.M)]


def test_readme_layout_is_the_declared_layers() -> None:
    items, layers = readme_layers(), declared_layers()
    assert len(items) == len(layers)
    for item, names in zip(items, layers, strict=True):
        for name in names:
            short = name.split(".")[-1]
            assert re.search(rf"\b{re.escape(short)}\b", item), f"README Layout: {name} missing from: {item}"


def test_the_checks_see_a_broken_link_and_a_missing_name(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Top\n\n## Keys (`ArchSpec`)\n\n[ok](#top) [code](#keys-archspec) [gone](#nowhere) "
                    "[file](missing.md)\n\n```bash\n# not a heading\n```\n"
                    "```python\nfrom search.trainer import no_such_name\n```\n")
    assert broken_links(page) == ["#nowhere: no such heading", "missing.md: no such file"]
    assert missing_imports(page) == ["search.trainer.no_such_name"]
    assert slug("Exactly `n_trials`") == "exactly-n_trials" and slug("Ctrl-C, SIGTERM and resuming") == \
        "ctrl-c-sigterm-and-resuming"


def readme_test_command() -> list[str]:
    """The commands of the README's test block (the `bash` block after "Run the checks and the tests")."""
    text = (ROOT / "README.md").read_text().split("Run the checks and the tests", 1)[1]
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    return [c.strip() for line in block.splitlines() for c in line.split("&&") if c.strip()]


def ci_test_command() -> list[str]:
    """The commands .ci/run runs after its fresh `.venv/bin/pip install -q -e .` (pip's `-q` dropped)."""
    lines = (ROOT / ".ci" / "run").read_text().split(".venv/bin/pip install -q -e .\n", 1)[1].splitlines()
    return [c.strip().replace("pip install -q ", "pip install ") for line in lines for c in line.split("&&")
            if c.strip() and not line.lstrip().startswith("#")]


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = readme_test_command()
    assert readme == ci_test_command()
    assert readme[-1] == ".venv/bin/python -m pytest -q" and {".venv/bin/ruff check", ".venv/bin/mypy",
                                                               ".venv/bin/lint-imports"} <= set(readme)
