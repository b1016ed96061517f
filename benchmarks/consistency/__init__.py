"""A consistency checker for the event store: many workers make random decisions in
varied host transactions for a bounded time; afterwards the whole stored log is checked
against what each of them read, appended and was told.

``python -m benchmarks.consistency --help`` runs it from the command line;
``tests/test_consistency.py`` runs it briefly in CI. See ``docs/testing.md``.
"""

from benchmarks.consistency.runner import BACKENDS, DEFAULT_WORKERS, Settings, run
from benchmarks.consistency.summary import Summary
from benchmarks.consistency.verify import Violation
from benchmarks.consistency.workload import Vocabulary

__all__ = ["BACKENDS", "DEFAULT_WORKERS", "Settings", "Summary", "Violation", "Vocabulary", "run"]
