"""Money transfers through the command executor: balances never go negative, money is
neither created nor lost, an account is opened once."""

from __future__ import annotations

from sa_crablet import (
    Command,
    Decision,
    Event,
    EventStore,
    Query,
    QueryItem,
    SequencedEvent,
    StateProjector,
)
from sa_crablet.projectors import exists

OPENED = "AccountOpened"
TRANSFERRED = "MoneyTransferred"


class Refused(Exception):
    """A domain rule said no."""


def account(name: str) -> str:
    return f"account:{name}"


def balance_transition(name: str) -> object:
    def transition(balance: int, event: SequencedEvent) -> int:
        if event.type == OPENED:
            return balance + int(event.data["initial"])
        if event.data["from"] == name:
            return balance - int(event.data["amount"])
        return balance + int(event.data["amount"])

    return transition


def balance_projector(name: str) -> StateProjector[int]:
    return StateProjector(
        name,
        Query([QueryItem([OPENED, TRANSFERRED], [account(name)])]),
        0,
        balance_transition(name),  # type: ignore[arg-type]
    )


def open_account(store: EventStore, command: Command) -> Decision:
    name, initial = command.data["account"], int(command.data["initial"])
    model = store.project([exists("opened", Query([QueryItem([OPENED], [account(name)])]))])
    if model.states["opened"]:
        raise Refused(f"account {name} already exists")
    return Decision(Event(OPENED, [account(name)], {"initial": initial}), model.append_condition)


def transfer(store: EventStore, command: Command) -> Decision:
    source, target = command.data["from"], command.data["to"]
    amount = int(command.data["amount"])
    if source == target or amount <= 0:
        raise Refused("a transfer moves a positive amount between two accounts")
    model = store.project(
        [
            balance_projector(source),
            exists("target", Query([QueryItem([OPENED], [account(target)])])),
        ]
    )
    if not model.states["target"]:
        raise Refused(f"no account {target}")
    if model.states[source] < amount:
        raise Refused(f"insufficient funds in {source}")
    event = Event(
        TRANSFERRED,
        [account(source), account(target)],
        {"from": source, "to": target, "amount": amount},
    )
    return Decision(event, model.append_condition)


def balances(events: list[SequencedEvent]) -> dict[str, int]:
    result: dict[str, int] = {}
    for event in events:
        if event.type == OPENED:
            name = event.tags[0].split(":", 1)[1]
            result[name] = result.get(name, 0) + int(event.data["initial"])
        elif event.type == TRANSFERRED:
            data = event.data
            result[data["from"]] = result.get(data["from"], 0) - int(data["amount"])
            result[data["to"]] = result.get(data["to"], 0) + int(data["amount"])
    return result
