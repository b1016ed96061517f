"""The documentation's code runs as written.

Every ```python block of README.md and of the Markdown pages under docs/ (subdirectories too)
is executed, file by file, in order, in one fresh namespace per file (so later blocks may use
names from earlier ones). A block whose opening fence is preceded by the line
``<!-- not-run -->`` is skipped: it needs PostgreSQL or belongs in another program (an Alembic
``env.py``). The demo module runs as a subprocess.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
NOT_RUN = "<!-- not-run -->"
OPENING = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+-]*)")
LINK = re.compile(r"\]\((?P<target>[^)#\s]+)(?:#[^)]*)?\)")


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language, first line of code (1-based) and source."""

    language: str
    line: int
    source: str
    run: bool


def blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    previous = ""  # the last non-blank line before the current one
    index = 0
    while index < len(lines):
        opening = OPENING.match(lines[index])
        if opening is None:
            if lines[index].strip():
                previous = lines[index].strip()
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        end = index + 1
        while end < len(lines) and not (
            lines[end].strip().startswith(fence) and not lines[end].strip().strip(fence[0])
        ):
            end += 1
        if end == len(lines):
            raise AssertionError(f"{path.name}:{index + 1}: unclosed code fence")
        body = [line.removeprefix(indent) for line in lines[index + 1 : end]]
        found.append(
            Block(
                opening["lang"].lower(),
                index + 2,
                textwrap.dedent("\n".join(body)) + "\n",
                previous != NOT_RUN,
            )
        )
        previous = ""
        index = end + 1
    return found


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # whatever a block writes lands in a temporary directory
    # A real module, so that classes defined in the docs (dataclasses, say) can find theirs.
    name = "_".join(path.relative_to(ROOT).with_suffix("").parts).replace("-", "_")
    module = types.ModuleType(f"sa_crablet_docs_{name}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for block in blocks(path):
        if block.language not in ("python", "py") or not block.run:
            continue
        # Pad with blank lines so tracebacks point at the Markdown file's own line numbers;
        # dont_inherit: this file's `from __future__` imports must not leak into the docs.
        source = "\n" * (block.line - 1) + block.source
        exec(compile(source, str(path), "exec", dont_inherit=True), module.__dict__)
    capsys.readouterr()


def test_every_document_has_code_that_runs() -> None:
    for path in (ROOT / "README.md", ROOT / "docs" / "quick-start.md"):
        assert any(b.language == "python" and b.run for b in blocks(path)), path


def test_expected_documents_exist() -> None:
    expected = {
        "docs/overview.md",
        "docs/quick-start.md",
        "docs/getting-started.md",
        "docs/low-level-implementation.md",
        "docs/concurrency-control.md",
        "docs/testing.md",
        "docs/examples/index.md",
        "docs/examples/web-apps.md",
    }
    assert expected <= {p.relative_to(ROOT).as_posix() for p in DOCUMENTS}


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    for match in LINK.finditer(path.read_text(encoding="utf-8")):
        target = match["target"]
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (path.parent / target).exists(), f"{path.name}: broken link {target}"


def test_demo_runs() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "sa_crablet.demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "ConcurrencyError" in completed.stdout
    assert "invariant holds" in completed.stdout
