"""Rows into values: events and times as both runners return them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sa_crablet.events import SequencedEvent


def to_event(row: Any) -> SequencedEvent:
    """An event from a row of ``EVENT_COLUMNS``, as Core or the driver returns it (tags
    as a list from psycopg directly)."""
    position, type_, tags, data, metadata, recorded_at = row
    return SequencedEvent(type_, tuple(tags), data, metadata, position, as_utc(recorded_at))


def as_utc(moment: dt.datetime) -> dt.datetime:
    """A stored timestamp with its offset: SQLite stores UTC without one."""
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment
