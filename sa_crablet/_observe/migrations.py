"""Runs of sa_crablet's migrations, observed from their Alembic environment
(:func:`sa_crablet.migrate.run_env`): each step at DEBUG, the run at INFO (from which
revision to which, how long)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from time import perf_counter
from typing import Any

from sa_crablet._observe.logs import MIGRATIONS, Facts, emit, milliseconds
from sa_crablet._observe.report import DEBUG, INFO, WARNING

BASE = "base"
"""How a run shows the empty schema (Alembic's name for no revision)."""


def _revisions(ids: tuple[str, ...] | list[str]) -> str:
    return ", ".join(ids) if ids else BASE


class MigrationRun:
    """One Alembic command's run of the migrations: :meth:`applied` is its
    ``on_version_apply`` hook, :meth:`observed` goes around ``run_migrations()``."""

    def __init__(self) -> None:
        self.steps: list[Any] = []

    def applied(self, *, step: Any, **_: Any) -> None:
        """Alembic's ``on_version_apply``: a step is done (its transaction not yet)."""
        self.steps.append(step)
        if MIGRATIONS.isEnabledFor(DEBUG):
            facts: Facts = {
                "operation": "upgrade" if step.is_upgrade else "downgrade",
                "from_revision": _revisions(step.source_revision_ids),
                "to_revision": _revisions(step.destination_revision_ids),
            }
            emit(
                MIGRATIONS,
                DEBUG,
                "%s step %s -> %s applied",
                (facts["operation"], facts["from_revision"], facts["to_revision"]),
                facts,
            )

    @contextmanager
    def observed(self, context: Any) -> Iterator[None]:
        """Around ``context.run_migrations()``: the run's record once it ends."""
        start = perf_counter()
        online = not context.is_offline_mode()
        before = _revisions(context.get_context().get_current_heads()) if online else None
        try:
            yield
        except BaseException as error:
            facts = self._facts(before, None, perf_counter() - start)
            facts["error"] = type(error).__qualname__
            emit(
                MIGRATIONS,
                WARNING,
                "%s from %s failed after %s steps (%.3f ms): %s",
                (
                    facts["operation"],
                    facts["from_revision"],
                    facts["steps"],
                    facts["duration_ms"],
                    facts["error"],
                ),
                facts,
            )
            raise
        after = _revisions(context.get_context().get_current_heads()) if online else None
        facts = self._facts(before, after, perf_counter() - start)
        if not self.steps:
            message = "migrations: nothing to run at %s (%.3f ms)"
            args: tuple[Any, ...] = (facts["to_revision"], facts["duration_ms"])
        else:
            message = "%s from %s to %s: %s steps in %.3f ms"
            args = (
                facts["operation"],
                facts["from_revision"],
                facts["to_revision"],
                facts["steps"],
                facts["duration_ms"],
            )
        emit(MIGRATIONS, INFO, message, args, facts)

    def _facts(self, before: str | None, after: str | None, seconds: float) -> Facts:
        steps = self.steps
        operation = "migrate"  # nothing ran: no direction to tell
        if steps:
            operation = "upgrade" if steps[0].is_upgrade else "downgrade"
            before = before or _revisions(steps[0].source_revision_ids)
            after = after or _revisions(steps[-1].destination_revision_ids)
        facts: Facts = {
            "operation": operation,
            "from_revision": before,
            "to_revision": after or before,
            "steps": len(steps),
            "duration_ms": milliseconds(seconds),
        }
        return facts
