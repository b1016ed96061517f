"""Decision models: one query, several states, a gap-safe condition, streaming, limits."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from sa_crablet import (
    AppendCondition,
    ConcurrencyError,
    Event,
    EventStore,
    EventStoreConfig,
    Query,
    QueryItem,
    SequencedEvent,
    StateProjector,
    TooManyAppendsError,
    TooManyProjectionsError,
    ValidationError,
)
from sa_crablet.projectors import by_type, counter, exists, fold, last_event
from tests.conftest import count_events
from tests.domain import courses
from tests.helpers import run_parallel


def _seed(store: EventStore) -> None:
    courses.define_course(store, "c1", 2)
    courses.define_course(store, "c2", 1)
    store.append(Event(courses.SUBSCRIBED, ["course:c1", "student:s1"]))
    store.append(Event("Noise", ["other:1"]))


def test_one_query_for_all_projectors(engine: Engine) -> None:
    with Session(engine) as session:
        store = EventStore(session)
        _seed(store)
        session.commit()
    statements: list[str] = []
    listener = lambda *args: statements.append(str(args[2]))  # noqa: E731
    with Session(engine) as session:
        store = EventStore(session)
        store.session.connection()  # begin outside the measurement
        event.listen(engine, "before_cursor_execute", listener)
        try:
            model = courses.decision_model(store, "s1", "c1")
        finally:
            event.remove(engine, "before_cursor_execute", listener)
    reads = [s for s in statements if "sa_crablet_events" in s]
    assert len(reads) == 1, statements
    assert model.states["course"] == courses.CourseState(True, 2, 1)
    assert model.states["student_courses"] == 1
    assert model.states["already"] is True
    assert model.head.position == 3  # the noise at 4 is out of scope


def test_union_keeps_every_item_whole(store: EventStore) -> None:
    store.append([Event("A", ["x"]), Event("B", ["y"]), Event("C", ["x", "y"])])
    model = store.project(
        [
            counter("any_type_x", Query.of(tags=["x"])),
            counter("b_only", Query.of(types=["B"])),
        ]
    )
    assert dict(model.states) == {"any_type_x": 2, "b_only": 1}
    assert model.append_condition.fail_if_events_match == Query(
        [QueryItem(tags=["x"]), QueryItem(types=["B"])]
    )


def test_initial_state_is_never_shared(store: EventStore) -> None:
    store.append([Event("Item", ["cart"], {"sku": "a"}), Event("Item", ["cart"], {"sku": "b"})])

    def add(items: list[str], e: SequencedEvent) -> list[str]:
        items.append(e.data["sku"])
        return items

    projector: StateProjector[list[str]] = StateProjector("items", Query.of(tags=["cart"]), [], add)
    assert store.project([projector]).states["items"] == ["a", "b"]
    assert store.project([projector]).states["items"] == ["a", "b"]
    assert projector.initial_state == []
    built = StateProjector("items", Query.of(tags=["cart"]), transition=add, factory=list)
    assert store.project([built]).states["items"] == ["a", "b"]


def test_helpers(store: EventStore) -> None:
    _seed(store)
    model = store.project(
        [
            exists("has_noise", Query.of(types=["Noise"])),
            exists("has_nothing", Query.of(types=["Nothing"])),
            last_event("last_defined", Query.of(types=[courses.DEFINED])),
            fold(
                "capacity",
                types=[courses.DEFINED],
                tags=["course:c1"],
                initial=0,
                transition=lambda s, e: s + e.data["capacity"],
            ),
            by_type(
                "c1",
                ["course:c1"],
                0,
                {courses.DEFINED: lambda s, e: s + 10, courses.SUBSCRIBED: lambda s, e: s + 1},
            ),
        ]
    )
    assert model["has_noise"] is True and model["has_nothing"] is False
    assert model["last_defined"].position == 2
    assert model["capacity"] == 2
    assert model["c1"] == 11


def test_bad_projections_are_refused(store: EventStore) -> None:
    one = counter("n", Query.all())
    with pytest.raises(ValidationError):
        store.project([])
    with pytest.raises(ValidationError):
        store.project([one, counter("n", Query.all())])
    with pytest.raises(ValidationError):
        StateProjector("", Query.all(), 0)
    with pytest.raises(ValidationError):
        store.project_stream([one], every=0)


def test_projecting_after_a_head_with_nothing_new_keeps_it(engine: Engine) -> None:
    with Session(engine) as session:
        _seed(EventStore(session))
        session.commit()
    with Session(engine) as session:
        store = EventStore(session)
        first = courses.decision_model(store, "s1", "c1")
        again = store.project(
            [counter("student_courses", Query.of(types=[courses.SUBSCRIBED], tags=["student:s1"]))],
            after=first.head,
            states={"student_courses": first.states["student_courses"]},
        )
        assert again.head.position == first.head.position == 3
        assert again.states["student_courses"] == 1
        # The kept head protects exactly like the first one: nothing new, so no conflict.
        store.append(Event("Ok", ["student:s1"]), again.append_condition)
        session.commit()
    with Session(engine) as session:
        store = EventStore(session)
        store.append(Event(courses.SUBSCRIBED, ["course:c2", "student:s1"]))
        session.commit()
    with Session(engine) as session, pytest.raises(ConcurrencyError):
        EventStore(session).append(Event("Late", ["student:s1"]), again.append_condition)


def test_incremental_projection_folds_only_new_events(store: EventStore) -> None:
    _seed(store)
    projectors = [counter("subs", Query.of(types=[courses.SUBSCRIBED]))]
    first = store.project(projectors)
    store.append(Event(courses.SUBSCRIBED, ["course:c2", "student:s2"]))
    second = store.project(projectors, after=first.head, states=first.states)
    assert second.states["subs"] == 2
    assert second.head.position == 5


def test_streaming_projection_reports_progress(store: EventStore) -> None:
    store.append([Event("Tick", ["clock"], {"n": i}) for i in range(1000)])
    store.append([Event("Tick", ["clock"], {"n": i}) for i in range(1000, 2000)])
    store.append([Event("Tick", ["clock"], {"n": i}) for i in range(2000, 2500)])
    stream = store.project_stream(
        [fold("sum", types=["Tick"], initial=0, transition=lambda s, e: s + e.data["n"])],
        every=1000,
    )
    items = list(stream)
    assert [p.events for p in items] == [1000, 2000, 2500]
    assert [p.position for p in items] == [1000, 2000, 2500]
    assert items[0].states["sum"] == sum(range(1000))
    assert not items[0].done and items[-1].done
    assert items[-1].model is not None
    assert items[-1].model.states["sum"] == sum(range(2500))


def test_errors_mid_stream_reach_the_consumer_and_free_the_slot(
    store: EventStore, make_store: Callable[..., EventStore]
) -> None:
    config = EventStoreConfig(max_concurrent_projections=1)
    limited = make_store(config)
    store.append([Event("Tick", ["clock"]) for _ in range(10)])

    def explode(state: int, e: SequencedEvent) -> int:
        if e.position == 5:
            raise RuntimeError("boom")
        return state + 1

    with pytest.raises(RuntimeError, match="boom"):
        limited.project([StateProjector("n", Query.all(), 0, explode)])
    assert limited.project([counter("n", Query.all())]).states["n"] == 10

    stream = limited.project_stream([counter("n", Query.all())], every=2)
    assert next(stream).events == 2
    with pytest.raises(TooManyProjectionsError) as error:
        limited.project([counter("n", Query.all())])
    assert error.value.limit == 1
    stream.close()  # stopping early frees the slot and the cursor
    assert limited.project([counter("n", Query.all())]).states["n"] == 10
    store.append(Event("After"))  # the connection is usable again


def test_limits_are_shared_by_equal_configurations(engine: Engine) -> None:
    config = EventStoreConfig(max_concurrent_projections=2, max_concurrent_appends=1)
    with Session(engine) as one, Session(engine) as two, Session(engine) as three:
        EventStore(one).append([Event("Tick") for _ in range(5)])
        one.commit()
        held = [
            EventStore(one, config).project_stream([counter("n", Query.all())], every=1),
            EventStore(
                two, EventStoreConfig(max_concurrent_projections=2, max_concurrent_appends=1)
            ).project_stream([counter("n", Query.all())], every=1),
        ]
        for stream in held:
            next(stream)
        with pytest.raises(TooManyProjectionsError):
            EventStore(three, config).project([counter("n", Query.all())])
        # A store with a different configuration has its own limits.
        assert EventStore(three).project([counter("n", Query.all())]).states["n"] == 5
        for stream in held:
            stream.close()
        assert EventStore(three, config).project([counter("n", Query.all())]).states["n"] == 5


def test_append_limit_trips_immediately_and_recovers(engine: Engine) -> None:
    config = EventStoreConfig(max_concurrent_appends=1)
    store_limiter = EventStore(Session(engine), config)._appends
    store_limiter.acquire()  # another append in flight somewhere in the process
    try:
        with Session(engine) as session, pytest.raises(TooManyAppendsError):
            EventStore(session, config).append(Event("A"))
    finally:
        store_limiter.release()
    with Session(engine) as session:
        EventStore(session, config).append(Event("A"))
        session.commit()
    assert count_events(engine) == 1


WORKERS = 8
ATTEMPTS = 25


def test_course_invariants_hold_under_concurrency(engine: Engine) -> None:
    course_capacity = {"c1": 3, "c2": 4, "c3": 2}
    students = [f"s{i}" for i in range(10)]
    with Session(engine) as session:
        store = EventStore(session)
        for course, capacity in course_capacity.items():
            courses.define_course(store, course, capacity)
        session.commit()
    tally: Counter[str] = Counter()
    tally_lock = threading.Lock()

    def worker(i: int, barrier: threading.Barrier) -> None:
        rng = random.Random(i)
        barrier.wait()
        for _ in range(ATTEMPTS):
            student, course = rng.choice(students), rng.choice(list(course_capacity))
            outcome = "subscribed"
            with Session(engine) as session:
                try:
                    courses.subscribe(EventStore(session), student, course)
                    session.commit()
                except ConcurrencyError:
                    outcome = "conflict"
                    session.rollback()
                except courses.Refused as refusal:
                    outcome = f"refused: {refusal}"
                    session.rollback()
            with tally_lock:
                tally[outcome] += 1

    run_parallel(WORKERS, worker)

    with Session(engine) as session:
        subscriptions = [
            (e.tags[0], e.tags[1])
            for e in EventStore(session).read(Query.of(types=[courses.SUBSCRIBED]))
        ]
    per_course = Counter(course for course, _ in subscriptions)
    per_student = Counter(student for _, student in subscriptions)
    assert len(set(subscriptions)) == len(subscriptions), "duplicate subscription"
    for course, capacity in course_capacity.items():
        assert per_course[f"course:{course}"] <= capacity
    assert all(n <= courses.MAX_COURSES for n in per_student.values())
    assert sum(tally.values()) == WORKERS * ATTEMPTS
    assert tally["subscribed"] == len(subscriptions)
    # The courses fill up: demand (200 attempts) far exceeds the 9 seats.
    assert len(subscriptions) == sum(course_capacity.values())
    assert all(k in ("subscribed", "conflict") or k.startswith("refused") for k in tally)


def test_decision_model_condition_detects_a_competing_writer(engine: Engine) -> None:
    with Session(engine) as session:
        courses.define_course(EventStore(session), "c9", 1)
        session.commit()
    with Session(engine) as mine, Session(engine) as theirs:
        model = courses.decision_model(EventStore(mine), "s1", "c9")
        courses.subscribe(EventStore(theirs), "s2", "c9")
        theirs.commit()
        with pytest.raises(ConcurrencyError):
            EventStore(mine).append(
                Event(courses.SUBSCRIBED, ["course:c9", "student:s1"]), model.append_condition
            )
    # The condition is a plain value that can be built or inspected by hand, too.
    assert isinstance(model.append_condition, AppendCondition)
    anything: Any = model.append_condition.fail_if_events_match
    assert len(anything.items) == 3
