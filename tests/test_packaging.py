"""What the repository promises about itself: one source for the version, and the README's
two newcomer commands being the ones CI runs (``.ci/newcomer`` reads them from the README).

The built distributions themselves are checked by ``.ci/wheel_check.py`` (in CI).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.version import Version

import sa_crablet

ROOT = Path(__file__).resolve().parent.parent
NEWCOMER = ROOT / ".ci" / "newcomer"


def newcomer_commands(root: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(root / ".ci" / "newcomer")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_version_is_read_from_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    dynamic = project["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "sa_crablet.__version__"}
    # Canonical PEP 440, so the distribution's metadata says exactly the same string.
    assert str(Version(sa_crablet.__version__)) == sa_crablet.__version__


def from_here(distribution: metadata.Distribution) -> bool:
    """Installed from this checkout, or metadata the build left in it."""
    if Path(str(distribution.locate_file(""))).resolve() == ROOT:
        return True
    direct_url = json.loads(distribution.read_text("direct_url.json") or "{}")
    return bool(direct_url.get("url") == ROOT.as_uri())


def test_the_installed_metadata_agrees_with_the_package() -> None:
    """When this checkout is installed (``pip install -e .``), the metadata of that install
    (the dist-info in site-packages, and the egg-info the build leaves in the checkout)
    carries ``sa_crablet.__version__``; reinstall after changing it."""
    ours = [dist for dist in metadata.distributions(name="sa-crablet") if from_here(dist)]
    if not ours:
        pytest.skip("this checkout is not the installed sa-crablet")
    assert {distribution.version for distribution in ours} == {sa_crablet.__version__}


def test_ci_runs_the_readme_newcomer_commands() -> None:
    completed = newcomer_commands()
    assert completed.returncode == 0, completed.stderr
    install_and_demo, install_and_test = completed.stdout.splitlines()
    assert install_and_demo.startswith("pip install -e . && python -m ")
    # .ci/run installs with the part before " && " early (lint and types need it) and runs
    # the part after it last.
    install, test = install_and_test.split(" && ")
    assert install.startswith("pip install -e ") and "[dev]" in install
    assert test.split()[0] == "pytest"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ".ci/newcomer" in ci
    getting_started = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    assert f"```bash\n{install_and_demo}\n{install_and_test}\n```" in getting_started


@pytest.mark.parametrize("count", [1, 3])
def test_newcomer_refuses_a_readme_without_exactly_two_commands(tmp_path: Path, count: int) -> None:
    (tmp_path / ".ci").mkdir()
    shutil.copy2(NEWCOMER, tmp_path / ".ci" / "newcomer")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = ["pip install -e . && python -m examples.ticket_booking", "pytest", "pytest -x"]
    start = readme.index("<!-- newcomer-commands")
    opening = readme.index("```bash\n", start) + len("```bash\n")
    closing = readme.index("```", opening)
    edited = readme[:opening] + "\n".join(lines[:count]) + "\n" + readme[closing:]
    (tmp_path / "README.md").write_text(edited, encoding="utf-8")
    completed = newcomer_commands(tmp_path)
    assert completed.returncode == 1
    assert "expected two commands" in completed.stderr
