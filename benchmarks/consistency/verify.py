"""The verdict: the workers' history checked against the stored log.

Kinds of violation:

``lost-condition``
    A committed decision (conditional append, or a control's) lies above a matching event
    that its read never saw: the event is below the decision's first event, and the head
    the read returned does not cover it (a higher position, or a transaction the read's
    snapshot did not see). The decision is judged by the head the *read* returned, however
    the head travelled (a bare position loses the snapshot: that control must fail here).
``read-gap``
    A read (or a projector of a projection) did not return an event that matches its query,
    that its head covers and that its ``after`` did not cover.
``read-spurious``
    A read returned an event that does not match its query, that its ``after`` covered, that
    is not stored although the reader committed, or out of order; or a "last" read did not
    return the newest events its head covers.
``stale-read``
    A read did not return a matching event committed before the read's transaction began.
``check-missed``
    ``check()`` passed although a matching event its head did not cover was committed
    before the check began, or (a conditional append) before the checking transaction
    released the check's locks.
``phantom``
    A stored event whose append was refused, rolled back, failed at commit, or which no
    worker wrote.
``missing``
    A committed append whose events are not all stored, or not at the position it returned.
``batch``
    A committed append's events out of batch order (or, only when asked for, not
    contiguous: other events' positions between its first and last; reported apart
    otherwise, since the store does not promise contiguity).
``order``
    Positions not strictly increasing; the appends of one transaction out of call order; an
    append that started after another had committed stored below it; on SQLite, positions
    out of commit order.
``transaction-id``
    One append's events (or one transaction's appends) with different transaction ids, or
    two transactions with the same.
``head-text``
    ``Head.parse(str(head))`` differs from ``head``.
``unexpected-error``
    An exception other than ``ConcurrencyError`` from a store call (or other than a
    serialization failure from ``commit()``): every conflict must reach the caller as the
    library's conflict error.
"""

from __future__ import annotations

import bisect
import itertools
from array import array
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from benchmarks.consistency.history import (
    AUTOCOMMIT,
    COMMIT_UNKNOWN,
    COMMITTED,
    AppendRecord,
    CheckRecord,
    Decision,
    ReadRecord,
    Unit,
)
from benchmarks.consistency.stored import Log, StoredEvent, covered
from sa_crablet import Head, Query

EVIDENCE_EVENTS = 5
"""Events listed per violation (the count says how many there were)."""


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str
    summary: str
    evidence: tuple[str, ...] = ()
    decider: str | None = None
    """How the decision at fault reached the store (``Decision.carried``), if one is."""

    def render(self) -> str:
        return "\n".join([f"[{self.kind}] {self.summary}", *(f"    {e}" for e in self.evidence)])


@dataclass
class Verdict:
    events_checked: int
    violations: list[Violation] = field(default_factory=list)
    interleaved: list[Violation] = field(default_factory=list)
    """Batches whose positions other events' interleave (violations only if asked for)."""

    def by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for violation in self.violations:
            counts[violation.kind] += 1
        return dict(sorted(counts.items()))


def show_query(query: Query) -> str:
    if query.match_all:
        return "Query.all()"

    def item(types: Iterable[str], tags: Iterable[str]) -> str:
        parts = [" | ".join(types) or "*"]
        if tags:
            parts.append(" & ".join(f"#{t}" for t in tags))
        return "(" + " ".join(parts) + ")"

    return " OR ".join(item(i.types, i.tags) for i in query.items)


class Verifier:
    def __init__(
        self, units: list[Unit], events: list[StoredEvent], backend: str, contiguous: bool
    ) -> None:
        self.units = units
        self.contiguous = contiguous
        self.log = Log(events)
        self.backend = backend
        self.verdict = Verdict(len(events))
        self.writers: dict[str, tuple[Unit, AppendRecord]] = {}
        for unit in units:
            for op in unit.ops:
                if isinstance(op, AppendRecord):
                    self.writers[op.attempt] = (unit, op)
        self.stored: dict[str, list[StoredEvent]] = defaultdict(list)
        for event in events:
            if event.attempt is not None:
                self.stored[event.attempt].append(event)
        # (end, last) of every append that returned: an event committed before time t was
        # written by one of those that ended before t, so lies at or below their highest.
        ended = sorted((op.end, op.last) for _, op in self.writers.values() if op.last is not None)
        self._ends = [end for end, _ in ended]
        self._highest: list[int] = []
        for _, last in ended:
            self._highest.append(max(last, self._highest[-1] if self._highest else 0))

    def run(self) -> Verdict:
        self._check_log()
        self._check_appends()
        for unit in self.units:
            for message in unit.errors:
                self._add("unexpected-error", message, [f"unit {unit.id} ({unit.host})"])
            for op in unit.ops:
                if isinstance(op, ReadRecord):
                    self._check_read(unit, op)
                elif isinstance(op, CheckRecord) and op.passed:
                    self._check_check(unit, op)
                elif isinstance(op, AppendRecord) and op.decision is not None:
                    self._check_decision(unit, op, op.decision)
        return self.verdict

    # -- helpers ---------------------------------------------------------------------------------

    def _add(
        self,
        kind: str,
        summary: str,
        evidence: Iterable[str] = (),
        decider: str | None = None,
    ) -> None:
        self.verdict.violations.append(Violation(kind, summary, tuple(evidence), decider))

    def _written_before(self, moment: float) -> int:
        """A position at or above every event committed before ``moment``."""
        index = bisect.bisect_left(self._ends, moment)
        return self._highest[index - 1] if index else 0

    def _commit_time(self, event: StoredEvent) -> float | None:
        """When ``event`` was certainly committed, if it was written by a committed append."""
        writer = self.writers.get(event.attempt or "")
        if writer is None or not writer[0].committed(writer[1]):
            return None
        return writer[0].commit_done_of(writer[1])

    def _show_event(self, event: StoredEvent) -> str:
        tags = ",".join(sorted(event.tags))
        text = f"#{event.position} {event.type} [{tags}]"
        if event.transaction_id is not None:
            text += f" xid={event.transaction_id}"
        writer = self.writers.get(event.attempt or "")
        if writer is None:
            return f"{text} by an unknown writer ({event.attempt})"
        unit, append = writer
        how = "unconditional" if append.decision is None else f"{append.decision.carried}"
        return f"{text} by {append.attempt} ({unit.host}, {how}, {unit.outcome})"

    def _show_events(self, events: list[StoredEvent]) -> list[str]:
        shown = [self._show_event(e) for e in events[:EVIDENCE_EVENTS]]
        if len(events) > EVIDENCE_EVENTS:
            shown.append(f"... and {len(events) - EVIDENCE_EVENTS} more")
        return shown

    @staticmethod
    def _show_decision(decision: Decision) -> str:
        return (
            f"query {show_query(decision.query)}, read head {decision.head}, "
            f"carried as {decision.carried}"
        )

    # -- the stored log ------------------------------------------------------------------------

    def _check_log(self) -> None:
        positions = self.log.positions
        for before, after in itertools.pairwise(positions):
            if after <= before:
                self._add("order", f"positions not strictly increasing: {before} then {after}")
        for attempt, events in self.stored.items():
            writer = self.writers.get(attempt)
            if writer is None:
                self._add("phantom", "stored events no worker wrote", self._show_events(events))
                continue
            unit, append = writer
            if not unit.committed(append) and unit.outcome != COMMIT_UNKNOWN:
                self._add(
                    "phantom",
                    f"append {attempt} is stored although it was {append.outcome} "
                    f"in a transaction that ended {unit.outcome}",
                    [f"unit {unit.id} ({unit.host})", *self._show_events(events)],
                )
        unmarked = [e for e in self.log.events if e.attempt is None]
        if unmarked:
            self._add("phantom", "stored events without a marker", self._show_events(unmarked))

    def _check_appends(self) -> None:
        committed: list[tuple[Unit, AppendRecord, list[StoredEvent]]] = []
        xid_units: dict[int, set[str]] = defaultdict(set)
        for unit in self.units:
            previous: AppendRecord | None = None
            unit_xids: set[int] = set()
            for op in unit.ops:
                if not isinstance(op, AppendRecord) or not unit.committed(op):
                    continue
                events = self.stored.get(op.attempt, [])
                where = f"unit {unit.id} ({unit.host}), append {op.attempt}"
                if len(events) != op.count:
                    self._add(
                        "missing",
                        f"a committed append of {op.count} events has {len(events)} stored",
                        [where, *self._show_events(events)],
                    )
                    continue
                committed.append((unit, op, events))
                if events[-1].position != op.last:
                    self._add(
                        "missing",
                        f"append returned position {op.last}, its last event is stored "
                        f"at {events[-1].position}",
                        [where],
                    )
                if [e.index for e in events] != list(range(op.count)):
                    self._add(
                        "batch",
                        "a batch stored out of order",
                        [where, *self._show_events(events)],
                    )
                inside = bisect.bisect_right(
                    self.log.positions, events[-1].position
                ) - bisect.bisect_left(self.log.positions, events[0].position)
                if inside != op.count:
                    first, last = events[0].position, events[-1].position
                    between = [
                        self.log.by_position[p]
                        for p in self.log.positions[
                            bisect.bisect_left(self.log.positions, first) : bisect.bisect_right(
                                self.log.positions, last
                            )
                        ]
                        if self.log.by_position[p].attempt != op.attempt
                    ]
                    # PostgreSQL draws each row's position from the identity sequence
                    # as the row is inserted, so concurrent inserts can interleave; the
                    # store promises atomicity and order, not contiguity.
                    interleaved = Violation(
                        "batch",
                        f"a batch of {op.count} is not contiguous ({first}..{last})",
                        (where, *self._show_events(between)),
                    )
                    if self.contiguous:
                        self.verdict.violations.append(interleaved)
                    else:
                        self.verdict.interleaved.append(interleaved)
                if previous is not None and (previous.last or 0) >= events[0].position:
                    self._add(
                        "order",
                        "an append stored below an earlier append of its transaction",
                        [where, f"earlier append {previous.attempt} ended at {previous.last}"],
                    )
                if not unit.autocommit:
                    previous = op
                xids = {e.transaction_id for e in events if e.transaction_id is not None}
                if len(xids) > 1:
                    self._add("transaction-id", "one append, several transaction ids", [where])
                if unit.autocommit:
                    for xid in xids:
                        xid_units[xid].add(op.attempt)
                else:
                    unit_xids |= xids
            if len(unit_xids) > 1:
                self._add(
                    "transaction-id",
                    f"one transaction's appends carry {len(unit_xids)} transaction ids",
                    [f"unit {unit.id} ({unit.host})"],
                )
            for xid in unit_xids:
                xid_units[xid].add(unit.id)
        for xid, owners in xid_units.items():
            if len(owners) > 1:
                self._add(
                    "transaction-id",
                    f"transaction id {xid} shared by {len(owners)} transactions",
                    sorted(owners)[:EVIDENCE_EVENTS],
                )
        self._check_real_time_order(committed)

    def _check_real_time_order(
        self, committed: list[tuple[Unit, AppendRecord, list[StoredEvent]]]
    ) -> None:
        """An append that began after another had committed is stored above it (on
        SQLite, whose single writer commits in position order: one whose transaction
        began committing after another had committed)."""
        done = sorted(
            ((u.commit_done_of(a), events[-1].position, a.attempt) for u, a, events in committed),
        )
        times = [t for t, _, _ in done]
        highest: list[tuple[int, str]] = []
        for _, last, attempt in done:
            highest.append(max((last, attempt), highest[-1]) if highest else (last, attempt))
        sqlite = self.backend == "sqlite"
        for unit, append, events in committed:
            moment = append.start
            if sqlite and unit.outcome == COMMITTED and unit.commit_start is not None:
                moment = unit.commit_start
            index = bisect.bisect_left(times, moment)
            if not index:
                continue
            top, attempt = highest[index - 1]
            if top >= events[0].position:
                self._add(
                    "order",
                    f"append {append.attempt} stored at {events[0].position}, below {top} of "
                    f"{attempt}, which had committed before it "
                    + ("began committing" if sqlite else "started"),
                    [f"unit {unit.id} ({unit.host})"],
                )

    # -- decisions -------------------------------------------------------------------------------

    def _check_decision(self, unit: Unit, append: AppendRecord, decision: Decision) -> None:
        if not unit.committed(append):
            return
        events = self.stored.get(append.attempt)
        if not events:
            return  # reported as missing
        unseen = self.log.unseen(decision.query, decision.head, below=events[0].position)
        if not unseen:
            return
        # Evidence: committed before the append began, the store's check could see it (a bare
        # position lets it through); later, it may have been in flight during the check.
        earlier = [e for e in unseen if (self._commit_time(e) or append.start) < append.start]
        self._add(
            "lost-condition",
            f"append {append.attempt} committed at {events[0].position} over "
            f"{len(unseen)} matching event(s) below it that its decision never saw "
            f"({len(earlier)} committed before the append began)",
            [
                f"unit {unit.id} ({unit.host}): {self._show_decision(decision)}",
                *self._show_events(unseen),
            ],
            decision.carried,
        )

    def _check_check(self, unit: Unit, check: CheckRecord) -> None:
        decision = check.decision
        release = unit.lock_release(check)
        own = {op.attempt for op in unit.ops if isinstance(op, AppendRecord)}
        bound = self._written_before(release)
        missed: list[StoredEvent] = []
        held: list[StoredEvent] = []
        for event in self.log.unseen(decision.query, decision.head, below=bound + 1):
            when = self._commit_time(event)
            if when is None or event.attempt in own:
                continue
            if when < check.start:
                missed.append(event)
                continue
            writer = self.writers[event.attempt or ""][1].decision
            # Only PostgreSQL's check() holds locks until the transaction ends.
            held_locks = self.backend == "postgresql"
            if held_locks and when < release and writer is not None and writer.protected:
                held.append(event)
        where = f"unit {unit.id} ({unit.host}): {self._show_decision(decision)}"
        if missed:
            self._add(
                "check-missed",
                f"check() passed over {len(missed)} matching event(s) committed before it began",
                [where, *self._show_events(missed)],
            )
        if held:
            self._add(
                "check-missed",
                f"{len(held)} conditional append(s) of the checked scope committed while "
                "check()'s transaction held its locks",
                [where, *self._show_events(held)],
            )

    # -- reads -----------------------------------------------------------------------------------

    def _reusable(self, unit: Unit) -> int | None:
        """The lowest position SQLite may give again after ``unit`` (it rolled back its
        own appends, and AUTOINCREMENT's counter with them), if any."""
        if self.backend != "sqlite" or unit.outcome in (COMMITTED, AUTOCOMMIT):
            return None
        firsts = [
            op.last - op.count + 1
            for op in unit.ops
            if isinstance(op, AppendRecord) and op.last is not None
        ]
        return min(firsts, default=None)

    def _check_read(self, unit: Unit, read: ReadRecord) -> None:
        returned = len(read.positions)
        reusable = self._reusable(unit)
        if reusable is not None:
            # Its own uncommitted events were visible to it, and their positions were
            # given to other events later: judge the read only below them.
            read = _below(read, reusable)
        where = f"unit {unit.id} ({unit.host}): {read.kind} {show_query(read.query)}"
        where += f" after {read.after}" if read.after is not None else ""
        where += f" (known {read.known})" if read.known is not None else ""
        where += f", head {read.head}"
        if Head.parse(str(read.head)) != read.head:
            self._add("head-text", f"{read.head!r} does not survive str() and Head.parse()")
        positions = list(read.positions)
        descending = read.kind == "last"
        ordered = sorted(positions, reverse=descending)
        if positions != ordered or len(set(positions)) != len(positions):
            self._add("read-spurious", "returned out of order", [where, str(positions[:20])])
        self._check_returned(unit, read, where)
        if read.kind == "last":
            newest = self.log.matching(read.query, 0, read.head.position)
            expected = [e.position for e in reversed(newest) if covered(e, read.head)]
            # Its own events, rolled back since, took some of the places.
            kept = [p for p in positions if p in self.log.by_position]
            limit = read.limit if len(kept) == returned else len(kept)
            if kept != expected[:limit]:
                self._add(
                    "read-spurious",
                    f"returned {positions}, the newest covered are {expected[:limit]}",
                    [where],
                )
        elif read.projected:
            for query, folded in read.projected:
                self._check_complete(read, query, set(folded), where + f" / {show_query(query)}")
        else:
            self._check_complete(read, read.query, set(positions), where)
        self._check_stale(unit, read, set(positions), where)

    def _check_returned(self, unit: Unit, read: ReadRecord, where: str) -> None:
        committed = unit.outcome in (COMMITTED, AUTOCOMMIT)
        wrong: list[str] = []
        for position in read.positions:
            event = self.log.by_position.get(position)
            if event is None:
                if committed:
                    wrong.append(f"#{position}: not stored, and the reader committed")
            elif not read.query.matches(event.type, event.tags):
                wrong.append(f"{self._show_event(event)}: does not match")
            elif covered(event, read.after):
                wrong.append(f"{self._show_event(event)}: covered by after")
        for query, folded in read.projected:
            for position in folded:
                event = self.log.by_position.get(position)
                if event is not None and not query.matches(event.type, event.tags):
                    wrong.append(f"{self._show_event(event)}: folded into {show_query(query)}")
        if wrong:
            self._add("read-spurious", f"returned {len(wrong)} wrong event(s)", [where, *wrong])

    def _check_complete(
        self, read: ReadRecord, query: Query, returned: set[int], where: str
    ) -> None:
        since = read.since
        if since is None:
            candidates = self.log.matching(query, 0, read.head.position)
        else:
            candidates = self.log.unseen(query, since, below=read.head.position + 1)
        gaps = [e for e in candidates if e.position not in returned and covered(e, read.head)]
        if gaps:
            self._add(
                "read-gap",
                f"missed {len(gaps)} event(s) its head covers",
                [where, *self._show_events(gaps)],
            )

    def _check_stale(self, unit: Unit, read: ReadRecord, returned: set[int], where: str) -> None:
        begin = unit.read_begin(read)
        stale = []
        bound = self._written_before(begin)
        for event in self.log.unseen(read.query, read.head, below=bound + 1):
            when = self._commit_time(event)
            if (
                when is not None
                and when < begin
                and event.position not in returned
                and not covered(event, read.since)
            ):
                stale.append(event)
        if stale:
            self._add(
                "stale-read",
                f"did not return {len(stale)} event(s) committed before its transaction began",
                [where, *self._show_events(stale)],
            )


def _below(read: ReadRecord, position: int) -> ReadRecord:
    """``read`` as if it had covered, and returned, only events below ``position``."""
    head = Head(min(read.head.position, position - 1), read.head.snapshot)
    return replace(
        read,
        head=head,
        positions=array("q", (p for p in read.positions if p < position)),
        projected=tuple(
            (query, array("q", (p for p in folded if p < position)))
            for query, folded in read.projected
        ),
    )


def verify(
    units: list[Unit], events: list[StoredEvent], backend: str, contiguous: bool = False
) -> Verdict:
    """``contiguous``: count a batch that other events interleave as a violation."""
    return Verifier(units, events, backend, contiguous).run()
