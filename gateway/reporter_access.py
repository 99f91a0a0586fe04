"""What a reporter may do without an account: open their incident through a signed link, reply, confirm, reopen.

**The link** (``/r/<token>`` on ``[inlet] base_url``, minted and checked by notifiers/reporter_links.py) is in
every mail Inlet sends a reporter. Its token
names one incident and its reporter (the Contact) and when it expires, signed with HMAC-SHA256 under a
server key kept like Inlet's other keys (``[web] reporter_link_key_env``, else generated once into
``data_dir``). It grants the reporter view of that one incident and nothing else: the signature is
checked in constant time, an altered or foreign token is refused (:class:`LinkRefused`, 403), an expired
one too (410), and a token stops working when the incident's reporter is no longer the one it names.
The expiry is written into the token when the mail is rendered (``[web] reporter_link_lifetime``).

**The actions** are the reporter's email ones, here once for both ways in (gateway/mail.py applies a mail
reply with :func:`reply`, gateway/commands.py ``#close``/``#reopen`` with :func:`close` and :func:`reopen`):
a reply goes to the agents (it reopens a resolved incident within ``[mail] reopen_window``), "this fixed
it" closes a resolved incident (``closed_by="reporter"``), "still broken" reopens it within the window.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from gateway.core.errors import InletError
from store.models import RESOLVED, Incident

# ---------------------------------------------------------------- the reporter's actions


def may_reopen(incident: Incident, reopen_window: timedelta, now: datetime) -> bool:
    """A resolved incident the reporter may still reopen (within ``reopen_window`` of its resolution)."""
    if incident.status != RESOLVED:
        return False
    return incident.resolved_at is None or now <= incident.resolved_at + reopen_window


def reply(lifecycle, incident: Incident, actor: str, words: str, *, about: str = "", inbound=None, context=None):
    """The reporter's reply to an incident that takes it: reopen it if resolved, then the reply Event.

    The caller has decided the incident takes replies (open, or resolved within the window); ``about``
    (a mail's subject) names the reopen, else the reply's first line. Returns (the reply Event, what was done).
    """
    done = []
    if incident.status == RESOLVED:
        reason = f"The reporter replied: {about or _first_line(words)}"
        lifecycle.reopen(incident.ref, actor, reason=reason, context=context)
        done.append("reopened")
    # the reporter's words go to the agents, never to the status page or stakeholders (lifecycle.reply)
    event = lifecycle.reply(incident.ref, actor, words, inbound=inbound, context=context)
    done.append("reply")
    return event, done


def close(lifecycle, incident: Incident, actor: str) -> Incident:
    """ "This fixed it": the reporter confirms a resolved incident's fix."""
    if incident.status != RESOLVED:
        raise InletError(f"{incident.ref} is {incident.status.replace('_', ' ')}, not resolved")
    return lifecycle.close(incident.ref, actor, by="reporter")


def reopen(lifecycle, incident: Incident, actor: str, reason: str, reopen_window: timedelta, now: datetime):
    """ "Still broken": the reporter reopens a resolved incident within ``reopen_window``."""
    if incident.status != RESOLVED:
        raise InletError(f"{incident.ref} is {incident.status.replace('_', ' ')}, not resolved")
    if not may_reopen(incident, reopen_window, now):
        raise InletError(f"{incident.ref} was resolved too long ago to reopen: write a new message")
    return lifecycle.reopen(incident.ref, actor, reason)


def _first_line(words: str) -> str:
    line = (words or "").strip().split("\n", 1)[0]
    return line[:120] + ("…" if len(line) > 120 else "")
