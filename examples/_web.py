"""What the Flask and FastAPI apps share: the host's table, the answers, the error mapping,
SQLite's settings; and the requests on a ``Session`` (the Flask app's; the FastAPI app makes
the same decisions on an ``AsyncSession``). Nothing here commits: each framework wraps a
request in one transaction.

The host application keeps its own ORM table, ``example_enrollments`` (a read model of who
is enrolled where). Enrolling appends a ``StudentEnrolled`` event *and* inserts a row in
the same session, so both commit together or neither does.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, DateTime, Delete, Select, String, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from examples import courses
from examples._common import DATABASE_URL_VARIABLE, normalize_url
from sa_crablet import ConcurrencyError, EventStore, OperationTimeoutError, ValidationError


class Base(DeclarativeBase):
    """The host application's own tables."""


class Enrollment(Base):
    """Who is enrolled where, kept by the host next to the events."""

    __tablename__ = "example_enrollments"

    course_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    student_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)  # of the StudentEnrolled event
    enrolled_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=lambda: dt.datetime.now(dt.UTC)
    )


def database_url(explicit: str | None) -> str:
    """The URL to use: ``explicit``, else ``$DATABASE_URL``, else a new temporary SQLite
    file (kept after exit, so a served app keeps its data while it runs)."""
    url = explicit or os.environ.get(DATABASE_URL_VARIABLE)
    if url:
        return normalize_url(url)
    directory = Path(tempfile.mkdtemp(prefix="sa_crablet_web_"))
    return f"sqlite:///{directory / 'courses.sqlite3'}"


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """A ``connect`` listener for an app's own SQLite engine, setting what
    ``sa_crablet.create_sqlite_engine`` sets: WAL, so readers never block the writer."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


# -- the host's rows and the answers, whichever session ran the request ---------------------------


def rows_of(course_id: str) -> Select[str]:
    return select(Enrollment.student_id).where(Enrollment.course_id == course_id)


def row_removal(course_id: str, student_id: str) -> Delete:
    return delete(Enrollment).where(
        Enrollment.course_id == course_id, Enrollment.student_id == student_id
    )


def course_scheduled(course_id: str, title: str, capacity: int, position: int) -> dict[str, Any]:
    return {"id": course_id, "title": title, "capacity": capacity, "position": position}


def student_registered(student_id: str, name: str, position: int) -> dict[str, Any]:
    return {"id": student_id, "name": name, "position": position}


def enrollment_changed(course_id: str, student_id: str, position: int) -> dict[str, Any]:
    return {"course_id": course_id, "student_id": student_id, "position": position}


def course_answer(course_id: str, state: courses.CourseState, rows: list[str]) -> dict[str, Any]:
    """The course folded from its events, next to the host's rows for it."""
    if not state.scheduled:
        raise courses.NotFound("unknown_course", f"no course {course_id!r}")
    return {
        "id": course_id,
        "title": state.title,
        "capacity": state.capacity,
        "seats_left": state.seats_left,
        "students": sorted(state.students),
        "enrollment_rows": sorted(rows),
    }


def student_answer(student_id: str, state: courses.StudentState) -> dict[str, Any]:
    if not state.registered:
        raise courses.NotFound("unknown_student", f"no student {student_id!r}")
    return {"id": student_id, "name": state.name, "courses": sorted(state.courses)}


# -- requests on a Session, which the framework commits -------------------------------------------


def schedule_course(session: Session, course_id: str, title: str, capacity: int) -> dict[str, Any]:
    position = courses.schedule_course(EventStore(session), course_id, title, capacity)
    return course_scheduled(course_id, title, capacity, position)


def register_student(session: Session, student_id: str, name: str) -> dict[str, Any]:
    position = courses.register_student(EventStore(session), student_id, name)
    return student_registered(student_id, name, position)


def enroll(session: Session, course_id: str, student_id: str) -> dict[str, Any]:
    """Append the event (under its decision model's condition), then write the host's row.
    A lost race raises ``ConcurrencyError`` before the row is written; a refused row
    (``IntegrityError``) rolls the event back with it."""
    position = courses.enroll(EventStore(session), course_id, student_id)
    session.add(Enrollment(course_id=course_id, student_id=student_id, position=position))
    session.flush()  # the host's constraints run now, inside the same transaction
    return enrollment_changed(course_id, student_id, position)


def unenroll(session: Session, course_id: str, student_id: str) -> dict[str, Any]:
    position = courses.unenroll(EventStore(session), course_id, student_id)
    session.execute(row_removal(course_id, student_id))
    return enrollment_changed(course_id, student_id, position)


def enrollment_rows(session: Session, course_id: str) -> list[str]:
    return sorted(session.scalars(rows_of(course_id)))


def course_view(session: Session, course_id: str) -> dict[str, Any]:
    state = courses.course_state(EventStore(session), course_id)
    return course_answer(course_id, state, enrollment_rows(session, course_id))


def student_view(session: Session, student_id: str) -> dict[str, Any]:
    return student_answer(student_id, courses.student_state(EventStore(session), student_id))


# -- errors --------------------------------------------------------------------------------------

HANDLED: tuple[type[Exception], ...] = (
    ConcurrencyError,
    ValidationError,
    courses.Refused,
    OperationTimeoutError,
    IntegrityError,
)
"""The exceptions both apps turn into JSON answers (after rolling the transaction back)."""


def error_response(error: Exception) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body for one of :data:`HANDLED`."""
    if isinstance(error, ConcurrencyError):
        return 409, {
            "error": "conflict",
            "message": (
                "another request changed this course or student after it was read; "
                "nothing was written. Read again and retry."
            ),
            "conflicting_position": error.position,
            "detail": str(error),
            "retryable": True,
        }
    if isinstance(error, ValidationError):
        return 422, {"error": "validation_error", "field": error.field, "message": error.message}
    if isinstance(error, courses.Refused):
        return error.status, {"error": error.code, "message": error.message}
    if isinstance(error, OperationTimeoutError):
        return 503, {"error": "timeout", "message": str(error), "retryable": True}
    if isinstance(error, IntegrityError):
        return 409, {
            "error": "integrity_error",
            "message": "the host database refused the write; nothing was written",
        }
    raise TypeError(f"not an error the apps answer: {error!r}") from error


def invalid_request(message: str) -> courses.Invalid:
    return courses.Invalid("invalid_request", message)
