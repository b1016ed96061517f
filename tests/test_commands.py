"""The command executor: transactions, the commands table, idempotency, retries."""

from __future__ import annotations

import random
import threading
from collections import Counter

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sa_crablet import (
    AppendCondition,
    Command,
    CommandExecutor,
    CommandResult,
    ConcurrencyError,
    Decision,
    Event,
    EventStore,
    Query,
    RetryPolicy,
    ValidationError,
    commands_table,
)
from tests.conftest import count_events
from tests.domain import bank
from tests.helpers import run_parallel


def count_commands(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {commands_table.name}")).scalar_one())


def open_accounts(executor: CommandExecutor, **initial: int) -> None:
    for name, amount in initial.items():
        executor.execute(
            Command("OpenAccount", {"account": name, "initial": amount}), bank.open_account
        )


def test_managed_execution_commits_events_and_record(engine: Engine) -> None:
    executor = CommandExecutor(engine)
    open_accounts(executor, a=100, b=0)
    result = executor.execute(
        Command("Transfer", {"from": "a", "to": "b", "amount": 30}, {"user": "u1"}), bank.transfer
    )
    assert result.position == 3 and result.event_count == 1 and not result.duplicate
    with Session(engine) as session:
        store = EventStore(session)
        assert bank.balances(list(store.read(Query.all()))) == {"a": 70, "b": 30}
        record = store.command(result.command_id)
        assert record is not None
        assert (record.type, record.data, record.metadata) == (
            "Transfer",
            {"from": "a", "to": "b", "amount": 30},
            {"user": "u1"},
        )
        assert record.last_position == 3 and record.event_count == 1
        assert record.executed_at.tzinfo is not None


def test_command_event_links(engine: Engine) -> None:
    executor = CommandExecutor(engine)

    def two_events(store: EventStore, command: Command) -> list[Event]:
        return [Event("First", ["k"]), Event("Second", ["k"])]

    with Session(engine) as session:
        EventStore(session).append(Event("Plain"))
        session.commit()
    result = executor.execute(Command("Pair", id="pair-1"), two_events)
    with Session(engine) as session:
        store = EventStore(session)
        linked = store.events_of_command("pair-1")
        assert [(e.type, e.position) for e in linked] == [("First", 2), ("Second", 3)]
        record = store.command_of_event(3)
        assert record is not None and record.id == result.command_id == "pair-1"
        assert store.command_of_event(1) is None
        assert store.events_of_command("unknown") == []


def test_handler_reads_inside_the_transaction(engine: Engine) -> None:
    seen: list[int] = []

    def handler(store: EventStore, command: Command) -> Decision:
        seen.append(len(list(store.read(Query.all()))))
        return Decision(Event("Counted"))

    with Session(engine) as session:
        EventStore(session).append(Event("Uncommitted"))
        CommandExecutor(session).execute(Command("Count"), handler)
        assert seen == [1]  # the handler saw the host's uncommitted event
        session.rollback()
    assert count_events(engine) == 0 and count_commands(engine) == 0


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "host_notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str]


def test_host_transaction_failures_leave_nothing_and_keep_host_work(engine: Engine) -> None:
    Base.metadata.create_all(engine)
    try:

        def failing(store: EventStore, command: Command) -> Decision:
            store.session.add(Note(text="written by the failing handler"))
            store.session.flush()
            raise bank.Refused("no")

        with Session(engine) as session:
            session.add(Note(text="host work"))
            session.flush()
            executor = CommandExecutor(session)
            with pytest.raises(bank.Refused):
                executor.execute(Command("Fail"), failing)
            with pytest.raises(ValidationError):
                executor.execute(Command("Empty"), lambda store, command: [])
            with pytest.raises(ValidationError):
                executor.execute(Command("Bad"), lambda store, command: ["not an event"])
            executor.execute(Command("Good"), lambda store, command: Event("Fine"))
            session.commit()
        with Session(engine) as session:
            assert session.execute(select(Note.text)).scalars().all() == ["host work"]
        assert count_events(engine) == 1 and count_commands(engine) == 1
    finally:
        Base.metadata.drop_all(engine)


def test_managed_failures_write_nothing(engine: Engine) -> None:
    executor = CommandExecutor(sessionmaker(engine))
    open_accounts(executor, a=10, b=0)
    with pytest.raises(bank.Refused):
        executor.execute(Command("Transfer", {"from": "a", "to": "b", "amount": 11}), bank.transfer)
    with pytest.raises(bank.Refused):
        open_accounts(executor, a=5)
    with pytest.raises(ValidationError):
        executor.execute(Command("Nothing"), lambda store, command: None)
    with pytest.raises(ValidationError):
        executor.execute(Command("Unrouted"))
    assert count_events(engine) == 2 and count_commands(engine) == 2
    relaxed = CommandExecutor(engine, require_events=False)
    result = relaxed.execute(Command("Noop", id="noop"), lambda store, command: None)
    assert result == CommandResult("noop", None, 0)
    assert count_commands(engine) == 3
    # No events, but a condition: still checked, and a stale one records nothing.
    stale = Decision([], AppendCondition(Query.of(tags=["account:a"]), 0))
    once = CommandExecutor(engine, require_events=False, retry=RetryPolicy(attempts=1))
    with pytest.raises(ConcurrencyError):
        once.execute(Command("Audit", id="audit-stale"), lambda store, command: stale)
    fresh = Decision([], AppendCondition(Query.of(tags=["account:a"]), 2))
    assert once.execute(Command("Audit", id="audit"), lambda store, command: fresh).position is None
    assert count_commands(engine) == 4 and count_events(engine) == 2


def test_registry_routes_commands(engine: Engine) -> None:
    executor = CommandExecutor(engine)
    executor.register("OpenAccount", bank.open_account)

    @executor.handles("Transfer")
    def _transfer(store: EventStore, command: Command) -> Decision:
        return bank.transfer(store, command)

    executor.execute(Command("OpenAccount", {"account": "x", "initial": 5}))
    executor.execute(Command("OpenAccount", {"account": "y", "initial": 0}))
    executor.execute(Command("Transfer", {"from": "x", "to": "y", "amount": 5}))
    with Session(engine) as session:
        assert bank.balances(list(EventStore(session).read(Query.all()))) == {"x": 0, "y": 5}


def test_idempotent_re_execution(engine: Engine) -> None:
    executor = CommandExecutor(engine)
    open_accounts(executor, a=100, b=0)
    command = Command("Transfer", {"from": "a", "to": "b", "amount": 10}, id="transfer-42")
    first = executor.execute(command, bank.transfer)
    again = executor.execute(command, bank.transfer)
    assert not first.duplicate and again.duplicate
    assert (again.command_id, again.position, again.event_count) == ("transfer-42", 3, 1)
    with Session(engine) as session:
        again_in_host = CommandExecutor(session).execute(command, bank.transfer)
        assert again_in_host.duplicate and again_in_host.position == 3
    assert count_events(engine) == 3 and count_commands(engine) == 3


def test_racing_identical_commands_execute_once(engine: Engine) -> None:
    executor = CommandExecutor(engine)
    calls = Counter[int]()

    def handler(store: EventStore, command: Command) -> Event:
        calls[threading.get_ident()] += 1
        return Event("Charged", ["order:1"], {"amount": 5})  # unconditional on purpose

    for round_ in range(5):

        def racer(i: int, barrier: threading.Barrier, r: int = round_) -> CommandResult:
            barrier.wait()
            return executor.execute(Command("Charge", id=f"charge-{r}"), handler)

        results = run_parallel(8, racer)
        assert sum(not r.duplicate for r in results) == 1
        assert len({r.position for r in results}) == 1
    assert count_events(engine) == 5 and count_commands(engine) == 5


@pytest.mark.postgresql_only  # SQLite: the executor holds the write lock, nobody gets in first
def test_retries_are_counted_and_bounded(engine: Engine) -> None:
    executor = CommandExecutor(engine, retry=RetryPolicy(attempts=3, backoff=0))
    runs = 0

    def always_stale(store: EventStore, command: Command) -> Decision:
        nonlocal runs
        runs += 1
        model = store.project([bank.balance_projector("a")])
        with Session(engine) as other:  # a competing writer gets in first, every time
            EventStore(other).append(Event(bank.OPENED, [bank.account("a")], {"initial": 1}))
            other.commit()
        return Decision(Event("Decided", [bank.account("a")]), model.append_condition)

    with pytest.raises(ConcurrencyError) as error:
        executor.execute(Command("Stale"), always_stale)
    assert runs == 3 and error.value.attempts == 3
    assert count_commands(engine) == 0


def test_no_retries_inside_a_host_transaction(engine: Engine) -> None:
    runs = 0

    def stale(store: EventStore, command: Command) -> Decision:
        nonlocal runs
        runs += 1
        model = store.project([bank.balance_projector("a")])
        with Session(engine) as other:
            EventStore(other).append(Event(bank.OPENED, [bank.account("a")], {"initial": 1}))
            other.commit()
        return Decision(Event("Decided", [bank.account("a")]), model.append_condition)

    with Session(engine) as session:
        with pytest.raises(ConcurrencyError):
            CommandExecutor(session, retry=RetryPolicy(attempts=5)).execute(Command("S"), stale)
        assert runs == 1
        session.rollback()


TRANSFER_WORKERS = 8
TRANSFERS_PER_WORKER = 15


def test_transfer_invariants_under_concurrency(engine: Engine) -> None:
    names = ["a", "b", "c", "d"]
    executor = CommandExecutor(engine, retry=RetryPolicy(attempts=30, backoff=0.002))
    open_accounts(executor, **{name: 100 for name in names})
    outcomes: Counter[str] = Counter()
    retries = 0
    lock = threading.Lock()

    def worker(i: int, barrier: threading.Barrier) -> None:
        nonlocal retries
        rng = random.Random(i)
        barrier.wait()
        for _ in range(TRANSFERS_PER_WORKER):
            source, target = rng.sample(names, 2)
            data = {"from": source, "to": target, "amount": rng.randint(10, 60)}
            try:
                result = executor.execute(Command("Transfer", data), bank.transfer)
                outcome, extra = "done", result.attempts - 1
            except bank.Refused:
                outcome, extra = "refused", 0
            with lock:
                outcomes[outcome] += 1
                retries += extra

    run_parallel(TRANSFER_WORKERS, worker)
    with Session(engine) as session:
        history = list(EventStore(session).read(Query.all()))
    # No prefix of the history ever shows a negative balance, and money is conserved.
    for end in range(len(history) + 1):
        assert all(b >= 0 for b in bank.balances(history[:end]).values())
    final = bank.balances(history)
    assert sum(final.values()) == 100 * len(names)
    transfers = [e for e in history if e.type == bank.TRANSFERRED]
    assert len(transfers) == outcomes["done"]
    assert outcomes["done"] + outcomes["refused"] == TRANSFER_WORKERS * TRANSFERS_PER_WORKER
    assert count_commands(engine) == len(names) + outcomes["done"]
    print(f"transfers: {dict(outcomes)}, retries observed: {retries}")


def test_host_mode_never_commits_even_before_the_first_write(engine: Engine) -> None:
    """SQLite: a savepoint outside a transaction would commit on RELEASE."""
    with Session(engine) as session:
        executor = CommandExecutor(session)
        executor.execute(Command("First"), lambda store, command: Event("A"))
        executor.execute(Command("Second"), lambda store, command: (Event("B"), None))
        session.rollback()
    assert count_events(engine) == 0 and count_commands(engine) == 0


def test_command_payloads_are_checked_up_front() -> None:
    with pytest.raises(ValidationError):
        Command("Bad", {"x": object()})
    with pytest.raises(ValidationError):
        Command("Bad", metadata={"x": float("nan")})
