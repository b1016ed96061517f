"""What a run did and what the verifier found, as figures and as text."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from benchmarks.consistency.history import (
    CARRIED_NAIVE,
    AppendRecord,
    CheckRecord,
    ReadRecord,
    Unit,
)
from benchmarks.consistency.verify import Verdict, Violation


@dataclass(frozen=True, slots=True)
class Summary:
    backend: str
    workers: int
    seconds: float
    seed: int
    decider: str
    hosts: tuple[str, ...]
    units: dict[str, int]
    """Units (host transactions) by how they ended."""
    aborted_by: dict[str, int]
    """Aborted units by the database's code for the refusal (40P01: deadlock, ...)."""
    decisions: int
    conditional_accepted: int
    conditional_refused: int
    unconditional_accepted: int
    unconditional_refused: int
    checks_passed: int
    checks_refused: int
    reads: int
    events_checked: int
    core_statements: int
    """Statements SQLAlchemy Core executed for the ``core-listener`` hosts."""
    by_host: dict[str, int]
    """Units per host."""
    violations: tuple[Violation, ...]
    interleaved: tuple[Violation, ...]
    """Batches that other events interleave (not violations unless asked for)."""

    @property
    def violation_count(self) -> int:
        return len(self.violations)

    def violations_of(self, kind: str, decider: str | None = None) -> list[Violation]:
        return [
            v
            for v in self.violations
            if v.kind == kind and (decider is None or v.decider == decider)
        ]

    def render(self, show: int = 20) -> str:
        kinds = Counter(v.kind for v in self.violations)
        lines = [
            f"consistency run: {self.backend}, {self.workers} workers, {self.seconds:.1f} s, "
            f"seed {self.seed}, decider {self.decider}",
            f"hosts: {', '.join(f'{h} ({self.by_host.get(h, 0)})' for h in self.hosts)}",
        ]
        shown: Counter[str] = Counter()
        for violation in self.violations:
            if shown[violation.kind] < show:
                lines.append(violation.render())
            shown[violation.kind] += 1
        for kind, count in sorted(kinds.items()):
            if count > show:
                lines.append(f"[{kind}] ... and {count - show} more")
        if self.interleaved:
            lines.append("interleaved batches (not violations: contiguity is not promised):")
            lines.extend(v.render() for v in self.interleaved[:show])
        by_kind = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
        rows = [
            ("workers", str(self.workers)),
            ("transactions", ", ".join(f"{k} {v}" for k, v in sorted(self.units.items()))),
            (
                "aborted by",
                ", ".join(f"{k} {v}" for k, v in sorted(self.aborted_by.items())) or "-",
            ),
            ("decisions", str(self.decisions)),
            (
                "conditional appends",
                f"accepted {self.conditional_accepted}, refused {self.conditional_refused}",
            ),
            (
                "unconditional appends",
                f"accepted {self.unconditional_accepted}, refused {self.unconditional_refused}",
            ),
            ("checks", f"passed {self.checks_passed}, refused {self.checks_refused}"),
            ("reads", str(self.reads)),
            ("core statements seen", str(self.core_statements)),
            ("events checked", str(self.events_checked)),
            ("interleaved batches", str(len(self.interleaved))),
            (
                "violations",
                f"{self.violation_count} ({by_kind})" if kinds else "0",
            ),
        ]
        lines.append("")
        lines.extend(f"{name:<24}{value}" for name, value in rows)
        return "\n".join(lines)


def summarize(
    *,
    backend: str,
    workers: int,
    seconds: float,
    seed: int,
    decider: str,
    hosts: tuple[str, ...],
    units: list[Unit],
    verdict: Verdict,
    core_statements: int,
) -> Summary:
    appends = [op for u in units for op in u.ops if isinstance(op, AppendRecord)]
    checks = [op for u in units for op in u.ops if isinstance(op, CheckRecord)]
    conditional = [a for a in appends if a.decision and a.decision.carried != CARRIED_NAIVE]
    unconditional = [a for a in appends if not (a.decision and a.decision.carried != CARRIED_NAIVE)]
    return Summary(
        backend=backend,
        workers=workers,
        seconds=seconds,
        seed=seed,
        decider=decider,
        hosts=hosts,
        units=dict(Counter(u.outcome for u in units)),
        aborted_by=dict(Counter(u.cause for u in units if u.cause is not None)),
        decisions=sum(1 for a in appends if a.decision is not None) + len(checks),
        conditional_accepted=sum(1 for a in conditional if a.ok),
        conditional_refused=sum(1 for a in conditional if a.outcome == "refused"),
        unconditional_accepted=sum(1 for a in unconditional if a.ok),
        unconditional_refused=sum(1 for a in unconditional if a.outcome == "refused"),
        checks_passed=sum(1 for c in checks if c.passed),
        checks_refused=sum(1 for c in checks if not c.passed),
        reads=sum(1 for u in units for op in u.ops if isinstance(op, ReadRecord)),
        events_checked=verdict.events_checked,
        core_statements=core_statements,
        by_host=dict(Counter(u.host for u in units)),
        violations=tuple(verdict.violations),
        interleaved=tuple(verdict.interleaved),
    )
