"""Money transfers through the command executor: ``python -m examples.transfer``.

Accounts are opened and money is moved by commands. Each handler projects what it needs
(balances, whether accounts exist) inside the command's transaction and returns its events
with the decision model's append condition; the executor appends them and records the
command in the same transaction. It shows that:

* balances really change, and money is neither created nor lost;
* an account is opened once (a second ``OpenAccount`` is refused, nothing is written);
* a transfer larger than the balance is refused, nothing is written;
* re-executing a command id is a no-op that reports the first outcome (idempotency);
* concurrent transfers from one account never overdraw it (conflicts are retried);
* every command is recorded with its events (``store.command``, ``events_of_command``).
"""

from __future__ import annotations

import argparse
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from examples._common import Database, check, parser, run, say, section
from sa_crablet import (
    Command,
    CommandExecutor,
    CommandResult,
    Decision,
    Event,
    EventStore,
    Query,
    RetryPolicy,
    SequencedEvent,
    StateProjector,
)
from sa_crablet.events import tag
from sa_crablet.projectors import exists

OPENED = "AccountOpened"
TRANSFERRED = "MoneyTransferred"


class Refused(Exception):
    """A domain rule said no (the command is not recorded, nothing is appended)."""


def account_tag(account: str) -> str:
    return tag("account", account)


def balance_projector(account: str, id: str) -> StateProjector[int]:
    """The balance of ``account``: its opening deposit plus transfers in, minus out."""

    def transition(balance: int, event: SequencedEvent) -> int:
        if event.type == OPENED:
            return balance + int(event.data["initial"])
        amount = int(event.data["amount"])
        if event.data["from"] == account:
            balance -= amount
        if event.data["to"] == account:
            balance += amount
        return balance

    return StateProjector(
        id, Query.of(types=[OPENED, TRANSFERRED], tags=[account_tag(account)]), 0, transition
    )


def opened(account: str, id: str) -> StateProjector[bool]:
    return exists(id, Query.of(types=[OPENED], tags=[account_tag(account)]))


# -- command handlers ----------------------------------------------------------------------------


def open_account(store: EventStore, command: Command) -> Decision:
    account, initial = str(command.data["account"]), int(command.data["initial"])
    if initial < 0:
        raise Refused("an opening deposit cannot be negative")
    model = store.project([opened(account, "opened")])
    if model["opened"]:
        raise Refused(f"account {account} already exists")
    event = Event(OPENED, [account_tag(account)], {"account": account, "initial": initial})
    return Decision(event, model.append_condition)


def transfer(store: EventStore, command: Command) -> Decision:
    source, target = str(command.data["from"]), str(command.data["to"])
    amount = int(command.data["amount"])
    if source == target or amount <= 0:
        raise Refused("a transfer moves a positive amount between two accounts")
    model = store.project(
        [
            opened(source, "source_opened"),
            balance_projector(source, "source_balance"),
            opened(target, "target_opened"),
        ]
    )
    if not model["source_opened"] or not model["target_opened"]:
        raise Refused(f"unknown account in {source} -> {target}")
    if model["source_balance"] < amount:
        raise Refused(f"insufficient funds: {source} has {model['source_balance']}, needs {amount}")
    event = Event(
        TRANSFERRED,
        [account_tag(source), account_tag(target)],
        {"from": source, "to": target, "amount": amount},
    )
    return Decision(event, model.append_condition)


# -- the example ---------------------------------------------------------------------------------


def balances(engine: Engine, *accounts: str) -> dict[str, int]:
    with Session(engine) as session:
        store = EventStore(session)
        model = store.project([balance_projector(a, a) for a in accounts])
        return {a: int(model[a]) for a in accounts}


def count_events(engine: Engine, account: str) -> int:
    with Session(engine) as session:
        return sum(1 for _ in EventStore(session).read(Query.of(tags=[account_tag(account)])))


def refused(executor: CommandExecutor, command: Command) -> str | None:
    """Execute a command expected to be refused; the refusal's message, or ``None``."""
    try:
        executor.execute(command)
    except Refused as error:
        return str(error)
    return None


def main(args: argparse.Namespace, db: Database) -> None:
    executor = CommandExecutor(db.engine, retry=RetryPolicy(attempts=20, max_backoff=0.05))
    executor.register("OpenAccount", open_account)
    executor.register("Transfer", transfer)
    alice, bob, carol = db.id("alice"), db.id("bob"), db.id("carol")
    executed: list[str] = []

    def execute(type_: str, data: dict[str, Any], name: str) -> CommandResult:
        command = Command(type_, data, {"example": "transfer"}, id=db.id(name))
        result = executor.execute(command)
        executed.append(command.id)
        return result

    section("open accounts")
    for account, initial in ((alice, 100), (bob, 50), (carol, 0)):
        result = execute("OpenAccount", {"account": account, "initial": initial}, f"open-{account}")
        say(f"{db.short(account)} opened with {initial} (event at position {result.position})")
    check(balances(db.engine, alice, bob, carol) == {alice: 100, bob: 50, carol: 0}, "opened")

    section("a duplicate account is refused")
    before = count_events(db.engine, alice)
    reason = refused(
        executor, Command("OpenAccount", {"account": alice, "initial": 999}, id=db.id("dup"))
    )
    say(f"OpenAccount {db.short(alice)} again: {db.short(reason)}")
    check(reason is not None, "the second OpenAccount is refused")
    check(count_events(db.engine, alice) == before, "nothing was appended for it")
    with Session(db.engine) as session:
        check(
            EventStore(session).command(db.id("dup")) is None, "a refused command is not recorded"
        )

    section("transfers change balances")
    first = execute("Transfer", {"from": alice, "to": bob, "amount": 30}, "transfer-1")
    say(f"alice -> bob: 30 (position {first.position})")
    second = execute("Transfer", {"from": bob, "to": carol, "amount": 45}, "transfer-2")
    say(f"bob -> carol: 45 (position {second.position})")
    after = balances(db.engine, alice, bob, carol)
    for account, balance in after.items():
        say(f"{db.short(account)}: {balance}")
    check(after == {alice: 70, bob: 35, carol: 45}, "balances are 70 / 35 / 45")

    section("an over-balance transfer is refused")
    reason = refused(
        executor,
        Command("Transfer", {"from": carol, "to": alice, "amount": 1000}, id=db.id("too-much")),
    )
    say(f"carol -> alice: 1000: {db.short(reason)}")
    check(reason is not None, "the over-balance transfer is refused")
    check(balances(db.engine, alice, bob, carol) == after, "balances are unchanged")

    section("re-executing a command id is a no-op")
    again = executor.execute(
        Command("Transfer", {"from": alice, "to": bob, "amount": 30}, id=db.id("transfer-1"))
    )
    say(f"transfer-1 again: duplicate={again.duplicate}, first position {again.position}")
    check(again.duplicate and again.position == first.position, "reported as the first outcome")
    check(balances(db.engine, alice, bob, carol) == after, "no money moved twice")

    section("concurrent transfers never overdraw an account")
    dave, erin = db.id("dave"), db.id("erin")
    execute("OpenAccount", {"account": dave, "initial": 100}, f"open-{dave}")
    execute("OpenAccount", {"account": erin, "initial": 0}, f"open-{erin}")
    racers = 8
    gate = threading.Barrier(racers, timeout=30)

    def racer(i: int) -> CommandResult | str:
        command = Command(
            "Transfer", {"from": dave, "to": erin, "amount": 30}, id=db.id(f"race-{i}")
        )
        gate.wait()
        try:
            return executor.execute(command)
        except Refused as error:
            return str(error)

    with ThreadPoolExecutor(racers) as pool:
        outcomes = list(pool.map(racer, range(racers)))
    won = [o for o in outcomes if isinstance(o, CommandResult)]
    retried = sum(o.attempts - 1 for o in won)
    say(f"{racers} transfers of 30 from dave (balance 100) at once:")
    say(f"{len(won)} succeeded, {racers - len(won)} refused, {retried} retried conflicts")
    raced = balances(db.engine, dave, erin)
    check(len(won) == 3, "exactly 3 transfers of 30 fit in a balance of 100")
    check(raced == {dave: 10, erin: 90}, "dave ends at 10, never below 0")
    executed.extend(o.command_id for o in won)

    total = sum(balances(db.engine, alice, bob, carol, dave, erin).values())
    check(total == 250, "money is neither created nor lost (250 in all)")

    section("the commands recorded, with their events")
    with Session(db.engine) as session:
        store = EventStore(session)
        for command_id in executed:
            record = store.command(command_id)
            if record is None:
                check(False, f"command {command_id} was recorded")
                return
            say(
                f"{db.short(record.id)}: {record.type} {db.short(record.data)} "
                f"at {record.executed_at:%H:%M:%S}"
            )
            linked = store.events_of_command(command_id)
            for event in linked:
                say(f"  -> #{event.position} {event.type} {db.short(list(event.tags))}")
            check(
                len(linked) == record.event_count == 1
                and linked[-1].position == record.last_position,
                f"{db.short(command_id)} links to its event",
            )
        link = store.command_of_event(first.position or 0)
        check(link is not None and link.id == db.id("transfer-1"), "an event knows its command")


if __name__ == "__main__":
    run(main, parser(__doc__ or ""))
