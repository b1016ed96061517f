"""Input checks shared by the value types and the store.

Everything here runs before any SQL, so bad input never reaches the database and nothing is
half-written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from sa_crablet.exceptions import ValidationError

MAX_TYPE_LENGTH = 255
"""Longest event type accepted (characters); the column is ``VARCHAR(255)``."""
MAX_TAG_LENGTH = 512
"""Longest tag accepted (characters). Keeps every tag well inside an index entry's limit."""

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
        raise ValidationError(field, value, "metadata must be a mapping or None")


# One encoder for every payload: ``json.dumps`` with options builds a new one per call,
# which costs about as much as encoding a small payload.
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False)


def to_json(field: str, value: Any) -> str | None:
    """Serialize a payload for storage; ``None`` stays SQL NULL.

    Rejects what JSON (and PostgreSQL's jsonb) cannot hold: non-serializable objects,
    NaN and infinities, and NUL characters.
    """
    if value is None:
        return None
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError(field, value, f"not JSON-serializable: {exc}") from None
    if "\\u0000" in text and _ESCAPED_NUL.search(text):
        raise ValidationError(field, value, "JSON payloads must not contain NUL characters")
    return text
