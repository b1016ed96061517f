"""The API reference covers the public surface, and every public name has a docstring.

The reference pages (``docs/reference/*.md``) are mkdocstrings directives, ``::: path``, with
an optional ``members`` list. These tests read the package the way mkdocstrings does, with
Griffe (statically: a dataclass's generated ``__doc__`` does not count, an attribute's
docstring is the string under its assignment), so a name passes only if the site shows a
docstring for it. ``mkdocs build --strict`` (in CI) checks the rest: that every directive
resolves and every link and cross-reference lands.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import sa_crablet

griffe = pytest.importorskip("griffe", reason="the docs extra (mkdocstrings) is not installed")

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference"
DIRECTIVE = re.compile(r"^::: (?P<path>[\w.]+)[ \t]*\n(?P<options>(?:[ \t]+\S.*\n)*)", re.M)
MEMBERS = re.compile(
    r"^[ \t]+members:[ \t]*(?P<value>\S*)[ \t]*\n(?P<items>(?:[ \t]+- \w+\n)*)", re.M
)
INHERITED = re.compile(r"^[ \t]+inherited_members:[ \t]*true[ \t]*$", re.M)

# The modules the documentation tells users to import from, and their public names there
# (for a module with ``__all__``, that list). Names the package exports too count once.
PUBLIC_MODULES: dict[str, list[str]] = {
    "sa_crablet.projectors": importlib.import_module("sa_crablet.projectors").__all__,
    "sa_crablet.events": ["Event", "SequencedEvent", "tag", "tags", "split_tag", "as_tags"],
    "sa_crablet.query": [
        "AppendCondition",
        "Head",
        "Query",
        "QueryItem",
        "Snapshot",
        "fail_if_exists",
    ],
    "sa_crablet.streams": ["ReadResult", "ProjectionStream"],
    "sa_crablet.async_store": ["AsyncEventStore", "AsyncReadResult", "AsyncProjectionStream"],
    "sa_crablet.async_executor": ["AsyncCommandExecutor"],
    "sa_crablet.projection": ["DecisionModel", "ProjectionProgress", "StateProjector"],
    "sa_crablet.commands": ["Command", "CommandRecord", "CommandResult", "Decision"],
    "sa_crablet.migrate": importlib.import_module("sa_crablet.migrate").__all__,
    "sa_crablet.schema": ["metadata", "events", "commands"],
    "sa_crablet.statements": importlib.import_module("sa_crablet.statements").__all__,
    "sa_crablet.sqlite": ["create_sqlite_engine", "create_async_sqlite_engine"],
}


@pytest.fixture(scope="module")
def package() -> Any:
    return griffe.load("sa_crablet", search_paths=[str(ROOT)], resolve_aliases=True)


def lookup(package: Any, path: str) -> Any:
    """The object at a dotted ``sa_crablet...`` path, followed through re-exports."""
    assert path == "sa_crablet" or path.startswith("sa_crablet."), path
    obj = package if path == "sa_crablet" else package[path.removeprefix("sa_crablet.")]
    return obj.final_target if obj.is_alias else obj


def public_names() -> list[str]:
    """Every public name, as a path: the package's ``__all__``, then the modules' names."""
    paths = [f"sa_crablet.{name}" for name in sa_crablet.__all__]
    paths += [f"{module}.{name}" for module, names in PUBLIC_MODULES.items() for name in names]
    return paths


@dataclass(frozen=True)
class Directive:
    """``::: path``: its page, and its ``members`` option (a list, ``false``, or None)."""

    page: str
    path: str
    members: list[str] | bool | None
    inherited: bool = False


def directives() -> list[Directive]:
    found = []
    for page in sorted(REFERENCE.glob("*.md")):
        for match in DIRECTIVE.finditer(page.read_text(encoding="utf-8")):
            option = MEMBERS.search(match["options"])
            members: list[str] | bool | None = None
            if option is not None:
                if option["value"] == "false":
                    members = False
                else:
                    assert not option["value"], f"{page.name}: members: {option['value']}"
                    members = [
                        item.strip().removeprefix("- ") for item in option["items"].splitlines()
                    ]
            inherited = INHERITED.search(match["options"]) is not None
            found.append(Directive(page.name, match["path"], members, inherited))
    return found


def documented(package: Any) -> dict[str, str]:
    """The canonical path of every object the reference pages render, and its page."""
    shown: dict[str, str] = {}
    for directive in directives():
        obj = lookup(package, directive.path)
        if not obj.is_module:
            shown[obj.path] = directive.page
            continue
        # A module page names what it shows: left to itself, mkdocstrings would also show
        # the module's type variables and helpers.
        assert directive.members is not None, (
            f"{directive.page}: ::: {directive.path} without members"
        )
        if directive.members is False:
            continue
        assert isinstance(directive.members, list)
        for name in directive.members:
            shown[lookup(package, f"{directive.path}.{name}").path] = directive.page
    return shown


def test_every_public_name_has_a_docstring(package: Any) -> None:
    missing = [path for path in public_names() if not lookup(package, path).docstring]
    assert not missing, f"public names without a docstring: {missing}"


def test_every_public_method_has_a_docstring(package: Any) -> None:
    """Methods and properties of the public classes (their fields are described in the
    class's docstring, and the reference lists them with their types)."""
    missing = []
    for path in public_names():
        obj = lookup(package, path)
        if not obj.is_class:
            continue
        for name, member in obj.all_members.items():
            if name.startswith("_") or member.is_attribute:
                continue
            if member.is_alias and not member.inherited:
                continue
            if not member.docstring:
                missing.append(member.path)
    assert not missing, f"public methods without a docstring: {missing}"


def test_the_reference_shows_every_name_of_the_package(package: Any) -> None:
    shown = documented(package)
    missing = [
        name
        for name in sa_crablet.__all__
        if lookup(package, f"sa_crablet.{name}").path not in shown
    ]
    assert not missing, f"names of sa_crablet.__all__ missing from docs/reference/: {missing}"


def test_the_reference_shows_every_name_of_the_public_modules(package: Any) -> None:
    shown = documented(package)
    missing = [path for path in public_names() if lookup(package, path).path not in shown]
    assert not missing, f"public names missing from docs/reference/: {missing}"


def test_inherited_methods_are_shown(package: Any) -> None:
    """A class whose public methods live on a base class (the stores') shows them: its
    directive sets ``inherited_members``."""
    hidden = [
        directive.path
        for directive in directives()
        if not directive.inherited
        and (obj := lookup(package, directive.path)).is_class
        and any(not name.startswith("_") for name in obj.inherited_members)
    ]
    assert not hidden, f"directives without inherited_members: true: {hidden}"


def test_the_reference_shows_each_object_once(package: Any) -> None:
    seen: dict[str, str] = {}
    for directive in directives():
        obj = lookup(package, directive.path)
        if obj.is_module:
            continue
        assert obj.path not in seen, f"{directive.path}: also on {seen[obj.path]}"
        seen[obj.path] = directive.page


def test_the_lazy_async_names_are_their_modules_objects() -> None:
    # Documented from their modules: the package hands out the very same objects.
    for name, module in [
        ("AsyncEventStore", "sa_crablet.async_store"),
        ("AsyncCommandExecutor", "sa_crablet.async_executor"),
        ("create_async_sqlite_engine", "sa_crablet.sqlite"),
    ]:
        assert getattr(sa_crablet, name) is getattr(importlib.import_module(module), name)


def test_the_checks_see_what_they_check(package: Any) -> None:
    # Controls: the pages' directives are found, with their members; re-exports are followed
    # to their definitions; a dataclass's generated __doc__ and an attribute whose docstring
    # is elsewhere do not count as docstrings.
    found = {directive.path: directive.members for directive in directives()}
    assert found["sa_crablet.EventStore"] is None
    assert found["sa_crablet"] is False
    assert found["sa_crablet.query"] == ["Snapshot"]
    assert lookup(package, "sa_crablet.EventStore").path == "sa_crablet.store.EventStore"
    assert lookup(package, "sa_crablet.events_table").path == "sa_crablet.schema.events"
    code = "from dataclasses import dataclass\n\n@dataclass\nclass Plain:\n    x: int\n\n"
    code += 'LIMIT = 3\n\ndef documented():\n    """Here."""\n'
    with griffe.temporary_visited_module(code) as module:
        assert not module["Plain"].docstring
        assert not module["LIMIT"].docstring
        assert module["documented"].docstring.value == "Here."
