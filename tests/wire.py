"""What a psycopg connection sends and receives, read from libpq's own protocol trace:
statements and round trips observed on the wire, whichever runner sent them, with no hook
into SQLAlchemy (whose listeners would change which runner runs) and none into the store."""

from __future__ import annotations

import os
import re
import shlex
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg import pq
from sqlalchemy.orm import Session

_MESSAGE = re.compile(r"^[FB]\t\d+\t\w+")


@dataclass
class Wire:
    path: Path
    lines: list[str] = field(default_factory=list)

    def read(self) -> None:
        """One entry per protocol message: a message's text may span several lines (the
        statements the store sends are multi-line)."""
        messages: list[str] = []
        for line in self.path.read_text(errors="replace").splitlines():
            if _MESSAGE.match(line) or not messages:
                messages.append(line)
            else:
                messages[-1] += "\n" + line
        self.lines = messages

    @property
    def sent(self) -> list[str]:
        """The SQL of every statement sent: simple queries (which may hold several) and
        the statements of the extended protocol."""
        found = []
        for message in self.lines:
            parts = message.split("\t", 3)
            if len(parts) == 4 and parts[0] == "F" and parts[2] in ("Query", "Parse"):
                text = parts[3].strip()
                if parts[2] == "Parse":  # "<name>" "<sql>" <types...>: the second string
                    text = text[text.index('"', 1) + 1 :].lstrip()
                found.append(text[1 : text.rindex('"')])
        return found

    @property
    def executed(self) -> list[tuple[str, bool]]:
        """Each statement of the extended protocol as it ran: its SQL (from the ``Parse`` it
        was bound to, a prepared one's too) and whether its ``Bind`` asked for its result
        in binary format (every column)."""
        parsed: dict[str, str] = {}
        found = []
        for message in self.lines:
            parts = message.split("\t", 3)
            if len(parts) != 4 or parts[0] != "F":
                continue
            if parts[2] == "Parse":
                name, sql = shlex.split(parts[3])[:2]
                parsed[name] = sql
            elif parts[2] == "Bind":
                fields = shlex.split(parts[3])
                sql = parsed.get(fields[1], f"<{fields[1]}, prepared before the trace>")
                codes = _result_formats(fields[2:])
                found.append((sql, bool(codes) and set(codes) == {1}))
        return found

    @property
    def round_trips(self) -> int:
        """Requests answered: each simple query, and each extended-protocol Sync."""
        return sum(1 for line in self.lines if line.startswith("B\t") and "ReadyForQuery" in line)

    def clear(self) -> None:
        self.path.write_text("")
        self.lines = []


def _result_formats(fields: list[str]) -> list[int]:
    """The result format codes at the end of a traced ``Bind``: after the parameters'
    format codes, then the parameters (each a length and, unless NULL (-1), a value)."""
    formats = int(fields[0])
    index = 1 + formats
    for _ in range(int(fields[index])):
        index += 1 if fields[index + 1] == "-1" else 2
    index += 1
    return [int(code) for code in fields[index + 1 : index + 1 + int(fields[index])]]


@contextmanager
def wire(session: Session) -> Iterator[Wire]:
    """Trace the session's current connection until the block ends (read the result after)."""
    with wire_of(session.connection().connection.driver_connection) as traced:
        yield traced


@contextmanager
def wire_of(raw: Any) -> Iterator[Wire]:
    """Trace a psycopg connection (also while a pool lends it to others) until the block
    ends."""
    pgconn = raw.pgconn
    handle, name = tempfile.mkstemp(prefix="sa_crablet_wire_")
    traced = Wire(Path(name))
    try:
        pgconn.trace(handle)
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            yield traced
        finally:
            pgconn.untrace()
            traced.read()
    finally:
        os.close(handle)
        os.unlink(name)
