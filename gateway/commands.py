"""Acting by email: commands on the first lines of a reply to Inlet's mail.

An agent (an active user with an email address and the role agent or admin)
writes ``#ack``, ``#resolve <code> <notes>``, ``#assign me|USER``, ``#note
<text>``, ``#priority P2`` (and ``#close``, ``#reopen <reason>``) as the first
lines of a reply; they are applied through the lifecycle as that user, with the
permission rule of the web UI (admins, or agents of the incident's group; a
security incident only for admins and the security group). A From header
proves nothing, so agent commands are applied only when the message proves its
sender (:func:`prove`):

- **SMTP AUTH** on Inlet's own server as that user (``[smtp] agent_auth``):
  the server records the login on the Inbound (``headers["smtp_auth"]``, set by
  gateway/intake/smtp.py, never read from the message);
- **Authentication-Results** added by the MTA named in ``[mail]
  trusted_authserv_id``: ``dmarc=pass`` for the From domain, or ``dkim=pass``
  with a signing domain aligned with it. Only the topmost Authentication-Results
  field(s) count, and only when they carry that authserv-id: everything below
  came with the message and anyone could have written it (RFC 8601 §7.2).

A reporter may reply ``#close`` (their own incident, only while resolved: it
confirms the fix) or ``#reopen <reason>`` (within ``[mail] reopen_window``).
Reporters are proven the way email replies are (gateway/pipeline/mail_steps.py): the reply
was threaded by a Message-ID Inlet signed or, for a participant, by a stored
Message-ID or the subject tag — and its From is the incident's reporter.

Whatever happens, one internal event records the commands, who sent them, the
proof used, and what each did; a refused or failed command is answered by mail
saying why (at most 3 per incident in 15 minutes: forged mail cannot make a storm).
"""

from __future__ import annotations

import email.parser
import email.policy
import re
from dataclasses import dataclass
from datetime import timedelta

from gateway import membership, reporter_access
from gateway.core.errors import InletError
from gateway.incidents.lifecycle import FINAL
from notifiers.mailer import email_target
from notifiers.outbox import enqueue
from store.models import Contact, Event, Notification, User

COMMAND = "command"  # the outbox audience of the answers
AGENT_COMMANDS = ("ack", "resolve", "assign", "note", "priority", "close", "reopen")
REPORTER_COMMANDS = ("close", "reopen")
MAX_COMMANDS = 10
MAX_LINE = 2000
ANSWERS_PER_WINDOW, ANSWER_WINDOW = 3, timedelta(minutes=15)
_LINE = re.compile(r"#([A-Za-z]+)(?:[ \t]+(.*))?")
_FOLD = re.compile(r"\r?\n(?=[ \t])")


@dataclass(frozen=True)
class Command:
    name: str
    args: str = ""


class Refused(InletError):
    """The commands are not applied; the message says why (and is mailed back)."""


# ---------------------------------------------------------------- parsing (pure)


def parse(text: str) -> tuple[list[Command], str]:
    """The commands on the first lines of ``text`` (blank lines before them skipped) and the text after them.

    A line is a command when it is ``#word`` with a known word, then its arguments; the first other
    line ends the commands. At most MAX_COMMANDS; linear in the length of the text.
    """
    commands: list[Command] = []
    lines = (text or "").splitlines()
    i = 0
    while i < len(lines) and not lines[i].strip():
        i += 1
    while i < len(lines) and len(commands) < MAX_COMMANDS:
        line = lines[i].strip()
        match = _LINE.fullmatch(line[:MAX_LINE])
        if match is None or match.group(1).lower() not in AGENT_COMMANDS:
            break
        commands.append(Command(match.group(1).lower(), (match.group(2) or "").strip()))
        i += 1
    return commands, "\n".join(lines[i:]).strip()


@dataclass(frozen=True)
class AuthResult:
    """One result of an Authentication-Results field: method, result and its ``ptype.property`` values."""

    method: str
    result: str
    properties: dict


def parse_authentication_results(value: str) -> tuple[str, list[AuthResult]]:
    """(authserv-id, results) of one Authentication-Results field value (RFC 8601 §2.2), lower-cased.

    Comments are dropped, quoted strings kept whole; linear in the length; never raises (a value
    that does not parse gives what could be read, possibly ("", [])).
    """
    parts, current, depth, quoted, escaped = [], [], 0, False, False
    for ch in value:
        if escaped:
            if depth == 0:
                current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif quoted:
            if ch == '"':
                quoted = False
            else:
                current.append(ch)
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif depth:
            continue
        elif ch == '"':
            quoted = True
        elif ch == ";":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    head = parts[0].split()
    authserv_id = head[0].lower() if head else ""
    results = []
    for part in parts[1:]:
        tokens = re.sub(r"\s*=\s*", "=", part.strip()).split()
        if not tokens or "=" not in tokens[0]:
            continue  # "none", or not a result
        method, _, result = tokens[0].partition("=")
        properties = {}
        for token in tokens[1:]:
            key, sep, val = token.partition("=")
            if sep:
                properties[key.lower()] = val.lower()
        results.append(AuthResult(method.split("/")[0].lower(), result.lower(), properties))
    return authserv_id, results


def trusted_results(fields: list[tuple[str, str]], authserv_id: str) -> list[AuthResult]:
    """The results an outsider cannot have written: those of the topmost Authentication-Results field(s)
    of the header, when they carry ``authserv_id``; the run ends at the first other field.

    ``fields`` are the message's header fields in order (name, unfolded value). The trusted MTA adds its
    field on top and (RFC 8601 §5) removes any arriving with its own id; a field lower down came with the
    message. No field, or a topmost one with another id: nothing is trusted.
    """
    wanted = authserv_id.strip().lower()
    if not wanted:
        return []
    results: list[AuthResult] = []
    started = False
    for name, value in fields:
        is_ar = name.strip().lower() == "authentication-results"
        if not is_ar:
            if started:
                break
            continue
        found_id, found = parse_authentication_results(value)
        if found_id != wanted:
            break
        started = True
        results.extend(found)
    return results


def aligned(domain: str, other: str) -> bool:
    """Relaxed alignment (RFC 7489 §3.1): the same domain, or one a subdomain of the other."""
    domain, other = domain.strip().lower().rstrip("."), other.strip().lower().rstrip(".")
    if not domain or not other:
        return False
    return domain == other or domain.endswith("." + other) or other.endswith("." + domain)


def proves_from(results: list[AuthResult], from_domain: str) -> str:
    """What in ``results`` proves a message From ``from_domain``: "dmarc=pass" or "dkim=pass (d=…)", else ""."""
    for r in results:
        if r.method == "dmarc" and r.result == "pass":
            header_from = r.properties.get("header.from", from_domain)
            if header_from.strip().lower() == from_domain:
                return f"dmarc=pass header.from={from_domain}"
    for r in results:
        if r.method == "dkim" and r.result == "pass":
            signer = r.properties.get("header.d") or r.properties.get("header.i", "").rpartition("@")[2]
            if aligned(signer, from_domain):
                return f"dkim=pass header.d={signer}"
    return ""


# ---------------------------------------------------------------- who sent it


def header_fields(raw: bytes) -> list[tuple[str, str]]:
    """The header fields of a raw message in order, unfolded (headers only: cheap)."""
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    return [(name, _FOLD.sub("", str(value))) for name, value in parsed.items()]


def prove(config, inbound, sender: str, fields: list[tuple[str, str]]) -> tuple[User, str]:
    """The agent who sent this message and the proof; Refused (saying why) unless it is proven.

    SMTP AUTH on Inlet's own server wins; else the trusted MTA's Authentication-Results for the From
    address. Either way the user must be active, an agent or admin, with ``sender`` as email address.
    """
    login = (inbound.headers or {}).get("smtp_auth") if inbound.source == "smtp" else None
    if login:
        user = User.get_or_none((User.name == login) & (User.active == True))  # noqa: E712
        if user is None or user.role not in ("agent", "admin"):
            raise Refused(f"the SMTP login {login!r} is not an active agent")
        if (user.email or "").strip().lower() != sender:
            raise Refused(f"you logged in as {login!r}, whose address is not the From address {sender}")
        return user, f"SMTP AUTH as {login}"
    authserv_id = config.mail.trusted_authserv_id
    from_fields = [v for n, v in fields if n.strip().lower() == "from"]
    proof = ""
    if authserv_id and len(from_fields) == 1 and "@" in sender:
        proof = proves_from(trusted_results(fields, authserv_id), sender.rpartition("@")[2])
    if not proof:
        how = "sign in to Inlet's SMTP server with your Inlet user (SMTP AUTH)"
        if authserv_id:
            how += f", or send through the mail server that adds Authentication-Results for {authserv_id}"
        raise Refused(f"this message does not prove that it comes from {sender}: {how}")
    users = list(User.select().where((User.email == sender) & (User.active == True)).limit(2))  # noqa: E712
    if len(users) != 1 or users[0].role not in ("agent", "admin"):
        raise Refused(f"{sender} is not the address of exactly one active agent")
    return users[0], f"Authentication-Results from {authserv_id}: {proof}"


def may_act(config, user: User, incident) -> bool:
    """The web UI's rule (web/auth.py SessionUser.can_act) for a user proven by mail."""
    groups = membership.groups_of(user.name)
    if incident.security and not (user.role == "admin" or config.web.security_group in groups):
        return False
    return user.role == "admin" or (user.role == "agent" and incident.group in groups)


# ---------------------------------------------------------------- applying


def handle(ctx, incident, how: str, sender: str):
    """Apply the commands of the signal (a reply threaded to ``incident``): the Event recording them,
    or None when the message has none (or the incident is closed: a reply to it opens a new one).

    Called by gateway/pipeline/mail_steps.py's thread step before it treats the message as a reply; an Event means
    the message is fully handled (applied, or refused with an answer). The event is written first,
    so it precedes the changes on the timeline (and a #close can still be recorded).
    """
    text = ctx.signal.text or ""
    if text.lstrip()[:1] != "#":  # most replies: nothing to parse
        return None
    commands, rest = parse(text)
    if not commands or incident.status in FINAL:
        return None
    reporter = Contact.get_by_id(incident.reporter_id).email.lower() if incident.reporter_id else ""
    as_reporter = bool(reporter) and sender == reporter and all(c.name in REPORTER_COMMANDS for c in commands)
    user, proof, why = None, "", ""
    try:
        if as_reporter:
            proof = f"the reporter's reply ({how})"
        else:
            fields = header_fields(ctx.inbound.raw) if not ctx.signal.details.get("parse_limit") else []
            user, proof = prove(ctx.config, ctx.inbound, sender, fields)
            if not may_act(ctx.config, user, incident):
                raise Refused(f"{user.name} may not change {incident.ref} (not an agent of group {incident.group})")
    except Refused as exc:
        why = str(exc)
    asked = " ".join(f"#{c.name}" for c in commands)
    actor = user.name if user is not None else (sender or "email")
    if why:
        body = f"Email commands from {sender or 'an unknown sender'} not applied ({asked}): {why}"
    else:
        body = f"Email commands from {sender} as {actor} ({proof}): {asked}"
    event = ctx.lifecycle.note(incident.ref, actor, body, inbound=ctx.inbound)
    results = []
    if not why:
        for c in commands:
            if user is None:
                results.append(_reporter_command(ctx, incident, c, actor))
            else:
                results.append(_agent_command(ctx, incident, c, user, rest))
    record = {
        "from": sender,
        "actor": actor if not why else None,
        "commands": [{"name": c.name, "args": c.args[:200]} for c in commands],
        "proof": proof or None,
        "refused": why or None,
        "results": results,
    }
    Event.update(data={**(event.data or {}), "email_commands": record}).where(Event.id == event.id).execute()
    ctx.decide("email-commands", incident=incident.ref, by=how, proof=proof, refused=why, results=results)
    failed = [r for r in results if not r["applied"]]
    if (why or failed) and sender:
        _answer(ctx, incident, event, sender, why or "; ".join(f"{r['command']}: {r['error']}" for r in failed))
    return event


def _agent_command(ctx, incident, c: Command, user: User, rest: str) -> dict:
    lc, ref, name = ctx.lifecycle, incident.ref, user.name
    try:
        current = lc.get(ref)
        if c.name == "ack":
            lc.acknowledge(ref, name)
        elif c.name == "resolve":
            code, _, notes = c.args.partition(" ")
            notes = notes.strip() or rest
            if not code or not notes:
                raise InletError("#resolve needs a code and notes: #resolve fixed Replaced the power supply")
            lc.resolve(ref, name, code=code[:64], notes=notes, cause="unspecified")
        elif c.name == "assign":
            who = name if c.args.lower() in ("me", "") else c.args.split()[0]
            lc.assign(ref, name, assignee=who, reason="by email")
        elif c.name == "note":
            lc.note(ref, name, c.args or rest)
        elif c.name == "priority":
            impact, urgency = _levels_for(ctx, current, c.args.strip().upper())
            lc.update(ref, name, reason=f"#priority {c.args.strip()} by email", impact=impact, urgency=urgency)
        elif c.name == "close":
            lc.close(ref, name, by="agent")
        elif c.name == "reopen":
            lc.reopen(ref, name, c.args or rest or "Reopened by email")
    except InletError as exc:
        return {"command": f"#{c.name}", "applied": False, "error": str(exc)}
    return {"command": f"#{c.name}", "applied": True}


def _reporter_command(ctx, incident, c: Command, actor: str) -> dict:
    lc, now = ctx.lifecycle, ctx.clock.now()
    current = lc.get(incident.ref)
    try:  # the same actions as the buttons of the reporter's page (gateway/reporter_access.py)
        if c.name == "close":
            reporter_access.close(lc, current, actor)
        else:
            reason = c.args or "The reporter reopened it by email (#reopen)"
            reporter_access.reopen(lc, current, actor, reason, ctx.config.mail.reopen_window, now)
    except InletError as exc:
        return {"command": f"#{c.name}", "applied": False, "error": str(exc)}
    return {"command": f"#{c.name}", "applied": True}


def _levels_for(ctx, incident, priority: str) -> tuple[str, str]:
    """Impact and urgency giving ``priority`` in the matrix: the urgency changed if that suffices, else the
    impact, else both."""
    matrix = ctx.config.sla.matrix
    cells = [(i, u) for i, row in matrix.items() for u, p in row.items() if p == priority]
    if not cells:
        raise InletError(f"no impact × urgency gives {priority!r}: use one of {', '.join(ctx.config.sla.targets)}")
    for keep in (lambda c: c[0] == incident.impact, lambda c: c[1] == incident.urgency, lambda c: True):
        for cell in cells:
            if keep(cell):
                return cell
    return cells[0]


def _answer(ctx, incident, event, sender: str, why: str) -> None:
    now = ctx.clock.now()
    target = email_target(sender)
    recent = (
        Notification.select()
        .where(
            (Notification.incident == incident)
            & (Notification.audience == COMMAND)
            & (Notification.created_at > now - ANSWER_WINDOW)
        )
        .count()
    )
    if recent >= ANSWERS_PER_WINDOW:
        ctx.decide("email-commands", answer="not sent", why=f"{recent} answers about {incident.ref} recently")
        return
    enqueue(
        audience=COMMAND,
        template="command_refused",
        targets=[target],
        now=now,
        incident=incident,
        event=event,
        context={"body": why, "restricted": bool(incident.security)},
    )
