"""A decision model: several projectors, one query, one append condition:
``python -m examples.decision_model``.

To decide whether Ann may enroll in a course, five projectors (a course state, a student
state, a counter, an ``exists`` and a ``last_event``) are folded from **one** query, the OR
of their items. The resulting append condition says "fail if any event any of them would
have seen was appended after this projection". Then:

1. Another writer enrolls Ben first: Ann's append, decided on the stale model, fails with
   ``ConcurrencyError`` and writes nothing.
2. Ann re-projects (incrementally: only the events after the stale model's head are
   folded) and decides again on fresh state.
3. Meanwhile an event outside the boundary (another course) is appended: it does not
   conflict, and Ann's append succeeds.
"""

from __future__ import annotations

import argparse
from typing import Any

from examples import courses
from examples._common import (
    Database,
    check,
    describe_condition,
    describe_query,
    fail,
    parser,
    run,
    say,
    section,
)
from sa_crablet import (
    ConcurrencyError,
    DecisionModel,
    EventStore,
    Query,
    StateProjector,
)
from sa_crablet.projectors import counter, exists, last_event


def projectors(course_id: str, student_id: str) -> list[StateProjector[Any]]:
    course, student = courses.course_tag(course_id), courses.student_tag(student_id)
    return [
        courses.course_projector(course_id),  # id "course"
        courses.student_projector(student_id),  # id "student"
        counter("enrollments", Query.of(types=[courses.STUDENT_ENROLLED], tags=[course])),
        exists("already", Query.of(types=[courses.STUDENT_ENROLLED], tags=[course, student])),
        last_event("last_change", Query.of(tags=[course])),
    ]


def show(db: Database, model: DecisionModel) -> None:
    course: courses.CourseState = model["course"]
    student: courses.StudentState = model["student"]
    last = model["last_change"]
    students = db.short(sorted(course.students))
    say(f"course:      {course.seats_left}/{course.capacity} seats left, students {students}")
    say(f"student:     registered={student.registered}, courses {len(student.courses)}")
    say(f"enrollments: {model['enrollments']}  already: {model['already']}")
    say(f"last_change: #{last.position} {last.type}" if last else "last_change: none")


def main(args: argparse.Namespace, db: Database) -> None:
    course, other = db.id("databases"), db.id("networks")
    ann, ben = db.id("ann"), db.id("ben")
    with db.session() as setup:
        store = EventStore(setup)
        courses.schedule_course(store, course, "Databases", 2)
        courses.register_student(store, ann, "Ann")
        courses.register_student(store, ben, "Ben")
        setup.commit()

    section("five projectors, one query")
    models = projectors(course, ann)
    for projector in models:
        say(f"{projector.id:12} {db.short(describe_query(projector.query))}")

    with db.session() as session:
        store = EventStore(session)
        stale = store.project(models)
        show(db, stale)
        say(db.short(describe_condition(stale.append_condition)))
        check(
            len(stale.append_condition.fail_if_events_match.items)
            == sum(len(p.query.items) for p in models),
            "the condition is the OR of every projector's items, none merged",
        )
        decision = courses.decide_enrollment(stale, course, ann)
        say(f"decision: append {decision.type} for ann")

        section("another writer gets there first")
        with db.session() as other_writer:
            position = courses.enroll(EventStore(other_writer), course, ben)
            other_writer.commit()
        say(f"ben enrolled and committed at position {position}")
        try:
            store.append(decision, stale.append_condition)
        except ConcurrencyError as error:
            say(f"ann's append: ConcurrencyError: {db.short(error)}")
            say(
                f"conflicting event at position {error.position}; "
                f"transaction still usable: {error.transaction_usable}"
            )
            check(error.position == position, "the error names ben's event")
            session.rollback()  # re-deciding in a new transaction is always right
        else:
            fail("ann's append on a stale model succeeded")
        with db.session() as check_session:
            already = list(EventStore(check_session).read(courses.enrollments_query([course])))
        check(len(already) == 1, "nothing of ann's was written")

        section("re-project (incrementally) and decide again")
        stream = store.project_stream(models, after=stale.head, states=stale.states, every=None)
        final = list(stream)[-1]
        fresh = final.model
        if fresh is None:
            fail("a projection stream ends with its model")
        say(f"folded {final.events} new event(s) after head {stale.head.position}")
        show(db, fresh)
        full = store.project(models)
        check(dict(full.states) == dict(fresh.states), "incremental == full re-projection")
        decision = courses.decide_enrollment(fresh, course, ann)

        section("an event outside the boundary does not conflict")
        with db.session() as unrelated:
            position = courses.schedule_course(EventStore(unrelated), other, "Networks", 5)
            unrelated.commit()
        say(f"another course was scheduled at position {position}")
        position = store.append(decision, fresh.append_condition)
        session.commit()
        say(f"ann's append succeeded at position {position}")

    with db.session() as session:
        done = courses.course_state(EventStore(session), course)
    say(f"databases: {db.short(sorted(done.students))}, {done.seats_left} seats left")
    check(done.students == {ann, ben} and done.seats_left == 0, "ann and ben hold both seats")


if __name__ == "__main__":
    run(main, parser(__doc__ or ""))
