"""Reporter links: ``/r/<token>``, a signed, expiring token that opens the reporter's view of one incident.

Minted when a mail to a reporter is rendered (notifiers/delivery.py) and checked by the reporter's page
(web/reporter.py); what the reporter may do there is gateway/reporter_access.py's. The token names one
incident, its reporter (the Contact) and when it expires, signed with HMAC-SHA256 under a key of its own
(``[web] reporter_link_key_env``, else generated once into ``data_dir``), checked in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.core.errors import InletError
from gateway.core.keys import local_secret
from store.models import Incident

KEY_FILE = "reporter-link.key"
_TOKEN = re.compile(r"([0-9]{1,12})\.([0-9]{1,12})\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})")
_PURPOSE = b"inlet reporter link v1"  # a key used for nothing else, and a purpose in what it signs
FOREIGN = "This link is not valid. Use the link in the most recent email about your report."
EXPIRED = "This link has expired. Use the link in a more recent email about your report, or reply to it."


class LinkRefused(InletError):
    """A token that opens nothing: ``status`` 403 (altered, foreign, no longer the reporter) or 410 (expired)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ReporterLinks:
    """Mints and checks reporter links with one key."""

    key: bytes
    lifetime: timedelta

    @classmethod
    def for_config(cls, config) -> ReporterLinks:
        key = local_secret(config, config.web.reporter_link_key_env, KEY_FILE)
        return cls(key.encode(), config.web.reporter_link_lifetime)

    def token(self, incident: Incident, now: datetime) -> str:
        """A token for ``incident``'s reporter, valid for ``lifetime`` from ``now``."""
        if not incident.reporter_id:
            raise InletError(f"{incident.ref} has no reporter to give a link to")
        expires = int((now + self.lifetime).timestamp())
        payload = f"{incident.id}.{incident.reporter_id}.{expires}"
        return f"{payload}.{self._mac(payload)}"

    def open(self, token: str, now: datetime) -> Incident:
        """The incident ``token`` opens, or LinkRefused (403 altered/foreign, 410 expired)."""
        match = _TOKEN.fullmatch(token or "")
        if match is None:
            raise LinkRefused(403, FOREIGN)
        payload = ".".join(match.groups()[:3])
        if not hmac.compare_digest(self._mac(payload), match.group(4)):
            raise LinkRefused(403, FOREIGN)
        incident_id, contact_id, expires = (int(part) for part in match.groups()[:3])
        if now >= datetime.fromtimestamp(expires, UTC):
            raise LinkRefused(410, EXPIRED)
        incident = Incident.get_or_none(Incident.id == incident_id)
        if incident is None or incident.reporter_id != contact_id:
            raise LinkRefused(403, FOREIGN)
        return incident

    def _mac(self, payload: str) -> str:
        digest = hmac.new(self.key, _PURPOSE + b"\0" + payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
