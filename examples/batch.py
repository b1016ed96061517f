"""Several events in one atomic append: ``python -m examples.batch``.

Placing an order appends ``OrderPlaced``, one ``ItemAdded`` per line and ``OrderSubmitted``
in **one** ``append`` call, under the condition "this order was never placed". It shows
that:

* the whole batch is written, in order, or none of it;
* a batch whose condition fails writes none of its events (checked by reading back);
* a batch with one invalid event is refused before any SQL runs;
* a batch rolled back with its host transaction leaves nothing;
* a large batch (``--size``, at most ``max_batch_size``) is still one atomic append.
"""

from __future__ import annotations

import argparse

from examples._common import Database, check, fail, parser, positive_int, run, say, section
from sa_crablet import (
    ConcurrencyError,
    Event,
    EventStore,
    EventStoreConfig,
    Query,
    SequencedEvent,
    ValidationError,
    fail_if_exists,
)
from sa_crablet.events import tag

PLACED, ITEM, SUBMITTED = "OrderPlaced", "ItemAdded", "OrderSubmitted"


def order_events(order: str, lines: dict[str, int], attempt: int) -> list[Event]:
    tags = [tag("order", order)]
    return [
        Event(PLACED, tags, {"order": order, "attempt": attempt}),
        *(
            Event(ITEM, [*tags, tag("product", sku)], {"sku": sku, "quantity": qty})
            for sku, qty in lines.items()
        ),
        Event(SUBMITTED, tags, {"lines": len(lines), "attempt": attempt}),
    ]


def stored(db: Database, order: str) -> list[SequencedEvent]:
    with db.session() as session:
        return list(EventStore(session).read(Query.of(tags=[tag("order", order)])))


def main(args: argparse.Namespace, db: Database) -> None:
    order = db.id("order-1")
    never_placed = fail_if_exists(tag("order", order), types=[PLACED])
    lines = {"apple": 3, "bread": 1, "cheese": 2}

    section("one append, five events")
    batch = order_events(order, lines, attempt=1)
    with db.session() as session:
        last = EventStore(session).append(batch, never_placed)
        session.commit()
    events = stored(db, order)
    for event in events:
        say(f"#{event.position} {event.type} {db.short(event.data)}")
    say(f"append returned {last}, the position of the batch's last event")
    check([e.type for e in events] == [e.type for e in batch], "all five, in batch order")
    check(events[-1].position == last, "the returned position is the last event's")
    positions = [e.position for e in events]
    check(positions == sorted(set(positions)), "positions increase within the batch")

    section("a failed condition leaves none of the batch")
    again = order_events(order, {"durian": 9}, attempt=2)
    with db.session() as session:
        try:
            EventStore(session).append(again, never_placed)
        except ConcurrencyError as error:
            say(f"placing the order again: ConcurrencyError (conflict at #{error.position})")
            session.rollback()
        else:
            fail("a second OrderPlaced for the same order was accepted")
    after = stored(db, order)
    check(after == events, "the order's events are exactly the first batch")
    check(
        all(e.data.get("attempt") != 2 and e.data.get("sku") != "durian" for e in after),
        "no event of the refused batch was written",
    )

    section("one invalid event refuses the whole batch, before any SQL")
    other = db.id("order-2")
    invalid = [*order_events(other, {"egg": 6}, attempt=1), Event("Note", [], {"at": {1, 2}})]
    with db.session() as session:
        try:
            EventStore(session).append(invalid)
        except ValidationError as error:
            say(f"ValidationError on field {error.field!r}: {error.message}")
        else:
            fail("a batch with a non-JSON payload was accepted")
        session.commit()
    check(stored(db, other) == [], "nothing of that batch was written")

    section("a batch rolls back with its host transaction")
    with db.session() as session:
        EventStore(session).append(order_events(other, {"egg": 6}, attempt=1))
        session.rollback()
    check(stored(db, other) == [], "a rolled-back batch leaves nothing")

    section(f"a large batch: {args.size} events in one call")
    store_config = EventStoreConfig(max_batch_size=max(args.size, 1000))
    bulk = db.id("bulk")
    with db.session() as session:
        store = EventStore(session, store_config)
        store.append([Event("Tick", [tag("bulk", bulk)], {"n": n}) for n in range(args.size)])
        session.commit()
    with db.session() as session:
        ticks = [e.data["n"] for e in EventStore(session).read(Query.of(tags=[tag("bulk", bulk)]))]
    check(ticks == list(range(args.size)), f"all {args.size} events, in order")
    with db.session() as session:
        try:
            EventStore(session).append(
                [Event("Tick", [tag("bulk", db.id("too-big"))])] * 1001,
                fail_if_exists(tag("bulk", db.id("too-big"))),
            )
        except ValidationError as error:
            say(f"1001 events with the default config: {error.message}")
        else:
            fail("a batch over max_batch_size was accepted")


def arguments() -> argparse.ArgumentParser:
    result = parser(__doc__ or "")
    result.add_argument(
        "--size",
        type=positive_int,
        default=1000,
        help="events in the large batch (default: %(default)s)",
    )
    return result


if __name__ == "__main__":
    run(main, arguments())
