"""MkDocs hooks: the site is built from the repository's own Markdown, unchanged.

- The home page is README.md (no copy to drift): it is added as ``index.md``.
- Every page's relative links are resolved against the page's file in the checkout, as a
  reader browsing the repository follows them. A link to a page under ``docs/`` becomes a
  link between the site's pages; a link to the README, to the home page.
- A link to another file of the repository (an example's source, a benchmark report, a chart)
  is kept working by publishing that file under ``repository/``: Markdown as a page, Python
  source as a page showing the code, a directory as a page listing its files, anything else
  as it is. Only files the pages link to (and, in turn, the files those link to) are
  published.

A link whose target does not exist is left as written, for ``mkdocs build --strict`` to
report.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from urllib.parse import unquote

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files, InclusionLevel
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MIRROR = "repository"
# The same link syntax tests/test_docs.py checks: [text](target) and ![alt](target).
LINK = re.compile(r"(?P<open>\]\()(?P<target>[^)\s]+)(?P<close>\))")
SKIPPED_NAMES = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}

# The checkout's file behind each page (by its src_uri), set for every build.
origins: dict[str, Path] = {}


def on_files(files: Files, config: MkDocsConfig) -> Files:
    docs_dir = Path(config.docs_dir).resolve()
    origins.clear()
    for file in files.documentation_pages():
        origins[file.src_uri] = docs_dir / file.src_uri
    if files.get_file_from_path("index.md") is None:
        files.append(File.generated(config, "index.md", abs_src_path=str(README)))
        origins["index.md"] = README

    published: set[Path] = set()
    pending = list(origins.values())
    while pending:
        origin = pending.pop()
        for target in _linked_files(origin, docs_dir):
            for path in _with_contents(target):
                if path in published:
                    continue
                published.add(path)
                uri = _mirror_uri(path)
                files.append(_mirror_file(config, path, uri))
                if path.suffix == ".md":
                    origins[uri] = path
                    pending.append(path)
    written: dict[str, str] = {}
    for file in files:
        if file.dest_uri in written:
            raise PluginError(
                f"{file.src_uri} and {written[file.dest_uri]} would both be {file.dest_uri}"
            )
        written[file.dest_uri] = file.src_uri
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    origin = origins.get(page.file.src_uri)
    if origin is None:
        return markdown
    docs_dir = Path(config.docs_dir).resolve()
    here = posixpath.dirname(page.file.src_uri)

    def relink(match: re.Match[str]) -> str:
        target = match["target"]
        uri = _site_uri(origin, target, docs_dir)
        if uri is None:
            return match[0]
        anchor = target[target.index("#") :] if "#" in target else ""
        return match["open"] + posixpath.relpath(uri, here or ".") + anchor + match["close"]

    return LINK.sub(relink, markdown)


def _local_target(origin: Path, target: str) -> Path | None:
    """The existing file or directory a relative link of ``origin`` points to, or None."""
    if "://" in target or target.startswith(("#", "/", "mailto:")):
        return None
    path = unquote(target.split("#", 1)[0])
    if not path:
        return None
    resolved = (origin.parent / path).resolve()
    if not resolved.exists() or not resolved.is_relative_to(ROOT):
        return None
    return resolved


def _linked_files(origin: Path, docs_dir: Path) -> list[Path]:
    """The files and directories outside ``docs_dir`` (but for the README) ``origin`` links to."""
    found = []
    for match in LINK.finditer(origin.read_text(encoding="utf-8")):
        target = _local_target(origin, match["target"])
        if target is not None and not target.is_relative_to(docs_dir) and target != README:
            found.append(target)
    return found


def _with_contents(path: Path) -> list[Path]:
    """``path``, and everything under it when it is a directory."""
    if not path.is_dir():
        return [path]
    found = [path]
    for child in sorted(path.iterdir()):
        if child.name not in SKIPPED_NAMES and not child.name.startswith("."):
            found.extend(_with_contents(child))
    return found


def _site_uri(origin: Path, target: str, docs_dir: Path) -> str | None:
    """The src_uri of the site file a link of ``origin`` leads to, or None to leave it."""
    path = _local_target(origin, target)
    if path is None:
        return None
    if path == README:
        return "index.md"
    if path.is_relative_to(docs_dir):
        uri = path.relative_to(docs_dir).as_posix()
        if path.is_dir():
            return f"{uri}/index.md" if (path / "index.md").exists() else None
        return uri
    return _mirror_uri(path)


def _mirror_uri(path: Path) -> str:
    relative = path.relative_to(ROOT).as_posix()
    if path.is_dir():
        return f"{MIRROR}/{relative}/index.md"
    if path.suffix == ".py":
        return f"{MIRROR}/{relative}.md"
    return f"{MIRROR}/{relative}"


def _mirror_file(config: MkDocsConfig, path: Path, uri: str) -> File:
    # Published pages are reached by links, not from the navigation.
    inclusion = InclusionLevel.NOT_IN_NAV
    relative = path.relative_to(ROOT).as_posix()
    if path.is_dir():
        entries = [
            f"- [`{child.name}{'/' if child.is_dir() else ''}`]({child.name}"
            f"{'/index.md' if child.is_dir() else '.md' if child.suffix == '.py' else ''})"
            for child in _with_contents(path)[1:]
            if child.parent == path
        ]
        content = f"# `{relative}/`\n\n" + "\n".join(entries) + "\n"
        return File.generated(config, uri, content=content, inclusion=inclusion)
    if path.suffix == ".py":
        source = path.read_text(encoding="utf-8")
        fence = "`" * max([3, *(len(run) + 1 for run in re.findall(r"`{3,}", source))])
        content = f"# `{relative}`\n\n{fence}python\n{source}{fence}\n"
        return File.generated(config, uri, content=content, inclusion=inclusion)
    return File.generated(config, uri, abs_src_path=str(path), inclusion=inclusion)
