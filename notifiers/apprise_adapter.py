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

import functools
import hashlib
import logging
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from notifiers.render import HTML, MARKDOWN, TEXT, Rendered

if TYPE_CHECKING:
    import apprise

_FORMATS = {"text": TEXT, "markdown": MARKDOWN, "html": HTML}  # apprise.NotifyFormat's values


@functools.cache
def _apprise():
    """Apprise, imported on first use: its import takes about a second, and loading the configuration (every
    ``inlet`` command) reaches this module through the lifecycle hooks (procedures -> audiences -> mailer)."""
    import apprise
    import apprise.plugins.email

    return apprise


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
    """How a channel URL is shown anywhere (timeline, attempts, UI, API, CLI): ``scheme://host`` only.

    Never the path, query, user or password: Apprise's own privacy URL keeps header
    parameters (``json://host?+Authorization=…``), and many plugins keep their tokens
    in the path or even the host (``slack://TOKEN/…``) — such a host is shown as ``…``.
    """
    if "://" not in target:
        return target if "@" not in target and "/" not in target else "(invalid)"  # a tag or group name
    scheme = target.split("://", 1)[0].lower()
    if not scheme.isascii() or not scheme.replace("+", "").replace("-", "").isalnum():
        return "(invalid)"
    with _quiet():
        plugin = _apprise().Apprise.instantiate(target)
    host = _host(target)
    if plugin is None or not host or host != _host(plugin.url(privacy=True)):
        return f"{scheme}://…"
    return f"{scheme}://{host}"


def sendable(target: str) -> bool:
    """True when ``target`` is an Apprise URL that a plugin of this Apprise takes (what :func:`send` needs)."""
    if "://" not in target or any(c.isspace() for c in target):
        return False
    with _quiet():
        return _apprise().Apprise.instantiate(target) is not None


_silenced = threading.local()


class _Quiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_silenced, "on", False)


logging.getLogger("apprise").addFilter(_Quiet())


@contextmanager
def _quiet():
    """Apprise logs a URL it cannot load (only partly hidden): not while this thread checks or masks one."""
    _silenced.on = True
    try:
        yield
    finally:
        _silenced.on = False


def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


_URL_TAIL = re.compile(r"""((?:https?|wss?)://[^/\s'"?#]+)[^\s'"]*""")
_REQUEST_PATH = re.compile(r"""(url: )[^\s'"]+""")


_ANY_URL = re.compile(r"""\b[a-z][a-z0-9+.-]{0,30}://[^\s;,'"<>]*""", re.IGNORECASE)


def shown_urls(text: str) -> str:
    """Delivery text (an error, a ``notification_failed`` body) with each URL in it as :func:`masked`
    shows it — also for rows written before URLs were masked this way."""
    return _ANY_URL.sub(lambda m: masked(m.group()), text or "")


def scrubbed(detail: str) -> str:
    """An error text without URL paths and queries (where plugins carry tokens)."""
    return _REQUEST_PATH.sub(r"\1…", _URL_TAIL.sub(r"\1/…", detail))


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
    plugin = _apprise().Apprise.instantiate(target, asset=_apprise().AppriseAsset(service_timeout=0))
    if plugin is None:
        return Outcome(target, masked(target), False, "not a valid Apprise URL (or its plugin is disabled)", 0.0, True)
    plugin.request_rate_per_sec = throttle
    plugin.socket_connect_timeout = plugin.socket_read_timeout = timeout
    if mail_headers and isinstance(plugin, _apprise().plugins.email.NotifyEmail):
        plugin.headers.update(mail_headers)
    fmt = plugin.notify_format[0] if isinstance(plugin.notify_format, tuple) else plugin.notify_format
    body_format = fmt if fmt in _FORMATS else _apprise().NotifyFormat.TEXT
    app = _apprise().Apprise()
    app.add(plugin)
    url = masked(target)
    try:
        with app.notify(
            body=message.body(_FORMATS[body_format]),
            title=message.subject,
            body_format=body_format,
        ) as result:
            return _outcome(target, url, result, time.monotonic() - started)
    except Exception as exc:  # Apprise promises not to raise from send(); if it does, it is one failed attempt
        return Outcome(target, url, False, scrubbed(f"{type(exc).__name__}: {exc}"), time.monotonic() - started)


def _outcome(target: str, url: str, result: apprise.AppriseResult, elapsed: float) -> Outcome:
    if result.status == _apprise().AppriseResultStatus.NOMATCH or not result.results:
        return Outcome(target, url, False, "Apprise dispatched nothing", elapsed, True)
    service = result.results[0]
    if service:
        return Outcome(target, url, True, "", elapsed)
    messages = [entry.message for entry in service.logs() if entry.message]
    detail = f"{service.status.name.lower()}: " + ("; ".join(messages[-3:]) or "no detail")
    return Outcome(target, url, False, scrubbed(detail)[:1000], elapsed)
