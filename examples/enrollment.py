"""Course enrollment with a course capacity and a per-student limit:
``python -m examples.enrollment``.

Courses are scheduled with a capacity, students registered, then enrolled and unenrolled
(the domain is in ``examples/courses.py``). An enrollment decision projects two states in
one query, the course (capacity, students) and the student (courses followed), and appends
under the resulting two-item condition: "no new event of this course OR of this student".
It shows that:

* a course never takes more students than its capacity; a full course refuses;
* a student follows at most ``--max-courses`` courses;
* unenrolling frees a seat that someone else can then take;
* duplicates (a course scheduled twice, a student enrolled twice) are refused.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from examples import courses
from examples._common import (
    Database,
    check,
    describe_condition,
    parser,
    positive_int,
    run,
    say,
    section,
)
from sa_crablet import EventStore

COURSES = {"algebra": 2, "biology": 3, "chemistry": 3, "drama": 3}
STUDENTS = {"ann": "Ann", "ben": "Ben", "cid": "Cid", "dot": "Dot"}


def attempt(db: Database, action: Callable[[EventStore], int]) -> int | courses.Refused:
    """Run ``action`` in its own transaction: commit its events, or roll back a refusal."""
    with db.session() as session:
        try:
            position = action(EventStore(session))
        except courses.Refused as refusal:
            session.rollback()
            return refusal
        session.commit()
        return position


def main(args: argparse.Namespace, db: Database) -> None:
    limit: int = args.max_courses
    course = {name: db.id(name) for name in COURSES}
    student = {name: db.id(name) for name in STUDENTS}

    def enroll(s: str, c: str) -> int | courses.Refused:
        outcome = attempt(db, lambda st: courses.enroll(st, course[c], student[s], limit))
        shown = f"position {outcome}" if isinstance(outcome, int) else f"refused: {outcome.code}"
        say(f"enroll {s} in {c}: {shown}")
        return outcome

    def refused(outcome: int | courses.Refused, code: str) -> bool:
        return isinstance(outcome, courses.Refused) and outcome.code == code

    section("schedule courses and register students")
    with db.session() as session:
        store = EventStore(session)
        for name, capacity in COURSES.items():
            courses.schedule_course(store, course[name], name.title(), capacity)
            say(f"{name}: {capacity} seats")
        for name, full_name in STUDENTS.items():
            courses.register_student(store, student[name], full_name)
        session.commit()
    say(f"students: {', '.join(STUDENTS)}; at most {limit} courses each")
    again = attempt(db, lambda st: courses.schedule_course(st, course["algebra"], "again", 9))
    check(refused(again, "course_exists"), "scheduling algebra twice is refused")

    section("capacity: algebra has 2 seats")
    enroll("ann", "algebra")
    enroll("ben", "algebra")
    check(refused(enroll("cid", "algebra"), "course_full"), "a third student is refused")
    check(refused(enroll("ann", "algebra"), "already_enrolled"), "enrolling twice is refused")

    section("the decision model behind 'enroll cid in algebra'")
    with db.session() as session:
        model = courses.enrollment_model(EventStore(session), course["algebra"], student["cid"])
    algebra: courses.CourseState = model["course"]
    cid: courses.StudentState = model["student"]
    say(f"course state:  {algebra.capacity} seats, students {db.short(sorted(algebra.students))}")
    say(f"student state: registered={cid.registered}, courses {sorted(cid.courses)}")
    say(db.short(describe_condition(model.append_condition)))
    check(
        len(model.append_condition.fail_if_events_match.items) == 2,
        "the condition keeps two items (course OR student), not one flattened item",
    )

    section(f"per-student limit: {limit} courses")
    others = [c for c in COURSES if c != "algebra"]
    for name in others[: limit - 1]:
        enroll("ann", name)
    if limit <= len(others):
        check(
            refused(enroll("ann", others[limit - 1]), "course_limit"),
            f"ann's course number {limit + 1} is refused",
        )

    section("unenrolling frees a seat")
    position = attempt(db, lambda st: courses.unenroll(st, course["algebra"], student["ben"]))
    say(f"unenroll ben from algebra: position {position}")
    check(isinstance(enroll("cid", "algebra"), int), "cid takes the freed seat")
    check(refused(enroll("dot", "algebra"), "course_full"), "then algebra is full again")
    gone = attempt(db, lambda st: courses.unenroll(st, course["algebra"], student["ben"]))
    check(refused(gone, "not_enrolled"), "ben cannot leave algebra twice")

    section("final state, folded from the events")
    with db.session() as session:
        store = EventStore(session)
        states = {name: courses.course_state(store, course[name]) for name in COURSES}
        student_states = {name: courses.student_state(store, student[name]) for name in STUDENTS}
        events = list(store.read(courses.enrollments_query(course.values())))
    for name, state in states.items():
        say(f"{name:10} {len(state.students)}/{state.capacity}: {db.short(sorted(state.students))}")
    check(all(s.seats_left >= 0 for s in states.values()), "no course is over capacity")
    check(
        all(len(s.courses) <= limit for s in student_states.values()),
        f"no student follows more than {limit} courses",
    )
    expected = {("algebra", "ann"), ("algebra", "cid")}
    expected |= {(c, "ann") for c in others[: limit - 1]}
    pairs = {(db.short(c), db.short(s)) for c, s in courses.enrolled_from_events(events)}
    check(pairs == expected, "the enrollments are exactly the accepted ones")


def arguments() -> argparse.ArgumentParser:
    result = parser(__doc__ or "")
    result.add_argument(
        "--max-courses",
        type=positive_int,
        default=courses.MAX_COURSES_PER_STUDENT,
        help="most courses a student may follow (default: %(default)s)",
    )
    return result


if __name__ == "__main__":
    run(main, arguments())
