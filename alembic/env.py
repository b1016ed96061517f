"""Alembic environment for running sa_crablet's migrations from a repository checkout.

The revisions themselves live in ``sa_crablet/migrations/versions`` (see ``alembic.ini``),
so a pip-installed package carries exactly the same history.
"""

from alembic import context
from sa_crablet.migrate import run_env

run_env(context)
