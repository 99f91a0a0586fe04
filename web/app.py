"""Flask application factory: ``create_app(config, services)``."""

from __future__ import annotations

from flask import Flask, jsonify, request

from store.db import db


def create_app(config, services=None) -> Flask:
    """Build the app for ``config``; ``services`` carries the lifecycle and pipeline."""
    app = Flask(__name__)
    app.config["INLET"] = config
    app.config["SERVICES"] = services
    app.config["MAX_CONTENT_LENGTH"] = config.web.max_body_size

    @app.before_request
    def _connect():
        # Webhook intake stores through the writer thread: no connection (≈1 ms on SQLite) per request.
        if request.blueprint != "hooks":
            db.connect(reuse_if_open=True)

    @app.teardown_request
    def _close(exc):
        if not db.is_closed():
            db.close()

    # Webhooks: machines authenticated per request by token or signature, not browser sessions.
    # CSRF protection (Flask-WTF) must exempt this blueprint: csrf.exempt(hooks.bp).
    from web import hooks

    hooks.init_app(app, services)

    @app.get("/healthz")
    def healthz():
        db.execute_sql("SELECT 1")
        return jsonify(status="ok")

    return app
