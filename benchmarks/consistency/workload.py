"""Random queries and events over a small vocabulary, so consistency boundaries overlap often.

The vocabulary (``types`` event types, ``tags`` tags) is renewed every ``generation_seconds``
(names get a ``.<generation>`` suffix): within a generation scopes overlap as much as a
small pool makes them, and a long run does not make every read return an ever-growing
history.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sa_crablet import Event, Query, QueryItem


@dataclass(frozen=True, slots=True)
class Vocabulary:
    types: int = 6
    tags: int = 8
    generation_seconds: float = 2.0

    def names(self, elapsed: float) -> tuple[list[str], list[str]]:
        """The event types and tags in use ``elapsed`` seconds into the run."""
        generation = int(elapsed // self.generation_seconds)
        suffix = f".{generation}" if generation else ""
        return (
            [f"T{i}{suffix}" for i in range(self.types)],
            [f"g{i}{suffix}" for i in range(self.tags)],
        )


def random_item(rng: random.Random, types: list[str], tags: list[str]) -> QueryItem:
    """Types only, tags only, or both; one or two of each (tags are AND-ed, types OR-ed)."""
    shape = rng.random()
    chosen_types = rng.sample(types, rng.randint(1, 2)) if shape < 0.3 or shape >= 0.6 else []
    chosen_tags = rng.sample(tags, rng.randint(1, 2)) if shape >= 0.3 else []
    return QueryItem(chosen_types, chosen_tags)


def random_query(rng: random.Random, types: list[str], tags: list[str]) -> Query:
    """One to three items (OR-ed)."""
    return Query([random_item(rng, types, tags) for _ in range(rng.choice((1, 1, 2, 3)))])


def random_events(
    rng: random.Random, types: list[str], tags: list[str], attempt: str
) -> list[Event]:
    """One to three events of random types with zero to three tags; each carries the
    attempt's marker and its index in the batch, so every stored event traces back to the
    call that wrote it."""
    count = rng.choice((1, 1, 2, 3))
    return [
        Event(
            rng.choice(types),
            rng.sample(tags, rng.choice((0, 1, 1, 2, 3))),
            {"attempt": attempt, "i": i, "n": count},
        )
        for i in range(count)
    ]
