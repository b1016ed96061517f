"""Serve the Flask app: ``python -m examples.flask_app [--database-url URL] [--port 5000]``."""

from __future__ import annotations

from sqlalchemy import make_url

from examples._common import parser
from examples.flask_app import create_app


def main() -> None:
    arguments = parser("Serve the course-enrollment API (Flask) on 127.0.0.1.")
    arguments.add_argument("--port", type=int, default=5000, help="(default: %(default)s)")
    args = arguments.parse_args()
    app = create_app(args.database_url)
    url = make_url(app.config["SQLALCHEMY_DATABASE_URI"])
    print(f"database: {url.render_as_string(hide_password=True)}")
    app.run(host="127.0.0.1", port=args.port, threaded=True)


if __name__ == "__main__":
    main()
