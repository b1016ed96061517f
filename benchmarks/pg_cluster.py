"""A throwaway PostgreSQL 15 cluster: initdb into a temporary directory, started on a free
port of 127.0.0.1, restarted or stopped at will, removed at the end.

Fault runs restart and kill servers; they must never do that to a shared server, so they
get one of their own. The server binaries run as the ``postgres`` OS user (``runuser``
when this process is root, directly when it already is that user).

The cluster is configured for faults rather than durability: ``fsync`` off, and a
synchronous standby that never exists (``synchronous_standby_names``) with
``synchronous_commit = local`` as the default, so nothing waits for it, except a
connection that sets ``synchronous_commit = on`` itself: its COMMIT then waits forever
after the commit record is written, which is how a fault can be injected at COMMIT time
deterministically (see ``benchmarks.fault_kit``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

BIN_VARIABLE = "SA_CRABLET_PG_BIN"
BIN_DIR = Path(os.environ.get(BIN_VARIABLE, "/usr/lib/postgresql/15/bin"))
"""Where ``initdb`` and ``pg_ctl`` are (another directory through ``SA_CRABLET_PG_BIN``)."""
OS_USER = "postgres"
ABSENT_STANDBY = "sa_crablet_absent_standby"

SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "local",
    "synchronous_standby_names": f"'{ABSENT_STANDBY}'",
    "max_connections": "60",
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
    "log_connections": "off",
    "log_disconnections": "off",
}


class ClusterUnavailable(Exception):
    """No throwaway cluster can be made here (binaries or the OS user missing, not root)."""


def unavailable_reason() -> str | None:
    """Why no throwaway cluster can be made here, or ``None`` when one can."""
    for name in ("initdb", "pg_ctl", "postgres"):
        if not (BIN_DIR / name).is_file():
            return f"{BIN_DIR / name} not found"
    try:
        user = pwd.getpwnam(OS_USER)
    except KeyError:
        return f"no {OS_USER!r} OS user"
    if os.geteuid() not in (0, user.pw_uid):
        return f"must run as root or as {OS_USER!r} to start a cluster"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "runuser not found"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class Cluster:
    """A running throwaway cluster. ``url`` is a SQLAlchemy URL of its ``postgres``
    database, ``dsn`` the same in libpq form."""

    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{OS_USER}@127.0.0.1:{self.port}/postgres"

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={OS_USER} dbname=postgres"

    def url_of(self, database: str) -> str:
        return f"postgresql+psycopg://{OS_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database; its SQLAlchemy URL."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_of(name)

    def start(self) -> None:
        self._ctl("start", "-l", str(self.log))

    def stop(self, mode: str = "fast") -> None:
        self._ctl("stop", "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        """Stop (``fast``: backends terminated, ``immediate``: killed, crash recovery at
        start) and start again; returns once the server accepts connections."""
        self._ctl("restart", "-m", mode, "-l", str(self.log))

    def running(self) -> bool:
        done = _run(_as_owner([str(BIN_DIR / "pg_ctl"), "-D", str(self.data), "status"]), False)
        return done.returncode == 0

    def _ctl(self, action: str, *options: str) -> None:
        command = [str(BIN_DIR / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", action]
        _run(_as_owner([*command, *options]))


def _as_owner(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", OS_USER, "--", *command]
    return command


def _run(command: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if check and done.returncode != 0:
        raise ClusterUnavailable(
            f"{' '.join(command)} failed ({done.returncode}): {done.stderr or done.stdout}"
        )
    return done


def _initdb(root: Path, port: int) -> Cluster:
    owner = pwd.getpwnam(OS_USER)
    os.chown(root, owner.pw_uid, owner.pw_gid)
    cluster = Cluster(root, port)
    initdb = [str(BIN_DIR / "initdb"), "-D", str(cluster.data), "-U", OS_USER, "-A", "trust"]
    _run(_as_owner([*initdb, "-E", "UTF8", "--no-sync", "--no-instructions"]))
    settings = dict(SETTINGS, port=str(port), unix_socket_directories=f"'{root}'")
    with (cluster.data / "postgresql.conf").open("a") as conf:
        conf.write("\n# sa_crablet fault run\n")
        conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
    return cluster


@contextmanager
def throwaway_cluster() -> Iterator[Cluster]:
    """A fresh cluster, started; stopped (immediately) and deleted on exit, also when the
    body failed or the cluster is already down."""
    reason = unavailable_reason()
    if reason is not None:
        raise ClusterUnavailable(reason)
    root = Path(tempfile.mkdtemp(prefix="sa_crablet_cluster_"))
    cluster: Cluster | None = None
    try:
        cluster = _initdb(root, free_port())
        cluster.start()
        yield cluster
    finally:
        if cluster is not None and cluster.running():
            _run(
                _as_owner(
                    [
                        str(BIN_DIR / "pg_ctl"),
                        "-D",
                        str(cluster.data),
                        "-m",
                        "immediate",
                        "-w",
                        "stop",
                    ]
                ),
                False,
            )
        shutil.rmtree(root, ignore_errors=True)
