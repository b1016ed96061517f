"""Queries, append conditions and read heads: pure values, no SQL."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from sa_crablet._validation import MAX_XID, check_position, check_tags, check_types
from sa_crablet.exceptions import ValidationError


@dataclass(frozen=True, slots=True, init=False)
class QueryItem:
    """Matches an event whose type is one of ``types`` (any type when empty) **and** whose
    tags include all of ``tags`` (any tags when empty). At least one must be given."""

    types: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    def __init__(self, types: Iterable[str] = (), tags: Iterable[str] = ()) -> None:
        object.__setattr__(self, "types", check_types("types", types))
        object.__setattr__(self, "tags", check_tags("tags", tags))
        if not self.types and not self.tags:
            raise ValidationError(
                "items", self, "a query item must name at least one type or tag (use Query.all())"
            )

    def matches(self, type_: str, tags: Iterable[str]) -> bool:
        """Whether an event with this type and these tags matches the item."""
        if self.types and type_ not in self.types:
            return False
        return not self.tags or set(self.tags).issubset(tags)


@dataclass(frozen=True, slots=True, init=False)
class Query:
    """The OR of its items. ``Query.all()`` matches every event."""

    items: tuple[QueryItem, ...]
    match_all: bool = field(default=False)

    def __init__(self, items: Iterable[QueryItem], *, match_all: bool = False) -> None:
        if isinstance(items, QueryItem):
            items = (items,)
        if not isinstance(items, Iterable):
            raise ValidationError("items", items, "a query takes an iterable of QueryItem")
        collected = tuple(items)
        for item in collected:
            if not isinstance(item, QueryItem):
                raise ValidationError("items", item, "a query takes QueryItem values only")
        if match_all and collected:
            raise ValidationError("items", collected, "Query.all() takes no items")
        if not match_all and not collected:
            raise ValidationError(
                "items",
                collected,
                "a query needs at least one item (Query.all() matches every event)",
            )
        # Drop exact duplicates, keep the caller's order otherwise.
        object.__setattr__(self, "items", tuple(dict.fromkeys(collected)))
        object.__setattr__(self, "match_all", match_all)

    @classmethod
    def all(cls) -> Query:
        """A query that matches every event."""
        return cls((), match_all=True)

    @classmethod
    def of(cls, *, types: Iterable[str] = (), tags: Iterable[str] = ()) -> Query:
        """A one-item query: ``Query.of(types=["A"], tags=["course:1"])``."""
        return cls([QueryItem(types, tags)])

    def __or__(self, other: Query) -> Query:
        """The union of two queries (items are never merged, so none is narrowed)."""
        if self.match_all or other.match_all:
            return Query.all()
        return Query(self.items + other.items)

    def matches(self, type_: str, tags: Iterable[str]) -> bool:
        """Whether an event with this type and these tags matches the query."""
        if self.match_all:
            return True
        tag_set = set(tags)
        return any(item.matches(type_, tag_set) for item in self.items)


@dataclass(frozen=True, slots=True)
class Head:
    """What a read has seen, to pass as ``after`` (to a read or an append condition).

    ``position`` is the highest position the read covered. On PostgreSQL ``snapshot`` also
    records which transactions were still in flight when the read ran
    (``xmin:xmax:xip,...``): an event such a transaction commits later may carry a position
    *below* ``position``, and the head still treats it as unseen. That is what makes the
    head gap-safe. ``str(head)`` and :meth:`Head.parse` carry it through text (URLs, forms,
    messages) without losing that protection; a bare integer does lose it.
    """

    position: int
    snapshot: Snapshot | None = None

    def __post_init__(self) -> None:
        check_position("position", self.position)
        if self.snapshot is not None and not isinstance(self.snapshot, Snapshot):
            raise ValidationError("snapshot", self.snapshot, "must be a Snapshot or None")

    def __str__(self) -> str:
        return str(self.position) if self.snapshot is None else f"{self.position}@{self.snapshot}"

    @classmethod
    def parse(cls, text: str) -> Head:
        """The inverse of ``str(head)``."""
        if not isinstance(text, str):
            raise ValidationError("head", text, "a head is parsed from a string")
        position, sep, snap = text.partition("@")
        if not _NUMBER.fullmatch(position):
            raise ValidationError(
                "head", text, "not a head: expected 'position[@snapshot]', as str(head) writes it"
            )
        return cls(int(position), Snapshot.parse(snap) if sep else None)


# Digits only (int() would also take signs, spaces, underscores and other scripts' digits),
# and few enough that converting them costs nothing.
_NUMBER = re.compile(r"[0-9]{1,20}", re.ASCII)
_SNAPSHOT = re.compile(
    r"([0-9]{1,20}):([0-9]{1,20}):((?:[0-9]{1,20}(?:,[0-9]{1,20})*)?)(?:/([0-9]{1,20}))?", re.ASCII
)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A PostgreSQL ``pg_snapshot`` (``xmin:xmax:xip``) plus the reading transaction's own id.

    A transaction id is unseen when it is ``>= xmax`` or listed in ``xip``, unless it is
    ``own``: a snapshot never lists the reader's own transaction as visible, yet the reader
    saw its own writes. Every id is an ``xid8`` (0 to 2**64 - 1), ``xmin <= xmax``, and
    ``xip`` lies in ``[xmin, xmax)``, as in any snapshot PostgreSQL reports.
    """

    xmin: int
    xmax: int
    xip: tuple[int, ...] = ()
    own: int | None = None

    def __post_init__(self) -> None:
        _check_xid("xmin", self.xmin)
        _check_xid("xmax", self.xmax)
        if self.xmin > self.xmax:
            raise ValidationError("xmax", self.xmax, "a snapshot's xmax is >= its xmin")
        if not isinstance(self.xip, tuple):
            raise ValidationError("xip", self.xip, "must be a tuple of transaction ids")
        for xid in self.xip:
            _check_xid("xip", xid)
            if not self.xmin <= xid < self.xmax:
                raise ValidationError("xip", xid, "an in-progress id lies in [xmin, xmax)")
        if self.own is not None:
            _check_xid("own", self.own)

    def __str__(self) -> str:
        text = f"{self.xmin}:{self.xmax}:{','.join(map(str, self.xip))}"
        return text if self.own is None else f"{text}/{self.own}"

    @classmethod
    def parse(cls, text: str, own: str | int | None = None) -> Snapshot:
        """The inverse of ``str(snapshot)`` (``own``, if given, overrides the text's)."""
        match = _SNAPSHOT.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ValidationError("snapshot", text, "not a snapshot 'xmin:xmax:xip[/own]'")
        xmin, xmax, xip, own_text = match.groups()
        own_value = own if own is not None else own_text
        if isinstance(own_value, str):
            if not _NUMBER.fullmatch(own_value):
                raise ValidationError("own", own_value, "not a transaction id")
            own_value = int(own_value)
        return cls(int(xmin), int(xmax), tuple(int(x) for x in xip.split(",") if x), own_value)

    def invisible(self, xid: int) -> bool:
        """Whether a transaction's writes were not visible to the reader."""
        return xid != self.own and (xid >= self.xmax or xid in self.xip)


def _check_xid(field_name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_XID:
        raise ValidationError(field_name, value, f"a transaction id is an int from 0 to {MAX_XID}")


After = Head | int | None


def check_after(field_name: str, value: object) -> Head | None:
    """Normalize an ``after`` argument to a :class:`Head` (or ``None``)."""
    if value is None or isinstance(value, Head):
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field_name, value, "after must be a Head, an int or None")
    return Head(value)


@dataclass(frozen=True, slots=True)
class AppendCondition:
    """Fail the append if any event matching ``fail_if_events_match`` lies after ``after``.

    Without ``after`` any matching event fails it. With a :class:`Head`, "after" also covers
    events that were still uncommitted when that head was read, whatever their position.
    """

    fail_if_events_match: Query
    after: Head | int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.fail_if_events_match, Query):
            raise ValidationError(
                "fail_if_events_match", self.fail_if_events_match, "must be a Query"
            )
        check_after("after", self.after)

    @property
    def head(self) -> Head | None:
        """``after`` as a :class:`Head`."""
        return check_after("after", self.after)


def fail_if_exists(*tags: str, types: Iterable[str] = ()) -> AppendCondition:
    """A condition that fails when any event with all these tags (and one of ``types``,
    if given) exists: uniqueness, "only once", idempotency tokens."""
    return AppendCondition(Query([QueryItem(types, tags)]))
