"""The Reports page (agents and admins), its CSV downloads, and the self-contained HTML report.

The figures are gateway/reports/figures.py's; this module only scopes them to the viewer (security
incidents count only for who may see them) and draws them: Chart.js, vendored as
``static/chart.umd.min.js``, reads the report from a JSON data block (no inline script: the CSP holds).
"""

from __future__ import annotations

from pathlib import Path

import jinja2
from flask import Blueprint, Response, current_app, render_template, request, url_for
from flask_login import current_user
from markupsafe import Markup

from gateway.core.clock import Clock
from gateway.core.errors import ConfigError
from gateway.reports.figures import csv_tables, report, to_csv
from gateway.reports.scope import scope_from
from notifiers import words
from notifiers.render import visible_output
from web.auth import role_required

bp = Blueprint("reports", __name__)

STATIC = Path(__file__).parent / "static"
TEMPLATES = Path(__file__).parent / "templates"
# The charts of the page, each drawn from one table of csv_tables() and shown above it.
CHARTS = (
    ("daily", "Opened and resolved per day"),
    ("trend", "MTTA and MTTR per day (mean, hours)"),
    ("sla_by_group", "SLA breaches by group"),
    ("backlog_age", "Backlog by age"),
    ("top_causes", "Top causes"),
)


def for_viewer(args, config, user, now=None) -> dict:
    """The report of ``args`` (since, until, filters) as ``user`` may see it; ConfigError when the scope is bad."""
    now = now or Clock().now()
    scope = scope_from(args, now=now, tz=config.inlet.timezone, security=user.sees_security)
    return report(scope, now=now, update_interval=config.procedures.major_reminder_interval)


def duration(seconds) -> str:
    """Seconds as a short human duration ("—" for none)."""
    if seconds is None:
        return "—"
    seconds = float(seconds)
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def percent(rate) -> str:
    return "—" if rate is None else f"{rate * 100:.1f} %"


def _context(result: dict) -> dict:
    return {
        "r": result,
        "tables": csv_tables(result),
        "charts": CHARTS,
        "duration": duration,
        "percent": percent,
    }


@bp.get("/reports")
@role_required("agent", "admin")
def page():
    config = current_app.config["INLET"]
    try:
        result = for_viewer(request.args, config, current_user)
    except ConfigError as exc:
        return render_template("reports.html", error=str(exc), args=request.args), 400
    links = {name: url_for("reports.download", table=name, **request.args) for name in csv_tables(result)}
    return render_template("reports.html", args=request.args, csv=links, **_context(result))


@bp.get("/reports.csv")
@role_required("agent", "admin")
def download():
    config = current_app.config["INLET"]
    try:
        result = for_viewer(request.args, config, current_user)
    except ConfigError as exc:
        return Response(f"{exc}\n", 400, mimetype="text/plain")
    tables = csv_tables(result)
    name = request.args.get("table", "")
    if name not in tables:
        return Response(f"no table {name!r}: one of {', '.join(tables)}\n", 404, mimetype="text/plain")
    headers = {"Content-Disposition": f'attachment; filename="inlet-{name}.csv"'}
    return Response(to_csv(tables[name]), mimetype="text/csv", headers=headers)


def standalone_html(result: dict, title: str = "Inlet report") -> str:
    """The report as one HTML file with its charts: Chart.js and the drawing script inlined, no network."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    words.install(env, visible_output)  # the same plain words as the pages
    scripts = [(STATIC / name).read_text(encoding="utf-8") for name in ("chart.umd.min.js", "reports.js")]
    # inlined into <script>: a "</script" inside would end the element early
    scripts = [Markup(text.replace("</script", "<\\/script")) for text in scripts]  # noqa: S704 (our own files)
    return env.get_template("report_file.html").render(title=title, scripts=scripts, csv=None, **_context(result))
