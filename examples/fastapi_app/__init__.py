"""Course enrollment over HTTP with FastAPI: ``python -m examples.fastapi_app``.

The same API as ``examples.flask_app``. Each request gets a ``Session`` from a dependency
(``Depends(get_session, scope="function")``) that commits when the endpoint returns and
rolls back when it raises, before the response is sent: the events sa_crablet appends and
the host's ORM rows (``example_enrollments``) commit together or not at all. Exception
handlers answer JSON: 409 for a lost race (``sa_crablet.ConcurrencyError``), 422 for
``sa_crablet.ValidationError`` and invalid bodies, 409 / 422 / 404 for domain refusals.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at
# definition time, and SessionDep is local to create_app.
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

import sa_crablet
from examples import _web
from examples._common import engine_for


class CourseIn(BaseModel):
    id: str
    title: str
    capacity: int


class StudentIn(BaseModel):
    id: str
    name: str


class EnrollmentIn(BaseModel):
    student_id: str


def session_dependency(factory: sessionmaker[Session]) -> Callable[[], Iterator[Session]]:
    """A dependency: one Session and transaction per request, committed on success."""

    def get_session() -> Iterator[Session]:
        with factory() as session:
            try:
                yield session
                session.commit()  # raises here (mapped to an answer) if the commit fails
            except BaseException:
                session.rollback()
                raise

    return get_session


def create_app(database_url: str | None = None) -> FastAPI:
    """The app, on ``database_url`` (default: ``$DATABASE_URL``, else a temporary SQLite
    file). sa_crablet's migrations and the host's tables are applied at start-up; the
    engine is ``app.state.engine``."""
    engine = engine_for(_web.database_url(database_url), connections=20)
    sa_crablet.upgrade(engine)
    _web.Base.metadata.create_all(engine)
    # scope="function": the dependency's exit (commit or rollback) runs before the response
    # is sent, so a client never sees 201 for a transaction that did not commit.
    get_session = session_dependency(sessionmaker(engine))
    SessionDep = Annotated[Session, Depends(get_session, scope="function")]

    app = FastAPI(title="sa_crablet course enrollment")
    app.state.engine = engine

    @app.post("/courses", status_code=201)
    def schedule_course(body: CourseIn, session: SessionDep) -> dict[str, Any]:
        return _web.schedule_course(session, body.id, body.title, body.capacity)

    @app.get("/courses/{course_id}")
    def course(course_id: str, session: SessionDep) -> dict[str, Any]:
        return _web.course_view(session, course_id)

    @app.post("/students", status_code=201)
    def register_student(body: StudentIn, session: SessionDep) -> dict[str, Any]:
        return _web.register_student(session, body.id, body.name)

    @app.get("/students/{student_id}")
    def student(student_id: str, session: SessionDep) -> dict[str, Any]:
        return _web.student_view(session, student_id)

    @app.post("/courses/{course_id}/enrollments", status_code=201)
    def enroll(course_id: str, body: EnrollmentIn, session: SessionDep) -> dict[str, Any]:
        return _web.enroll(session, course_id, body.student_id)

    @app.delete("/courses/{course_id}/enrollments/{student_id}")
    def unenroll(course_id: str, student_id: str, session: SessionDep) -> dict[str, Any]:
        return _web.unenroll(session, course_id, student_id)

    def answer(_request: Request, error: Exception) -> JSONResponse:
        status, payload = _web.error_response(error)  # the dependency rolled back already
        return JSONResponse(payload, status_code=status)

    def invalid_body(_request: Request, error: Exception) -> JSONResponse:
        details = error.errors() if isinstance(error, RequestValidationError) else []
        payload = {"error": "invalid_request", "message": "invalid request body"}
        return JSONResponse({**payload, "detail": details}, status_code=422)

    for kind in _web.HANDLED:
        app.add_exception_handler(kind, answer)
    app.add_exception_handler(RequestValidationError, invalid_body)
    return app
