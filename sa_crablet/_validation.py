"""Input checks shared by the value types and the store.

Everything here runs before any SQL, so bad input never reaches the database and nothing is
half-written.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from sa_crablet.exceptions import ValidationError
from sa_crablet.schema import MAX_COMMAND_ID_LENGTH

MAX_TYPE_LENGTH = 255
"""Longest event type accepted (characters); the column is ``VARCHAR(255)``."""
MAX_TAG_LENGTH = 512
"""Longest tag accepted (characters). Keeps every tag well inside an index entry's limit."""
MAX_PAYLOAD_DEPTH = 512
"""Deepest nesting of lists and objects accepted in ``data`` and ``metadata`` (a flat
``{"a": 1}`` is 1 deep). Python's own JSON encoder and decoder recurse, one level per
frame, and fail near 1,000 levels minus the caller's stack."""
MAX_POSITION = 2**63 - 1
"""Highest position (PostgreSQL ``bigint``, SQLite ``INTEGER``)."""
MAX_XID = 2**64 - 1
"""Highest PostgreSQL transaction id (``xid8``)."""

# json.dumps escapes NUL as \u0000; an even number of backslashes before it means the
# escape is real (an odd number would be an escaped backslash followed by the text "u0000").
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def check_type(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValidationError(field, value, "an event type must be a string")
    if not value:
        raise ValidationError(field, value, "an event type must not be empty")
    if len(value) > MAX_TYPE_LENGTH:
        raise ValidationError(
            field, value, f"an event type is at most {MAX_TYPE_LENGTH} characters"
        )
    if "\x00" in value:
        raise ValidationError(field, value, "an event type must not contain NUL characters")
    check_text(field, value)
    return value


def check_tag(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValidationError(field, value, "a tag must be a string")
    if not value:
        raise ValidationError(field, value, "a tag must not be empty")
    if len(value) > MAX_TAG_LENGTH:
        raise ValidationError(field, value, f"a tag is at most {MAX_TAG_LENGTH} characters")
    if "\x00" in value:
        raise ValidationError(field, value, "a tag must not contain NUL characters")
    check_text(field, value)
    return value


def check_text(field: str, value: str) -> None:
    """Refuse text that has no UTF-8 form: lone surrogates (``"\\ud800"``), which Python
    strings can hold and no database column can."""
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ValidationError(
                field, value, "text must not contain lone surrogates (not UTF-8)"
            ) from None


def check_position(field: str, value: object) -> int:
    """An event position (or a head's): an int from 0 to :data:`MAX_POSITION`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, value, "a position is an int")
    if not 0 <= value <= MAX_POSITION:
        raise ValidationError(field, value, f"a position is from 0 to {MAX_POSITION}")
    return value


def check_seconds(field: str, value: object, *, positive: bool) -> float:
    """A duration in seconds: an int or float (not a bool), finite as a float, above 0
    (``positive``) or at least 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(field, value, "a number of seconds is an int or a float")
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond a float's range
        seconds = math.inf
    if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
        bound = "above 0" if positive else "at least 0"
        raise ValidationError(field, value, f"a number of seconds must be finite and {bound}")
    return seconds


def check_command_id(field: str, value: object) -> str:
    if (
        not isinstance(value, str)
        or not value
        or len(value) > MAX_COMMAND_ID_LENGTH
        or "\x00" in value
    ):
        raise ValidationError(
            field,
            value,
            f"a command id is a non-empty string of at most {MAX_COMMAND_ID_LENGTH} "
            "characters, without NUL",
        )
    check_text(field, value)
    return value


def check_tags(field: str, value: object) -> tuple[str, ...]:
    """Validate an iterable of tags; return them de-duplicated and sorted."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValidationError(field, value, "tags must be an iterable of strings, not a string")
    return tuple(sorted({check_tag(field, t) for t in value}))


def check_types(field: str, value: object) -> tuple[str, ...]:
    """Validate an iterable of event types; return them de-duplicated and sorted."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValidationError(field, value, "types must be an iterable of strings, not a string")
    return tuple(sorted({check_type(field, t) for t in value}))


def check_metadata(field: str, value: object) -> None:
    if value is not None and not isinstance(value, Mapping):
        raise ValidationError(field, value, "metadata must be a mapping or None", redacted=True)


# One encoder for every payload: ``json.dumps`` with options builds a new one per call,
# which costs about as much as encoding a small payload. No circular-reference check: the
# walk before it bounds the depth, and a cycle is infinitely deep.
_ENCODER = json.JSONEncoder(
    allow_nan=False, separators=(",", ":"), ensure_ascii=False, check_circular=False
)
_CONTAINERS = (dict, list, tuple)  # what the encoder descends into (subclasses too)


def to_json(field: str, value: Any) -> str | None:
    """Serialize a payload for storage; ``None`` stays SQL NULL.

    Refuses what could not be read back as given: non-string keys (``{1: "a"}`` would come
    back as ``{"1": "a"}``, and ``{1: "a", "1": "b"}`` would lose a value), nesting deeper
    than :data:`MAX_PAYLOAD_DEPTH`, values JSON has no form for (NaN, infinities, objects
    other than dicts, lists, tuples, strings, numbers, booleans and None), NUL characters,
    and lone surrogates (no UTF-8 form).
    """
    if value is None:
        return None
    if type(value) is dict and _flat(value):
        pass  # the usual payload: an object of plain scalars, nothing to walk
    elif isinstance(value, _CONTAINERS):
        _check_tree(field, value)
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            field, value, f"not JSON-serializable: {exc}", redacted=True
        ) from None
    except RecursionError:
        # Within MAX_PAYLOAD_DEPTH, so only when called from a very deep stack already.
        raise ValidationError(
            field, value, "nested too deeply to encode from this call depth", redacted=True
        ) from None
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise ValidationError(
                field, value, "text must not contain lone surrogates (not UTF-8)", redacted=True
            ) from None
    if "\\u0000" in text and _ESCAPED_NUL.search(text):
        raise ValidationError(
            field, value, "JSON payloads must not contain NUL characters", redacted=True
        )
    return text


def _check_tree(field: str, value: Any) -> None:
    """One iterative walk over a payload's containers: every key a string, no deeper than
    :data:`MAX_PAYLOAD_DEPTH` (a cycle is infinitely deep). Scalars are left to the encoder.

    Depth first, with a stack of iterators over the children still to visit (its length is
    the depth). Keys and values are screened by type a container at a time at C speed
    (``issuperset`` over ``map(type, ...)``): a container of plain scalars costs no Python
    loop, and only containers holding containers are walked child by child.
    """
    stack: list[Iterator[Any]] = []
    node = value
    while True:
        if len(stack) >= MAX_PAYLOAD_DEPTH:
            raise ValidationError(
                field,
                value,
                f"nested deeper than {MAX_PAYLOAD_DEPTH} levels (or circular)",
                redacted=True,
            )
        if isinstance(node, dict):
            if type(node) is not dict:  # a subclass: what the encoder sees, through items()
                node = dict(node.items())
            if not _STR.issuperset(map(type, node)):
                _check_keys(field, node)
            node = node.values()
        if not _SCALARS.issuperset(map(type, node)):
            stack.append(iter(node))
        while stack:  # the next container to enter, or done
            for child in stack[-1]:
                if isinstance(child, _CONTAINERS):
                    node = child
                    break
            else:
                stack.pop()
                continue
            break
        else:
            return


_STR = frozenset({str})
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _flat(node: dict[Any, Any]) -> bool:
    """String keys and plain scalar values only (checked at C speed)."""
    return _STR.issuperset(map(type, node)) and _SCALARS.issuperset(map(type, node.values()))


def _check_keys(field: str, node: dict[Any, Any]) -> None:
    for key in node:
        if not isinstance(key, str):  # str subclasses are written as plain strings
            raise ValidationError(
                field, key, "object keys must be strings (others would be converted)", redacted=True
            )
