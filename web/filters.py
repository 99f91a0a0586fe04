"""Template filters and globals: times, SLA time left, sanitised email HTML.

Jinja autoescaping is on for every template; the only markup from outside
that reaches a page is email HTML passed through nh3 (:func:`safe_html`).
Every value a page shows loses its bidi controls and zero-width characters
(``finalize``: :func:`notifiers.render.visible_output`); text from outside that
sits inline next to other text is in ``<bdi>``, so right-to-left names and
titles cannot reorder what surrounds them.
"""

from __future__ import annotations

from datetime import UTC, datetime

import nh3
from markupsafe import Markup

from gateway.core.clock import iso
from gateway.intake import mailbox_status
from notifiers import words
from notifiers.apprise_adapter import shown_urls
from notifiers.outbox import failing_since
from notifiers.render import visible_output

# Tags and attributes an email body may keep once sanitised: text structure only, no images
# (they would fetch from outside), no styles, no links that run code (nh3 drops javascript: URLs).
_EMAIL_TAGS = {
    "a", "b", "blockquote", "br", "code", "div", "em", "h1", "h2", "h3", "h4", "hr", "i", "li", "ol", "p",
    "pre", "span", "strong", "table", "tbody", "td", "th", "thead", "tr", "u", "ul",
}  # fmt: skip


def init_app(app) -> None:
    # Every {{ … }} of every page in plain words (notifiers/words.py) and without bidi controls or
    # zero-width characters (before any template compiles).
    words.install(app.jinja_env, visible_output)
    app.jinja_env.filters["when"] = when
    app.jinja_env.filters["left"] = time_left
    app.jinja_env.filters["channels"] = shown_urls  # delivery errors: URLs as scheme://host only
    app.jinja_env.globals["safe_html"] = safe_html
    app.jinja_env.globals["sla_due"] = sla_due
    app.jinja_env.globals["delivery_trouble"] = lambda: delivery_trouble(app.config["INLET"])
    app.jinja_env.globals["mailbox_trouble"] = lambda: mailbox_status.trouble(app.config["INLET"])

    @app.context_processor
    def _inlet():
        return {"inlet_name": app.config["INLET"].inlet.name}


def when(value: datetime | None) -> Markup:
    """A <time> element: the absolute UTC time; static/inlet.js shows it relative with the absolute on hover."""
    if value is None:
        return Markup("—")
    stamp = iso(value)
    text = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return Markup('<time datetime="{0}" title="{1}" data-relative>{1}</time>').format(stamp, text)


def delivery_trouble(config) -> str:
    """A warning for the queue's header when notifications have been failing longer than
    ``failing_warning_after`` ('' when they are not): reporters and groups are not hearing from the desk."""
    after = config.notifications.failing_warning_after
    row = failing_since(datetime.now(UTC), after)
    if row is None:
        return ""
    error = shown_urls(row.last_error or "no answer")[:200]
    return f"Notifications have been failing for more than {words.duration(after)}: {error}"


def sla_due(incident) -> tuple[str, datetime | None]:
    """Which SLA clock runs for an incident and when it is due: ('respond', t), ('resolve', t) or ('', None).

    None runs once the incident is resolved, closed or cancelled, nor while it is on hold (paused)."""
    if incident.status in ("resolved", "closed", "cancelled", "on_hold"):
        return "", None
    if incident.acknowledged_at is None and incident.respond_by is not None:
        return "respond", incident.respond_by
    return ("resolve", incident.resolve_by) if incident.resolve_by else ("", None)


def time_left(due: datetime | None, now: datetime | None = None) -> Markup:
    """Time left until ``due`` (negative: overdue), with the absolute time on hover."""
    if due is None:
        return Markup("—")
    now = now or datetime.now(UTC)
    seconds = int((due - now).total_seconds())
    text = _span(abs(seconds))
    state = "overdue" if seconds < 0 else "soon" if seconds < 3600 else "ok"
    shown = f"{text} overdue" if seconds < 0 else f"{text} left"
    return Markup('<time class="sla sla-{0}" datetime="{1}" title="due {2}">{3}</time>').format(
        state, iso(due), due.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"), shown
    )


def _span(seconds: int) -> str:
    if seconds < 3600:
        return f"{max(seconds // 60, 0)} min"
    if seconds < 86400 * 2:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def safe_html(html: str | None) -> Markup:
    """Email HTML sanitised by nh3: structure kept, scripts, handlers, styles and remote content gone."""
    if not html:
        return Markup("")
    cleaned = nh3.clean(
        html,
        tags=_EMAIL_TAGS,
        attributes={"a": {"href", "title"}, "td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan"}},
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )
    return Markup(cleaned)  # noqa: S704 -- nh3 has sanitised it
