"""The course subscription example of the DCB specification, used by the tests.

A course has a capacity; a student may join at most ``MAX_COURSES`` courses; one
``StudentSubscribedToCourse`` event carries both the course and the student tag.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sa_crablet import (
    DecisionModel,
    Event,
    EventStore,
    Query,
    QueryItem,
    SequencedEvent,
    StateProjector,
)
from sa_crablet.projectors import counter, exists

MAX_COURSES = 2
DEFINED = "CourseDefined"
SUBSCRIBED = "StudentSubscribedToCourse"


class Refused(Exception):
    """A domain rule said no."""


@dataclass(frozen=True)
class CourseState:
    defined: bool = False
    capacity: int = 0
    subscriptions: int = 0


def course_transition(state: CourseState, event: SequencedEvent) -> CourseState:
    if event.type == DEFINED:
        return replace(state, defined=True, capacity=int(event.data["capacity"]))
    return replace(state, subscriptions=state.subscriptions + 1)


def define_course(store: EventStore, course: str, capacity: int) -> None:
    store.append(Event(DEFINED, [f"course:{course}"], {"capacity": capacity}))


def decision_model(store: EventStore, student: str, course: str) -> DecisionModel:
    course_tag, student_tag = f"course:{course}", f"student:{student}"
    return store.project(
        [
            StateProjector(
                "course",
                Query([QueryItem([DEFINED, SUBSCRIBED], [course_tag])]),
                CourseState(),
                course_transition,
            ),
            counter("student_courses", Query([QueryItem([SUBSCRIBED], [student_tag])])),
            exists("already", Query([QueryItem([SUBSCRIBED], [course_tag, student_tag])])),
        ]
    )


def subscribe(store: EventStore, student: str, course: str) -> int:
    """Read once, decide, append only if nothing relevant changed."""
    model = decision_model(store, student, course)
    state: CourseState = model.states["course"]
    if not state.defined:
        raise Refused("no such course")
    if model.states["already"]:
        raise Refused("already subscribed")
    if state.subscriptions >= state.capacity:
        raise Refused("course is full")
    if model.states["student_courses"] >= MAX_COURSES:
        raise Refused("student has too many courses")
    event = Event(SUBSCRIBED, [f"course:{course}", f"student:{student}"])
    return store.append(event, model.append_condition)
