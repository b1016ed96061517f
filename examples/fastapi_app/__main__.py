"""Serve the FastAPI app with uvicorn (``pip install uvicorn``):
``python -m examples.fastapi_app [--database-url URL] [--port 8000]``."""

from __future__ import annotations

import importlib
import sys

from examples._common import parser
from examples.fastapi_app import create_app


def main() -> None:
    arguments = parser("Serve the course-enrollment API (FastAPI, async) on 127.0.0.1.")
    arguments.add_argument("--port", type=int, default=8000, help="(default: %(default)s)")
    args = arguments.parse_args()
    try:
        uvicorn = importlib.import_module("uvicorn")
    except ImportError:
        sys.exit("serving needs an ASGI server: pip install uvicorn")
    app = create_app(args.database_url)
    print(f"database: {app.state.engine.url.render_as_string(hide_password=True)}")
    uvicorn.run(app, host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
