"""Alert e-mails of monitoring tools: an e-mail Signal in, one alert Signal out.

Tools that can only send mail (Nagios, Icinga 2, Monit, Zabbix, cron scripts) say in the subject
(and the body) which host and which check changed state. A ``[[mail_alert]]`` rule
(gateway/config/mail_alert_settings.py) gives patterns whose *named groups* read that:

- ``host`` and ``state`` (required): where the problem is, and the tool's word for what happened
  (``PROBLEM``, ``RECOVERY``, Monit's ``Does not exist`` / ``Exists``), which the rule's state words
  map to firing, resolved, acknowledged or ignore;
- ``check`` (the service, trigger or check name), ``severity`` (``CRITICAL``, ``DOWN``) and any
  other named group: kept as labels; the fingerprint groups (host and check unless the rule
  says otherwise) make the alert's dedup key, so a repeat and the recovery find the incident the
  problem opened, as a webhook alert's fingerprint does.

Pure (no I/O): the patterns come compiled (RE2, linear time: ``compile_regex`` of gateway/rules.py)
and are searched in the UTF-8 bytes of the subject and of the first ``BODY_LIMIT`` characters of
the body. The first subject pattern that matches wins; the first body pattern that matches fills
the groups the subject did not give. ``MAIL_PRESETS`` holds the default mail formats of the tools
(the origin is noted on each, and in tests/fixtures/mail/README.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.core.errors import ParseError
from parsers.generic import IGNORE, STATUS_WORDS
from parsers.severity import NAGIOS_SEVERITY
from parsers.signal import ACKNOWLEDGED, FIRING, RESOLVED, Signal
from parsers.template import parse_template

REQUIRED_GROUPS = ("host", "state")
DEFAULT_FINGERPRINT = ("host", "check")
BODY_LIMIT = 100_000  # characters of the body the body patterns read: alert mails are short
_MAX_VALUE = 500  # characters kept of one group's value
DEFAULT_STATES = {**STATUS_WORDS, "recovery": RESOLVED, "acknowledgement": ACKNOWLEDGED}


@dataclass(frozen=True)
class MailFormat:
    """A monitoring tool's default alert mail: patterns, state words, title and fingerprint."""

    name: str
    tool: str
    subject: tuple[str, ...]
    body: tuple[str, ...] = ()
    states: dict[str, str] = field(default_factory=dict)
    title: tuple[str, ...] = ()
    fingerprint: tuple[str, ...] = DEFAULT_FINGERPRINT
    severity_map: dict[str, tuple[str, str]] = field(default_factory=dict)


# Nagios' $NOTIFICATIONTYPE$ (Icinga 2's $notification.type$ has the same words, FLAPPINGEND and
# DOWNTIMEREMOVED among them).
_NAGIOS_TYPES = {
    "problem": FIRING,
    "recovery": RESOLVED,
    "acknowledgement": ACKNOWLEDGED,
    **{word: IGNORE for word in ("flappingstart", "flappingstop", "flappingend", "flappingdisabled", "custom")},
    **{word: IGNORE for word in ("downtimestart", "downtimeend", "downtimecancelled", "downtimeremoved")},
}
# Monit's event table (src/event.c, Event_Table): per event its "failed", "succeeded", "changed" and
# "changed not" description; $EVENT in the mail is one of them.
_MONIT_EVENTS = (
    ("Download bytes exceeded", "Download bytes ok", "Download bytes changed", "Download bytes not changed"),
    ("Upload bytes exceeded", "Upload bytes ok", "Upload bytes changed", "Upload bytes not changed"),
    ("Checksum failed", "Checksum succeeded", "Checksum changed", "Checksum not changed"),
    ("Connection failed", "Connection succeeded", "Connection changed", "Connection not changed"),
    ("Content failed", "Content succeeded", "Content match", "Content doesn't match"),
    ("Data access error", "Data access succeeded", "Data access changed", "Data access not changed"),
    ("Execution failed", "Execution succeeded", "Execution changed", "Execution not changed"),
    (
        "Filesystem flags failed",
        "Filesystem flags succeeded",
        "Filesystem flags changed",
        "Filesystem flags not changed",
    ),
    ("GID failed", "GID succeeded", "GID changed", "GID not changed"),
    ("Heartbeat failed", "Heartbeat succeeded", "Heartbeat changed", "Heartbeat not changed"),
    ("ICMP failed", "ICMP succeeded", "ICMP changed", "ICMP not changed"),
    ("Monit instance failed", "Monit instance succeeded", "Monit instance changed", "Monit instance not changed"),
    ("Invalid type", "Type succeeded", "Type changed", "Type not changed"),
    ("Link down", "Link up", "Link changed", "Link not changed"),
    ("Does not exist", "Exists", "Existence changed", "Existence not changed"),
    ("Download packets exceeded", "Download packets ok", "Download packets changed", "Download packets not changed"),
    ("Upload packets exceeded", "Upload packets ok", "Upload packets changed", "Upload packets not changed"),
    ("Permission failed", "Permission succeeded", "Permission changed", "Permission not changed"),
    ("PID failed", "PID succeeded", "PID changed", "PID not changed"),
    ("PPID failed", "PPID succeeded", "PPID changed", "PPID not changed"),
    ("Resource limit matched", "Resource limit succeeded", "Resource limit changed", "Resource limit not changed"),
    ("Saturation exceeded", "Saturation ok", "Saturation changed", "Saturation not changed"),
    ("Size failed", "Size succeeded", "Size changed", "Size not changed"),
    ("Speed failed", "Speed ok", "Speed changed", "Speed not changed"),
    ("Status failed", "Status succeeded", "Status changed", "Status not changed"),
    ("Timeout", "Timeout recovery", "Timeout changed", "Timeout not changed"),
    ("Timestamp failed", "Timestamp succeeded", "Timestamp changed", "Timestamp not changed"),
    ("UID failed", "UID succeeded", "UID changed", "UID not changed"),
    ("Uptime failed", "Uptime succeeded", "Uptime changed", "Uptime not changed"),
)


def _monit_states() -> dict[str, str]:
    """Failed and changed fire, succeeded and "changed not" resolve; "Action done" (a user's start or
    stop) and Monit's own start, stop or reload are not alerts."""
    states = {"action done": IGNORE}
    for failed, succeeded, changed, unchanged in _MONIT_EVENTS:
        states.update({failed.lower(): FIRING, changed.lower(): FIRING})
        states.update({succeeded.lower(): RESOLVED, unchanged.lower(): RESOLVED})
    states["monit instance changed"] = IGNORE
    return states


MAIL_PRESETS: dict[str, MailFormat] = {
    preset.name: preset
    for preset in (
        # Nagios Core's sample commands.cfg (sample-config/template-object/commands.cfg.in):
        # notify-service-by-email "** $NOTIFICATIONTYPE$ Service Alert: $HOSTALIAS$/$SERVICEDESC$ is $SERVICESTATE$ **",
        # notify-host-by-email "** $NOTIFICATIONTYPE$ Host Alert: $HOSTNAME$ is $HOSTSTATE$ **".
        MailFormat(
            name="nagios",
            tool="Nagios",
            subject=(
                r"^\*\* (?P<state>[A-Z]+) Service Alert: (?P<host>[^/]+)/(?P<check>.+) is (?P<severity>[A-Z]+) \*\*",
                r"^\*\* (?P<state>[A-Z]+) Host Alert: (?P<host>.+) is (?P<severity>[A-Z]+) \*\*",
            ),
            states=_NAGIOS_TYPES,
            title=("{host}: {check} is {severity}", "{host} is {severity}"),
            severity_map=NAGIOS_SEVERITY,
        ),
        # Icinga 2's own scripts (etc/icinga2/scripts/mail-service-notification.sh, mail-host-notification.sh):
        # "[$NOTIFICATIONTYPE] $SERVICEDISPLAYNAME on $HOSTDISPLAYNAME is $SERVICESTATE!",
        # "[$NOTIFICATIONTYPE] Host $HOSTDISPLAYNAME is $HOSTSTATE!".
        MailFormat(
            name="icinga2",
            tool="Icinga 2",
            subject=(
                r"^\[(?P<state>[A-Z]+)\] Host (?P<host>.+) is (?P<severity>[A-Z]+)!",
                r"^\[(?P<state>[A-Z]+)\] (?P<check>.+) on (?P<host>.+) is (?P<severity>[A-Z]+)!",
            ),
            states=_NAGIOS_TYPES,
            title=("{host}: {check} is {severity}", "{host} is {severity}"),
            severity_map=NAGIOS_SEVERITY,
        ),
        # Monit's default mail format (src/alert.h: ALERT_SUBJECT "monit alert --  $EVENT $SERVICE"; the
        # message has "Host:        $HOST"). A Monit service name has no blanks; the event may have some.
        MailFormat(
            name="monit",
            tool="Monit",
            subject=(r"^monit alert -- +(?P<state>.+) (?P<check>\S+)\s*$",),
            body=(r"(?m)^\s*Host:\s*(?P<host>\S+)",),
            states=_monit_states(),
            title=("{host}: {check}: {state}",),
        ),
        # Zabbix's default message templates of the Email media type (ui/include/classes/helpers/
        # CMediatypeHelper.php): "Problem: {EVENT.NAME}", "Resolved in {EVENT.DURATION}: {EVENT.NAME}",
        # "Updated problem in {EVENT.AGE}: {EVENT.NAME}"; the message has "Host: {HOST.NAME}" and
        # "Severity: {EVENT.SEVERITY}" (HTML by default: the body is read as its text).
        MailFormat(
            name="zabbix",
            tool="Zabbix",
            subject=(r"^(?P<state>Problem|Resolved|Updated problem)(?: in [^:]+)?: (?P<check>.+)$",),
            body=(
                r"(?m)^\W*Host:\W*(?P<host>[^\r\n<*]+?)[\s*]*$"
                r"(?:\s*\W*Severity:\W*(?P<severity>[^\r\n<*]+?)[\s*]*$)?",
            ),
            states={"problem": FIRING, "resolved": RESOLVED, "updated problem": IGNORE},
            title=("{host}: {check}",),
            severity_map={
                "disaster": ("high", "high"),
                "high": ("high", "medium"),
                "average": ("medium", "medium"),
                "warning": ("medium", "low"),
                "information": ("low", "low"),
                "not classified": ("low", "low"),
            },
        ),
    )
}


def group_names(patterns: Sequence) -> set[str]:
    """The named groups of compiled patterns."""
    return {name for pattern in patterns for name in pattern.groupindex}


def _search(pattern, text: bytes) -> dict[str, str] | None:
    found = pattern.search(text)
    if found is None:
        return None
    values = {}
    for name, value in found.groupdict().items():
        if value is not None:
            values[name] = " ".join(value.decode("utf-8", "replace").split())[:_MAX_VALUE]
    return values


def read_groups(subject_patterns: Sequence, body_patterns: Sequence, subject: str, body: str) -> dict[str, str] | None:
    """The named groups of the first subject pattern that matches, filled by the first body pattern that
    matches; None when no subject pattern matches or ``host`` or ``state`` is left empty."""
    encoded = subject.encode("utf-8", "replace")  # a lone surrogate becomes '?' instead of raising
    groups = next((g for g in (_search(p, encoded) for p in subject_patterns) if g is not None), None)
    if groups is None:
        return None
    if body_patterns:
        text = body[:BODY_LIMIT].encode("utf-8", "replace")
        found = next((g for g in (_search(p, text) for p in body_patterns) if g is not None), None)
        if found:
            groups = {**found, **{k: v for k, v in groups.items() if v}}
    if not all(groups.get(name) for name in REQUIRED_GROUPS):
        return None
    return groups


def state_of(word: str, states: dict[str, str]) -> str:
    """What the tool's state word means (firing, resolved, acknowledged, ignore); ParseError when unknown."""
    found = states.get(" ".join(word.split()).lower())
    if found is None:
        listed = ", ".join(repr(w) for w in states)
        raise ParseError(f"state {word!r} is not one of the configured state words ({listed})")
    return found


def alert_signal(
    mail: Signal,
    rule: str,
    groups: dict[str, str],
    *,
    states: dict[str, str],
    title: Sequence[str] = (),
    fingerprint: Sequence[str] = DEFAULT_FINGERPRINT,
) -> Signal | None:
    """The alert Signal of a mail whose groups a rule read; None when its state word means ignore.

    No reporter: a monitoring sender is not told about its incident (no acknowledgement, no
    resolution mail), as a webhook alert's source is not. Raises ParseError for a state word the
    rule does not know (the mail is quarantined and can be reprocessed once the word is added).
    """
    status = state_of(groups["state"], states)
    if status == IGNORE:
        return None
    fields = {**groups, "subject": mail.title}
    shown = next((t for t in (parse_template(text).render(fields.get) for text in title) if t), None)
    labels = {name: value for name, value in groups.items() if value}
    labels["mail_alert"] = rule
    if mail.reporter_email:
        labels["sender"] = mail.reporter_email
    key = "|".join(groups.get(name, "") for name in fingerprint)
    return dataclasses.replace(
        mail,
        title=(shown or mail.title)[:500],
        text=mail.full_text or mail.text,
        reporter_email=None,
        reporter_name=None,
        recipients=(),
        cc=(),
        message_id=None,
        references=(),
        subject_ref=None,
        fingerprint=f"mail-alert:{rule}:{key}",
        status=status,
        severity=groups.get("severity"),
        labels=labels,
        attachments=(),
        details={**mail.details, "mail_alert": rule, "subject": mail.title},
    )
