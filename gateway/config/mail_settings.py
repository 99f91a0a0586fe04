"""Settings of email intake: the SMTP server, the addresses Inlet accepts mail
for, the IMAP mailboxes it polls, and the mail rules (loops, threading, throttle).

Declared here (the module that owns them) and wired into ``Config`` in
gateway/config/loader.py; :func:`check_mail` holds the cross-reference checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from gateway.config.schema import KeyProblem, setting
from gateway.core.keys import local_secret
from parsers.email import EmailOptions

MAX_MIME_CONTAINERS = 300  # each level of nesting is a few frames of recursion in the parser and the walk


@dataclass(frozen=True)
class SmtpUser:
    name: str = setting(help="User name a trusted submitter logs in with (SMTP AUTH PLAIN/LOGIN).")
    password_env: str = setting(help="Environment variable holding that user's password.")


@dataclass(frozen=True)
class SmtpSection:
    enabled: bool = setting(True, help="Run the SMTP server in `inlet serve` (role 'smtp').")
    host: str = setting("127.0.0.1", help="Address the SMTP server listens on (loopback unless you mean it).")
    port: int = setting(2525, help="Port of the SMTP server (0: any free port).", minimum=0)
    hostname: str = setting("inlet.localhost", help="Name the server gives in its greeting and EHLO answer.")
    max_message_size: int = setting(
        26_214_400, help="Largest accepted message in bytes; larger ones get 552 5.3.4.", minimum=1024
    )
    max_recipients: int = setting(50, help="Most recipients per message; more get 452 4.5.3.", minimum=1)
    tls_cert: str = setting("", help="PEM certificate file for STARTTLS (empty: no STARTTLS).")
    tls_key: str = setting("", help="PEM private key file for STARTTLS.")
    require_tls: bool = setting(False, help="Refuse mail until the client has started TLS.")
    auth_required: bool = setting(
        False, help="Accept mail only from authenticated submitters (needs users and STARTTLS)."
    )
    users: list[SmtpUser] = setting(factory=list, help="Trusted submitters allowed to authenticate.")
    agent_auth: bool = setting(
        False,
        help="Let Inlet users (agents, admins) authenticate with their own password (SMTP AUTH), proving "
        "the sender of email commands; plain-text AUTH only from loopback or after STARTTLS.",
    )
    max_sessions: int = setting(
        500, help="Most SMTP sessions open at once; over it a new one gets 421 4.7.0 and is closed.", minimum=1
    )
    max_sessions_per_client: int = setting(
        50,
        help="Most sessions open at once from one client address (at least your MTA's concurrency); 421 4.7.0 over it.",
        minimum=1,
    )
    idle_timeout: timedelta = setting(
        timedelta(seconds=60), help="A session that sends nothing for this long gets 421 4.4.2 and is closed."
    )
    max_session_time: timedelta = setting(
        timedelta(minutes=10), help="Longest one session may last, however busy; then 421 4.4.2 and closed."
    )
    drain_timeout: timedelta = setting(
        timedelta(seconds=10),
        help="On stop (SIGTERM): how long a DATA in progress may take to finish before it is refused with 421.",
    )


ALLOCATION_FIELDS = ("group", "category", "service", "impact", "urgency")


def given_defaults(entry, fields: tuple[str, ...] = ALLOCATION_FIELDS) -> dict:
    """The allocation defaults an entry ([[address]], [[mail_alert]]) gives: those of ``fields`` it sets."""
    return {name: getattr(entry, name) for name in fields if getattr(entry, name)}


@dataclass(frozen=True)
class Address:
    address: str = setting(
        help="An address Inlet accepts mail for (support@example.org), or a whole domain (@example.org)."
    )
    description: str = setting("", help="What this address is for.")
    group: str = setting("", help="Default resolver group ([[group]] name) for mail to this address.")
    category: str = setting("", help="Default category.")
    service: str = setting("", help="Default service.")
    impact: str = setting("", help="Default impact.", choices=("", "high", "medium", "low"))
    urgency: str = setting("", help="Default urgency.", choices=("", "high", "medium", "low"))
    security: bool = setting(False, help="Mail to this address opens security incidents (restricted visibility).")
    major: bool = setting(False, help="Mail to this address opens major incidents.")
    accept_lists: bool = setting(
        False,
        help="Let mailing-list and bulk mail (List-Id, List-Unsubscribe, Precedence: list/bulk/junk) "
        "open incidents here; otherwise it is ignored with the reason.",
    )

    def defaults(self) -> dict:
        """The allocation defaults this address gives (only what is set)."""
        return given_defaults(self, (*ALLOCATION_FIELDS, "security", "major"))


@dataclass(frozen=True)
class Mailbox:
    name: str = setting(help="Name of this mailbox (unique; used in logs and its checkpoint).")
    host: str = setting(help="IMAP server.")
    port: int = setting(993, help="IMAP port (993 with TLS, 143 without).", minimum=1)
    tls: bool = setting(True, help="Connect with implicit TLS (IMAPS).")
    starttls: bool = setting(False, help="Upgrade a plain connection with STARTTLS (when tls = false).")
    user: str = setting("", help="Login name (required).")
    password_env: str = setting(
        "", help="Environment variable holding the password (this or password_file is required)."
    )
    password_file: str = setting(
        "",
        help="File holding the password, read at each login: a rotated password is applied by `inlet reload` "
        "(instead of password_env, which only a restart re-reads).",
    )
    folder: str = setting("INBOX", help="Folder to read new mail from.")
    processed_folder: str = setting(
        "", help="Move stored messages to this folder (created if missing); empty: flag them instead."
    )
    processed_flag: str = setting("$InletStored", help="Keyword set on stored messages when not moving them.")
    poll_interval: timedelta = setting(timedelta(seconds=60), help="How often to look for mail without IDLE.")
    idle: bool = setting(True, help="Use IMAP IDLE when the server supports it (new mail in seconds).")
    address: str = setting("", help="The [[address]] whose defaults apply to this mailbox's mail (empty: none).")
    silent_after: timedelta = setting(
        timedelta(0),
        help="Not polled successfully for this long (login refused, server gone): one incident, resolved when"
        " polling works again (the built-in heartbeat mailbox:<name>; 0s: none).",
    )
    silent_group: str = setting("", help="Group of that incident (empty: fallback_group).")


@dataclass(frozen=True)
class MailSection:
    own_addresses: list[str] = setting(
        factory=list,
        help="Addresses (or @domains) Inlet sends from: mail From them is its own loop. [[address]] entries count too.",
    )
    loop_token: str = setting("inlet", help="Value Inlet puts in X-Loop; incoming mail carrying it is a loop.")
    message_id_domain: str = setting("inlet.invalid", help="Domain part of the Message-IDs Inlet generates.")
    message_id_secret_env: str = setting(
        "INLET_MESSAGE_ID_SECRET",
        help="Environment variable holding the key that signs Inlet's Message-IDs (else generated in data_dir).",
    )
    reopen_window: timedelta = setting(
        timedelta(days=7), help="A reply within this time after resolution reopens; later, a new linked incident."
    )
    throttle_count: int = setting(
        20, help="Most new incidents one sender may open per throttle_window; more are ignored: throttled.", minimum=1
    )
    throttle_window: timedelta = setting(timedelta(hours=1), help="The window of the per-sender throttle.")
    undeliverable_for: timedelta = setting(
        timedelta(days=3), help="How long an address that bounced is not mailed again."
    )
    max_attachment_size: int = setting(
        10_485_760, help="Largest attachment stored, in bytes; larger ones are recorded as skipped.", minimum=0
    )
    max_header_fields: int = setting(
        1000, help="Most header fields parsed; a message with more is read as plain text (raw kept).", minimum=50
    )
    max_header_bytes: int = setting(
        262_144, help="Largest header block parsed, in bytes; larger: read as plain text (raw kept).", minimum=4096
    )
    max_mime_containers: int = setting(
        100,
        help="Most multipart/message parts (they bound the nesting depth; at most 300); more: read as plain text.",
        minimum=1,
    )
    max_mime_parts: int = setting(
        1000, help="Most MIME parts in one message; more: read as plain text (raw kept).", minimum=10
    )
    trusted_authserv_id: str = setting(
        "",
        help="authserv-id of the MTA in front of Inlet whose topmost Authentication-Results header proves a "
        "sender (dmarc=pass, or dkim=pass aligned with From) for email commands; empty: only SMTP AUTH proves.",
    )


def check_mail(config) -> None:
    """Cross-references of the mail settings (raises KeyProblem)."""
    groups = {g.name for g in config.group}
    seen = set()
    for a in config.address:
        where = (f"[[address]] {a.address!r}",)
        value = a.address.strip().lower()
        if not value or value.count("@") != 1 or value.endswith("@"):
            raise KeyProblem((*where, "address"), "expected name@domain or @domain")
        if value in seen:
            raise KeyProblem((*where, "address"), "duplicate address")
        seen.add(value)
        if a.group and a.group not in groups:
            raise KeyProblem((*where, "group"), f"no [[group]] named {a.group!r}")
    known = {a.address.strip().lower() for a in config.address}
    for m in config.mailbox:
        if m.address and m.address.strip().lower() not in known:
            raise KeyProblem((f"[[mailbox]] {m.name!r}", "address"), f"no [[address]] {m.address!r}")
        if not m.user:
            raise KeyProblem((f"[[mailbox]] {m.name!r}", "user"), "required key is missing")
        if bool(m.password_env) == bool(m.password_file):
            what = "give only one of" if m.password_env else "required key is missing: one of"
            raise KeyProblem((f"[[mailbox]] {m.name!r}", "password_env"), f"{what} password_env and password_file")
    if config.mail.max_mime_containers > MAX_MIME_CONTAINERS:
        raise KeyProblem(("[mail]", "max_mime_containers"), f"at most {MAX_MIME_CONTAINERS} (it bounds recursion)")
    smtp = config.smtp
    if bool(smtp.tls_cert) != bool(smtp.tls_key):
        raise KeyProblem(("[smtp]", "tls_cert"), "tls_cert and tls_key go together")
    if smtp.auth_required and not smtp.users:
        raise KeyProblem(("[smtp]", "auth_required"), "needs at least one entry in users")
    if smtp.require_tls and not smtp.tls_cert:
        raise KeyProblem(("[smtp]", "require_tls"), "needs tls_cert and tls_key")
    for key in ("idle_timeout", "max_session_time", "drain_timeout"):
        if getattr(smtp, key) <= timedelta(0):
            raise KeyProblem(("[smtp]", key), "must be longer than 0s")


def match_address(config, address: str):
    """The [[address]] entry that accepts ``address`` (exact address first, then its domain), or None."""
    address = (address or "").strip().strip("<>").lower()
    if "@" not in address:
        return None
    domain = "@" + address.rpartition("@")[2]
    by_domain = None
    for entry in config.address:
        value = entry.address.strip().lower()
        if value == address:
            return entry
        if value == domain:
            by_domain = entry
    return by_domain


def message_id_secret(config) -> bytes:
    """The key that signs Inlet's Message-IDs: from the environment, else a file kept in data_dir."""
    return local_secret(config, config.mail.message_id_secret_env, "message-id.key").encode()


def email_options(config) -> EmailOptions:
    """The parser's view of this installation (own addresses, loop token, Message-ID key)."""
    own = [a.lower() for a in config.mail.own_addresses]
    # Exact [[address]] entries are Inlet's own; an @domain entry is not (its users write from it).
    own += [a.address.lower() for a in config.address if not a.address.startswith("@")]
    own.append(config.notifications.from_address.strip().lower())  # what the outbox sends from
    return EmailOptions(
        ref_prefix=config.inlet.ref_prefix,
        own_addresses=tuple(own),
        loop_token=config.mail.loop_token,
        message_id_secret=message_id_secret(config),
        message_id_domain=config.mail.message_id_domain,
        max_attachment_size=config.mail.max_attachment_size,
        max_header_fields=config.mail.max_header_fields,
        max_header_bytes=config.mail.max_header_bytes,
        max_mime_containers=config.mail.max_mime_containers,
        max_mime_parts=config.mail.max_mime_parts,
    )
