"""Read config YAML safely: bounded size and depth, aliases that cannot explode, no duplicate keys, `1e-3` a float.

PyYAML's SafeLoader runs no code, but it recurses once per nesting level (a few thousand levels is a
RecursionError), lets an alias bomb ("billion laughs") expand into billions of values once anything
walks the result, keeps the last of two equal keys silently, and reads `1e-3` as a string (YAML 1.1
wants a dot). Aliases stay allowed (they are handy for shared policies) as long as the document they
expand to stays small: MAX_NODES values and MAX_DEPTH levels, counted on the composed node graph
before anything is constructed.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from .errors import UserError, shown

MAX_BYTES = 1 << 20  # a search-space YAML is a few kB; 1 MiB leaves room and parses in about a second
MAX_DEPTH = 64  # nesting levels, aliases expanded (a space nests about 5)
MAX_NODES = 100_000  # values after expanding aliases (a space holds a few hundred)
MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """SafeLoader that bounds nesting while composing and refuses a key given twice in one mapping."""

    depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        """Compose one node, refusing nesting past MAX_DEPTH before Python's own recursion limit is hit."""
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise UserError(f"line {mark.line + 1}: nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict:
        """A mapping whose keys are all different (a merged `<<:` key may still be overridden)."""
        if isinstance(node, MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == MERGE_TAG or not isinstance(key_node.value, str):
                    continue
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise UserError(f"line {line}: duplicate key {shown(key)} (first at line {seen[key]})")
                seen[key] = line
        return super().construct_mapping(node, deep)


# YAML 1.2 numbers in e-notation without a dot or an exponent sign (`1e-3`, `5E4`, `1.5e3`): YAML 1.1, hence
# PyYAML, reads them as strings.
_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
                              list("-+0123456789."))


def _expanded(node: Node, sizes: dict[int, tuple[int, int]], open_: set[int], level: int = 1) -> tuple[int, int]:
    """(values, depth) of `node` with every alias expanded; refuses an alias inside its own anchor."""
    if id(node) in sizes:
        return sizes[id(node)]
    if level > MAX_DEPTH:  # aliases nested in aliases: stop walking before Python's recursion limit
        raise UserError(f"line {node.start_mark.line + 1}: nested more than {MAX_DEPTH} levels deep "
                        f"once its aliases are expanded")
    if id(node) in open_:
        raise UserError(f"line {node.start_mark.line + 1}: an alias refers to the value that contains it")
    children: list[Node] = []
    if isinstance(node, SequenceNode):
        children = node.value
    elif isinstance(node, MappingNode):
        children = [n for pair in node.value for n in pair]
    open_.add(id(node))
    count, depth = 1, 0
    for child in children:
        c, d = _expanded(child, sizes, open_, level + 1)
        count, depth = count + c, max(depth, d)
        if count > MAX_NODES:
            raise UserError(f"line {node.start_mark.line + 1}: expands to more than {MAX_NODES:,} values "
                            f"(an alias repeated inside aliases?)")
    open_.discard(id(node))
    if level + depth > MAX_DEPTH:
        raise UserError(f"line {node.start_mark.line + 1}: nested more than {MAX_DEPTH} levels deep "
                        f"once its aliases are expanded")
    sizes[id(node)] = (count, depth + 1)
    return sizes[id(node)]


def load_yaml(text: str) -> Any:
    """Parse one YAML document within the limits above; UserError (`line N: ...`) past them.

    yaml.YAMLError still comes out for text that is not YAML at all.
    """
    if len(text) > MAX_BYTES:
        raise UserError(f"{len(text):,} characters, over the {MAX_BYTES:,} a config may hold")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded(node, {}, set())  # before constructing: a bomb is refused without being built
        return loader.construct_document(node)
    finally:
        loader.dispose()
