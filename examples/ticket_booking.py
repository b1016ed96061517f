"""Concert ticket booking under contention: ``python -m examples.ticket_booking``.

A concert has ``--seats`` numbered seats; ``--customers`` customers each want
``--tickets-per-customer`` tickets and all book at the same moment, from
``--concurrency`` threads (each execution in its own Session and transaction). A booking
is a command: its handler projects the concert (its seats, the seats taken) and the
customer's own bookings in one query, picks free seats at random, and returns a
``TicketsBooked`` event tagged with those seats plus an append condition. When a booking
that matters committed in between, the append fails with ``ConcurrencyError`` and the
executor re-runs the handler on fresh state (``RetryPolicy``). A customer who asks for
more seats than are left gets what is left; once nothing is left, customers are refused.

``--strategy`` chooses the append condition:

* ``seats`` (default): "none of *my chosen seats* was booked (and I have not booked)
  since I read". Only bookings that picked the same seat conflict; that still guarantees
  no seat is sold twice, so the concert is never oversold.
* ``concert``: the decision model's own condition, "nothing changed at this concert since I
  read": every booking conflicts with every concurrent one, so most attempts are retried.

Invariants (exit status 1 if one fails): no seat is sold twice and the concert is never
oversold; it sells out exactly when demand exceeds supply (otherwise every customer is
served); no customer gives up on conflicts; the booking events match the successful
commands. It reports the total time, success rate, conflicts (retries) and throughput. On
SQLite the executor takes the write lock up front (``BEGIN IMMEDIATE``), so bookings queue
instead of conflicting.
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from examples._common import Database, check, parser, positive_int, run, say, section
from sa_crablet import (
    AppendCondition,
    Command,
    CommandExecutor,
    ConcurrencyError,
    Decision,
    Event,
    EventStore,
    Query,
    QueryItem,
    RetryPolicy,
    SequencedEvent,
)
from sa_crablet.events import tag
from sa_crablet.projectors import by_type, exists

SCHEDULED, BOOKED = "ConcertScheduled", "TicketsBooked"


class SoldOut(Exception):
    """No seat is left (or the customer already booked): the booking is refused."""


@dataclass(frozen=True)
class Concert:
    seats: int = 0
    taken: frozenset[int] = frozenset()

    @property
    def free(self) -> list[int]:
        return sorted(set(range(1, self.seats + 1)) - self.taken)


def _scheduled(state: Concert, event: SequencedEvent) -> Concert:
    return replace(state, seats=int(event.data["seats"]))


def _booked(state: Concert, event: SequencedEvent) -> Concert:
    return replace(state, taken=state.taken | set(event.data["seats"]))


def seat_tag(concert: str, seat: int) -> str:
    return tag("seat", f"{concert}/{seat}")


def book(store: EventStore, command: Command) -> Decision:
    """The handler: one decision model with two projectors, then the append condition."""
    concert, customer = str(command.data["concert"]), str(command.data["customer"])
    wanted, strategy = int(command.data["tickets"]), str(command.data["strategy"])
    concert_tag, customer_tag = tag("concert", concert), tag("customer", customer)
    model = store.project(
        [
            by_type("concert", [concert_tag], Concert(), {SCHEDULED: _scheduled, BOOKED: _booked}),
            exists("booked", Query.of(types=[BOOKED], tags=[customer_tag])),
        ]
    )
    state: Concert = model["concert"]
    if model["booked"]:
        raise SoldOut(f"{customer} already booked")  # one booking per customer
    if not state.free:
        raise SoldOut("sold out")
    seats = sorted(random.sample(state.free, min(wanted, len(state.free))))
    event = Event(
        BOOKED,
        [concert_tag, customer_tag, *(seat_tag(concert, seat) for seat in seats)],
        {"customer": customer, "seats": seats, "wanted": wanted},
    )
    if strategy == "concert":
        return Decision(event, model.append_condition)
    # The decision only relies on the chosen seats being free and on the customer not
    # having booked: the condition covers exactly that, from the same head.
    items = [QueryItem([BOOKED], [seat_tag(concert, seat)]) for seat in seats]
    items.append(QueryItem([BOOKED], [customer_tag]))
    return Decision(event, AppendCondition(Query(items), after=model.head))


@dataclass
class Outcome:
    customer: str
    tickets: int = 0  # booked
    refused: bool = False  # sold out
    gave_up: bool = False  # still conflicting after every retry
    attempts: int = 0  # handler runs
    seconds: float = 0.0


def main(args: argparse.Namespace, db: Database) -> None:
    seats, customers, per_customer = args.seats, args.customers, args.tickets_per_customer
    demand = customers * per_customer
    concert = db.id("concert")
    with db.session() as session:
        EventStore(session).append(Event(SCHEDULED, [tag("concert", concert)], {"seats": seats}))
        session.commit()
    section(
        f"{seats} seats; {customers} customers want {per_customer} ticket(s) each "
        f"(demand {demand}); {args.concurrency} threads; strategy {args.strategy}"
    )

    # A conflict means another booking committed first, and at most `seats` bookings ever
    # commit: that many retries (plus a margin) always suffice.
    retry = RetryPolicy(attempts=seats + 10, backoff=0.002, max_backoff=0.05)
    executor = CommandExecutor(db.engine, retry=retry)
    gate = threading.Event()

    def customer(i: int) -> Outcome:
        outcome = Outcome(db.id(f"customer-{i:04}"))
        data = {
            "concert": concert,
            "customer": outcome.customer,
            "tickets": per_customer,
            "strategy": args.strategy,
        }

        def counted(store: EventStore, command: Command) -> Decision:
            outcome.attempts += 1
            return book(store, command)

        gate.wait()
        started = time.perf_counter()
        try:
            result = executor.execute(Command("BookTickets", data, id=db.id(f"book-{i}")), counted)
            with db.session() as session:
                booked = EventStore(session).events_of_command(result.command_id)
            outcome.tickets = sum(len(e.data["seats"]) for e in booked)
        except SoldOut:
            outcome.refused = True
        except ConcurrencyError:
            outcome.gave_up = True
        outcome.seconds = time.perf_counter() - started
        return outcome

    with ThreadPoolExecutor(args.concurrency) as pool:
        futures = [pool.submit(customer, i) for i in range(customers)]
        started = time.perf_counter()
        gate.set()
        outcomes = [f.result() for f in futures]
        elapsed = time.perf_counter() - started

    with db.session() as session:
        events = list(
            EventStore(session).read(Query.of(types=[BOOKED], tags=[tag("concert", concert)]))
        )
    seats_sold = [seat for e in events for seat in e.data["seats"]]
    sold = len(seats_sold)
    served = [o for o in outcomes if o.tickets]
    refused = [o for o in outcomes if o.refused]
    gave_up = [o for o in outcomes if o.gave_up]
    conflicts = sum(max(0, o.attempts - 1) for o in outcomes)
    latencies = sorted(o.seconds * 1000 for o in outcomes)

    section("results")
    say(f"booked:       {len(served)} customers, {sold} tickets ({seats - sold} seats left)")
    say(f"sold out:     {len(refused)} customers refused")
    say(f"gave up:      {len(gave_up)} customers")
    runs = sum(o.attempts for o in outcomes)
    say(f"conflicts:    {conflicts} lost races, retried ({runs} runs for {customers} commands)")
    say(f"success rate: {len(served) / customers:.0%} of customers got tickets")
    say(f"total time:   {elapsed:.2f} s")
    say(f"throughput:   {customers / elapsed:,.1f} commands/s, {sold / elapsed:,.1f} tickets/s")
    p95 = statistics.quantiles(latencies, n=20)[-1] if len(latencies) > 1 else latencies[0]
    say(
        f"latency:      p50 {statistics.median(latencies):.0f} ms, p95 {p95:.0f} ms, "
        f"max {latencies[-1]:.0f} ms per command"
    )

    section("invariants")
    check(len(set(seats_sold)) == sold, "no seat was sold twice")
    check(sold <= seats, f"never oversold: {sold} of {seats} seats sold")
    check(sold == min(seats, demand), f"sold exactly min(seats, demand) = {min(seats, demand)}")
    check(not gave_up, "no customer gave up after conflicts")
    check(len(served) + len(refused) == customers, "every customer was either served or refused")
    check(
        len(events) == len(served)
        and sorted(str(e.data["customer"]) for e in events) == sorted(o.customer for o in served),
        "one booking event per served customer",
    )
    check(sum(o.tickets for o in served) == sold, "the tickets of the commands add up to sold")


def arguments() -> argparse.ArgumentParser:
    result = parser(__doc__ or "")
    result.add_argument("--customers", type=positive_int, default=50, help="(default: 50)")
    result.add_argument("--seats", type=positive_int, default=20, help="(default: 20)")
    result.add_argument("--tickets-per-customer", type=positive_int, default=1, help="(default: 1)")
    result.add_argument(
        "--strategy",
        choices=["seats", "concert"],
        default="seats",
        help="the append condition: the chosen seats, or the whole concert (default: seats)",
    )
    result.add_argument(
        "--concurrency",
        type=positive_int,
        default=None,
        help="threads booking at once (default: --customers, at most 50)",
    )
    return result


def connections(args: argparse.Namespace) -> int:
    if args.concurrency is None:
        args.concurrency = min(args.customers, 50)
    return int(args.concurrency)


if __name__ == "__main__":
    run(main, arguments(), connections=connections)
