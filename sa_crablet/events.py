"""Event values: what callers append and what reads return."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sa_crablet._validation import check_metadata, check_tags, check_type

Tags = tuple[str, ...]


@dataclass(frozen=True, slots=True, init=False)
class Event:
    """An event to append.

    ``tags`` name the entities the event concerns (``"course:c1"``); order and duplicates
    are irrelevant, so they are stored de-duplicated and sorted. An event may have no tags.
    ``data`` and ``metadata`` must be JSON-compatible; that is checked when the event is
    appended, before any SQL runs.
    """

    type: str
    tags: Tags = ()
    data: Any = None
    metadata: Mapping[str, Any] | None = None

    def __init__(
        self,
        type: str,
        tags: Iterable[str] = (),
        data: Any = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        object.__setattr__(self, "type", check_type("type", type))
        object.__setattr__(self, "tags", check_tags("tags", tags))
        check_metadata("metadata", metadata)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "metadata", metadata)


@dataclass(frozen=True, slots=True)
class SequencedEvent:
    """An event as stored: its content plus its ``position`` and the time it was recorded."""

    type: str
    tags: Tags
    data: Any
    metadata: Mapping[str, Any] | None
    position: int
    recorded_at: dt.datetime

    def to_event(self) -> Event:
        """The content of this event, without its position."""
        return Event(self.type, self.tags, self.data, self.metadata)


def tag(key: str, value: object) -> str:
    """Build a ``key:value`` tag. The key may not contain ``:``; the value may."""
    if not isinstance(key, str) or not key or ":" in key:
        from sa_crablet.exceptions import ValidationError

        raise ValidationError("key", key, "a tag key must be a non-empty string without ':'")
    return f"{key}:{value}"


def tags(*pairs: tuple[str, object], **kwargs: object) -> Tags:
    """Build ``key:value`` tags from pairs and keyword arguments: ``tags(course="c1")``."""
    built = [tag(k, v) for k, v in pairs] + [tag(k, v) for k, v in kwargs.items()]
    return check_tags("tags", built)


def split_tag(value: str) -> tuple[str, str]:
    """Split a ``key:value`` tag at its first ``:``; raise if there is none."""
    key, sep, rest = value.partition(":")
    if not sep or not key:
        from sa_crablet.exceptions import ValidationError

        raise ValidationError("tag", value, "not a 'key:value' tag")
    return key, rest


def as_tags(value: Iterable[str]) -> Tags:
    """Normalize an iterable of tags (validated, de-duplicated, sorted)."""
    return check_tags("tags", value)
