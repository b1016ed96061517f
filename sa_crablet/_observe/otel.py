"""OpenTelemetry, used when the application has loaded it; never imported by sa_crablet.

Any application that configured a tracer or meter provider (an SDK, an instrumentation, a
distro) has imported ``opentelemetry.trace`` or ``opentelemetry.metrics``: until one of them
is in ``sys.modules``, :func:`current` is a dictionary look-up that answers ``None``, and no
``opentelemetry`` module is imported by the store. Once it is there, the API is used (its
no-op tracer and meter until a provider is set, which cost a few microseconds an
operation) and :mod:`sa_crablet._observe.instruments` holds the tracer and instruments.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sa_crablet._observe.instruments import Telemetry

_LOADED = ("opentelemetry.trace", "opentelemetry.metrics")
_telemetry: Telemetry | None = None
_broken = False


def current() -> Telemetry | None:
    """The tracer and instruments, or ``None`` while the application has not loaded
    OpenTelemetry's API."""
    if _telemetry is not None:
        return _telemetry
    modules = sys.modules
    if _broken or (_LOADED[0] not in modules and _LOADED[1] not in modules):
        return None
    return _load()


def _load() -> Telemetry | None:
    global _telemetry, _broken
    try:
        from sa_crablet._observe.instruments import Telemetry
    except ImportError:  # a partial install (the API without its dependencies): not again
        _broken = True
        return None
    _telemetry = Telemetry()
    return _telemetry
