"""Built-in webhook kinds for monitoring tools that cannot be told what to send: generic mappings.

Each preset is data, not code: where the tool's own JSON holds the title, the dedup key,
the state and the labels (paths and templates, :mod:`parsers.generic`), the tool's words
for its states, and its severities. An ``[[integration]]`` of one of these kinds may lay
its own ``mapping`` over the preset's. The README has, per tool, what to paste into it;
``tests/fixtures/tools/`` holds a firing and a resolving payload of each, shaped after the
tool's own documentation (the origin is noted there).

A state word that is not about an alert (Sentry's ``assigned``, Checkmk's ``DOWNTIMESTART``)
means ``ignore``: the request is stored and ignored with that reason, never refused, so the
tool does not retry it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from parsers.generic import IGNORE, GenericOptions
from parsers.severity import NAGIOS_SEVERITY
from parsers.signal import ACKNOWLEDGED, FIRING, RESOLVED


@dataclass(frozen=True)
class Preset:
    """A tool's mapping onto the generic schema, and what the README tells its users."""

    name: str
    tool: str  # the tool's own name, for messages and the README
    mapping: dict = field(default_factory=dict)
    labels_from: dict = field(default_factory=dict)
    status_words: dict = field(default_factory=dict)
    severity_map: dict[str, tuple[str, str]] = field(default_factory=dict)  # under the integration's own
    signature_header: str = ""  # the header of the tool's HMAC signature, when it signs

    def options(self, mapping: dict | None = None) -> GenericOptions:
        """The generic options of this preset, ``mapping`` (the integration's) laid over its own."""
        return GenericOptions(
            mapping={**self.mapping, **(mapping or {})},
            labels_from=self.labels_from,
            status_words=self.status_words,
            source=self.name,
        )


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        # Uptime Kuma, notification type "Webhook", request body "Preset - application/json":
        # {"heartbeat": {...}, "monitor": {...}, "msg": "..."}; heartbeat.status 0 down, 1 up,
        # 2 pending, 3 maintenance. Its "Test" button sends heartbeat and monitor null.
        Preset(
            name="uptime-kuma",
            tool="Uptime Kuma",
            mapping={
                "title": ["{monitor.name}: {heartbeat.msg}", "monitor.name", "msg"],
                "message": ["heartbeat.msg", "msg"],
                "dedup_key": "monitor.id",
                "status": "heartbeat.status",
            },
            labels_from={"monitor": "monitor.name", "monitor_type": "monitor.type", "url": "monitor.url"},
            status_words={"0": FIRING, "1": RESOLVED, "2": FIRING, "3": IGNORE},
        ),
        # Zabbix, a webhook media type whose parameters are the macros below (README, Zabbix).
        # {EVENT.VALUE} is 1 for a problem, 0 for its recovery; {EVENT.ID} is the problem's
        # event id in both, so the recovery finds the incident the problem opened.
        Preset(
            name="zabbix",
            tool="Zabbix",
            mapping={
                "title": ["{host_name}: {event_name}", "event_name"],
                "message": ["trigger_description", "event_opdata"],
                "severity": "event_severity",
                "dedup_key": "event_id",
                "status": "event_value",
                "link": "{zabbix_url}/tr_events.php?triggerid={trigger_id}&eventid={event_id}",
            },
            labels_from={"host": "host_name", "zabbix_severity": "event_severity"},
            status_words={"1": FIRING, "0": RESOLVED},
            severity_map={
                "disaster": ("high", "high"),
                "high": ("high", "medium"),
                "average": ("medium", "medium"),
                "warning": ("medium", "low"),
                "information": ("low", "low"),
                "not classified": ("low", "low"),
            },
        ),
        # Sentry integration platform (an internal integration): issue alerts (resource
        # event_alert, action "triggered"), issue webhooks (resource issue: created, resolved,
        # assigned, archived, unresolved) and metric alerts (critical, warning, resolved).
        # The issue id ties an issue alert to the later "resolved".
        Preset(
            name="sentry",
            tool="Sentry",
            mapping={
                "title": ["data.event.title", "data.issue.title", "data.description_title"],
                "message": ["data.event.culprit", "data.issue.culprit", "data.description_text"],
                "severity": ["data.event.level", "data.issue.level", "action"],
                "dedup_key": ["data.event.issue_id", "data.issue.id", "data.metric_alert.id"],
                "status": "action",
                "link": ["data.event.web_url", "data.issue.web_url", "data.web_url"],
            },
            labels_from={
                "sentry_rule": "data.triggered_rule",
                "platform": ["data.event.platform", "data.issue.platform"],
            },
            status_words={
                "triggered": FIRING,
                "created": FIRING,
                "unresolved": FIRING,
                "critical": FIRING,
                "warning": FIRING,
                "resolved": RESOLVED,
                "assigned": IGNORE,
                "archived": IGNORE,
                "ignored": IGNORE,
            },
            severity_map={"fatal": ("high", "high"), "debug": ("low", "low")},
            signature_header="Sentry-Hook-Signature",
        ),
        # Datadog Webhooks integration with the payload of the README (Datadog's own variables:
        # $ALERT_TRANSITION is Triggered, Re-Triggered, Warn, Re-Warn, No Data, Re-No Data or
        # Recovered; $AGGREG_KEY is the same for an alert and its recovery).
        Preset(
            name="datadog",
            tool="Datadog",
            mapping={
                "title": "title",
                "message": "body",
                "severity": "alert_type",
                "dedup_key": ["aggreg_key", "alert_id"],
                "status": "transition",
                "link": "link",
            },
            labels_from={"host": "host", "scope": "scope", "datadog_priority": "priority"},
            status_words={
                "triggered": FIRING,
                "re-triggered": FIRING,
                "warn": FIRING,
                "re-warn": FIRING,
                "no data": FIRING,
                "re-no data": FIRING,
                "recovered": RESOLVED,
            },
            severity_map={"success": ("low", "low")},
        ),
        # Netdata Cloud, webhook notification integration: one request per alert transition;
        # severity "clear" is the recovery.
        Preset(
            name="netdata",
            tool="Netdata",
            mapping={
                "title": ["message", "{alert}: {chart}"],
                "message": "info",
                "severity": "severity",
                "dedup_key": ["{host}/{chart}/{alert}", "{space}/{chart}/{alert}", "{chart}/{alert}"],
                "status": "severity",
                "link": "alert_url",
            },
            labels_from={
                "host": "host",
                "chart": "chart",
                "context": "context",
                "alert_class": "class",
                "space": "space",
            },
            status_words={"critical": FIRING, "warning": FIRING, "clear": RESOLVED},
        ),
        # Checkmk, through the notification script contrib/checkmk-inlet (it posts the
        # NOTIFY_* variables Checkmk gives every notification script, as they are).
        Preset(
            name="checkmk",
            tool="Checkmk",
            mapping={
                "title": ["{NOTIFY_HOSTNAME}: {NOTIFY_SERVICEDESC}", "{NOTIFY_HOSTNAME} is {NOTIFY_HOSTSTATE}"],
                "message": ["NOTIFY_SERVICEOUTPUT", "NOTIFY_HOSTOUTPUT"],
                "severity": ["NOTIFY_SERVICESTATE", "NOTIFY_HOSTSTATE"],
                "dedup_key": ["{NOTIFY_HOSTNAME}/{NOTIFY_SERVICEDESC}", "NOTIFY_HOSTNAME"],
                "status": "NOTIFY_NOTIFICATIONTYPE",
            },
            labels_from={"host": "NOTIFY_HOSTNAME", "check": "NOTIFY_SERVICEDESC"},
            status_words={
                "problem": FIRING,
                "recovery": RESOLVED,
                "acknowledgement": ACKNOWLEDGED,
                **{word: IGNORE for word in ("flappingstart", "flappingstop", "flappingdisabled", "custom")},
                **{word: IGNORE for word in ("downtimestart", "downtimeend", "downtimecancelled")},
            },
            severity_map=NAGIOS_SEVERITY,
        ),
        # Icinga 2, through the notification command contrib/icinga2-inlet (it posts the
        # variables of Icinga's own mail notification commands, as they are).
        Preset(
            name="icinga2",
            tool="Icinga 2",
            mapping={
                "title": [
                    "{HOSTDISPLAYNAME}: {SERVICEDISPLAYNAME}",
                    "{HOSTNAME}: {SERVICENAME}",
                    "{HOSTDISPLAYNAME} is {HOSTSTATE}",
                    "{HOSTNAME} is {HOSTSTATE}",
                ],
                "message": ["SERVICEOUTPUT", "HOSTOUTPUT"],
                "severity": ["SERVICESTATE", "HOSTSTATE"],
                "dedup_key": ["{HOSTNAME}!{SERVICENAME}", "HOSTNAME"],
                "status": "NOTIFICATIONTYPE",
            },
            labels_from={"host": "HOSTNAME", "check": "SERVICENAME"},
            status_words={
                "problem": FIRING,
                "recovery": RESOLVED,
                "acknowledgement": ACKNOWLEDGED,
                **{word: IGNORE for word in ("custom", "flappingstart", "flappingend")},
                **{word: IGNORE for word in ("downtimestart", "downtimeend", "downtimeremoved")},
            },
            severity_map=NAGIOS_SEVERITY,
        ),
    )
}
