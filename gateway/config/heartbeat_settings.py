"""Heartbeats: ``[[heartbeat]]`` entries, and the built-in ones of Inlet's own inputs.

A heartbeat expects a beat at least every ``interval``; ``grace`` later it is expired and
opens one incident (gateway/incidents/heartbeats.py evaluates them in the timers role). A beat
is a ping to ``/hooks/<integration>/heartbeat/<name>``, an alert whose labels match
``labels`` (such as Alertmanager's always-firing ``Watchdog``, which then opens no incident),
or mail whose sender and subject match ``mail_from`` / ``mail_subject`` (RE2, linear time).
A ``[[mailbox]]`` with ``silent_after`` is a built-in heartbeat named ``mailbox:<name>``
whose beat is a successful poll; with ``[notifications] failing_incident_after`` the outbox is one
named ``outbox:deliveries`` whose beat is a moment notifications are not failing that long.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from gateway.config.schema import KeyProblem, setting
from gateway.rules import compile_regex

MAILBOX_PREFIX = "mailbox:"
OUTBOX = "outbox:deliveries"
OUTBOX_INTERVAL = timedelta(minutes=1)  # how soon after notifications count as failing the incident opens
DEFAULT_TITLE = "{name} silent since {since}"


@dataclass(frozen=True)
class Heartbeat:
    name: str = setting(
        help="Name of the heartbeat (letters, digits, '.', '_', '-'); its ping is .../heartbeat/<name>."
    )
    interval: timedelta = setting(help="Longest expected time between two beats.")
    grace: timedelta = setting(timedelta(minutes=5), help="How long a late heartbeat waits before it expires.")
    integration: str = setting(
        "",
        help="The [[integration]] whose POST (or GET) /hooks/<integration>/heartbeat/<name> is a beat; its"
        " authentication applies. With labels: only that integration's alerts count.",
    )
    labels: dict[str, str] = setting(
        factory=dict,
        help='An alert carrying all these labels is a beat (e.g. alertname = "Watchdog"), and opens no incident.',
    )
    mail_from: str = setting("", help="Regular expression (RE2) on the sender of mail that is a beat.")
    mail_subject: str = setting("", help="Regular expression (RE2) on the subject of mail that is a beat.")
    group: str = setting("", help="Group of the incident an expiry opens (empty: fallback_group).")
    priority: str = setting("P2", help="Priority of that incident (a priority of [sla] matrix).")
    title: str = setting(
        DEFAULT_TITLE, help="Title of that incident; {name} and {since} (the last beat's time) are filled in."
    )
    text: str = setting("", help="Description of that incident (empty: a sentence saying what went silent).")


def heartbeats_of(config) -> list[Heartbeat]:
    """Every heartbeat of ``config``: the ``[[heartbeat]]`` entries, then one per ``[[mailbox]]`` with silent_after."""
    built_in = [
        Heartbeat(
            name=MAILBOX_PREFIX + box.name,
            interval=box.silent_after,
            grace=timedelta(0),
            group=box.silent_group,
            title=f"mailbox {box.name} not polled since {{since}}",
            text=f"Inlet has not read the IMAP mailbox {box.name} ({box.user} at {box.host}) successfully"
            " since {since}: mail sent there is waiting unread. See the mailbox's last error on the Heartbeats page.",
        )
        for box in config.mailbox
        if box.silent_after > timedelta(0)
    ]
    section = config.notifications
    if section.failing_incident_after > timedelta(0):
        built_in.append(
            Heartbeat(
                name=OUTBOX,
                interval=OUTBOX_INTERVAL,
                grace=timedelta(0),
                group=section.failing_incident_group,
                title="notifications failing since {since}",
                text="Notifications Inlet sends have been failing for longer than "
                f"{int(section.failing_incident_after.total_seconds() // 60)} min since {{since}}: reporters,"
                " resolvers and stakeholders are not being told. See Notifications for the failing deliveries.",
            )
        )
    return [*config.heartbeat, *built_in]


def heartbeat_named(config, name: str) -> Heartbeat | None:
    return next((h for h in heartbeats_of(config) if h.name == name), None)


def impact_urgency(config, priority: str) -> tuple[str, str]:
    """The first (impact, urgency) cell of the priority matrix that gives ``priority``."""
    for impact in ("high", "medium", "low"):
        for urgency in ("high", "medium", "low"):
            if config.sla.matrix.get(impact, {}).get(urgency) == priority:
                return impact, urgency
    return "", ""


def check_heartbeats(config) -> None:
    """Cross-references and patterns of the heartbeats (raises KeyProblem)."""
    groups = {g.name for g in config.group}
    integrations = {i.name: i for i in config.integration}
    for m in config.mailbox:
        if timedelta(0) < m.silent_after <= m.poll_interval:
            raise KeyProblem(
                (f"[[mailbox]] {m.name!r}", "silent_after"), "must be longer than poll_interval (a poll is the beat)"
            )
        if m.silent_group and m.silent_group not in groups:
            raise KeyProblem((f"[[mailbox]] {m.name!r}", "silent_group"), f"no [[group]] named {m.silent_group!r}")
    for h in config.heartbeat:
        where = f"[[heartbeat]] {h.name!r}"
        if not h.name or h.name.startswith(MAILBOX_PREFIX) or not all(c.isalnum() or c in "._-" for c in h.name):
            raise KeyProblem((where, "name"), "use letters, digits, '.', '_' and '-' (mailbox: names are built in)")
        if h.interval <= timedelta(0):
            raise KeyProblem((where, "interval"), "must be longer than 0s")
        if h.grace < timedelta(0):
            raise KeyProblem((where, "grace"), "must be 0s or longer")
        if h.integration and h.integration not in integrations:
            raise KeyProblem((where, "integration"), f"no [[integration]] named {h.integration!r}")
        if h.integration and not h.labels and integrations[h.integration].auth not in ("bearer", "hmac"):
            raise KeyProblem((where, "integration"), "pings need an integration with auth = bearer or hmac")
        if not (h.integration or h.labels or h.mail_from or h.mail_subject):
            raise KeyProblem((where,), "say what counts as a beat: integration, labels, mail_from or mail_subject")
        if h.group and h.group not in groups:
            raise KeyProblem((where, "group"), f"no [[group]] named {h.group!r}")
        if impact_urgency(config, h.priority) == ("", ""):
            known = sorted({p for row in config.sla.matrix.values() for p in row.values()})
            raise KeyProblem((where, "priority"), f"unknown priority {h.priority!r}: use one of {', '.join(known)}")
        for key in ("mail_from", "mail_subject"):
            if getattr(h, key):
                compile_regex(getattr(h, key), (where, key))
