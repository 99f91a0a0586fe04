"""The one adapter around Apprise: one URL in, one :class:`Outcome` out.

Apprise 2.x (pinned ``>=2,<3`` in setup.cfg) returns an ``AppriseResult``
holding one ``NotifyResult`` per service it dispatched; :func:`send` turns
that into the outcome of one target. Each send builds its own plugin
instance, so a plugin's throttle (``request_rate_per_sec``, 5.5 s by default
for most plugins) only spaces the requests *within* one send — it never
serialises the outbox, which sends many targets at once (notifiers/delivery.py)
and limits each channel's rate itself (notifiers/digest.py). Sends run in the
caller's thread, not in Apprise's shared pool (see :func:`send`).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import apprise
from apprise.plugins.email import NotifyEmail

from notifiers.render import HTML, MARKDOWN, TEXT, Rendered

_FORMATS = {apprise.NotifyFormat.TEXT: TEXT, apprise.NotifyFormat.MARKDOWN: MARKDOWN, apprise.NotifyFormat.HTML: HTML}


@dataclass(frozen=True)
class Outcome:
    """What became of one target: ``url`` has its secrets masked; ``permanent`` means retrying cannot help;
    ``deferred`` means it was not tried this round (no time left) and is not an attempt."""

    target: str
    url: str
    ok: bool
    detail: str = ""
    elapsed: float = 0.0
    permanent: bool = False
    deferred: bool = False


def channel_key(target: str) -> str:
    """A stable name for a channel that holds none of its secrets."""
    return hashlib.sha256(target.encode()).hexdigest()[:32]


def masked(target: str) -> str:
    """The URL as Apprise prints it with privacy on, or a neutral stand-in."""
    plugin = apprise.Apprise.instantiate(target)
    if plugin is None:
        return target.split("://", 1)[0] + "://…" if "://" in target else "(invalid)"
    return plugin.url(privacy=True)


def send(
    target: str, message: Rendered, *, throttle: float = 0.0, timeout: float = 30.0, mail_headers: dict | None = None
) -> Outcome:
    """Send ``message`` to one Apprise URL in the format the plugin takes; never raises.

    ``mail_headers`` are added to what Apprise's email plugins send (loop
    protection on group and stakeholder ``mailto://`` channels too).
    """
    started = time.monotonic()
    # No Apprise deadline: with one, every send is handed to Apprise's process-wide pool (cpu + 4 threads),
    # which would cap the outbox's concurrency; the plugin's socket timeouts bound the send instead.
    plugin = apprise.Apprise.instantiate(target, asset=apprise.AppriseAsset(service_timeout=0))
    if plugin is None:
        return Outcome(target, masked(target), False, "not a valid Apprise URL (or its plugin is disabled)", 0.0, True)
    plugin.request_rate_per_sec = throttle
    plugin.socket_connect_timeout = plugin.socket_read_timeout = timeout
    if mail_headers and isinstance(plugin, NotifyEmail):
        plugin.headers.update(mail_headers)
    fmt = plugin.notify_format[0] if isinstance(plugin.notify_format, tuple) else plugin.notify_format
    body_format = fmt if fmt in _FORMATS else apprise.NotifyFormat.TEXT
    app = apprise.Apprise()
    app.add(plugin)
    url = plugin.url(privacy=True)
    try:
        with app.notify(
            body=message.body(_FORMATS[body_format]),
            title=message.subject,
            body_format=body_format,
        ) as result:
            return _outcome(target, url, result, time.monotonic() - started)
    except Exception as exc:  # Apprise promises not to raise from send(); if it does, it is one failed attempt
        return Outcome(target, url, False, f"{type(exc).__name__}: {exc}", time.monotonic() - started)


def _outcome(target: str, url: str, result: apprise.AppriseResult, elapsed: float) -> Outcome:
    if result.status == apprise.AppriseResultStatus.NOMATCH or not result.results:
        return Outcome(target, url, False, "Apprise dispatched nothing", elapsed, True)
    service = result.results[0]
    if service:
        return Outcome(target, url, True, "", elapsed)
    messages = [entry.message for entry in service.logs() if entry.message]
    detail = f"{service.status.name.lower()}: " + ("; ".join(messages[-3:]) or "no detail")
    return Outcome(target, url, False, detail[:1000], elapsed)
