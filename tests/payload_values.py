"""Payload comparisons for tests: exact (types, key order, the sign of zero) and iterative,
so payloads nested thousands of levels deep compare without recursion."""

from __future__ import annotations

from typing import Any


def as_read(value: Any) -> Any:
    """What a payload reads back as: tuples as lists, subclasses of dict, list, str, int and
    float as the plain type (booleans stay booleans)."""
    if isinstance(value, dict):
        return {str(k): as_read(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_read(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    for plain in (str, int, float):
        if isinstance(value, plain):
            return plain(value)
    raise TypeError(f"not a payload value: {value!r}")


def exactly_equal(left: Any, right: Any) -> bool:
    """Equal, with equal types at every level (``1 != 1.0``, ``True != 1``, ``-0.0 != 0.0``)
    and object keys in the same order."""
    pending = [(left, right)]
    while pending:
        a, b = pending.pop()
        if type(a) is not type(b):
            return False
        if isinstance(a, dict):
            if list(a) != list(b):
                return False
            pending.extend(zip(a.values(), b.values(), strict=True))
        elif isinstance(a, list):
            if len(a) != len(b):
                return False
            pending.extend(zip(a, b, strict=True))
        elif isinstance(a, float):
            if a.hex() != b.hex():  # -0.0 and 0.0 differ; NaN never gets here
                return False
        elif a != b:
            return False
    return True


def depth(value: Any) -> int:
    """How deeply lists and objects nest (a scalar is 0, ``[]`` is 1)."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        node, level = pending.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level)
            children = node.values() if isinstance(node, dict) else node
            pending.extend((child, level + 1) for child in children)
    return deepest


def nested(levels: int, leaf: Any = None) -> Any:
    """``levels`` lists and objects, alternating, around ``leaf``."""
    value = leaf
    for level in range(levels):
        value = [value] if level % 2 else {"k": value}
    return value
