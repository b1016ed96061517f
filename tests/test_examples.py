"""The runnable examples keep their invariants, and the web apps behave, on both backends.

Every example runs as ``python -m examples.<name>`` in a subprocess from the repository
root: with no arguments (a temporary SQLite file) and with ``--database-url`` pointing at
the session's PostgreSQL database, which by then already holds other examples' events.
The Flask and FastAPI apps are driven through their own test clients.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import random
import re
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import Engine, create_engine, insert, make_url
from sqlalchemy.orm import Session

from examples import _common, _web, courses
from sa_crablet import DecisionModel, Event, EventStore, create_sqlite_engine

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp, Message

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 180

# -- the examples as subprocesses ------------------------------------------------------------------


@pytest.fixture
def database_args(backend: str, request: pytest.FixtureRequest) -> list[str]:
    """No arguments on SQLite (the examples' default); ``--database-url`` on PostgreSQL."""
    if backend == "postgresql":
        return ["--database-url", str(request.getfixturevalue("postgres_database_url"))]
    return []


def run_example(name: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run an example; assert it succeeded and return its output."""
    environment = {k: v for k, v in os.environ.items() if k != _common.DATABASE_URL_VARIABLE}
    environment.update(env or {})
    completed = subprocess.run(
        [sys.executable, "-m", f"examples.{name}", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "INVARIANT VIOLATED" not in output
    assert completed.stdout.rstrip().endswith("all invariants hold"), output
    return completed.stdout


def number(pattern: str, output: str) -> int:
    found = re.search(pattern, output)
    assert found is not None, f"{pattern!r} not in:\n{output}"
    return int(found.group(1).replace(",", ""))


def test_transfer(database_args: list[str]) -> None:
    out = run_example("transfer", *database_args)
    for line in (
        "ok: the second OpenAccount is refused",
        "ok: nothing was appended for it",
        "ok: balances are 70 / 35 / 45",
        "ok: the over-balance transfer is refused",
        "transfer-1 again: duplicate=True",
        "ok: no money moved twice",
        "ok: exactly 3 transfers of 30 fit in a balance of 100",
        "ok: money is neither created nor lost",
        "ok: an event knows its command",
    ):
        assert line in out, out
    # the commands recorded are printed with their events
    assert re.search(r"transfer-1: Transfer .*\n\s+-> #\d+ MoneyTransferred", out), out


def test_transfer_twice_on_the_same_database(database_args: list[str]) -> None:
    """A database that already holds earlier runs' events and commands is fine."""
    run_example("transfer", *database_args)
    run_example("transfer", *database_args)


def test_enrollment(database_args: list[str]) -> None:
    out = run_example("enrollment", *database_args)
    for line in (
        "ok: scheduling algebra twice is refused",
        "enroll cid in algebra: refused: course_full",
        "ok: enrolling twice is refused",
        "ok: the condition keeps two items (course OR student)",
        "enroll ann in drama: refused: course_limit",
        "ok: cid takes the freed seat",
        "ok: no course is over capacity",
        "ok: the enrollments are exactly the accepted ones",
    ):
        assert line in out, out
    assert "OR (StudentEnrolled|StudentRegistered|StudentUnenrolled with student:cid)" in out


def test_enrollment_with_another_course_limit() -> None:
    out = run_example("enrollment", "--max-courses", "1")
    assert "ann's course number 2 is refused" in out


def test_streaming(database_args: list[str]) -> None:
    out = run_example("streaming", "--events", "20000", "--batch-size", "500", *database_args)
    assert number(r"appended ([\d,]+) events", out) == 20000
    assert "ok: the read returned all 20,000 events, in position order" in out
    assert "ok: the projected states match what was appended" in out
    assert out.count("events folded, at position") == 5  # progress every fifth
    assert re.search(r"[\d,]+ events in [\d.]+ s \([\d,]+ events/s\)", out), out
    assert re.search(r"ok: read: peak growth [\d.]+ MB <= 50 MB", out), out
    assert re.search(r"ok: projection: peak growth [\d.]+ MB <= 50 MB", out), out


def test_streaming_memory_check_has_teeth(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With reads that hold the whole history in memory, the example fails (exit 1)."""
    from examples import streaming
    from sa_crablet import Head, Query
    from sa_crablet.streams import ReadResult

    class HoardingStore(EventStore):
        def read(
            self,
            query: Query,
            *,
            after: Head | int | None = None,
            backwards: bool = False,
            limit: int | None = None,
        ) -> ReadResult:
            result = super().read(query, after=after, backwards=backwards, limit=limit)
            everything = list(result)  # what a non-streaming read would do
            return ReadResult(iter([everything, result.head]))

    monkeypatch.setattr(streaming, "EventStore", HoardingStore)
    argv = ["--events", "10000", "--memory-limit-mb", "4"]
    with pytest.raises(SystemExit) as exited:
        _common.run(streaming.main, streaming.arguments(), argv)
    assert isinstance(exited.value.code, str)  # a message: exit status 1
    assert exited.value.code.startswith("invariant violated: read: peak growth")
    assert "INVARIANT VIOLATED" in capsys.readouterr().out


def test_decision_model(database_args: list[str]) -> None:
    out = run_example("decision_model", *database_args)
    for line in (
        "ok: the condition is the OR of every projector's items, none merged",
        "ann's append: ConcurrencyError",
        "ok: the error names ben's event",
        "ok: nothing of ann's was written",
        "folded 1 new event(s) after head",
        "ok: incremental == full re-projection",
        "ann's append succeeded at position",
        "ok: ann and ben hold both seats",
    ):
        assert line in out, out
    assert "fail if an event matching" in out and "was appended after head" in out


def test_batch(database_args: list[str]) -> None:
    out = run_example("batch", "--size", "300", *database_args)
    for line in (
        "ok: all five, in batch order",
        "placing the order again: ConcurrencyError",
        "ok: the order's events are exactly the first batch",
        "ok: no event of the refused batch was written",
        "ValidationError on field 'data'",
        "ok: nothing of that batch was written",
        "ok: a rolled-back batch leaves nothing",
        "ok: all 300 events, in order",
    ):
        assert line in out, out


def booked(out: str) -> tuple[int, int, int]:
    """(customers served, tickets sold, customers refused) from ticket_booking's report."""
    served = number(r"booked:\s+(\d+) customers", out)
    sold = number(r"booked:\s+\d+ customers, (\d+) tickets", out)
    return served, sold, number(r"sold out:\s+(\d+) customers refused", out)


def test_ticket_booking_sells_out_exactly(database_args: list[str]) -> None:
    out = run_example("ticket_booking", "--customers", "24", "--seats", "10", *database_args)
    assert booked(out) == (10, 10, 14)
    assert "ok: no seat was sold twice" in out
    assert "ok: never oversold: 10 of 10 seats sold" in out
    assert "gave up:      0 customers" in out
    for metric in ("total time:", "success rate: 42%", "conflicts:", "throughput:"):
        assert metric in out, out


def test_ticket_booking_with_the_whole_concert_as_boundary(database_args: list[str]) -> None:
    """Every booking conflicts with every other; partial bookings fill the last seats."""
    args = ["--customers", "8", "--seats", "5", "--tickets-per-customer", "2"]
    out = run_example("ticket_booking", *args, "--strategy", "concert", *database_args)
    served, sold, refused = booked(out)
    assert sold == 5 and served == 3 and refused == 5
    assert "ok: sold exactly min(seats, demand) = 5" in out


def test_ticket_booking_serves_everyone_when_supply_suffices() -> None:
    out = run_example("ticket_booking", "--customers", "6", "--seats", "20", "--concurrency", "3")
    assert booked(out) == (6, 6, 0)
    assert "success rate: 100%" in out


def test_examples_read_database_url_from_the_environment(postgres_database_url: str) -> None:
    out = run_example("batch", "--size", "10", env={"DATABASE_URL": postgres_database_url})
    assert out.startswith("database: postgresql")


@pytest.mark.parametrize("name", ["flask_app", "fastapi_app"])
def test_web_apps_have_a_command_line(name: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", f"examples.{name}", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "--database-url" in completed.stdout and "--port" in completed.stdout


def test_postgres_urls_use_psycopg() -> None:
    assert _common.normalize_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert _common.normalize_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert _common.normalize_url("sqlite:///x.db") == "sqlite:///x.db"


# -- the web apps through their clients ----------------------------------------------------------
#
# Every scenario is a coroutine, run with asyncio.run: the FastAPI app is served through
# httpx's ASGITransport after its lifespan's start-up (as an ASGI server would run it), and
# concurrent requests are asyncio tasks; Flask's requests run on threads (asyncio.to_thread).


@dataclass(frozen=True)
class Client:
    """Requests to one app, answered ``(status, JSON body)``."""

    call: Callable[[str, str, dict[str, Any] | None], Awaitable[tuple[int, Any]]]

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        return await self.call("POST", path, body)

    async def get(self, path: str) -> tuple[int, Any]:
        return await self.call("GET", path, None)

    async def delete(self, path: str) -> tuple[int, Any]:
        return await self.call("DELETE", path, None)


@dataclass(frozen=True)
class Api:
    """One app under test on one database and driver. ``engine`` is a synchronous engine on
    the app's database, to check what was written behind the app's back; ``connect`` opens
    a client in the running event loop."""

    engine: Engine
    connect: Callable[[], AbstractAsyncContextManager[Client]]

    def run(self, scenario: Callable[[Client], Awaitable[None]]) -> None:
        async def main() -> None:
            async with self.connect() as client:
                await scenario(client)

        asyncio.run(main())


def flask_api(url: str, driver: str) -> Api:
    from examples.flask_app import create_app, db

    app = create_app(url)
    with app.app_context():
        engine = db.engine
    assert engine.dialect.driver == driver

    async def call(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        def request() -> tuple[int, Any]:
            response = app.test_client().open(path, method=method, json=body)
            return response.status_code, response.get_json()

        return await asyncio.to_thread(request)  # concurrent requests: concurrent threads

    @asynccontextmanager
    async def connect() -> AsyncIterator[Client]:
        yield Client(call)

    return Api(engine, connect)


@asynccontextmanager
async def served(app: ASGIApp) -> AsyncIterator[None]:
    """What an ASGI server does around serving ``app``: the lifespan protocol's start-up
    (which must complete) and, afterwards, its shut-down."""
    to_app: asyncio.Queue[Message] = asyncio.Queue()
    from_app: asyncio.Queue[Message] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}

    async def lifespan_protocol() -> None:
        await app(scope, to_app.get, from_app.put)

    lifespan = asyncio.create_task(lifespan_protocol())
    await to_app.put({"type": "lifespan.startup"})
    started = await from_app.get()
    assert started["type"] == "lifespan.startup.complete", started
    try:
        yield
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        stopped = await from_app.get()
        await lifespan
        assert stopped["type"] == "lifespan.shutdown.complete", stopped


def fastapi_api(app: FastAPI, driver: str) -> Api:
    """``app`` served through httpx's ASGITransport; its engine must use ``driver``."""
    import httpx

    assert app.state.engine.dialect.is_async and app.state.engine.dialect.driver == driver
    database = app.state.engine.url
    if database.get_backend_name() == "sqlite":
        engine = create_sqlite_engine(str(database.database))
    else:
        engine = create_engine(database.set(drivername="postgresql+psycopg"))

    @asynccontextmanager
    async def connect() -> AsyncIterator[Client]:
        transport = httpx.ASGITransport(app=app)
        async with (
            served(app),
            httpx.AsyncClient(transport=transport, base_url="http://app") as http,
        ):

            async def call(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
                response = await http.request(method, path, json=body)
                return response.status_code, response.json()

            yield Client(call)

    return Api(engine, connect)


WEB_APPS = {
    # the app's id: (framework, the URL's driver, the driver its engine must use)
    "flask-sqlite": ("flask", "sqlite", "pysqlite"),
    "flask-postgresql": ("flask", "postgresql+psycopg", "psycopg"),
    "fastapi-aiosqlite": ("fastapi", "sqlite+aiosqlite", "aiosqlite"),
    "fastapi-psycopg": ("fastapi", "postgresql", "psycopg"),  # a plain URL: the app picks
    "fastapi-asyncpg": ("fastapi", "postgresql+asyncpg", "asyncpg"),
}
EXTRAS = {"flask": ["flask", "flask_sqlalchemy"], "fastapi": ["fastapi", "httpx"]}


@pytest.fixture(params=sorted(WEB_APPS))
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    framework, drivername, driver = WEB_APPS[request.param]
    missing = [name for name in EXTRAS[framework] if importlib.util.find_spec(name) is None]
    if missing:  # CI installs them with the dev extra
        pytest.skip(f"needs the {framework!r} extra (missing: {', '.join(missing)})")
    if drivername.startswith("sqlite"):
        database = make_url(f"sqlite:///{tmp_path / 'web.sqlite3'}")
    else:
        database = make_url(str(request.getfixturevalue("postgres_database_url")))
    url = database.set(drivername=drivername).render_as_string(hide_password=False)
    if framework == "flask":
        api = flask_api(url, driver)
    else:
        from examples.fastapi_app import create_app

        api = fastapi_api(create_app(url), driver)
    yield api
    api.engine.dispose()


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def setup_course(client: Client, capacity: int, students: int) -> tuple[str, list[str]]:
    course = unique("course")
    status, _ = await client.post("/courses", {"id": course, "title": "T", "capacity": capacity})
    assert status == 201
    names = [unique(f"student{i}") for i in range(students)]
    for name in names:
        assert (await client.post("/students", {"id": name, "name": name.title()}))[0] == 201
    return course, names


async def enroll(client: Client, course: str, student: str) -> tuple[int, Any]:
    return await client.post(f"/courses/{course}/enrollments", {"student_id": student})


async def assert_rows_match_events(api: Api, client: Client, course: str) -> set[str]:
    """The host's rows for a course are exactly the students its events enroll, each once."""
    with Session(api.engine) as session:
        events = list(EventStore(session).read(courses.enrollments_query([course])))
        from_events = {s for c, s in courses.enrolled_from_events(events) if c == course}
        rows = _web.enrollment_rows(session, course)
    assert len(rows) == len(set(rows))
    assert set(rows) == from_events
    status, view = await client.get(f"/courses/{course}")
    assert status == 200
    assert set(view["students"]) == set(view["enrollment_rows"]) == from_events
    assert view["seats_left"] == view["capacity"] - len(from_events) >= 0
    return from_events


def test_api_enrollment_flow(api: Api) -> None:
    async def scenario(client: Client) -> None:
        course, (ann, ben, cid) = await setup_course(client, capacity=2, students=3)
        status, body = await client.post("/courses", {"id": course, "title": "x", "capacity": 9})
        assert (status, body["error"]) == (409, "course_exists")
        status, body = await enroll(client, course, ann)
        assert status == 201 and body["course_id"] == course and body["position"] > 0
        status, body = await enroll(client, course, ann)
        assert (status, body["error"]) == (409, "already_enrolled")
        assert (await enroll(client, course, ben))[0] == 201
        status, body = await enroll(client, course, cid)
        assert (status, body["error"]) == (409, "course_full")
        assert await assert_rows_match_events(api, client, course) == {ann, ben}

        status, body = await client.delete(f"/courses/{course}/enrollments/{ben}")
        assert status == 200 and body["student_id"] == ben
        status, body = await client.delete(f"/courses/{course}/enrollments/{ben}")
        assert (status, body["error"]) == (409, "not_enrolled")
        assert (await enroll(client, course, cid))[0] == 201
        assert await assert_rows_match_events(api, client, course) == {ann, cid}
        status, body = await client.get(f"/students/{cid}")
        assert status == 200 and body["courses"] == [course]

    api.run(scenario)


def test_api_refusals_and_validation(api: Api) -> None:
    async def scenario(client: Client) -> None:
        course, (ann,) = await setup_course(client, capacity=5, students=1)
        status, body = await enroll(client, unique("nope"), ann)
        assert (status, body["error"]) == (404, "unknown_course")
        assert (await client.get(f"/courses/{unique('nope')}"))[0] == 404
        assert (await client.get(f"/students/{unique('nope')}"))[0] == 404
        status, body = await enroll(client, course, unique("nobody"))
        assert (status, body["error"]) == (422, "unknown_student")
        status, body = await client.post("/courses", {"id": unique("c"), "title": "T"})
        assert (status, body["error"]) == (422, "invalid_request")
        new = {"id": unique("c"), "title": "T", "capacity": 0}
        status, body = await client.post("/courses", new)
        assert (status, body["error"]) == (422, "invalid_capacity")
        # sa_crablet.ValidationError: "course:" + 600 characters is longer than a tag may be
        status, body = await client.post("/courses", {"id": "x" * 600, "title": "T", "capacity": 1})
        assert status == 422 and body["error"] == "validation_error" and body["field"] == "tags"
        # the per-student limit
        others = [unique("c") for _ in range(courses.MAX_COURSES_PER_STUDENT + 1)]
        for other in others:
            new = {"id": other, "title": "T", "capacity": 3}
            assert (await client.post("/courses", new))[0] == 201
        for other in others[:-1]:
            assert (await enroll(client, other, ann))[0] == 201
        status, body = await enroll(client, others[-1], ann)
        assert (status, body["error"]) == (409, "course_limit")

    api.run(scenario)


def test_api_lost_race_answers_409(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer commits between the request's projection and its append: the append
    condition fails, nothing is written, the answer is a 409 that says to retry."""
    interfered: list[int] = []
    original = courses.decide_enrollment

    async def scenario(client: Client) -> None:
        course, (ann, rival) = await setup_course(client, capacity=2, students=2)

        def decided_then_overtaken(
            model: DecisionModel, course_id: str, student: str, max_courses: int
        ) -> Event:
            if student == ann and not interfered:
                # The rival's request, which wins, on a connection of its own (in the
                # FastAPI app, its event loop waits meanwhile).
                with Session(api.engine) as other:
                    interfered.append(_web.enroll(other, course_id, rival)["position"])
                    other.commit()
            return original(model, course_id, student, max_courses)

        monkeypatch.setattr(courses, "decide_enrollment", decided_then_overtaken)
        status, body = await enroll(client, course, ann)
        assert status == 409, body
        assert body["error"] == "conflict" and body["retryable"] is True
        assert body["conflicting_position"] == interfered[0]
        assert "nothing was written" in body["message"]
        assert await assert_rows_match_events(api, client, course) == {rival}
        # the client retries: one seat is still free
        assert (await enroll(client, course, ann))[0] == 201
        assert await assert_rows_match_events(api, client, course) == {ann, rival}

    api.run(scenario)


def test_api_host_row_and_event_commit_together(api: Api) -> None:
    """The host's constraint refuses the row: the event appended before it rolls back."""

    async def scenario(client: Client) -> None:
        course, (ann,) = await setup_course(client, capacity=3, students=1)
        with Session(api.engine) as session:  # a stray row, written behind the API's back
            session.execute(
                insert(_web.Enrollment).values(course_id=course, student_id=ann, position=0)
            )
            session.commit()
        status, body = await enroll(client, course, ann)
        assert (status, body["error"]) == (409, "integrity_error")
        with Session(api.engine) as session:
            events = list(EventStore(session).read(courses.enrollments_query([course])))
        assert events == []  # the StudentEnrolled event was rolled back with the row

    api.run(scenario)


RACERS = 8


@pytest.mark.parametrize("round_", range(3))
def test_api_concurrent_requests_race_for_the_last_seat(api: Api, round_: int) -> None:
    """Concurrent requests, none retried, for one seat left: exactly one is admitted."""
    capacity = 3

    async def scenario(client: Client) -> None:
        course, students = await setup_course(client, capacity, students=capacity - 1 + RACERS)
        for early in students[: capacity - 1]:
            assert (await enroll(client, course, early))[0] == 201
        racers = students[capacity - 1 :]
        answers = await asyncio.gather(*(enroll(client, course, racer) for racer in racers))
        statuses = [status for status, _ in answers]
        assert statuses.count(201) == 1, answers
        assert statuses.count(409) == RACERS - 1, answers
        refusals = {body["error"] for status, body in answers if status == 409}
        assert refusals <= {"conflict", "course_full"}, answers
        enrolled = await assert_rows_match_events(api, client, course)
        assert len(enrolled) == capacity
        winner = next(racers[i] for i, (status, _) in enumerate(answers) if status == 201)
        assert winner in enrolled

    api.run(scenario)


SEATS, APPLICANTS = 10, 40


async def enroll_retrying(client: Client, course: str, student: str) -> tuple[int, Any, int]:
    """What a client does with a 409 ``conflict`` (``"retryable": true``): ask again, after
    a short random pause, until admitted or refused. Returns the last answer and the number
    of conflicts before it."""
    for conflicts in range(100):
        status, body = await enroll(client, course, student)
        if not (status == 409 and body["error"] == "conflict"):
            return status, body, conflicts
        await asyncio.sleep(random.uniform(0, 0.002 * min(conflicts + 1, 10)))
    raise AssertionError(f"{student}: still conflicting after 100 attempts")


def test_api_many_concurrent_enrollments(api: Api) -> None:
    """40 students ask for a course of 10 seats at once (40 concurrent requests) and retry
    lost races: exactly 10 are admitted, the 30 others refused ``course_full``, and the
    host's rows, the events and both views agree."""

    async def scenario(client: Client) -> None:
        course, students = await setup_course(client, SEATS, APPLICANTS)
        outcomes = await asyncio.gather(*(enroll_retrying(client, course, s) for s in students))
        admitted = {
            s for s, (status, _, _) in zip(students, outcomes, strict=True) if status == 201
        }
        refused = [body["error"] for status, body, _ in outcomes if status != 201]
        assert len(admitted) == SEATS, outcomes
        assert refused == ["course_full"] * (APPLICANTS - SEATS), outcomes
        assert all(status == 409 for status, _, _ in outcomes if status != 201)
        assert await assert_rows_match_events(api, client, course) == admitted
        positions = [body["position"] for status, body, _ in outcomes if status == 201]
        with Session(api.engine) as session:
            events = list(EventStore(session).read(courses.enrollments_query([course])))
        assert sorted(positions) == [event.position for event in events]  # nothing else
        for student in students[:3]:
            status, view = await client.get(f"/students/{student}")
            assert status == 200 and view["courses"] == ([course] if student in admitted else [])

    api.run(scenario)


def test_fastapi_app_database_urls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Plain URLs get an async driver; with none, the app serves a new SQLite file."""
    pytest.importorskip("fastapi")
    from examples.fastapi_app import async_url, create_app

    assert async_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert async_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert async_url("postgresql+asyncpg://u@h/d") == "postgresql+asyncpg://u@h/d"
    assert async_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    monkeypatch.delenv(_common.DATABASE_URL_VARIABLE, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the default file goes
    app = create_app()
    database = app.state.engine.url
    assert database.drivername == "sqlite+aiosqlite"
    assert Path(database.database).parent.parent == tmp_path
    api = fastapi_api(app, "aiosqlite")

    async def scenario(client: Client) -> None:
        course, (ann,) = await setup_course(client, capacity=1, students=1)
        assert (await enroll(client, course, ann))[0] == 201
        assert await assert_rows_match_events(api, client, course) == {ann}

    try:
        api.run(scenario)
    finally:
        api.engine.dispose()
    explicit = tmp_path / "explicit.sqlite3"
    monkeypatch.setenv(_common.DATABASE_URL_VARIABLE, f"sqlite:///{explicit}")
    assert create_app().state.engine.url == make_url(f"sqlite+aiosqlite:///{explicit}")
