"""Alert e-mails: a mail a ``[[mail_alert]]`` rule reads becomes an alert signal, applied by the alert steps.

The mail parser (mail_steps.MailParser) asks :func:`read_mail_alert` once the message is parsed. The
first rule (file order) that selects the mail (its sender, the [[address]] it came to) and whose
subject pattern matches turns it into one alert Signal (parsers/email/monitoring.py): fingerprint
from the host and check groups, firing / resolved / acknowledged from the state word. The Inbound
then runs ``MAIL_ALERT_STEPS`` (gateway/service.py) — the alert steps of webhooks: the same
fingerprint while open is one incident (a repeat counts), a recovery resolves it with
``auto-recovered``, a re-fire reopens it, flaps and maintenance windows as configured. Such a mail
never opens an ordinary ticket and its sender is never mailed (the alert has no reporter).

A state word that means ``ignore`` (Nagios' DOWNTIMESTART) stores the mail as ignored with that
reason; a word the rule does not know quarantines it (reprocess it after adding the word). Mail no
rule reads, own loops and bounces stay ordinary e-mail.
"""

from __future__ import annotations

from gateway.pipeline.driver import Context, Discard
from parsers.email import BOUNCE, OWN_LOOP
from parsers.email.monitoring import alert_signal, read_groups
from parsers.signal import Signal

KIND = "mail-alert"  # the name of its step list


def read_mail_alert(ctx: Context, mail: Signal) -> list[Signal] | None:
    """The alert signal of this mail when a [[mail_alert]] rule reads it (and sets the context for the
    alert steps); None when none does. Raises Discard for a state word that means ignore, ParseError
    for one the rule does not know."""
    if not ctx.config.mail_alert or mail.mail_class in (OWN_LOOP, BOUNCE):
        return None
    sender = (mail.reporter_email or "").lower()
    body = mail.full_text or mail.text or ""
    for rule in ctx.config.mail_alert:
        if not rule.selects(sender, ctx.recipient):
            continue
        subject, body_patterns = rule.compiled
        groups = read_groups(subject, body_patterns, mail.title, body)
        if groups is None:
            ctx.decide("mail-alert", rule=rule.name, result="selected, but no subject pattern read host and state")
            continue
        ctx.decide("mail-alert", rule=rule.name, groups=groups)
        signal = alert_signal(
            mail,
            rule.name,
            groups,
            states=rule.state_words(),
            title=rule.titles(),
            fingerprint=rule.fingerprint_groups(),
        )
        if signal is None:
            raise Discard(f"mail alert {rule.name!r}: state {groups['state']!r} means ignore")
        ctx.integration, ctx.kind = rule, KIND
        ctx.defaults = {**ctx.defaults, **rule.defaults()}
        return [signal]
    return None
