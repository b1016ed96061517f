"""The TypeScript peer's installation for the benchmark suite (``benchmarks.ts_peer``).

The manifest rewrite that makes the published package installable, and the skips (no Node,
no registry), checked without installing anything.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest

from benchmarks.ts_peer import install

PUBLISHED = {
    "name": "@dcb-es/event-store-postgres",
    "version": "7.0.1",
    "type": "module",
    "exports": {".": {"types": "./dist/index.d.ts", "import": "./dist/index.js"}},
    "scripts": {"build": "tsc -p tsconfig.json", "prepublishOnly": "exit 1"},
    "dependencies": {
        "@dcb-es/event-store": "workspace:*",
        "pg": "^8.11.5",
        "pg-copy-streams": "^7.0.0",
    },
    "devDependencies": {"testcontainers": "^10.9.0"},
}
"""The fields of the peer's published manifest that the rewrite reads or changes."""


# -- installing, without Node ---------------------------------------------------------------------


def test_the_workspace_dependency_points_at_the_sibling_folder() -> None:
    published = copy.deepcopy(PUBLISHED)
    rewritten = install.rewrite_manifest(published, {install.SIBLING: "../event-store"})
    assert rewritten["dependencies"] == {
        "@dcb-es/event-store": "file:../event-store",
        "pg": "^8.11.5",
        "pg-copy-streams": "^7.0.0",
    }
    assert "devDependencies" not in rewritten and "scripts" not in rewritten
    assert rewritten["exports"] == PUBLISHED["exports"]  # what Node resolves is untouched
    assert published == PUBLISHED  # the input is left as it was


def test_a_workspace_dependency_without_a_sibling_is_refused() -> None:
    with pytest.raises(ValueError, match="@dcb-es/event-store"):
        install.rewrite_manifest(PUBLISHED, {})


def test_the_scratch_project_depends_on_both_folders_and_on_pg() -> None:
    peer = install.rewrite_manifest(PUBLISHED, {install.SIBLING: "../event-store"})
    root = install.root_manifest(peer)
    assert root["private"] is True
    assert root["dependencies"] == {
        "@dcb-es/event-store": "file:vendor/event-store",
        "@dcb-es/event-store-postgres": "file:vendor/event-store-postgres",
        "pg": "^8.11.5",
    }


def test_npm_errors_are_reduced_to_what_went_wrong() -> None:
    output = (
        "npm error code ECONNREFUSED\nnpm error syscall connect\n"
        "npm error FetchError: request to http://127.0.0.1:9/x failed\n"
        "npm error     at ClientRequest.<anonymous> (index.js:130:14)\n"
        "npm error A complete log of this run can be found in: /tmp/x.log\n"
    )
    assert install.npm_error(output) == (
        "code ECONNREFUSED / FetchError: request to http://127.0.0.1:9/x failed"
    )


def test_without_node_the_peer_is_skipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no node, no npm
    found = install.prepare(tmp_path / "peer")
    assert isinstance(found, install.Skipped)
    assert "node is not installed" in found.reason
    assert found.describe()["status"] == "skipped"
    assert not (tmp_path / "peer").exists()


@pytest.mark.skipif(not (shutil.which("node") and shutil.which("npm")), reason="needs node, npm")
def test_without_the_registry_the_peer_is_skipped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")  # nothing listens there
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    found = install.prepare(tmp_path / "cache" / "peer")
    assert isinstance(found, install.Skipped)
    assert "npm pack" in found.reason and "ECONNREFUSED" in found.reason
    assert list((tmp_path / "cache").iterdir()) == []  # no half-built folder left behind
