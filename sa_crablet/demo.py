"""A DCB decision, end to end, on a temporary SQLite file: ``python -m sa_crablet.demo``.

A course has one seat. Alice and Bob both read the course and see it free. Alice appends
first; Bob appends with the head of his (now stale) read and gets ``ConcurrencyError``, then
reads again and is refused. Exits non-zero if the invariant "never more subscriptions than
seats" fails.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from sqlalchemy.orm import Session

import sa_crablet
from sa_crablet import AppendCondition, ConcurrencyError, Event, EventStore, Head, Query, QueryItem

COURSE = "course:databases"


def boundary(student: str) -> Query:
    """The decision's scope: the course's events OR the student's own subscriptions."""
    return Query(
        [
            QueryItem(["CourseDefined", "StudentSubscribed"], [COURSE]),
            QueryItem(["StudentSubscribed"], [f"student:{student}"]),
        ]
    )


def decide(store: EventStore, student: str) -> tuple[bool, Head]:
    """Fold the boundary's events into a decision; return it with the read's head."""
    seats, taken, mine = 0, 0, 0
    result = store.read(boundary(student))
    for event in result:
        if event.type == "CourseDefined":
            seats = int(event.data["seats"])
        elif COURSE in event.tags:
            taken += 1
            mine += f"student:{student}" in event.tags
    return taken < seats and mine == 0, result.head


def subscribe(session: Session, student: str, head: Head) -> int:
    event = Event("StudentSubscribed", [COURSE, f"student:{student}"], {"student": student})
    return EventStore(session).append(event, AppendCondition(boundary(student), after=head))


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        engine = sa_crablet.create_sqlite_engine(str(Path(tmp) / "demo.sqlite3"))
        sa_crablet.create_schema(engine)
        with Session(engine) as setup:
            EventStore(setup).append(Event("CourseDefined", [COURSE], {"seats": 1}))
            setup.commit()
        print(f"{COURSE} is defined with 1 seat")
        with Session(engine) as alice, Session(engine) as bob:
            alice_ok, alice_head = decide(EventStore(alice), "alice")
            bob_ok, bob_head = decide(EventStore(bob), "bob")
            print(f"alice and bob both read it: free seat? alice={alice_ok}, bob={bob_ok}")
            print(f"alice subscribes: position {subscribe(alice, 'alice', alice_head)}")
            alice.commit()
            conflicted = False
            try:
                subscribe(bob, "bob", bob_head)
            except ConcurrencyError as error:
                conflicted = True
                print(
                    f"bob appends after head {bob_head}: ConcurrencyError, newer event at "
                    f"position {error.position}; nothing was written"
                )
                bob.rollback()
            retry_ok, _ = decide(EventStore(bob), "bob")
            print(f"bob reads again and decides: {'subscribe' if retry_ok else 'refused, full'}")
        with Session(engine) as check:
            taken = list(EventStore(check).read(Query.of(types=["StudentSubscribed"])))
        engine.dispose()
    ok = alice_ok and bob_ok and conflicted and not retry_ok and len(taken) == 1
    print(f"{len(taken)} subscription(s) for 1 seat: invariant {'holds' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
