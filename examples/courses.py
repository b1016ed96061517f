"""The course-enrollment domain shared by the enrollment example and the web apps.

Events (tags in brackets):

* ``CourseScheduled`` [course:<id>] ``{"course_id", "title", "capacity"}``
* ``StudentRegistered`` [student:<id>] ``{"student_id", "name"}``
* ``StudentEnrolled`` [course:<id>, student:<id>] ``{"course_id", "student_id"}``
* ``StudentUnenrolled`` [course:<id>, student:<id>] ``{"course_id", "student_id"}``

Rules: a course or a student exists once; a course never has more students than its
capacity; a student follows at most ``max_courses`` courses; unenrolling frees the seat.

Every decision is a :class:`Decider`: the projectors it needs (folded with one query) and
the rule that turns their model into the event to append, or refuses. :func:`decide` runs one
on an ``EventStore``, :func:`decide_async` on an ``AsyncEventStore``: project, decide, append
with the decision model's append condition, so a decision made on stale state is refused
with ``sa_crablet.ConcurrencyError`` instead of breaking a rule. Nothing here commits: the
caller owns the transaction (a ``Session`` or an ``AsyncSession``), so its own writes commit
with these events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sa_crablet import (
    DecisionModel,
    Event,
    EventStore,
    Query,
    QueryItem,
    SequencedEvent,
    StateProjector,
)
from sa_crablet.events import tag
from sa_crablet.projectors import by_type, exists

if TYPE_CHECKING:  # a synchronous program never loads SQLAlchemy's asyncio layer
    from sa_crablet import AsyncEventStore

COURSE_SCHEDULED = "CourseScheduled"
STUDENT_REGISTERED = "StudentRegistered"
STUDENT_ENROLLED = "StudentEnrolled"
STUDENT_UNENROLLED = "StudentUnenrolled"

MAX_COURSES_PER_STUDENT = 3


class Refused(Exception):
    """A domain rule said no. ``code`` is machine-readable; ``status`` the HTTP status a
    web API answers with (409: the current state forbids it)."""

    status = 409

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


class Invalid(Refused):
    """The request itself is wrong (422)."""

    status = 422


class NotFound(Refused):
    """The addressed course does not exist (404)."""

    status = 404


def course_tag(course_id: str) -> str:
    return tag("course", course_id)


def student_tag(student_id: str) -> str:
    return tag("student", student_id)


# -- states and projectors -----------------------------------------------------------------------


@dataclass(frozen=True)
class CourseState:
    scheduled: bool = False
    title: str = ""
    capacity: int = 0
    students: frozenset[str] = field(default_factory=frozenset)

    @property
    def seats_left(self) -> int:
        return self.capacity - len(self.students)


@dataclass(frozen=True)
class StudentState:
    registered: bool = False
    name: str = ""
    courses: frozenset[str] = field(default_factory=frozenset)


def _scheduled(state: CourseState, event: SequencedEvent) -> CourseState:
    return replace(
        state, scheduled=True, title=str(event.data["title"]), capacity=int(event.data["capacity"])
    )


def _course_enrolled(state: CourseState, event: SequencedEvent) -> CourseState:
    return replace(state, students=state.students | {str(event.data["student_id"])})


def _course_unenrolled(state: CourseState, event: SequencedEvent) -> CourseState:
    return replace(state, students=state.students - {str(event.data["student_id"])})


def _registered(state: StudentState, event: SequencedEvent) -> StudentState:
    return replace(state, registered=True, name=str(event.data["name"]))


def _student_enrolled(state: StudentState, event: SequencedEvent) -> StudentState:
    return replace(state, courses=state.courses | {str(event.data["course_id"])})


def _student_unenrolled(state: StudentState, event: SequencedEvent) -> StudentState:
    return replace(state, courses=state.courses - {str(event.data["course_id"])})


def course_projector(course_id: str, id: str = "course") -> StateProjector[CourseState]:
    """The course: scheduled?, title, capacity, enrolled students."""
    return by_type(
        id,
        [course_tag(course_id)],
        CourseState(),
        {
            COURSE_SCHEDULED: _scheduled,
            STUDENT_ENROLLED: _course_enrolled,
            STUDENT_UNENROLLED: _course_unenrolled,
        },
    )


def student_projector(student_id: str, id: str = "student") -> StateProjector[StudentState]:
    """The student: registered?, name, the courses followed."""
    return by_type(
        id,
        [student_tag(student_id)],
        StudentState(),
        {
            STUDENT_REGISTERED: _registered,
            STUDENT_ENROLLED: _student_enrolled,
            STUDENT_UNENROLLED: _student_unenrolled,
        },
    )


def enrollment_projectors(
    course_id: str, student_id: str
) -> tuple[StateProjector[CourseState], StateProjector[StudentState]]:
    """Both states an enrollment needs, folded with one query; the model's condition has two
    items: the course's events OR the student's events (never flattened into one)."""
    return course_projector(course_id), student_projector(student_id)


def enrollment_model(store: EventStore, course_id: str, student_id: str) -> DecisionModel:
    """The enrollment's decision model (see :func:`enrollment_projectors`)."""
    return store.project(enrollment_projectors(course_id, student_id))


# -- decisions -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decider:
    """One decision, runnable on either store: what to project, and the rule that turns the
    projected model into the event to append (or raises :class:`Refused`)."""

    projectors: tuple[StateProjector[Any], ...]
    rule: Callable[[DecisionModel], Event]


def decide(store: EventStore, decider: Decider) -> int:
    """Project, decide, append under the model's condition; return the event's position."""
    model = store.project(decider.projectors)
    return store.append(decider.rule(model), model.append_condition)


async def decide_async(store: AsyncEventStore, decider: Decider) -> int:
    """:func:`decide` on an ``AsyncEventStore``: the same decision, awaited."""
    model = await store.project(decider.projectors)
    return await store.append(decider.rule(model), model.append_condition)


def _check_id(kind: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"invalid_{kind}_id", f"a {kind} id is a non-empty string")
    return value


def scheduling(course_id: str, title: str, capacity: int) -> Decider:
    """Schedule a course, once. Bad input is refused now, before anything is read."""
    _check_id("course", course_id)
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise Invalid("invalid_capacity", "a course's capacity is a positive integer")
    if not isinstance(title, str) or not title.strip():
        raise Invalid("invalid_title", "a course needs a title")

    def rule(model: DecisionModel) -> Event:
        if model["scheduled"]:
            raise Refused("course_exists", f"course {course_id!r} is already scheduled")
        data = {"course_id": course_id, "title": title, "capacity": capacity}
        return Event(COURSE_SCHEDULED, [course_tag(course_id)], data)

    scheduled = Query.of(types=[COURSE_SCHEDULED], tags=[course_tag(course_id)])
    return Decider((exists("scheduled", scheduled),), rule)


def registration(student_id: str, name: str) -> Decider:
    """Register a student, once."""
    _check_id("student", student_id)
    if not isinstance(name, str) or not name.strip():
        raise Invalid("invalid_name", "a student needs a name")

    def rule(model: DecisionModel) -> Event:
        if model["registered"]:
            raise Refused("student_exists", f"student {student_id!r} is already registered")
        data = {"student_id": student_id, "name": name}
        return Event(STUDENT_REGISTERED, [student_tag(student_id)], data)

    registered = Query.of(types=[STUDENT_REGISTERED], tags=[student_tag(student_id)])
    return Decider((exists("registered", registered),), rule)


def decide_enrollment(
    model: DecisionModel,
    course_id: str,
    student_id: str,
    max_courses: int = MAX_COURSES_PER_STUDENT,
) -> Event:
    """The enrollment decision on a projected model: the event to append, or ``Refused``."""
    course: CourseState = model["course"]
    student: StudentState = model["student"]
    if not course.scheduled:
        raise NotFound("unknown_course", f"no course {course_id!r}")
    if not student.registered:
        raise Invalid("unknown_student", f"no student {student_id!r}")
    if student_id in course.students:
        raise Refused("already_enrolled", f"{student_id!r} is already enrolled in {course_id!r}")
    if course.seats_left <= 0:
        raise Refused("course_full", f"course {course_id!r} is full (capacity {course.capacity})")
    if len(student.courses) >= max_courses:
        raise Refused(
            "course_limit", f"{student_id!r} already follows {max_courses} courses, the maximum"
        )
    return Event(
        STUDENT_ENROLLED,
        [course_tag(course_id), student_tag(student_id)],
        {"course_id": course_id, "student_id": student_id},
    )


def enrollment(
    course_id: str, student_id: str, max_courses: int = MAX_COURSES_PER_STUDENT
) -> Decider:
    """Enroll a student in a course (:func:`decide_enrollment` on both states)."""
    _check_id("course", course_id)
    _check_id("student", student_id)
    return Decider(
        enrollment_projectors(course_id, student_id),
        lambda model: decide_enrollment(model, course_id, student_id, max_courses),
    )


def unenrollment(course_id: str, student_id: str) -> Decider:
    """Unenroll a student, which frees a seat of the course."""
    _check_id("course", course_id)
    _check_id("student", student_id)

    def rule(model: DecisionModel) -> Event:
        course: CourseState = model["course"]
        if not course.scheduled:
            raise NotFound("unknown_course", f"no course {course_id!r}")
        if student_id not in course.students:
            raise Refused("not_enrolled", f"{student_id!r} is not enrolled in {course_id!r}")
        return Event(
            STUDENT_UNENROLLED,
            [course_tag(course_id), student_tag(student_id)],
            {"course_id": course_id, "student_id": student_id},
        )

    return Decider((course_projector(course_id),), rule)


def schedule_course(store: EventStore, course_id: str, title: str, capacity: int) -> int:
    """Schedule a course once; return the event's position."""
    return decide(store, scheduling(course_id, title, capacity))


def register_student(store: EventStore, student_id: str, name: str) -> int:
    """Register a student once; return the event's position."""
    return decide(store, registration(student_id, name))


def enroll(
    store: EventStore,
    course_id: str,
    student_id: str,
    max_courses: int = MAX_COURSES_PER_STUDENT,
) -> int:
    """Enroll a student: project, decide, append under the model's condition."""
    return decide(store, enrollment(course_id, student_id, max_courses))


def unenroll(store: EventStore, course_id: str, student_id: str) -> int:
    """Unenroll a student, which frees a seat of the course."""
    return decide(store, unenrollment(course_id, student_id))


def course_state(store: EventStore, course_id: str) -> CourseState:
    state: CourseState = store.project([course_projector(course_id)])["course"]
    return state


def student_state(store: EventStore, student_id: str) -> StudentState:
    state: StudentState = store.project([student_projector(student_id)])["student"]
    return state


def enrollments_query(course_ids: Iterable[str]) -> Query:
    """The enrollment events of these courses."""
    return Query(
        [QueryItem([STUDENT_ENROLLED, STUDENT_UNENROLLED], [course_tag(c)]) for c in course_ids]
    )


def enrolled_from_events(events: Iterable[SequencedEvent]) -> set[tuple[str, str]]:
    """The (course, student) pairs enrolled after these events (in position order)."""
    pairs: set[tuple[str, str]] = set()
    for event in events:
        if event.type not in (STUDENT_ENROLLED, STUDENT_UNENROLLED):
            continue
        pair = (str(event.data["course_id"]), str(event.data["student_id"]))
        if event.type == STUDENT_ENROLLED:
            pairs.add(pair)
        else:
            pairs.discard(pair)
    return pairs
