"""Rows into values: events and times as both runners return them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sa_crablet._clauses import EVENT_COLUMNS
from sa_crablet._json import GIVES_UP, fast_load, load_json
from sa_crablet.events import SequencedEvent


def to_event(row: Any) -> SequencedEvent:
    """An event from a row of ``EVENT_COLUMNS``, as Core or the driver returns it (tags
    as a list from psycopg directly)."""
    position, type_, tags, data, metadata, recorded_at = row
    return SequencedEvent(type_, tuple(tags), data, metadata, position, as_utc(recorded_at))


def as_utc(moment: dt.datetime) -> dt.datetime:
    """A stored timestamp with its offset: SQLite stores UTC without one."""
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


# A read builds one SequencedEvent per row, and the dataclass's own __init__ (six calls of
# object.__setattr__, as every frozen dataclass does) cost about as much as fetching the row.
# The events of a page are built as __init__ would build them, by the slots' own descriptors,
# which are what object.__setattr__ ends up calling: a third of the cost, the same values.
_new = object.__new__
_set = {name: SequencedEvent.__dict__[name].__set__ for name in EVENT_COLUMNS}
_set_position, _set_type, _set_tags, _set_data, _set_metadata, _set_recorded_at = (
    _set[name] for name in EVENT_COLUMNS
)


def events_of(rows: Iterable[Any], skip: int = 0, raw: bool = False) -> list[SequencedEvent]:
    """The events of ``rows``, whose columns after the first ``skip`` are ``EVENT_COLUMNS``.

    ``raw``: the payload columns hold undecoded JSON (bytes, from the psycopg runner's read
    cursor), decoded here as :func:`sa_crablet._json.load_json` would (msgspec, and the
    complete decoder for what it gives up on), its first step inline (a call less per
    payload); otherwise they hold values already (Core, or an engine's own
    ``json_deserializer``) and times may lack their offset (SQLite's, which are UTC).
    """
    events: list[SequencedEvent] = []
    add = events.append
    for row in rows:
        position, type_, tags, data, metadata, recorded_at = row[skip:] if skip else row
        if raw:
            if data is not None:
                try:
                    data = fast_load(data)
                except GIVES_UP:
                    data = load_json(data)
            if metadata is not None:
                try:
                    metadata = fast_load(metadata)
                except GIVES_UP:
                    metadata = load_json(metadata)
        elif recorded_at.tzinfo is None:
            recorded_at = recorded_at.replace(tzinfo=dt.UTC)
        event = _new(SequencedEvent)
        _set_type(event, type_)
        _set_tags(event, tuple(tags))
        _set_data(event, data)
        _set_metadata(event, metadata)
        _set_position(event, position)
        _set_recorded_at(event, recorded_at)
        add(event)
    return events
