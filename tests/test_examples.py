"""The runnable examples keep their invariants, and the web apps behave, on both backends.

Every example runs as ``python -m examples.<name>`` in a subprocess from the repository
root: with no arguments (a temporary SQLite file) and with ``--database-url`` pointing at
the session's PostgreSQL database, which by then already holds other examples' events.
The Flask and FastAPI apps are driven through their own test clients.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert
from sqlalchemy.orm import Session

from examples import _common, _web, courses
from sa_crablet import DecisionModel, EventStore

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
    from sa_crablet import Head, Query, ReadResult

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
            return ReadResult(iter([*everything, result.head]))

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


# -- the web apps through their test clients -------------------------------------------------------

Call = Callable[[str, str, dict[str, Any] | None], tuple[int, Any]]


@dataclass
class Api:
    """One app under test: ``client()`` makes a new client (one per thread)."""

    engine: Engine
    client: Callable[[], Call]

    def __post_init__(self) -> None:
        self.call = self.client()

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        return self.call("POST", path, body)

    def get(self, path: str) -> tuple[int, Any]:
        return self.call("GET", path, None)

    def delete(self, path: str) -> tuple[int, Any]:
        return self.call("DELETE", path, None)


def flask_api(url: str) -> Iterator[Api]:
    from examples.flask_app import create_app, db

    app = create_app(url)
    with app.app_context():
        engine = db.engine

    def client() -> Call:
        test_client = app.test_client()

        def call(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
            response = test_client.open(path, method=method, json=body)
            return response.status_code, response.get_json()

        return call

    yield Api(engine, client)
    engine.dispose()


def fastapi_api(url: str) -> Iterator[Api]:
    from examples.fastapi_app import create_app

    with warnings.catch_warnings():
        # Starlette >= 1.10 prefers httpx2 over httpx for its TestClient; both work.
        warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette\.testclient`")
        from fastapi.testclient import TestClient

    app = create_app(url)
    engine: Engine = app.state.engine

    def client() -> Call:
        test_client = TestClient(app)

        def call(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
            response = test_client.request(method, path, json=body)
            return response.status_code, response.json()

        return call

    yield Api(engine, client)
    engine.dispose()


EXTRAS = {"flask": ["flask", "flask_sqlalchemy"], "fastapi": ["fastapi", "httpx"]}


@pytest.fixture(params=sorted(EXTRAS))
def api(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[Api]:
    missing = [name for name in EXTRAS[request.param] if importlib.util.find_spec(name) is None]
    if missing:  # CI installs them with the dev extra
        pytest.skip(f"needs the {request.param!r} extra (missing: {', '.join(missing)})")
    if backend == "postgresql":
        url = str(request.getfixturevalue("postgres_database_url"))
    else:
        url = f"sqlite:///{tmp_path / 'web.sqlite3'}"
    make = flask_api if request.param == "flask" else fastapi_api
    yield from make(url)


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def setup_course(api: Api, capacity: int, students: int) -> tuple[str, list[str]]:
    course = unique("course")
    assert api.post("/courses", {"id": course, "title": "T", "capacity": capacity})[0] == 201
    names = [unique(f"student{i}") for i in range(students)]
    for name in names:
        assert api.post("/students", {"id": name, "name": name.title()})[0] == 201
    return course, names


def assert_rows_match_events(api: Api, course: str) -> set[str]:
    """The host's rows for a course are exactly the students its events enroll."""
    with Session(api.engine) as session:
        events = EventStore(session).read(courses.enrollments_query([course]))
        from_events = {s for c, s in courses.enrolled_from_events(events) if c == course}
        rows = set(_web.enrollment_rows(session, course))
    assert rows == from_events
    status, view = api.get(f"/courses/{course}")
    assert status == 200
    assert set(view["students"]) == set(view["enrollment_rows"]) == rows
    return rows


def test_api_enrollment_flow(api: Api) -> None:
    course, (ann, ben, cid) = setup_course(api, capacity=2, students=3)
    status, body = api.post("/courses", {"id": course, "title": "again", "capacity": 9})
    assert (status, body["error"]) == (409, "course_exists")
    status, body = api.post(f"/courses/{course}/enrollments", {"student_id": ann})
    assert status == 201 and body["course_id"] == course and body["position"] > 0
    status, body = api.post(f"/courses/{course}/enrollments", {"student_id": ann})
    assert (status, body["error"]) == (409, "already_enrolled")
    assert api.post(f"/courses/{course}/enrollments", {"student_id": ben})[0] == 201
    status, body = api.post(f"/courses/{course}/enrollments", {"student_id": cid})
    assert (status, body["error"]) == (409, "course_full")
    assert assert_rows_match_events(api, course) == {ann, ben}

    status, body = api.delete(f"/courses/{course}/enrollments/{ben}")
    assert status == 200 and body["student_id"] == ben
    status, body = api.delete(f"/courses/{course}/enrollments/{ben}")
    assert (status, body["error"]) == (409, "not_enrolled")
    assert api.post(f"/courses/{course}/enrollments", {"student_id": cid})[0] == 201
    assert assert_rows_match_events(api, course) == {ann, cid}
    status, body = api.get(f"/students/{cid}")
    assert status == 200 and body["courses"] == [course]


def test_api_refusals_and_validation(api: Api) -> None:
    course, (ann,) = setup_course(api, capacity=5, students=1)
    status, body = api.post(f"/courses/{unique('nope')}/enrollments", {"student_id": ann})
    assert (status, body["error"]) == (404, "unknown_course")
    assert api.get(f"/courses/{unique('nope')}")[0] == 404
    status, body = api.post(f"/courses/{course}/enrollments", {"student_id": unique("nobody")})
    assert (status, body["error"]) == (422, "unknown_student")
    status, body = api.post("/courses", {"id": unique("c"), "title": "T"})
    assert (status, body["error"]) == (422, "invalid_request")
    status, body = api.post("/courses", {"id": unique("c"), "title": "T", "capacity": 0})
    assert (status, body["error"]) == (422, "invalid_capacity")
    # sa_crablet.ValidationError: "course:" + 600 characters is longer than a tag may be
    status, body = api.post("/courses", {"id": "x" * 600, "title": "T", "capacity": 1})
    assert status == 422 and body["error"] == "validation_error" and body["field"] == "tags"
    # the per-student limit
    others = [unique("c") for _ in range(courses.MAX_COURSES_PER_STUDENT + 1)]
    for other in others:
        assert api.post("/courses", {"id": other, "title": "T", "capacity": 3})[0] == 201
    for other in others[:-1]:
        assert api.post(f"/courses/{other}/enrollments", {"student_id": ann})[0] == 201
    status, body = api.post(f"/courses/{others[-1]}/enrollments", {"student_id": ann})
    assert (status, body["error"]) == (409, "course_limit")


def test_api_lost_race_answers_409(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer commits between the request's projection and its append: the append
    condition fails, nothing is written, the answer is a 409 that says to retry."""
    course, (ann, rival) = setup_course(api, capacity=2, students=2)
    original = courses.enrollment_model
    interfered: list[int] = []

    def projected_then_overtaken(store: EventStore, course_id: str, student: str) -> DecisionModel:
        model = original(store, course_id, student)
        if student == ann and not interfered:
            with Session(api.engine) as other:  # the rival's request, which wins
                interfered.append(_web.enroll(other, course_id, rival)["position"])
                other.commit()
        return model

    monkeypatch.setattr(courses, "enrollment_model", projected_then_overtaken)
    status, body = api.post(f"/courses/{course}/enrollments", {"student_id": ann})
    assert status == 409, body
    assert body["error"] == "conflict" and body["retryable"] is True
    assert body["conflicting_position"] == interfered[0]
    assert "nothing was written" in body["message"]
    assert assert_rows_match_events(api, course) == {rival}
    # the client retries: one seat is still free
    assert api.post(f"/courses/{course}/enrollments", {"student_id": ann})[0] == 201
    assert assert_rows_match_events(api, course) == {ann, rival}


def test_api_host_row_and_event_commit_together(api: Api) -> None:
    """The host's constraint refuses the row: the event appended before it rolls back."""
    course, (ann,) = setup_course(api, capacity=3, students=1)
    with Session(api.engine) as session:  # a stray row, written behind the API's back
        session.execute(
            insert(_web.Enrollment).values(course_id=course, student_id=ann, position=0)
        )
        session.commit()
    status, body = api.post(f"/courses/{course}/enrollments", {"student_id": ann})
    assert (status, body["error"]) == (409, "integrity_error")
    with Session(api.engine) as session:
        events = list(EventStore(session).read(courses.enrollments_query([course])))
    assert events == []  # the StudentEnrolled event was rolled back with the row


RACERS = 8


@pytest.mark.parametrize("round_", range(3))
def test_api_concurrent_requests_race_for_the_last_seat(api: Api, round_: int) -> None:
    capacity = 3
    course, students = setup_course(api, capacity, students=capacity - 1 + RACERS)
    for early in students[: capacity - 1]:
        assert api.post(f"/courses/{course}/enrollments", {"student_id": early})[0] == 201
    racers = students[capacity - 1 :]
    barrier = threading.Barrier(RACERS, timeout=30)
    answers: list[tuple[int, Any]] = [(0, None)] * RACERS

    def race(i: int) -> None:
        call = api.client()  # one client per thread
        barrier.wait()
        answers[i] = call("POST", f"/courses/{course}/enrollments", {"student_id": racers[i]})

    threads = [threading.Thread(target=race, args=(i,)) for i in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    statuses = [status for status, _ in answers]
    assert statuses.count(201) == 1, answers
    assert statuses.count(409) == RACERS - 1, answers
    assert {body["error"] for status, body in answers if status == 409} <= {
        "conflict",
        "course_full",
    }
    enrolled = assert_rows_match_events(api, course)
    assert len(enrolled) == capacity
    winner = next(racers[i] for i, (status, _) in enumerate(answers) if status == 201)
    assert winner in enrolled
