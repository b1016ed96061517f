"""Course enrollment over HTTP with FastAPI, on SQLAlchemy's asyncio layer:
``python -m examples.fastapi_app``.

The same API as ``examples.flask_app``, asynchronous from end to end: ``async def``
endpoints, an ``AsyncEngine``, ``sa_crablet.AsyncEventStore``. Each request gets an
``AsyncSession`` from a dependency (``Depends(get_session, scope="function")``) that commits
when the endpoint returns and rolls back when it raises, before the response is sent: the
events sa_crablet appends and the host's ORM rows (``example_enrollments``) commit together
or not at all. At start-up (the app's lifespan) ``await sa_crablet.upgrade_async(engine)``
runs the migrations and the host's table is created.

Exception handlers answer JSON: 409 for a lost race (``sa_crablet.ConcurrencyError``), 422
for ``sa_crablet.ValidationError`` and invalid bodies, 409 / 422 / 404 for domain refusals.

Databases: a SQLite file through ``sqlite+aiosqlite`` (the default: a temporary file), or
PostgreSQL through ``postgresql+psycopg`` (psycopg's ``AsyncConnection``) or
``postgresql+asyncpg``.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at
# definition time, and SessionDep is local to create_app.
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

import sa_crablet
from examples import _web, courses
from examples._common import normalize_url
from sa_crablet import AsyncEventStore

SQLITE_DRIVERS = ("sqlite://", "sqlite+pysqlite://")


class CourseIn(BaseModel):
    id: str
    title: str
    capacity: int


class StudentIn(BaseModel):
    id: str
    name: str


class EnrollmentIn(BaseModel):
    student_id: str


# -- the database --------------------------------------------------------------------------------


def async_url(url: str) -> str:
    """``url`` with an async driver: ``sqlite://`` becomes ``sqlite+aiosqlite://``,
    ``postgres://`` and ``postgresql://`` become ``postgresql+psycopg://`` (psycopg 3 is
    async too); anything else (``postgresql+asyncpg://``, say) is left alone."""
    url = normalize_url(url)
    for prefix in SQLITE_DRIVERS:
        if url.startswith(prefix):
            return "sqlite+aiosqlite://" + url.removeprefix(prefix)
    return url


def async_engine_for(url: str, *, connections: int = 20) -> AsyncEngine:
    """An ``AsyncEngine`` for ``url`` (see :func:`async_url`) with a pool of
    ``connections``; a SQLite file is set up by ``sa_crablet.create_async_sqlite_engine``
    (WAL, a busy timeout)."""
    parsed = make_url(async_url(url))
    pool: dict[str, Any] = {"pool_size": connections, "max_overflow": 5}
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(parsed, **pool)
    if parsed.database in (None, "", ":memory:"):
        raise SystemExit("the app needs a SQLite file (sqlite+aiosqlite:///path), not :memory:")
    return sa_crablet.create_async_sqlite_engine(parsed.database, **pool)


def session_dependency(
    factory: async_sessionmaker[AsyncSession],
) -> Callable[[], AsyncIterator[AsyncSession]]:
    """A dependency: one AsyncSession and transaction per request, committed on success
    (a failed commit raises here, and is answered like any other error), rolled back when
    the endpoint raises."""

    async def get_session() -> AsyncIterator[AsyncSession]:
        async with factory.begin() as session:
            yield session

    return get_session


# -- requests: each runs in the caller's AsyncSession, which the dependency commits ---------------


async def schedule_course(
    session: AsyncSession, course_id: str, title: str, capacity: int
) -> dict[str, Any]:
    decider = courses.scheduling(course_id, title, capacity)
    position = await courses.decide_async(AsyncEventStore(session), decider)
    return _web.course_scheduled(course_id, title, capacity, position)


async def register_student(session: AsyncSession, student_id: str, name: str) -> dict[str, Any]:
    decider = courses.registration(student_id, name)
    position = await courses.decide_async(AsyncEventStore(session), decider)
    return _web.student_registered(student_id, name, position)


async def enroll(session: AsyncSession, course_id: str, student_id: str) -> dict[str, Any]:
    """Append the event (under its decision model's condition), then write the host's row.
    A lost race raises ``ConcurrencyError`` before the row is written; a refused row
    (``IntegrityError``) rolls the event back with it."""
    decider = courses.enrollment(course_id, student_id)
    position = await courses.decide_async(AsyncEventStore(session), decider)
    session.add(_web.Enrollment(course_id=course_id, student_id=student_id, position=position))
    await session.flush()  # the host's constraints run now, inside the same transaction
    return _web.enrollment_changed(course_id, student_id, position)


async def unenroll(session: AsyncSession, course_id: str, student_id: str) -> dict[str, Any]:
    decider = courses.unenrollment(course_id, student_id)
    position = await courses.decide_async(AsyncEventStore(session), decider)
    await session.execute(_web.row_removal(course_id, student_id))
    return _web.enrollment_changed(course_id, student_id, position)


async def course_view(session: AsyncSession, course_id: str) -> dict[str, Any]:
    model = await AsyncEventStore(session).project([courses.course_projector(course_id)])
    rows = await session.scalars(_web.rows_of(course_id))
    return _web.course_answer(course_id, model["course"], list(rows))


async def student_view(session: AsyncSession, student_id: str) -> dict[str, Any]:
    model = await AsyncEventStore(session).project([courses.student_projector(student_id)])
    return _web.student_answer(student_id, model["student"])


# -- the app -------------------------------------------------------------------------------------


def create_app(database_url: str | None = None) -> FastAPI:
    """The app, on ``database_url`` (default: ``$DATABASE_URL``, else a temporary SQLite
    file). Its engine is ``app.state.engine``; sa_crablet's migrations and the host's
    tables are applied at start-up, and the engine is disposed of at shut-down."""
    engine = async_engine_for(_web.database_url(database_url))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await sa_crablet.upgrade_async(engine)
        async with engine.begin() as connection:
            await connection.run_sync(_web.Base.metadata.create_all)
        yield
        await engine.dispose()

    # scope="function": the dependency's exit (commit or rollback) runs before the response
    # is sent, so a client never sees 201 for a transaction that did not commit.
    get_session = session_dependency(async_sessionmaker(engine, expire_on_commit=False))
    SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]

    app = FastAPI(title="sa_crablet course enrollment", lifespan=lifespan)
    app.state.engine = engine

    @app.post("/courses", status_code=201)
    async def schedule(body: CourseIn, session: SessionDep) -> dict[str, Any]:
        return await schedule_course(session, body.id, body.title, body.capacity)

    @app.get("/courses/{course_id}")
    async def course(course_id: str, session: SessionDep) -> dict[str, Any]:
        return await course_view(session, course_id)

    @app.post("/students", status_code=201)
    async def register(body: StudentIn, session: SessionDep) -> dict[str, Any]:
        return await register_student(session, body.id, body.name)

    @app.get("/students/{student_id}")
    async def student(student_id: str, session: SessionDep) -> dict[str, Any]:
        return await student_view(session, student_id)

    @app.post("/courses/{course_id}/enrollments", status_code=201)
    async def enrollment(course_id: str, body: EnrollmentIn, session: SessionDep) -> dict[str, Any]:
        return await enroll(session, course_id, body.student_id)

    @app.delete("/courses/{course_id}/enrollments/{student_id}")
    async def unenrollment(course_id: str, student_id: str, session: SessionDep) -> dict[str, Any]:
        return await unenroll(session, course_id, student_id)

    async def answer(_request: Request, error: Exception) -> JSONResponse:
        status, payload = _web.error_response(error)  # the dependency rolled back already
        return JSONResponse(payload, status_code=status)

    async def invalid_body(_request: Request, error: Exception) -> JSONResponse:
        details = error.errors() if isinstance(error, RequestValidationError) else []
        payload = {"error": "invalid_request", "message": "invalid request body"}
        return JSONResponse({**payload, "detail": details}, status_code=422)

    for kind in _web.HANDLED:
        app.add_exception_handler(kind, answer)
    app.add_exception_handler(RequestValidationError, invalid_body)
    return app
