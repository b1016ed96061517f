"""Build sa_crablet's distributions, check them, and use the wheel as a user would.

    python .ci/wheel_check.py [--python python3.13]

Run it in an environment with ``.[dev]`` installed (build, twine, trove-classifiers); CI
runs it from ``.ci/run``. It

1. builds the sdist, and the wheel from that sdist (``python -m build``), so a file the
   sdist forgot fails the wheel;
2. checks their metadata: ``twine check --strict`` (the README renders), every classifier
   known to trove-classifiers (as an index checks on upload), the version equal to
   ``sa_crablet.__version__`` in the sources, the extras and project URLs;
3. checks their contents: the wheel holds every file of the package (``py.typed``, the
   migrations) and nothing else; the sdist also holds the README, CHANGELOG, LICENSE, docs;
4. installs the wheel, with its plain dependencies only (no extras), into a fresh virtual
   environment (``--python``: its interpreter), and from a directory outside the checkout
   imports the package, migrates a SQLite file and runs the demo in a process where psycopg
   cannot be imported (a SQLite-only program needs no libpq), runs
   ``python -m sa_crablet.demo``, ``sa_crablet.upgrade()`` on a fresh PostgreSQL database,
   and Alembic's command line with the README's ``alembic.ini`` (SQLite and PostgreSQL).

PostgreSQL is the server of ``SA_CRABLET_TEST_DATABASE_URL``, else the local default
(127.0.0.1:5432, user postgres); the databases it creates are dropped. Without a reachable
server those steps are skipped, unless ``SA_CRABLET_REQUIRE_POSTGRES=1`` (CI sets it).
"""

from __future__ import annotations

import argparse
import ast
import email.parser
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
EXTRAS = {"binary", "async", "test", "flask", "fastapi", "bench", "dev"}
PROJECT_URLS = {"Homepage", "Documentation", "Changelog", "Issues"}
CLASSIFIER_PREFIXES = (
    "Development Status ::",
    "Intended Audience ::",
    "Operating System ::",
    "Programming Language :: Python :: 3.11",
    "Topic :: Database",
    "Typing :: Typed",
)
NOT_INSTALLED = ("psycopg_binary", "psycopg_c", "asyncpg", "aiosqlite", "greenlet")
"""What only an extra brings: the plain install must work without any of them."""

ALEMBIC_INI = re.compile(r"^```ini\n(\[alembic\]\n.*?)^```", re.MULTILINE | re.DOTALL)
"""The README's ``alembic.ini`` for the packaged migrations, used as written."""

# Runs in the installed environment: ``python -c CHECK URL [upgrade]``. It checks that the
# package is the installed one, optionally upgrades, and that the database is at the head
# of the packaged migrations with sa_crablet's tables.
CHECK = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import sqlalchemy as sa
    from alembic.script import ScriptDirectory

    import sa_crablet
    from sa_crablet.migrate import alembic_config
    from sa_crablet.schema import VERSION_TABLE

    assert Path(sa_crablet.__file__).is_relative_to(sys.prefix), sa_crablet.__file__
    url = sys.argv[1]
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    if sys.argv[2:] == ["upgrade"]:
        sa_crablet.upgrade(engine)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine.connect() as conn:
        found = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
        tables = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert found == [head], (found, head)
    expected = {sa_crablet.events_table.name, sa_crablet.commands_table.name, VERSION_TABLE}
    assert expected <= tables, tables
    print(f"{url.split(':')[0]}: at {head}")
    """
)

# Runs in the installed environment with psycopg made unimportable, as it is without libpq.
WITHOUT_PSYCOPG = textwrap.dedent(
    """
    import importlib.util
    import runpy
    import sys

    sys.modules["psycopg"] = None  # any import of it now raises ImportError
    version, sqlite_url, check, not_installed = sys.argv[1:5]
    missing = [name for name in not_installed.split(",") if importlib.util.find_spec(name)]
    assert not missing, f"installed without any extra, yet present: {missing}"
    import sa_crablet

    assert sa_crablet.__version__ == version, (sa_crablet.__version__, version)
    sys.argv = ["-c", sqlite_url, "upgrade"]
    exec(check, {"__name__": "check"})
    sys.argv = ["sa_crablet.demo"]
    runpy.run_module("sa_crablet.demo", run_name="__main__")
    """
)


class CheckFailed(Exception):
    pass


def require(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


@contextmanager
def step(title: str) -> Iterator[None]:
    print(f"-- {title}", flush=True)
    started = time.perf_counter()
    yield
    print(f"   ({time.perf_counter() - started:.1f} s)", flush=True)


def run(command: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    completed = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if completed.returncode != 0:
        raise CheckFailed(
            f"{' '.join(command)} exited {completed.returncode}\n"
            f"{completed.stdout}{completed.stderr}"
        )
    return completed.stdout


def show(output: str) -> None:
    print(textwrap.indent(output.rstrip(), "   "), flush=True)


def source_version() -> str:
    tree = ast.parse((ROOT / "sa_crablet" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__version__" for target in node.targets
        ):
            return str(ast.literal_eval(node.value))
    raise CheckFailed("no __version__ in sa_crablet/__init__.py")


def tracked(*paths: str) -> set[str]:
    """The checkout's files under ``paths`` (git's list, so stray local files don't count)."""
    if (ROOT / ".git").exists():
        listed = run(["git", "ls-files", "--", *paths], cwd=ROOT).split("\n")
        return {name for name in listed if name and (ROOT / name).is_file()}
    return {
        str(path.relative_to(ROOT))
        for top in paths
        for path in (ROOT / top).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


# -- 1. build ------------------------------------------------------------------------------------


def build(dist: Path) -> tuple[Path, Path]:
    # The sdist step writes sa_crablet.egg-info into the checkout; left there, it would shadow
    # the installed distribution's metadata for anything run from the checkout.
    egg_info = ROOT / "sa_crablet.egg-info"
    left_before = egg_info.exists()
    try:
        run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], cwd=ROOT)
    finally:
        if not left_before:
            shutil.rmtree(egg_info, ignore_errors=True)
    (sdist,) = dist.glob("*.tar.gz")
    (wheel,) = dist.glob("*.whl")
    return sdist, wheel


# -- 2. metadata ---------------------------------------------------------------------------------


def check_metadata(metadata: Message, version: str) -> None:
    require(metadata["Name"] == "sa-crablet", f"name {metadata['Name']}")
    require(
        metadata["Version"] == version,
        f"the metadata says {metadata['Version']}, sa_crablet.__version__ says {version}",
    )
    require(metadata["License-Expression"] == "Apache-2.0", "no License-Expression")
    require(metadata.get_all("License-File") == ["LICENSE"], "LICENSE is not the license file")
    require(metadata["Description-Content-Type"] == "text/markdown", "README not Markdown")
    extras = set(metadata.get_all("Provides-Extra") or [])
    require(extras >= EXTRAS, f"extras missing: {sorted(EXTRAS - extras)}")
    urls = {value.split(",")[0] for value in metadata.get_all("Project-URL") or []}
    require(urls >= PROJECT_URLS, f"project URLs missing: {sorted(PROJECT_URLS - urls)}")
    require(bool(metadata["Keywords"]), "no keywords")
    check_classifiers(metadata.get_all("Classifier") or [], metadata["Requires-Python"])


def check_classifiers(classifiers: list[str], requires_python: str) -> None:
    from packaging.specifiers import SpecifierSet
    from trove_classifiers import classifiers as known

    unknown = [name for name in classifiers if name not in known]
    require(not unknown, f"classifiers an index would refuse: {unknown}")
    for prefix in CLASSIFIER_PREFIXES:
        require(any(name.startswith(prefix) for name in classifiers), f"no {prefix!r} classifier")
    supported = SpecifierSet(requires_python)
    for name in classifiers:
        python = name.removeprefix("Programming Language :: Python :: ")
        if python[:2] == "3." and python[2:].isdigit():
            require(python in supported, f"{name} contradicts Requires-Python {requires_python}")


# -- 3. contents ---------------------------------------------------------------------------------


def check_wheel(wheel: Path, version: str) -> Message:
    package = tracked("sa_crablet")
    required = {"sa_crablet/py.typed", "sa_crablet/migrations/env.py"}
    require(required <= package, "the checkout lacks py.typed or the migrations")
    require(
        any(name.startswith("sa_crablet/migrations/versions/") for name in package),
        "the checkout has no migration revisions",
    )
    info = f"sa_crablet-{version}.dist-info/"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = email.parser.Parser().parsestr(archive.read(info + "METADATA").decode())
    shipped = {name for name in names if not name.startswith(info)}
    require(shipped == package, f"wheel vs checkout: {sorted(shipped ^ package)}")
    require(info + "licenses/LICENSE" in names, "the wheel has no LICENSE")
    return metadata


def check_sdist(sdist: Path, version: str) -> Message:
    top = f"sa_crablet-{version}/"
    with tarfile.open(sdist) as archive:
        files = [member.name for member in archive.getmembers() if member.isfile()]
        names = {name.removeprefix(top) for name in files}
        pkg_info = archive.extractfile(top + "PKG-INFO")
        assert pkg_info is not None
        metadata = email.parser.Parser().parsestr(pkg_info.read().decode())
    expected = tracked("sa_crablet", "docs") | {
        "README.md",
        "CHANGELOG.md",
        "LICENSE",
        "pyproject.toml",
        "PKG-INFO",
    }
    require(expected <= names, f"missing from the sdist: {sorted(expected - names)}")
    require(not any(name.startswith("tests/") for name in names), "the sdist ships tests/")
    return metadata


# -- 4. the installed wheel ----------------------------------------------------------------------


def install(wheel: Path, venv: Path, python: str) -> Path:
    """A fresh virtual environment without pip (nothing in it but the wheel and what it
    requires), filled by this environment's pip; its pip cache is reused."""
    run([python, "-m", "venv", "--without-pip", str(venv)], cwd=venv.parent)
    interpreter = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(interpreter)]
    run([*pip, "install", "--quiet", str(wheel)], cwd=venv.parent)
    return interpreter


def installed_environment(venv: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
        and key not in {"SA_CRABLET_DATABASE_URL", "DATABASE_URL"}
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONSAFEPATH"] = "1"  # `python -c` and `-m` do not put the current directory first
    return env | extra


def postgres_server() -> str | None:
    """The server's URL, or None when none answers (a failure where it is required)."""
    from sqlalchemy import create_engine, text

    url = os.environ.get("SA_CRABLET_TEST_DATABASE_URL") or LOCAL_POSTGRES
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return url
    except Exception as error:
        if os.environ.get("SA_CRABLET_REQUIRE_POSTGRES") == "1":
            raise CheckFailed(f"no PostgreSQL at {url}: {error}") from error
        print(f"   PostgreSQL steps skipped: none at {url}")
        return None
    finally:
        engine.dispose()


@contextmanager
def fresh_database(server: str) -> Iterator[str]:
    from sqlalchemy import create_engine, make_url, text

    name = f"sa_crablet_wheel_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def use_installed(interpreter: Path, version: str, outside: Path) -> None:
    venv = interpreter.parent.parent
    env = installed_environment(venv)
    python = str(interpreter)
    with step("without psycopg: import, upgrade() a SQLite file, the demo"):
        arguments = [
            version,
            f"sqlite:///{outside / 'api.sqlite3'}",
            CHECK,
            ",".join(NOT_INSTALLED),
        ]
        show(run([python, "-c", WITHOUT_PSYCOPG, *arguments], cwd=outside, env=env))
    with step("python -m sa_crablet.demo"):
        out = run([python, "-m", "sa_crablet.demo"], cwd=outside, env=env)
        require("invariant holds" in out, out)
    ini = outside / "alembic.ini"
    found = ALEMBIC_INI.search((ROOT / "README.md").read_text(encoding="utf-8"))
    require(found is not None, "README.md has no alembic.ini block for the installed package")
    assert found is not None
    ini.write_text(found[1], encoding="utf-8")
    alembic = [str(venv / "bin" / "alembic"), "-c", str(ini), "upgrade", "head"]
    with step("alembic upgrade head (SQLite file)"):
        url = f"sqlite:///{outside / 'cli.sqlite3'}"
        run(alembic, cwd=outside, env=env | {"SA_CRABLET_DATABASE_URL": url})
        show(run([python, "-c", CHECK, url], cwd=outside, env=env))
    server = postgres_server()
    if server is None:
        return
    with step("upgrade() on a fresh PostgreSQL database"), fresh_database(server) as url:
        show(run([python, "-c", CHECK, url, "upgrade"], cwd=outside, env=env))
    with step("alembic upgrade head (fresh PostgreSQL database)"), fresh_database(server) as url:
        run(alembic, cwd=outside, env=env | {"SA_CRABLET_DATABASE_URL": url})
        show(run([python, "-c", CHECK, url], cwd=outside, env=env))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--python", default=sys.executable, help="the fresh environment's interpreter"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    version = source_version()
    work = Path(tempfile.mkdtemp(prefix="sa_crablet_wheel_"))
    try:
        with step(f"build the sdist and the wheel (sa-crablet {version})"):
            sdist, wheel = build(work / "dist")
        with step("twine check --strict; classifiers, version, extras, URLs; contents"):
            run(
                [sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)],
                cwd=work,
            )
            check_metadata(check_wheel(wheel, version), version)
            check_metadata(check_sdist(sdist, version), version)
        with step(f"install the wheel alone into a fresh environment ({args.python})"):
            interpreter = install(wheel, work / "venv", args.python)
        outside = work / "elsewhere"  # not the checkout: its sa_crablet is not importable
        outside.mkdir()
        use_installed(interpreter, version, outside)
    except CheckFailed as failure:
        print(f"wheel check FAILED: {failure}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wheel check passed in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
