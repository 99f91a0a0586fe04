"""``[[mail_alert]]``: alert e-mails of monitoring tools that open and resolve incidents as webhook alerts do.

A rule selects mail by its sender (``senders``) and/or the ``[[address]]`` it came to (``addresses``);
its subject patterns (and body patterns) read host, check and state with named groups
(parsers/email/monitoring.py); the state words map to firing, resolved, acknowledged or ignore. A
``preset`` (nagios, icinga2, monit, zabbix) gives the tool's default mail format; every key given
is laid over it. Patterns are compiled once, on RE2 like the rule patterns (gateway/rules.py): a
hostile subject costs one pass over the text. :func:`check_mail_alerts` refuses at load a pattern
RE2 cannot run and a rule whose patterns lack a named group it needs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import timedelta

from gateway.config.mail_settings import given_defaults, match_address
from gateway.config.schema import KeyProblem, setting
from gateway.core.errors import ConfigError
from gateway.rules import compile_regex
from parsers.email.monitoring import (
    DEFAULT_FINGERPRINT,
    DEFAULT_STATES,
    MAIL_PRESETS,
    REQUIRED_GROUPS,
    MailFormat,
    group_names,
)
from parsers.generic import STATES
from parsers.severity import severity_to_impact_urgency
from parsers.template import parse_template

LEVELS_OR_NONE = ("", "high", "medium", "low")
_GROUP_HINT = {
    "host": "the host the alert is about, e.g. (?P<host>[^/]+)",
    "state": "the tool's word for what happened (PROBLEM, RECOVERY …), e.g. (?P<state>[A-Z]+)",
}


def _patterns(value: str | list[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


@dataclass(frozen=True)
class MailAlert:
    name: str = setting(help="Name of the rule (unique); the incidents' integration and the actor of their changes.")
    preset: str = setting(
        "",
        help="A monitoring tool's default mail format: its patterns, state words, titles and severities"
        " (keys given here are laid over it).",
        choices=("", *MAIL_PRESETS),
    )
    senders: list[str] = setting(
        factory=list, help="Mail From these addresses (or @domains) is read by this rule (senders or addresses needed)."
    )
    addresses: list[str] = setting(
        factory=list, help="Mail that came to these [[address]] entries is read by this rule (all senders)."
    )
    subject: str | list[str] = setting(
        factory=list,
        help="Regular expression(s) (RE2, case-insensitive) searched in the subject; the first that matches"
        " reads the named groups host, state (required), check, severity and any others.",
    )
    body: str | list[str] = setting(
        factory=list,
        help="Regular expression(s) searched in the body text; the first that matches fills the groups the"
        " subject did not give (e.g. Monit's host).",
    )
    states: dict[str, str] = setting(
        factory=dict,
        help="State word -> firing, resolved, acknowledged or ignore, laid over the preset's (else PROBLEM,"
        " RECOVERY, ACKNOWLEDGEMENT, OK, …); an unknown word quarantines the mail.",
    )
    title: str | list[str] = setting(
        factory=list,
        help="Incident title template(s) over the groups ('{host}: {check}', '{subject}'); the first whose"
        " groups are all present wins (empty: the preset's, else the subject).",
    )
    fingerprint: list[str] = setting(
        factory=list,
        help="Groups whose values make the alert's dedup key (empty: the preset's, else host and check).",
    )
    group: str = setting("", help="Resolver group of these incidents when no rule sets one.")
    category: str = setting("", help="Category of these incidents when no rule sets one.")
    service: str = setting("", help="Service of these incidents when no rule sets one.")
    impact: str = setting("", help="Impact when no rule sets one (else from the severity).", choices=LEVELS_OR_NONE)
    urgency: str = setting("", help="Urgency when no rule sets one (else from the severity).", choices=LEVELS_OR_NONE)
    severity_map: dict[str, list[str]] = setting(
        factory=dict, help="Severity group value -> [impact, urgency], laid over the preset's and the built-in map."
    )
    reopen_window: timedelta = setting(
        timedelta(hours=1), help="A problem mail this soon after its incident resolved reopens it (else a new one)."
    )
    flap_window: timedelta = setting(timedelta(hours=1), help="Window in which reopen flaps are counted.")
    flap_threshold: int = setting(
        3, help="More flaps than this within flap_window mark the incident flapping: no more paging.", minimum=1
    )

    # The alert steps (gateway/pipeline/alert_steps.py) read these of an [[integration]] as well.
    kind = "mail"
    resolve_when = "all"  # one fingerprint per incident: its recovery resolves it

    @property
    def format(self) -> MailFormat | None:
        return MAIL_PRESETS.get(self.preset)

    def subject_patterns(self) -> tuple[str, ...]:
        return _patterns(self.subject) or (self.format.subject if self.format else ())

    def body_patterns(self) -> tuple[str, ...]:
        return _patterns(self.body) or (self.format.body if self.format else ())

    def state_words(self) -> dict[str, str]:
        base = self.format.states if self.format else DEFAULT_STATES
        return {**base, **{" ".join(k.split()).lower(): v for k, v in self.states.items()}}

    def titles(self) -> tuple[str, ...]:
        return _patterns(self.title) or (self.format.title if self.format else ())

    def fingerprint_groups(self) -> tuple[str, ...]:
        return tuple(self.fingerprint) or (self.format.fingerprint if self.format else DEFAULT_FINGERPRINT)

    @functools.cached_property
    def compiled(self) -> tuple[tuple, tuple]:
        """(subject patterns, body patterns) compiled on RE2 once; KeyProblem naming a bad one."""
        where = f"[[mail_alert]] {self.name!r}"
        subject = tuple(compile_regex(p, (where, f"subject[{i}]")) for i, p in enumerate(self.subject_patterns()))
        body = tuple(compile_regex(p, (where, f"body[{i}]")) for i, p in enumerate(self.body_patterns()))
        return subject, body

    def defaults(self) -> dict:
        """The allocation defaults of this rule's incidents (laid over those of the [[address]])."""
        return {
            **given_defaults(self),
            "severity_map": {
                **(self.format.severity_map if self.format else {}),
                **{name.lower(): tuple(pair) for name, pair in self.severity_map.items()},
            },
        }

    def selects(self, sender: str, recipient: str) -> bool:
        """Whether mail From ``sender`` that came to the [[address]] ``recipient`` is this rule's to read."""
        if self.senders and not _address_in(sender, self.senders):
            return False
        if self.addresses and not _address_in(recipient, self.addresses):
            return False
        return bool(self.senders or self.addresses)


def _address_in(address: str, entries: list[str]) -> bool:
    address = (address or "").strip().strip("<>").lower()
    if "@" not in address:
        return False
    domain = "@" + address.rpartition("@")[2]
    return any(entry.strip().lower() in (address, domain) for entry in entries)


def check_mail_alerts(config) -> None:
    """What the schema cannot check; raises KeyProblem naming the rule and the key."""
    groups = {g.name for g in config.group}
    for rule in config.mail_alert:
        where = f"[[mail_alert]] {rule.name!r}"
        if not rule.name or rule.name != rule.name.strip():
            raise KeyProblem((where, "name"), "must be a plain name")
        if not (rule.senders or rule.addresses):
            raise KeyProblem(
                (where,),
                "give senders (the tool's From addresses) or addresses (the [[address]] it mails), or both:"
                " a rule for every mail would let anyone open alerts",
            )
        for key, entries in (("senders", rule.senders), ("addresses", rule.addresses)):
            for entry in entries:
                value = entry.strip().lower()
                if value.count("@") != 1 or value.endswith("@"):
                    raise KeyProblem((where, key), f"{entry!r}: expected name@domain or @domain")
        for entry in rule.addresses:
            if match_address(config, entry) is None:
                raise KeyProblem((where, "addresses"), f"no [[address]] accepts mail for {entry!r}")
        if rule.group and rule.group not in groups:
            raise KeyProblem((where, "group"), f"no [[group]] named {rule.group!r}")
        if not rule.subject_patterns():
            raise KeyProblem((where, "subject"), "give a subject pattern (or a preset)")
        subject, body = rule.compiled
        in_body = group_names(body)
        for i, pattern in enumerate(subject):
            for name in REQUIRED_GROUPS:
                if name not in pattern.groupindex and name not in in_body:
                    raise KeyProblem(
                        (where, f"subject[{i}]"),
                        f"the pattern has no named group '{name}' (nor has any body pattern): name {_GROUP_HINT[name]}",
                    )
        known = group_names(subject) | in_body
        for name in rule.fingerprint_groups():
            if name not in known:
                raise KeyProblem((where, "fingerprint"), f"no pattern has a named group {name!r}")
        for word, meaning in rule.states.items():
            if meaning not in STATES:
                raise KeyProblem((where, "states", word), f"must be one of {', '.join(STATES)}; got {meaning!r}")
        try:
            for text in rule.titles():
                parse_template(text)
            severity_to_impact_urgency("x", {k: tuple(v) for k, v in rule.severity_map.items()})
        except ConfigError as exc:
            raise KeyProblem((where,), str(exc)) from None


def mail_alert_named(config, name: str) -> MailAlert | None:
    return next((m for m in config.mail_alert if m.name == name), None)
