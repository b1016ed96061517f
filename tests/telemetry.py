"""OpenTelemetry's SDK for the tests: the process's tracer and meter providers (the API
takes one of each per process, so they are set once, by whichever test asks first), an
in-memory span exporter and metric reader, and a span tree as text."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

EXPORTER = InMemorySpanExporter()
READER = InMemoryMetricReader()
_installed = False

KEY_ATTRIBUTES = (
    "db.system.name",
    "db.operation.name",
    "sa_crablet.command.type",
    "sa_crablet.events",
    "sa_crablet.query_items",
    "sa_crablet.conflict",
    "sa_crablet.position",
    "sa_crablet.attempts",
    "sa_crablet.retries",
    "sa_crablet.batch",
    "error.type",
)


def install() -> None:
    global _installed
    if _installed:
        return
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[READER]))
    _installed = True


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The spans finished during the test."""
    install()
    EXPORTER.clear()
    yield EXPORTER
    EXPORTER.clear()


def tracer() -> trace.Tracer:
    install()
    return trace.get_tracer("tests")


def totals(name: str, **attributes: Any) -> float:
    """A metric's value now (counters: their sum; histograms: how many were recorded),
    over its points whose attributes include ``attributes``."""
    install()
    data = READER.get_metrics_data()
    found = 0.0
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    if attributes.items() <= dict(point.attributes or {}).items():
                        found += float(getattr(point, "value", getattr(point, "count", 0)))
    return found


def named(finished: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in finished if span.name == name]


def render(finished: tuple[ReadableSpan, ...], root: ReadableSpan) -> str:
    """The tree under ``root``: names, key attributes, events, indented by depth."""
    children: dict[int, list[ReadableSpan]] = {}
    for span in finished:
        if span.parent is not None:
            children.setdefault(span.parent.span_id, []).append(span)
    lines: list[str] = []

    def walk(span: ReadableSpan, depth: int) -> None:
        attributes = span.attributes or {}
        shown = ", ".join(f"{k}={attributes[k]!r}" for k in KEY_ATTRIBUTES if k in attributes)
        lines.append(f"{'  ' * depth}{span.name} [{shown}]")
        for event in span.events:
            details = ", ".join(f"{k}={v!r}" for k, v in (event.attributes or {}).items())
            lines.append(f"{'  ' * (depth + 1)}(event) {event.name} [{details}]")
        assert span.context is not None
        for child in sorted(
            children.get(span.context.span_id, []), key=lambda s: s.start_time or 0
        ):
            walk(child, depth + 1)

    walk(root, 0)
    return "\n".join(lines)
