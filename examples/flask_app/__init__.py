"""Course enrollment over HTTP with Flask and Flask-SQLAlchemy: ``python -m examples.flask_app``.

Each request runs in Flask-SQLAlchemy's ``db.session``: the events sa_crablet appends and
the host's ORM rows (``example_enrollments``) commit together at the end of the request, or
roll back together. Errors answer JSON:

* a lost race (``sa_crablet.ConcurrencyError``): 409 ``{"error": "conflict", ...}``;
* ``sa_crablet.ValidationError`` (say, an id too long for a tag): 422;
* domain refusals: 409 (course full, already enrolled, ...), 422 (bad request, unknown
  student) or 404 (unknown course).

Endpoints::

    POST   /courses                                 {"id", "title", "capacity"}
    GET    /courses/<course_id>
    POST   /students                                {"id", "name"}
    GET    /students/<student_id>
    POST   /courses/<course_id>/enrollments         {"student_id"}
    DELETE /courses/<course_id>/enrollments/<student_id>
"""

from __future__ import annotations

from typing import Any

import flask
from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event, make_url

import sa_crablet
from examples import _web

db = SQLAlchemy(metadata=_web.Base.metadata)
"""The extension; ``db.session`` is the request's session (one per application context)."""


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise _web.invalid_request("the body must be a JSON object")
    return body


def _field(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        expected = "an integer" if kind is int else "a string"
        raise _web.invalid_request(f"{name!r} must be {expected}")
    return value


def create_app(database_url: str | None = None) -> Flask:
    """The app, on ``database_url`` (default: ``$DATABASE_URL``, else a temporary SQLite
    file). sa_crablet's migrations and the host's tables are applied at start-up."""
    url = _web.database_url(database_url)
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = url
    sqlite_file = make_url(url).get_backend_name() == "sqlite" and make_url(url).database
    if sqlite_file:
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
            "connect_args": {"timeout": 5.0, "check_same_thread": False}  # busy timeout
        }
    db.init_app(app)
    with app.app_context():
        if sqlite_file:
            event.listen(db.engine, "connect", _web.sqlite_pragmas)
        sa_crablet.upgrade(db.engine)
        db.create_all()

    def session() -> Any:
        # Flask-SQLAlchemy's request-scoped session (EventStore also accepts db.session).
        return db.session

    @app.post("/courses")
    def schedule_course() -> ResponseReturnValue:
        body = _body()
        course_id, title = _field(body, "id", str), _field(body, "title", str)
        result = _web.schedule_course(session(), course_id, title, _field(body, "capacity", int))
        db.session.commit()
        return jsonify(result), 201

    @app.get("/courses/<course_id>")
    def course(course_id: str) -> ResponseReturnValue:
        return jsonify(_web.course_view(session(), course_id))

    @app.post("/students")
    def register_student() -> ResponseReturnValue:
        body = _body()
        result = _web.register_student(
            session(), _field(body, "id", str), _field(body, "name", str)
        )
        db.session.commit()
        return jsonify(result), 201

    @app.get("/students/<student_id>")
    def student(student_id: str) -> ResponseReturnValue:
        return jsonify(_web.student_view(session(), student_id))

    @app.post("/courses/<course_id>/enrollments")
    def enroll(course_id: str) -> ResponseReturnValue:
        student_id = _field(_body(), "student_id", str)
        result = _web.enroll(session(), course_id, student_id)
        db.session.commit()  # the event and the Enrollment row, in one commit
        return jsonify(result), 201

    @app.delete("/courses/<course_id>/enrollments/<student_id>")
    def unenroll(course_id: str, student_id: str) -> ResponseReturnValue:
        result = _web.unenroll(session(), course_id, student_id)
        db.session.commit()
        return jsonify(result)

    def answer(error: Exception) -> ResponseReturnValue:
        db.session.rollback()  # whatever the request wrote, events included, is undone
        status, payload = _web.error_response(error)
        return flask.make_response(jsonify(payload), status)

    for kind in _web.HANDLED:
        app.register_error_handler(kind, answer)
    return app
