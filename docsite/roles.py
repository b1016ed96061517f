"""A Griffe extension for the API reference: the docstrings' Sphinx roles, in Markdown.

The docstrings name other objects the Sphinx way (``:class:`~sa_crablet.EventStore```,
``:func:`upgrade```); mkdocstrings renders docstrings as Markdown, where such a role would
show as written. A role naming a public object by its full path (``sa_crablet.`` and no
private part) becomes a cross-reference, checked by ``mkdocs build --strict`` (the target
must be documented); any other role (a relative name, a private module) becomes inline code.
A leading ``~`` shows only the last part of the name, as in Sphinx.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(
    r":(?:py:)?(?:mod|class|func|meth|attr|exc|data|obj):`(?P<tilde>~?)(?P<name>[^`]+)`"
)


def markdown(docstring: str) -> str:
    """``docstring`` with its Sphinx roles replaced by cross-references or inline code."""

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        shown = name.rsplit(".", 1)[-1] if match["tilde"] else name
        parts = name.split(".")
        if parts[0] == "sa_crablet" and not any(part.startswith("_") for part in parts):
            return f"[`{shown}`][{name}]"
        return f"`{shown}`"

    return ROLE.sub(replace, docstring)


class SphinxRoles(griffe.Extension):
    """Rewrites every docstring of the loaded package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        pending: list[griffe.Object] = [pkg]
        while pending:
            obj = pending.pop()
            if obj.docstring is not None:
                obj.docstring.value = markdown(obj.docstring.value)
            pending.extend(
                member for member in obj.members.values() if not isinstance(member, griffe.Alias)
            )
