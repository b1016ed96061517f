"""Install the TypeScript peer, pinned, into a scratch folder reused across runs.

``@dcb-es/event-store-postgres`` 7.0.1 was published with its sibling named as
``"@dcb-es/event-store": "workspace:*"`` (a pnpm workspace reference the registry does not
resolve), so ``npm install @dcb-es/event-store-postgres`` fails. Instead:

1. ``npm pack`` both packages at their pinned versions (the sibling 7.0.1 is the one released
   with it: the only version published);
2. unpack them side by side under ``vendor/`` and rewrite the peer's manifest so that the
   ``workspace:`` dependency reads ``file:../event-store`` (:func:`rewrite_manifest`);
3. ``npm install --install-links`` a private root project that depends on both folders and on
   ``pg`` (at the range the peer names): npm copies the folders into ``node_modules`` and
   the peer's ``file:`` dependency resolves to the same copy of the sibling, so the driver and
   the store share one module instance (its classes are compared with ``instanceof``).

Nothing runs the packages' scripts (``--ignore-scripts``). The folder is built under a
temporary name and renamed into place when complete, so a run that is interrupted, or two
runs at once, never leave a half-installed peer behind; a marker file names what it holds.
A missing ``node`` or ``npm``, a Node older than the peer's ``engines``, or a registry out of
reach gives a :class:`Skipped` with the reason, never an exception.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PEER = "@dcb-es/event-store-postgres"
PEER_VERSION = "7.0.1"
SIBLING = "@dcb-es/event-store"
SIBLING_VERSION = "7.0.1"
"""The sibling released with the peer (``workspace:*`` names it; 7.0.1 is its only version)."""
MIN_NODE = 18
"""The peer's ``engines``: ``node >= 18``."""
VENDOR = {PEER: "event-store-postgres", SIBLING: "event-store"}
"""Each package's folder under ``vendor/``."""
MARKER = "sa_crablet-ts-peer.json"
ROOT_NAME = "sa-crablet-bench-ts-peer"
DIRECTORY_ENV = "SA_CRABLET_TS_PEER_DIR"
DRIVER = Path(__file__).resolve().parent / "driver.mjs"
NPM_TIMEOUT = 300.0
NPM_DEFAULTS = {"npm_config_fetch_retries": "1", "npm_config_fetch_timeout": "30000"}


@dataclass(frozen=True, slots=True)
class Installation:
    """A complete installation of the peer, and the Node that runs it."""

    directory: Path
    node: str
    node_version: str
    pg_version: str

    def describe(self) -> dict[str, Any]:
        return {
            "status": "installed",
            "package": f"{PEER}@{PEER_VERSION}",
            "sibling": f"{SIBLING}@{SIBLING_VERSION}",
            "node": self.node_version,
            "pg": self.pg_version,
            "directory": str(self.directory),
        }


@dataclass(frozen=True, slots=True)
class Skipped:
    """Why the peer is not measured in this run."""

    reason: str

    def describe(self) -> dict[str, Any]:
        return {"status": "skipped", "package": f"{PEER}@{PEER_VERSION}", "reason": self.reason}


def default_directory() -> Path:
    """``$SA_CRABLET_TS_PEER_DIR``, else ``ts-peer-<version>`` in the user's cache folder."""
    explicit = os.environ.get(DIRECTORY_ENV)
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "sa_crablet-bench" / f"ts-peer-{PEER_VERSION}"


# -- the manifests (pure) -------------------------------------------------------------------------


def rewrite_manifest(manifest: Mapping[str, Any], siblings: Mapping[str, str]) -> dict[str, Any]:
    """``manifest`` with each ``workspace:`` dependency replaced by ``file:<path>`` from
    ``siblings`` (package name -> path relative to the package's folder), and without the
    development-only parts npm would otherwise look at (``devDependencies``, ``scripts``).

    Raises ``ValueError`` for a ``workspace:`` dependency with no sibling given: installing it
    from the registry instead would measure a different build.
    """
    out = {k: v for k, v in manifest.items() if k not in ("devDependencies", "scripts")}
    for field in ("dependencies", "peerDependencies", "optionalDependencies"):
        deps = manifest.get(field)
        if not deps:
            continue
        rewritten = {}
        for name, spec in deps.items():
            if str(spec).startswith("workspace:"):
                if name not in siblings:
                    raise ValueError(f"{name} is a workspace dependency and no sibling was given")
                spec = f"file:{siblings[name]}"
            rewritten[name] = spec
        out[field] = rewritten
    return out


def root_manifest(peer_manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The scratch project's ``package.json``: both vendored folders, and ``pg`` at the range
    the peer asks for (the driver opens the pool the store uses)."""
    pg = peer_manifest.get("dependencies", {}).get("pg")
    if not pg:
        raise ValueError(f"{PEER} no longer names pg among its dependencies")
    return {
        "name": ROOT_NAME,
        "private": True,
        "type": "module",
        "description": f"{PEER}@{PEER_VERSION} installed for sa_crablet's benchmarks",
        "dependencies": {
            SIBLING: f"file:vendor/{VENDOR[SIBLING]}",
            PEER: f"file:vendor/{VENDOR[PEER]}",
            "pg": pg,
        },
    }


def marker() -> dict[str, str]:
    """What a complete installation's marker file holds."""
    return {PEER: PEER_VERSION, SIBLING: SIBLING_VERSION}


# -- Node -----------------------------------------------------------------------------------------


def find_node() -> tuple[str, str] | Skipped:
    """``node``'s path and version, or why it cannot run the peer."""
    node = shutil.which("node")
    if node is None:
        return Skipped("node is not installed (the peer needs Node >= 18 and npm)")
    try:
        version = _run([node, "--version"], timeout=30).strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return Skipped(f"node --version failed: {exc}")
    major = version.lstrip("v").split(".")[0]
    if not major.isdigit() or int(major) < MIN_NODE:
        return Skipped(f"node {version} is older than the peer's engines (node >= {MIN_NODE})")
    return node, version


def _run(command: list[str], cwd: Path | None = None, timeout: float = NPM_TIMEOUT) -> str:
    # A registry out of reach fails in about a minute, not after npm's default retries;
    # the environment still decides (npm_config_* variables win over these).
    env = {**NPM_DEFAULTS, **os.environ}
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        reason = npm_error(done.stderr or done.stdout)
        raise subprocess.SubprocessError(f"{' '.join(Path(c).name for c in command[:2])}: {reason}")
    return done.stdout


def npm_error(output: str) -> str:
    """The lines of npm's error output that say what went wrong (its code and message, not
    the stack or the pointers to its log)."""
    noise = ("at ", "syscall ", "errno ", "A complete log", "If you are behind", "{", "}")
    lines = [line.removeprefix("npm error").strip() for line in output.splitlines()]
    kept = [line for line in lines if line and not line.startswith(noise)]
    return " / ".join(kept[:2]) or "no output"


# -- installing -----------------------------------------------------------------------------------


def installed(directory: Path) -> bool:
    try:
        found = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return bool(found == marker())


def prepare(directory: Path | None = None) -> Installation | Skipped:
    """The peer installed in ``directory`` (default: :func:`default_directory`), reusing a
    complete installation; or why it cannot be measured in this run."""
    found = find_node()
    if isinstance(found, Skipped):
        return found
    node, version = found
    directory = directory or default_directory()
    if not installed(directory):
        npm = shutil.which("npm")
        if npm is None:
            return Skipped("npm is not installed (it fetches the peer from the registry)")
        try:
            _install(npm, directory)
        except (OSError, ValueError, subprocess.SubprocessError, tarfile.TarError) as exc:
            return Skipped(f"installing {PEER}@{PEER_VERSION} failed: {exc}")
    pg = json.loads((directory / "node_modules" / "pg" / "package.json").read_text())
    return Installation(directory, node, version, str(pg["version"]))


def _install(npm: str, directory: Path) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        _build(npm, scratch)
        if directory.exists() and not installed(directory) and _ours(directory):
            shutil.rmtree(directory)  # an older or broken installation of ours
        try:
            scratch.rename(directory)
        except OSError:
            if not installed(directory):  # not another run's complete installation
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _ours(directory: Path) -> bool:
    try:
        found = json.loads((directory / "package.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(found.get("name") == ROOT_NAME)


def _build(npm: str, root: Path) -> None:
    packed = root / "packed"
    packed.mkdir()
    out = _run(
        [
            npm,
            "pack",
            f"{PEER}@{PEER_VERSION}",
            f"{SIBLING}@{SIBLING_VERSION}",
            "--json",
            "--pack-destination",
            str(packed),
        ],
        cwd=root,
    )
    tarballs = {str(p["name"]): packed / str(p["filename"]) for p in json.loads(out)}
    manifests = {}
    for name, folder in VENDOR.items():
        if name not in tarballs:
            raise ValueError(f"npm pack did not return {name}")
        manifests[name] = _unpack(tarballs[name], root / "vendor" / folder)
    for name, version in marker().items():
        if manifests[name].get("version") != version:
            raise ValueError(f"{name}: npm pack gave {manifests[name].get('version')}")
    siblings = {SIBLING: f"../{VENDOR[SIBLING]}"}
    peer = rewrite_manifest(manifests[PEER], siblings)
    _write_json(root / "vendor" / VENDOR[PEER] / "package.json", peer)
    _write_json(root / "package.json", root_manifest(peer))
    _run(
        [npm, "install", "--install-links", "--ignore-scripts", "--no-audit", "--no-fund"],
        cwd=root,
    )
    nested = root / "node_modules" / PEER / "node_modules" / SIBLING
    if nested.exists():  # two copies: AppendConditionError would not be the store's class
        raise ValueError(f"npm installed a second copy of {SIBLING} under {PEER}")
    _write_json(root / MARKER, marker())


def _unpack(tarball: Path, folder: Path) -> dict[str, Any]:
    """Unpack an npm tarball (its files sit under ``package/``) into ``folder``; its manifest."""
    staging = folder.parent / f".{folder.name}"
    with tarfile.open(tarball) as archive:
        archive.extractall(staging, filter="data")
    (staging / "package").rename(folder)
    shutil.rmtree(staging)
    manifest: dict[str, Any] = json.loads((folder / "package.json").read_text())
    return manifest


def _write_json(path: Path, value: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
