"""Webhook integrations: their configuration, authentication, rate limit and idempotency.

An ``[[integration]]`` is one monitoring tool pointed at ``POST /hooks/<name>``.
This module holds what the HTTP edge (web/hooks.py) needs to decide, before
anything is stored, whether a request may pass: who sent it (bearer token, HMAC
of the body, PagerDuty routing key — compared in constant time), whether the
integration is over its rate, and whether the request was already taken (an
``Idempotency-Key`` header or the same body within the idempotency window).
Secrets are read from the environment when a request comes, never from the file:
a missing secret answers 503 and logs a warning; it never stops Inlet loading.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.config.schema import KeyProblem, setting
from gateway.core.clock import Clock
from gateway.core.errors import ConfigError
from gateway.core.keys import secret
from parsers.generic import GenericOptions
from parsers.presets import PRESETS
from parsers.severity import severity_to_impact_urgency

log = logging.getLogger("inlet.hooks")

KINDS = ("alertmanager", "grafana", "pagerduty", "generic", "drill", "sns", *PRESETS)
AUTHS = ("bearer", "hmac", "routing_key", "sns")
SIGNATURE_STYLES = ("hex", "sha256=")
RESOLVE_POLICIES = ("all", "any", "never")
LEVELS_OR_NONE = ("", "high", "medium", "low")


@dataclass(frozen=True)
class Integration:
    name: str = setting(help="Name of the integration; its endpoint is POST /hooks/<name>.")
    kind: str = setting(help="Payload format.", choices=KINDS)
    auth: str = setting(
        "bearer",
        help="How requests prove who sent them: bearer token, HMAC-SHA256 of the body, (pagerduty) routing key,"
        " or (sns) Amazon's message signature.",
        choices=AUTHS,
    )
    token_env: str = setting("", help="auth = bearer: environment variable holding the token.")
    secret_env: str = setting("", help="auth = hmac: environment variable holding the shared secret.")
    signature_header: str = setting(
        "",
        help="auth = hmac: request header carrying the signature (default: the tool's own, e.g. Sentry-Hook-Signature;"
        " X-Grafana-Alerting-Signature otherwise).",
    )
    signature_style: str = setting(
        "hex",
        help="auth = hmac: 'hex' (Grafana: the hex digest) or 'sha256=' (GitHub: 'sha256=<hex digest>').",
        choices=SIGNATURE_STYLES,
    )
    timestamp_header: str = setting(
        "",
        help="auth = hmac: header with a Unix timestamp; when set the signature covers '<timestamp>:<body>'.",
    )
    replay_window: timedelta = setting(
        timedelta(minutes=5), help="auth = hmac with timestamp_header: largest accepted clock difference."
    )
    routing_key_env: str = setting(
        "", help="auth = routing_key (pagerduty only): environment variable holding the expected routing_key."
    )
    group: str = setting("", help="Resolver group of this integration's incidents when no rule sets one.")
    category: str = setting("", help="Category of this integration's incidents when no rule sets one.")
    service: str = setting(
        "", help="Service of this integration's incidents when neither a rule nor the service label sets one."
    )
    service_label: str = setting(
        "service",
        help="Alert label whose value becomes the incident's service unless a rule sets one (empty: none).",
    )
    category_label: str = setting(
        "category",
        help="Alert label whose value becomes the incident's category unless a rule sets one (empty: none);"
        " with [procedures] categories, only a known one.",
    )
    impact: str = setting("", help="Impact when no rule sets one (else from severity_map).", choices=LEVELS_OR_NONE)
    urgency: str = setting("", help="Urgency when no rule sets one (else from severity_map).", choices=LEVELS_OR_NONE)
    severity_map: dict[str, list[str]] = setting(
        factory=dict,
        help="Source severity -> [impact, urgency], laid over the built-in map (critical, error, warning, info …).",
    )
    mapping: dict[str, str | list[str]] = setting(
        factory=dict,
        help="kind = generic or a tool kind: field -> dotted path, template ('{host}: {check}') or list of them"
        " into the tool's JSON (title, dedup_key, …), laid over the tool kind's own.",
    )
    sns_topic_arns: list[str] = setting(
        factory=list,
        help="kind = sns: the topics whose messages are taken (the signature proves only that AWS sent it).",
    )
    sns_fetch: bool = setting(
        True,
        help="kind = sns: fetch signing certificates (and confirm subscriptions) from Amazon's SNS hosts;"
        " false: certificates only from sns_certificate_dir.",
    )
    sns_certificate_dir: str = setting("", help="kind = sns: folder of signing certificates (<name>.pem).")
    rate_limit: int = setting(600, help="Requests accepted per rate_window (0: no limit); more answer 429.", minimum=0)
    rate_window: timedelta = setting(timedelta(minutes=1), help="Window of rate_limit.")
    idempotency_window: timedelta = setting(
        timedelta(minutes=10),
        help="A request with the same Idempotency-Key, or the same body, within this window has no second effect.",
    )
    group_by: list[str] = setting(
        factory=list,
        help="Labels whose values put alerts into one incident (empty: Alertmanager's groupKey, else one per alert).",
    )
    resolve_when: str = setting(
        "all",
        help="When a grouped incident resolves: all of its alerts resolved, any one, or never automatically.",
        choices=RESOLVE_POLICIES,
    )
    reopen_window: timedelta = setting(
        timedelta(hours=1), help="A re-fire this soon after the incident resolved reopens it (else a new incident)."
    )
    flap_window: timedelta = setting(timedelta(hours=1), help="Window in which reopen flaps are counted.")
    flap_threshold: int = setting(
        3, help="More flaps than this within flap_window mark the incident flapping: no more paging.", minimum=1
    )

    def options(self):
        """The parser options of this integration's kind (the field mapping for generic and the tool kinds)."""
        if self.kind in PRESETS:
            return PRESETS[self.kind].options(dict(self.mapping))
        if self.kind != "generic":
            return None
        return GenericOptions(mapping=dict(self.mapping))

    @property
    def signature(self) -> str:
        """The header carrying an HMAC signature: the configured one, else the tool kind's own, else Grafana's."""
        preset = PRESETS.get(self.kind)
        return self.signature_header or (preset and preset.signature_header) or "X-Grafana-Alerting-Signature"

    def defaults(self) -> dict:
        """Per-integration defaults for the allocate step (``ctx.defaults``)."""
        return {
            "group": self.group,
            "category": self.category,
            "service": self.service,
            "service_label": self.service_label,
            "category_label": self.category_label,
            "impact": self.impact,
            "urgency": self.urgency,
            "severity_map": {
                **(PRESETS[self.kind].severity_map if self.kind in PRESETS else {}),
                **{name: tuple(pair) for name, pair in self.severity_map.items()},
            },
        }


def from_label(field: str, signal, defaults: dict, known: list[str] | tuple[str, ...] = ()) -> tuple[str, str]:
    """(why, value) for the allocate step: the value of the label the integration names for ``field``
    (``service_label``, ``category_label``), or an empty value; with ``known`` values, only one of them.
    Rules win over it; it wins over the integration's own default (``service``, ``category``)."""
    name = defaults.get(f"{field}_label") or ""
    value = (signal.labels or {}).get(name, "") if name else ""
    value = value.strip()[:100] if isinstance(value, str) else ""
    return f"label {name!r}", value if not known or value in known else ""


@dataclass(frozen=True)
class Maintenance:
    name: str = setting(help="Name of the maintenance window.")
    start: str = setting(help="Start, ISO 8601 with offset (2026-12-01T22:00:00+01:00).")
    end: str = setting(help="End (exclusive), ISO 8601 with offset.")
    integrations: list[str] = setting(
        factory=list, help="Integrations (and [[mail_alert]] rules) it applies to (empty: all)."
    )
    labels: dict[str, str] = setting(factory=dict, help="Labels a signal must carry, all equal (empty: any).")
    reason: str = setting("", help="Why; shown in the incident's decisions.")

    @property
    def starts(self) -> datetime:
        return _instant(self.start)

    @property
    def ends(self) -> datetime:
        return _instant(self.end)

    def covers(self, integration: str, labels: dict, at: datetime) -> bool:
        """Whether a signal of ``integration`` with ``labels`` at ``at`` falls in this window."""
        if not (self.starts <= at < self.ends):
            return False
        if self.integrations and integration not in self.integrations:
            return False
        return all(labels.get(k) == v for k, v in self.labels.items())


def _instant(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return value


def check_integrations(config) -> None:
    """Cross-references and values the schema cannot check; raises KeyProblem naming the key."""
    groups = {g.name for g in config.group}
    names = {i.name for i in config.integration} | {m.name for m in config.mail_alert}  # maintenance may name both
    for i in config.integration:
        where = f"[[integration]] {i.name!r}"
        if not i.name or any(c in i.name for c in "/?#% ") or i.name != i.name.strip():
            raise KeyProblem((where, "name"), "must be a plain name for a URL path (no '/', '?', '#', '%', blanks)")
        if i.group and i.group not in groups:
            raise KeyProblem((where, "group"), f"no [[group]] named {i.group!r}")
        if i.auth == "bearer" and not i.token_env:
            raise KeyProblem((where, "token_env"), "auth = 'bearer' needs token_env (the variable holding the token)")
        if i.auth == "hmac" and not i.secret_env:
            raise KeyProblem((where, "secret_env"), "auth = 'hmac' needs secret_env (the variable holding the secret)")
        if i.auth == "routing_key":
            if i.kind != "pagerduty":
                raise KeyProblem((where, "auth"), "'routing_key' authentication is for kind = 'pagerduty' only")
            if not i.routing_key_env:
                raise KeyProblem((where, "routing_key_env"), "auth = 'routing_key' needs routing_key_env")
        if i.mapping and i.kind != "generic" and i.kind not in PRESETS:
            raise KeyProblem((where, "mapping"), "a field mapping is for kind = 'generic' and the tool kinds only")
        if (i.auth == "sns") != (i.kind == "sns"):
            raise KeyProblem((where, "auth"), "kind = 'sns' takes auth = 'sns' (Amazon's signature), and only it does")
        if i.kind == "sns" and not i.sns_topic_arns:
            raise KeyProblem(
                (where, "sns_topic_arns"),
                "kind = 'sns' needs the topic ARNs it takes: the signature proves that Amazon sent a message, "
                "not that it is your topic",
            )
        if i.kind == "sns" and not i.sns_fetch and not i.sns_certificate_dir:
            raise KeyProblem((where, "sns_certificate_dir"), "sns_fetch = false needs sns_certificate_dir")
        try:
            i.options()
            severity_to_impact_urgency("x", {k: tuple(v) for k, v in i.severity_map.items()})
        except ConfigError as exc:
            raise KeyProblem((where,), str(exc)) from None
    for m in config.maintenance:
        where = f"[[maintenance]] {m.name!r}"
        for key in ("start", "end"):
            try:
                getattr(m, f"{key}s")
            except ValueError as exc:
                raise KeyProblem((where, key), f"not an ISO 8601 time with offset: {exc}") from None
        if m.ends <= m.starts:
            raise KeyProblem((where, "end"), "must be after start")
        for name in m.integrations:
            if name not in names:
                raise KeyProblem((where, "integrations"), f"no [[integration]] or [[mail_alert]] named {name!r}")


def integration_named(config, name: str) -> Integration | None:
    return next((i for i in config.integration if i.name == name), None)


def maintenance_for(config, integration: str, labels: dict, at: datetime) -> Maintenance | None:
    """The first maintenance window covering this signal, if any."""
    return next((m for m in config.maintenance if m.covers(integration, labels, at)), None)


# ---------------------------------------------------------------- authentication


@dataclass(frozen=True)
class Denied:
    """Why a request is refused: HTTP status (401 missing, 403 wrong, 503 not configured) and the text."""

    status: int
    error: str


def _env(name: str, integration: str, what: str) -> str | Denied:
    value = secret(name)
    if value is None:
        _warn_once(integration, f"integration {integration!r}: {what} environment variable {name} is not set")
        return Denied(503, f"integration '{integration}' is not configured on the server ({what} missing)")
    return value


_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def _warn_once(integration: str, message: str) -> None:
    with _warned_lock:
        if (integration, message) in _warned:
            return
        _warned.add((integration, message))
    log.warning("%s; its requests are answered 503", message)


def _same(given: str, expected: str) -> bool:
    """Whether a credential matches, in constant time. Text that is not plain (a lone surrogate
    cannot be encoded; NUL never belongs in a credential) matches nothing: it is a denial."""
    try:
        a, b = given.encode("utf-8"), expected.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return b"\0" not in a and hmac.compare_digest(a, b)


# A Unix timestamp as senders write it: ASCII digits, maybe a fraction. float() alone would also take
# "nan" (which passes every window comparison), "inf", "1_0", " 12 " and non-ASCII digits.
_TIMESTAMP = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")


def fail_closed(check):
    """Any exception while checking a credential is a denial, never a pass."""

    @functools.wraps(check)
    def guarded(integration: Integration, *args) -> Denied | None:
        try:
            return check(integration, *args)
        except Exception:
            log.exception("integration %r: checking a credential failed; the request is refused", integration.name)
            return Denied(403, "credentials could not be checked")

    return guarded


@fail_closed
def authenticate(integration: Integration, headers, body: bytes, now: datetime) -> Denied | None:
    """Check a request's bearer token or body signature; None when it may pass.

    ``auth = routing_key`` is checked by :func:`authenticate_routing_key` once the
    body is decoded. Fails closed: an exception while checking is a 403.
    """
    if integration.auth == "bearer":
        expected = _env(integration.token_env, integration.name, "token")
        if isinstance(expected, Denied):
            return expected
        given = headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if not given:
            return Denied(401, "authentication required: send 'Authorization: Bearer <token>'")
        if scheme.lower() != "bearer" or not _same(token.strip(), expected):
            return Denied(403, "wrong token")
        return None
    if integration.auth == "hmac":
        secret = _env(integration.secret_env, integration.name, "secret")
        if isinstance(secret, Denied):
            return secret
        given = headers.get(integration.signature, "")
        if not given:
            header = integration.signature
            return Denied(401, f"authentication required: send the HMAC-SHA256 signature in {header}")
        signed = body
        if integration.timestamp_header:
            stamp = headers.get(integration.timestamp_header, "")
            if not stamp:
                return Denied(401, f"authentication required: send the timestamp in {integration.timestamp_header}")
            stamp = stamp.strip()
            if not _TIMESTAMP.fullmatch(stamp):
                return Denied(403, f"{integration.timestamp_header}: not a Unix timestamp")
            when = float(stamp)
            if not abs(now.timestamp() - when) <= integration.replay_window.total_seconds():
                return Denied(403, f"{integration.timestamp_header}: outside the replay window")
            signed = stamp.encode("ascii", "replace") + b":" + body
        digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
        expected = f"sha256={digest}" if integration.signature_style == "sha256=" else digest
        if not _same(given.strip().lower(), expected):
            return Denied(403, "wrong signature")
        return None
    return None


@fail_closed
def authenticate_routing_key(integration: Integration, payload) -> Denied | None:
    """PagerDuty-shaped events may authenticate by their ``routing_key`` (the decoded body).

    Fails closed: a key that is not plain text is a 403, an exception while checking too.
    """
    if integration.auth != "routing_key":
        return None
    expected = _env(integration.routing_key_env, integration.name, "routing key")
    if isinstance(expected, Denied):
        return expected
    given = payload.get("routing_key") if isinstance(payload, dict) else None
    if not isinstance(given, str) or not given:
        return Denied(401, "authentication required: field 'routing_key' is missing")
    if not _same(given, expected):
        return Denied(403, "wrong routing_key")
    return None


# ---------------------------------------------------------------- rate limit


class RateLimiter:
    """A token bucket per integration: ``limit`` requests per ``window``, refilled evenly."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, integration: Integration) -> float:
        """0 when the request may pass, else the seconds until it could (for Retry-After)."""
        limit, window = integration.rate_limit, integration.rate_window.total_seconds()
        if limit <= 0 or window <= 0:
            return 0.0
        rate = limit / window
        now = self.clock.now().timestamp()
        with self._lock:
            tokens, at = self._buckets.get(integration.name, (float(limit), now))
            tokens = min(float(limit), tokens + max(0.0, now - at) * rate)
            if tokens >= 1.0:
                self._buckets[integration.name] = (tokens - 1.0, now)
                return 0.0
            self._buckets[integration.name] = (tokens, now)
            return (1.0 - tokens) / rate


# ---------------------------------------------------------------- idempotency


@dataclass(frozen=True)
class Seen:
    inbound_id: int
    dedup_key: str | None  # the PagerDuty dedup key answered the first time
    at: float


class RecentRequests:
    """Requests taken within their idempotency window, by idempotency key (in this process).

    The Inbound's unique ``dedup_key`` (the key plus the window's time bucket) is the
    durable guard across processes; this memory also covers a re-delivery that
    crosses a bucket boundary, without a database read per request.

    No lock, on purpose: each request thread runs single OrderedDict operations, which
    the interpreter runs whole. A lock here convoyed the request threads behind the
    GIL (twice the CPU per request with 2 threads, bench/webhook_intake.py); the worst
    a race can do is forget an entry early, and the dedup key above still holds.
    """

    def __init__(self, clock: Clock, max_entries: int = 100_000):
        self.clock = clock
        self.max_entries = max_entries
        self._seen: OrderedDict[str, Seen] = OrderedDict()

    @staticmethod
    def key(integration: Integration, idempotency_key: str | None, body: bytes) -> str:
        if idempotency_key:
            return "k:" + hashlib.sha256(f"{integration.name}\0{idempotency_key}".encode()).hexdigest()[:40]
        return "b:" + hashlib.sha256(integration.name.encode() + b"\0" + body).hexdigest()[:40]

    def dedup_key(self, integration: Integration, key: str) -> str:
        """The Inbound dedup key: integration, request key and the window's time bucket."""
        window = max(1, int(integration.idempotency_window.total_seconds()))
        bucket = int(self.clock.now().timestamp()) // window
        return f"hook:{integration.name}:{key}:{bucket}"[:255]

    def get(self, integration: Integration, key: str) -> Seen | None:
        seen = self._seen.get(key)
        if seen is None:
            return None
        if self.clock.now().timestamp() - seen.at > integration.idempotency_window.total_seconds():
            self._seen.pop(key, None)
            return None
        return seen

    def remember(self, key: str, inbound_id: int, dedup_key: str | None) -> None:
        self._seen[key] = Seen(inbound_id, dedup_key, self.clock.now().timestamp())
        try:
            self._seen.move_to_end(key)
            while len(self._seen) > self.max_entries:
                self._seen.popitem(last=False)
        except KeyError:  # another thread took it meanwhile
            pass
