"""Decoding stored payloads: fast for what the store writes, complete for anything else.

msgspec decodes what the store writes, several times faster than the standard library and
with the same result. What it gives up on (nesting deeper than the interpreter's recursion
limit, numbers beyond a float's range, integers of thousands of digits, escaped lone
surrogates), another tool may still have written: PostgreSQL's ``json`` holds nesting
thousands of levels deep, SQLite holds any text. Those are decoded by an iterative parser
with the standard library's results (its own recursive decoder would fail the same way),
so every read delivers every payload the database holds.
"""

from __future__ import annotations

from decimal import Decimal
from json import JSONDecodeError
from json.decoder import scanstring  # type: ignore[attr-defined]
from json.scanner import NUMBER_RE
from typing import Any

import msgspec

fast_load = msgspec.json.Decoder().decode
"""msgspec's decoder: what :func:`load_json` tries first."""
GIVES_UP = (msgspec.DecodeError, RecursionError)
"""What :data:`fast_load` raises on a document it cannot decode (:func:`load_json` then
decodes it completely)."""
_WHITESPACE = frozenset(" \t\n\r")
_CONSTANTS = {
    "null": None,
    "true": True,
    "false": False,
    # Not JSON, but what json.loads accepts; neither database's JSON holds them anyway.
    "NaN": float("nan"),
    "Infinity": float("inf"),
    "-Infinity": float("-inf"),
}
_DIGITS_LIMIT = 4300  # sys.int_info.default_max_str_digits: int(text) refuses longer text


def load_json(data: str | bytes | bytearray | memoryview) -> Any:
    """A JSON document as Python values, of any depth and size."""
    try:
        return fast_load(data)
    except GIVES_UP:
        pass
    text = data if isinstance(data, str) else bytes(data).decode()
    return _load_iteratively(text)


def load_stored(value: Any) -> Any:
    """A payload column's value as stored: JSON text (or bytes), ``None`` for SQL NULL, a
    bare number for SQLite, where plain SQL can store one without quoting it as text."""
    if value is None or isinstance(value, int | float):
        return value
    return load_json(value)


def _skip(text: str, index: int) -> int:
    while index < len(text) and text[index] in _WHITESPACE:
        index += 1
    return index


def _load_iteratively(text: str) -> Any:
    """The standard library's results, with an explicit stack instead of recursion.

    Each open container is ``[container, key]`` (``key``: the member being read, for an
    object). A complete value is stored in the innermost container; a container that
    closes is itself a complete value for the one around it.
    """
    open_: list[list[Any]] = []
    index = _skip(text, 0)
    while True:
        char = text[index : index + 1]
        value: Any
        if char == "{" or char == "[":
            index = _skip(text, index + 1)
            if text[index : index + 1] == ("}" if char == "{" else "]"):
                value = {} if char == "{" else []
                index += 1
            elif char == "{":
                key, index = _key(text, index)
                open_.append([{}, key])
                continue
            else:
                open_.append([[], None])
                continue
        elif char == '"':
            value, index = scanstring(text, index + 1, True)
        else:
            value, index = _scalar(text, index)
        while True:  # store the complete value; close what ends with it
            if not open_:
                index = _skip(text, index)
                if index != len(text):
                    raise JSONDecodeError("Extra data", text, index)
                return value
            top = open_[-1]
            container = top[0]
            if isinstance(container, dict):
                container[top[1]] = value
            else:
                container.append(value)
            index = _skip(text, index)
            char = text[index : index + 1]
            if char == ",":
                index = _skip(text, index + 1)
                if isinstance(container, dict):
                    top[1], index = _key(text, index)
                break
            if char != ("}" if isinstance(container, dict) else "]"):
                raise JSONDecodeError("Expecting ',' delimiter", text, index)
            open_.pop()
            value = container
            index += 1


def _key(text: str, index: int) -> tuple[str, int]:
    """An object member's key and the index of its value."""
    if text[index : index + 1] != '"':
        raise JSONDecodeError("Expecting property name enclosed in double quotes", text, index)
    key, index = scanstring(text, index + 1, True)
    index = _skip(text, index)
    if text[index : index + 1] != ":":
        raise JSONDecodeError("Expecting ':' delimiter", text, index)
    return key, _skip(text, index + 1)


def _scalar(text: str, index: int) -> tuple[Any, int]:
    for name, constant in _CONSTANTS.items():
        if text.startswith(name, index):
            return constant, index + len(name)
    match = NUMBER_RE.match(text, index)
    if match is None:
        raise JSONDecodeError("Expecting value", text, index)
    integer, fraction, exponent = match.groups()
    if fraction or exponent:
        return float(integer + (fraction or "") + (exponent or "")), match.end()
    if len(integer) > _DIGITS_LIMIT:
        return int(Decimal(integer)), match.end()  # not subject to int()'s digit limit
    return int(integer), match.end()
