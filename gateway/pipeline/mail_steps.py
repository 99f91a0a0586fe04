"""The email steps of the pipeline: parse, screen (loops and noise), thread, record.

Composed with the generic steps in ``EMAIL_STEPS`` (gateway/service.py)::

    mail-screen → mail-thread → correlate → classify → allocate → apply, then mail-record

``mail-screen`` sorts the message (own loop, bounce, auto-reply, bulk, human)
and drops or files what must not open an incident; ``mail-thread`` finds the
incident a reply belongs to (Message-IDs Inlet stored or sent, the subject
tag — never a hijack path) and applies the reply itself; new incidents go
through the generic steps; ``mail-record`` (an ``after`` step: it runs for every
signal applied) stores attachments, participants and links. A step that has fully
handled a signal raises :class:`~gateway.pipeline.driver.Finished`: the rest of the
list is skipped. Every choice is recorded with ``ctx.decide``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from datetime import timedelta

from gateway import commands, reporter_access
from gateway.audiences import MESSAGE_ID
from gateway.config.mail_settings import email_options, match_address
from gateway.config.schema import format_duration
from gateway.incidents.lifecycle import FINAL, add_key
from gateway.pipeline.driver import Context, Discard, Finished
from gateway.pipeline.mail_alerts import read_mail_alert
from gateway.pipeline.signal_steps import find_by_key
from parsers.email import (
    AUTO_REPLY,
    BOUNCE,
    BULK,
    OWN_LOOP,
    EmailOptions,
    html_depth,
    parse_email,
    verify_message_id,
)
from parsers.signal import Signal
from store.db import db
from store.models import RESOLVED, Attachment, Contact, CorrelationKey, Event, Incident, User

log = logging.getLogger("inlet.mail")

MAIL_SOURCES = ("smtp", "imap", "import")
_MAX_VIEW_FIELD = 1000
# The page sanitises the HTML it shows on each view (nh3: linear in size, quadratic in depth): bound both.
_MAX_VIEW_HTML = 256 * 1024
_MAX_VIEW_HTML_DEPTH = 200
PARTICIPANT = "participant"


class MailParser:
    """The parser of Inbound rows from smtp/imap/import: one Signal, class recorded on the row."""

    def __init__(self, config):
        self.config = config
        self._options: EmailOptions | None = None

    @property
    def options(self) -> EmailOptions:
        if self._options is None:  # read the Message-ID key only when mail arrives
            self._options = email_options(self.config)
        return self._options

    def __call__(self, ctx: Context) -> list[Signal]:
        inbound = ctx.inbound
        envelope_from = inbound.envelope_from if inbound.source == "smtp" else None
        signal = parse_email(inbound.raw, self.options, envelope_from=envelope_from)
        inbound.mail_class = signal.mail_class or ""  # written with the outcome (Pipeline._finish)
        ctx.decide("mail-class", mail_class=signal.mail_class, reason=signal.mail_class_reason)
        if signal.details.get("parse_limit"):
            ctx.decide("parse-limit", reason=signal.details["parse_limit"])
        ctx.email_options = self.options
        _recipient(ctx, signal)
        return read_mail_alert(ctx, signal) or [signal]  # a monitoring tool's alert mail: the alert steps


def _recipient(ctx: Context, signal: Signal) -> None:
    """The [[address]] the message came to: its defaults feed classify and allocate."""
    config, inbound = ctx.config, ctx.inbound
    candidates = list(inbound.envelope_to or ())
    if inbound.source == "imap":
        box = next((m for m in config.mailbox if m.name == inbound.integration), None)
        if box is not None and box.address:
            candidates.insert(0, box.address)
    found = receiving_address(config, signal, candidates)
    if found is not None:
        ctx.recipient, ctx.defaults = found
        ctx.decide("recipient", address=found[0], defaults=found[1])


def receiving_address(config, signal: Signal, envelope=()) -> tuple[str, dict] | None:
    """(address, its defaults) of the first [[address]] the message came to: the envelope recipients,
    then To, then Cc. The one answer for intake and `inlet classify`."""
    for address in [*envelope, *signal.recipients, *signal.cc]:
        entry = match_address(config, address)
        if entry is not None:
            return address.strip().strip("<>").lower(), entry.defaults()
    return None


# --------------------------------------------------------------------------- helpers


def _sender(signal: Signal) -> str:
    return (signal.reporter_email or "").lower()


def _no_ack(ctx: Context, why: str) -> None:
    """The reporter must not be acknowledged for this signal (read by the notification hooks)."""
    ctx.hook_context = {"acknowledge_reporter": False, "why": why}
    ctx.decide("acknowledge", acknowledge_reporter=False, why=why)


def _context(ctx: Context) -> dict:
    return dict(ctx.hook_context)


def find_thread(ctx: Context) -> tuple[Incident | None, str, bool]:
    """(incident, how it was found, whether by a Message-ID Inlet signed).

    Inlet's own signed Message-IDs are tried first (verified by the key, so
    whoever replies to Inlet's mail may attach), then Message-IDs stored on an
    incident (the reporter's own mail, earlier replies), then the subject tag.
    The last two are public knowledge (a Cc shows them): the caller lets
    them thread only for a participant (:func:`is_participant`). Closed
    incidents are found too: the caller decides what a reply to them means.
    """
    s, options = ctx.signal, ctx.email_options
    references = [r for r in s.references if r]
    for value in references:
        ref = verify_message_id(value, options)
        if ref:
            incident = Incident.first_where(ref=ref)
            if incident is not None:
                return incident, "references: a message Inlet sent", True
    if references:
        incident = find_by_key(MESSAGE_ID, references, open_only=False)
        if incident is not None:
            return incident, "references: a message Inlet stored", False
    if s.subject_ref:
        incident = Incident.first_where(ref=s.subject_ref)
        if incident is not None:
            return incident, f"subject tag [{s.subject_ref}]", False
    return None, "", False


def is_participant(incident: Incident, address: str) -> bool:
    """Whether ``address`` takes part in this incident: its reporter, an address Cc'd on its mail
    (recorded when a participant's message arrived), or an agent (an active user with this address).

    The From address is not authenticated (Authentication-Results is not trusted yet): a forged
    From of a participant passes. What this stops is a stranger who learnt a Message-ID or the tag.
    """
    if not address:
        return False
    if incident.reporter_id and Contact.get_by_id(incident.reporter_id).email == address:
        return True
    known = CorrelationKey.select().where(
        (CorrelationKey.incident == incident) & (CorrelationKey.kind == PARTICIPANT) & (CorrelationKey.value == address)
    )
    if known.exists():
        return True
    return User.select().where((User.email == address) & (User.active == True)).exists()  # noqa: E712


def _found_for(ctx: Context) -> tuple[Incident | None, str, bool]:
    """find_thread, kept only when the sender may use what found it: (incident, how, participant)."""
    incident, how, signed = find_thread(ctx)
    if incident is None:
        return None, "", False
    participant = is_participant(incident, _sender(ctx.signal))
    if not (signed or participant):
        return None, how, False
    return incident, how, participant


# --------------------------------------------------------------------------- steps


def screen(ctx: Context) -> None:
    """Own loops are dropped; bounces and auto-replies are filed, never opened or acknowledged."""
    s = ctx.signal
    cls, why = s.mail_class, s.mail_class_reason
    if cls == OWN_LOOP:
        raise Discard(f"own loop: {why}")
    if cls == BOUNCE:
        _no_ack(ctx, f"bounce: {why}")
        return _file_bounce(ctx)
    if cls == AUTO_REPLY:
        _no_ack(ctx, f"auto-reply: {why}")
        incident, how, _ = _found_for(ctx)
        if incident is None or incident.status in FINAL:
            raise Discard(f"auto-reply: {why}" + (f" (to {incident.ref}, {incident.status})" if incident else ""))
        _file_as_note(ctx, incident, how, _sender(s) or "auto-reply", f"Automatic reply ({why})", "auto-reply")
        return
    if cls == BULK:
        entry = match_address(ctx.config, ctx.recipient)
        if entry is None or not entry.accept_lists:
            raise Discard(f"list or bulk mail: {why} (accept_lists is off for this address)")
        _no_ack(ctx, f"list or bulk mail: {why}")
    elif s.suppress_autoreply:
        _no_ack(ctx, "X-Auto-Response-Suppress asks for no automatic replies")


def _file_bounce(ctx: Context) -> None:
    s, now = ctx.signal, ctx.clock.now()
    incident, how, signed = find_thread(ctx)
    if not signed:  # anyone can write a bounce: only one about Inlet's own mail may mark an address
        raise Discard(f"bounce: {s.mail_class_reason}; not about a message Inlet sent")
    failed = [a.lower() for a in s.details.get("failed_recipients", []) if a]
    if incident is not None and not failed and incident.reporter_id:
        failed = [Contact.get_by_id(incident.reporter_id).email]
    if failed:
        until = now + ctx.config.mail.undeliverable_for
        Contact.update(undeliverable_until=until).where(Contact.email.in_(failed)).execute()
        ctx.decide("mail-screen", undeliverable=failed, until=until.isoformat())
    if incident is None or incident.status in FINAL:
        raise Discard(f"bounce: {s.mail_class_reason}; no open incident it bounced from")
    heading = f"Delivery failed ({s.mail_class_reason})" + (f" for {', '.join(failed)}" if failed else "")
    _file_as_note(ctx, incident, how, "mailer-daemon", heading, "bounce")


def _file_as_note(ctx: Context, incident, how: str, actor: str, heading: str, what: str) -> None:
    """File a machine-sent message (auto-reply, bounce) as an internal note on its incident; never news.
    Finishes the signal."""
    s = ctx.signal
    ctx.incident, ctx.match = incident, how
    ctx.event = ctx.lifecycle.note(
        incident.ref,
        actor,
        f"{heading}:\n\n{s.text or s.title}",
        public=False,
        inbound=ctx.inbound,
        context=_context(ctx),
    )
    ctx.outcome = "updated"
    ctx.decide("mail-screen", result=f"{what} filed as internal note", incident=incident.ref, by=how)
    raise Finished


def thread(ctx: Context) -> None:
    """A reply becomes a reply on its incident (or reopens it) for the agents, never public; else the message is new."""
    s, now, config = ctx.signal, ctx.clock.now(), ctx.config
    sender = _sender(s)
    incident, how, signed = find_thread(ctx)
    participant = incident is not None and is_participant(incident, sender)
    if (signed or participant) and (event := commands.handle(ctx, incident, how, sender)) is not None:
        _no_ack(ctx, "email commands")  # gateway/commands.py: applied or refused, and recorded on the incident
        ctx.incident, ctx.match, ctx.outcome, ctx.event = incident, how, "updated", event
        raise Finished
    if incident is not None and not signed and not participant:
        ctx.decide(
            "mail-thread",
            result="new incident",
            why=f"{how} from {sender or 'an unknown sender'}, who is not a participant of {incident.ref} "
            "and does not reply to its mail",
        )
        ctx.link_to = incident.ref
        incident = None
    if incident is not None:
        reopen_until = incident.resolved_at + config.mail.reopen_window if incident.resolved_at else None
        if incident.status in FINAL or (incident.status == RESOLVED and reopen_until and now > reopen_until):
            why = (
                f"{incident.ref} is {incident.status}"
                if incident.status in FINAL
                else f"{incident.ref} was resolved more than {_human(config.mail.reopen_window)} ago"
            )
            ctx.decide("mail-thread", result="new incident", why=f"reply by {how}, but {why}")
            ctx.link_to = incident.ref
            # The follow-up is about the same problem: its title is the original's, not "Closed: …".
            ctx.signal = dataclasses.replace(s, title=incident.title)
            incident = None
    if incident is None:
        _throttle(ctx, sender, now)
        return
    if not participant:
        # A reply to Inlet's mail from someone else (a forward): for the agents, never news or a reopen.
        _no_ack(ctx, f"reply from {sender or 'an unknown sender'}, not a participant of {incident.ref}")
        heading = f"Reply from {sender or 'an unknown sender'}, who is not a participant (internal until published)"
        _file_as_note(ctx, incident, how, sender or "email", heading, "non-participant reply")
        return
    ctx.participant = True
    _apply_reply(ctx, incident, how, sender)


def _apply_reply(ctx: Context, incident: Incident, how: str, sender: str) -> None:
    s, lc = ctx.signal, ctx.lifecycle
    actor = sender or "email"
    words = s.text.strip() or (s.full_text or "").strip() or f"(a reply with no text: {s.title})"
    # the same reply as from the reporter's page (web/reporter.py): one code path
    ctx.event, results = reporter_access.reply(
        lc, incident, actor, words, about=s.title, inbound=ctx.inbound, context=_context(ctx)
    )
    lc.add_signal(incident.ref, actor)
    ctx.incident, ctx.match = Incident.first_where(id=incident.id), how
    ctx.outcome = "updated"
    ctx.decide("mail-thread", result=" + ".join(results), incident=incident.ref, by=how)
    raise Finished


def _throttle(ctx: Context, sender: str, now) -> None:
    """More than N new incidents from one sender within the window: ignored: throttled."""
    mail = ctx.config.mail
    if not sender:
        return
    since = Incident.opened_at.db_value(now - mail.throttle_window)
    (recent,) = db.execute_sql(_throttle_sql(db.param), [sender, since]).fetchone()
    if recent >= mail.throttle_count:
        raise Discard(
            f"throttled: {recent} new incidents from {sender} within {_human(mail.throttle_window)} "
            f"(limit {mail.throttle_count})"
        )


@functools.cache
def _throttle_sql(param: str) -> str:  # built once: the pipeline runs it for every new email
    return (
        'SELECT COUNT(*) FROM "incident" AS "i" JOIN "contact" AS "c" ON ("i"."reporter_id" = "c"."id") '
        f'WHERE "c"."email" = {param} AND "i"."opened_at" >= {param}'
    )


def record(ctx: Context) -> None:
    """After a signal is applied (created or updated): attachments, participants, the message's own id,
    links to an earlier incident."""
    s, incident, now = ctx.signal, ctx.incident, ctx.clock.now()
    event = ctx.event
    if ctx.outcome == "created":
        if s.attachments:  # the "created" event, which the attachments belong to
            event = Event.select().where((Event.incident == incident) & (Event.inbound == ctx.inbound)).first()
        else:  # Lifecycle.create writes no data on it: the email view in one statement, nothing read back
            Event.update(data={"email": email_view(s)}).where(
                (Event.incident == incident) & (Event.inbound == ctx.inbound) & (Event.type == "created")
            ).execute()
        _add_participants(incident, [*s.cc, *s.recipients], now, ctx)
        if ctx.link_to:
            _link(ctx, incident, ctx.link_to)
    elif ctx.match and s.message_id and ctx.participant:
        # A participant's reply is part of the thread: replies to it must find the incident, its Cc take part.
        add_key(incident, MESSAGE_ID, s.message_id, now)
        _add_participants(incident, [*s.cc], now, ctx)
    if event is not None:
        store_email_view(event, s)
    for part in s.attachments:
        Attachment.create(
            incident=incident,
            inbound=ctx.inbound,
            event=event,
            filename=part.filename[:255],
            content_type=part.content_type[:255],
            size=part.size,
            sha256=part.sha256,
            data=part.data,
            inline=part.inline,
            content_id=(part.content_id or None) and part.content_id[:255],
            skipped=part.skipped and part.skipped[:255],
        )
    if s.attachments:
        skipped = [f"{p.filename}: {p.skipped}" for p in s.attachments if p.skipped]
        ctx.decide("mail-record", attachments=len(s.attachments), skipped=skipped)


def store_email_view(event: Event, s: Signal) -> None:
    """Keep :func:`email_view` on the event (with its other data, read afresh: a hook may have added some)."""
    fresh = Event.get_or_none(Event.id == event.id)
    data = (fresh.data if fresh is not None else None) or {}
    Event.update(data={**data, "email": email_view(s)}).where(Event.id == event.id).execute()


def email_view(s: Signal) -> dict:
    """What the incident page shows of an email, stored once: the page never parses the raw message."""
    html, omitted = s.html or "", ""
    if len(html) > _MAX_VIEW_HTML:
        omitted = f"HTML version of {len(html)} characters not kept for display (limit {_MAX_VIEW_HTML})"
    elif html_depth(html) > _MAX_VIEW_HTML_DEPTH:
        omitted = f"HTML version nested deeper than {_MAX_VIEW_HTML_DEPTH} elements not kept for display"
    return {
        "from_name": (s.reporter_name or "")[:_MAX_VIEW_FIELD],
        "from_email": (s.reporter_email or "")[:_MAX_VIEW_FIELD],
        "subject": s.title[:_MAX_VIEW_FIELD],
        "html": "" if omitted else html,
        "html_omitted": omitted,
    }


def _add_participants(incident: Incident, addresses, now, ctx: Context) -> None:
    own = set(ctx.email_options.own_addresses)
    candidates = {a for a in ((a or "").lower() for a in addresses) if a and a not in own}
    candidates = {a for a in candidates if match_address(ctx.config, a) is None}  # not one of Inlet's addresses
    if not candidates:  # mail to a support address alone: nothing to read
        return
    existing = {
        k.value
        for k in CorrelationKey.select(CorrelationKey.value).where(
            (CorrelationKey.incident == incident) & (CorrelationKey.kind == PARTICIPANT)
        )
    }
    for address in sorted(candidates - existing):
        add_key(incident, PARTICIPANT, address, now)


def _link(ctx: Context, incident: Incident, other_ref: str) -> None:
    ctx.lifecycle.link(incident.ref, "inlet", other_ref, "related")  # on the new one alone if the old is closed
    ctx.decide("mail-record", linked_to=other_ref)


def _human(delta: timedelta) -> str:
    return format_duration(delta)
