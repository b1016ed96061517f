"""Alembic environment of the migrations shipped with sa_crablet."""

from alembic import context
from sa_crablet.migrate import run_env

run_env(context)
