"""How the errors' messages show values: short, and never the content of event data.

A message ends up in logs and error trackers. So a value in it is cut short (a payload may be
large, deeply nested or circular), a payload is shown by its type and size only (it may hold
personal data), and a query is summarised (a condition can carry thousands of items).
"""

from __future__ import annotations

import reprlib
from collections.abc import Sized
from typing import Any

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 200
_REPR.maxlevel = 4

# A condition's query in a message: enough to recognise it, bounded for huge ones.
_ITEMS_SHOWN = 4
_VALUES_SHOWN = 4
_NAME_SHOWN = 60


def shown(value: Any) -> str:
    """``repr(value)``, cut short."""
    try:
        return _REPR.repr(value)
    except Exception:  # a value whose own __repr__ fails
        return f"<{type(value).__name__}>"


def concealed(value: Any) -> str:
    """What a payload is, without what it holds: ``<dict of 3 items>``, ``<str of 12
    characters>``, ``<float>``."""
    name = type(value).__name__
    if not isinstance(value, Sized):
        return f"<{name}>"
    try:
        size = len(value)
    except Exception:  # a __len__ that fails
        return f"<{name}>"
    unit = "character" if isinstance(value, str) else "byte" if isinstance(value, bytes) else "item"
    return f"<{name} of {size} {unit}{'' if size == 1 else 's'}>"


def _name(text: str) -> str:
    if len(text) > _NAME_SHOWN:
        text = text[: _NAME_SHOWN - 3] + "..."
    return repr(text)


def _names(values: tuple[str, ...]) -> str:
    listed = [_name(v) for v in values[:_VALUES_SHOWN]]
    if len(values) > _VALUES_SHOWN:
        listed.append(f"... {len(values) - _VALUES_SHOWN} more")
    return "[" + ", ".join(listed) + "]"


def query_text(query: Any) -> str:
    """A query as ``types=['A'] tags=['course:1'] OR tags=['student:2']``, at most
    :data:`_ITEMS_SHOWN` items of at most :data:`_VALUES_SHOWN` names each."""
    if getattr(query, "match_all", False):
        return "every event (Query.all())"
    items = tuple(getattr(query, "items", ()))
    shown_items = []
    for item in items[:_ITEMS_SHOWN]:
        parts = []
        if item.types:
            parts.append(f"types={_names(item.types)}")
        if item.tags:
            parts.append(f"tags={_names(item.tags)}")
        shown_items.append(" ".join(parts))
    if len(items) > _ITEMS_SHOWN:
        shown_items.append(f"... {len(items) - _ITEMS_SHOWN} more items")
    return " OR ".join(shown_items)


def after_text(after: Any) -> str:
    """Where a condition starts: ``after head 12@100:105:`` / ``after position 12`` / at
    any position."""
    if after is None:
        return "at any position (the condition has no head)"
    if isinstance(after, int):
        return f"after position {after} (a bare position, without the head's snapshot)"
    return f"after head {after}"


def condition_text(condition: Any) -> str:
    """An append condition: its query and its head."""
    query = query_text(condition.fail_if_events_match)
    return f"events matching ({query}) {after_text(condition.after)}"


def seconds(value: float) -> str:
    """A number of seconds as configured: ``0.2 s``, ``5 s``."""
    return f"{value:g} s"
