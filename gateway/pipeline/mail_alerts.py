"""Alert e-mails: a mail a ``[[mail_alert]]`` rule reads becomes an alert signal, applied by the alert steps.

The mail parser (mail_steps.MailParser) asks :func:`read_mail_alert` once the message is parsed. The
first rule (file order) that selects the mail (its sender, the [[address]] it came to) and whose
subject pattern matches turns it into one alert Signal (parsers/email/monitoring.py): fingerprint
from the host and check groups, firing / resolved / acknowledged from the state word. The Inbound
then runs ``ALERT_STEPS`` (gateway/service.py), the step list of webhook alerts: the same
fingerprint while open is one incident (a repeat counts), a recovery resolves it with
``auto-recovered``, a re-fire reopens it, flaps and maintenance windows as configured. Such a mail
never opens an ordinary ticket and its sender is never mailed (the alert has no reporter).

A state word that means ``ignore`` (Nagios' DOWNTIMESTART) stores the mail as ignored with that
reason; a word the rule does not know quarantines it (reprocess it after adding the word). Mail no
rule reads, own loops and bounces stay ordinary e-mail.
"""

from __future__ import annotations

from gateway.config.mail_alert_settings import MailAlert
from gateway.core.errors import ParseError
from gateway.pipeline.driver import Context, Discard
from parsers.email import BOUNCE, OWN_LOOP
from parsers.email.monitoring import alert_signal, read_groups
from parsers.signal import Signal

KIND = "mail-alert"  # the name of its step list


def read_mail_alert(ctx: Context, mail: Signal) -> list[Signal] | None:
    """The alert signal of this mail when a [[mail_alert]] rule reads it (and sets the context for the
    alert steps); None when none does. Raises Discard for a state word that means ignore, ParseError
    for one the rule does not know."""
    missed: list[str] = []
    found = rule_for(ctx.config, mail, ctx.recipient, missed)
    for name in missed:
        ctx.decide("mail-alert", rule=name, result="selected, but no subject pattern read host and state")
    if found is None:
        return None
    rule, groups = found
    ctx.decide("mail-alert", rule=rule.name, groups=groups)
    signal = alert_of(rule, mail, groups)
    if signal is None:
        raise Discard(f"mail alert {rule.name!r}: state {groups['state']!r} means ignore")
    ctx.integration, ctx.kind = rule, KIND
    ctx.defaults = {**ctx.defaults, **rule.defaults()}
    return [signal]


def rule_for(config, mail: Signal, recipient: str, missed: list[str] | None = None) -> tuple[MailAlert, dict] | None:
    """(the first rule that reads this mail, the groups it read), or None; pure. ``missed`` collects the
    rules that selected the mail but whose patterns did not read it. Own loops and bounces are no alerts."""
    if not config.mail_alert or mail.mail_class in (OWN_LOOP, BOUNCE):
        return None
    sender = (mail.reporter_email or "").lower()
    body = mail.full_text or mail.text or ""
    for rule in config.mail_alert:
        if not rule.selects(sender, recipient or ""):
            continue
        subject, body_patterns = rule.compiled
        groups = read_groups(subject, body_patterns, mail.title, body)
        if groups is not None:
            return rule, groups
        if missed is not None:
            missed.append(rule.name)
    return None


def alert_of(rule: MailAlert, mail: Signal, groups: dict) -> Signal | None:
    """The alert signal ``rule`` makes of ``mail`` (None: its state word means ignore; ParseError, naming the
    rule, for a word it does not know)."""
    try:
        return alert_signal(
            mail,
            rule.name,
            groups,
            states=rule.state_words(),
            title=rule.titles(),
            fingerprint=rule.fingerprint_groups(),
        )
    except ParseError as exc:
        raise ParseError(f"mail alert {rule.name!r}: {exc}") from None
