"""Runners: what executes plans on a connection (SQLAlchemy Core, or psycopg directly), in
the host's transaction or in one of their own, under the configured timeouts."""
