"""Logging, tracing and metrics of the store, its projections, the command executors and
the migrations, in one place: the code that does the work calls in here (mostly through a
decorator on its operations) and knows nothing of loggers, spans or instruments.

:mod:`.logs`: the loggers and the facts a record carries; :mod:`.otel`: whether
OpenTelemetry is there (never imported by the library itself) and :mod:`.instruments`, its
tracer and instruments; :mod:`.report`: what an operation reports when it ends;
:mod:`.operations`, :mod:`.commands`, :mod:`.migrations`: the wrappers, by what they wrap.
"""
