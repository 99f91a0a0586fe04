"""What ``inlet inbound show ID`` prints: an Inbound's status, class, decisions and raw headers.

Everything shown comes from outside: header bytes are decoded leniently and
control characters escaped, so a hostile header cannot drive the terminal.
"""

from __future__ import annotations

import re

from gateway.core.clock import iso
from gateway.core.errors import NotFound
from store.models import Inbound

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_MAX_HEADER_BYTES = 64 * 1024


def raw_headers(raw: bytes) -> str:
    """The header block of a raw message (up to the first empty line), as safe text."""
    raw = bytes(raw or b"")[:_MAX_HEADER_BYTES]
    end = re.search(rb"\r?\n\r?\n", raw)
    block = raw[: end.start()] if end else raw
    text = block.decode("utf-8", "replace").replace("\r\n", "\n")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


# A JSON member whose name says it holds a credential (PagerDuty's routing_key, tokens, passwords,
# signatures); the name is bounded and the value is a plain JSON string, so matching stays linear.
_CREDENTIAL = re.compile(
    r'("[^"\\]{0,64}?(?:routing_key|integration_key|service_key|api[_-]?key|token|secret|passw(?:or)?d'
    r'|authorization|signature|credential|private_key)[^"\\]{0,64}"\s*:\s*)"(?:[^"\\]|\\.)*"',
    re.IGNORECASE,
)


def masked_body(text: str) -> str:
    """A stored request body for display, with the values of credential fields replaced by ``"…"``.

    Used wherever a body is shown (quarantine view, API, CLI): the gateway keeps the
    raw bytes as evidence, but a screen is not the place for a PagerDuty routing key.
    """
    return _CREDENTIAL.sub(r'\1"…"', text)


def inbound_document(inbound_id: int) -> dict:
    row = Inbound.get_or_none(Inbound.id == inbound_id)
    if row is None:
        raise NotFound(f"no inbound {inbound_id}")
    return {
        "id": row.id,
        "source": row.source,
        "integration": row.integration,
        "status": row.status,
        "reason": row.reason,
        "mail_class": row.mail_class,
        "received_at": iso(row.received_at),
        "processed_at": iso(row.processed_at),
        "attempts": row.attempts,
        "dedup_key": row.dedup_key,
        "envelope_from": row.envelope_from,
        "envelope_to": row.envelope_to,
        "peer": row.peer,
        "incident": row.incident.ref if row.incident_id else None,
        "decisions": row.decisions or [],
        "size": len(row.raw or b""),
        "headers": row.headers if row.source not in ("smtp", "imap", "import") else raw_headers(row.raw),
    }


def print_inbound(doc: dict) -> None:
    print(f"inbound {doc['id']}  {doc['source']}{' / ' + doc['integration'] if doc['integration'] else ''}")
    for key in ("status", "reason", "mail_class", "incident", "received_at", "processed_at", "attempts"):
        if doc[key] not in (None, "", []):
            print(f"  {key:<13} {_safe(doc[key])}")
    for key in ("envelope_from", "envelope_to", "peer", "dedup_key", "size"):
        if doc[key] not in (None, "", []):
            value = ", ".join(doc[key]) if isinstance(doc[key], list) else doc[key]
            print(f"  {key:<13} {_safe(value)}")
    print("decisions:")
    for d in doc["decisions"]:
        signal = f"[{d['signal']}] " if "signal" in d else ""
        if d.get("step") == "steps" and isinstance(d.get("ran"), list):  # the step list that ran (the driver's)
            print(f"  {signal}steps ran: {' → '.join(_safe(name) for name in d['ran'])}")
            continue
        rest = ", ".join(f"{k}={_safe(v)}" for k, v in d.items() if k not in ("step", "signal"))
        print(f"  {signal}{d.get('step', '?')}: {rest}")
    print("headers:")
    headers = doc["headers"]
    if isinstance(headers, dict):
        headers = "\n".join(f"{k}: {v}" for k, v in headers.items())
    for line in str(headers).splitlines():
        print(f"  {line}")


def _safe(value) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))
