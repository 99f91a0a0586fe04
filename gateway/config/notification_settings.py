"""Settings of notifications: ``[notifications]`` (delivery, SMTP, digests) and ``[[stakeholder]]``.

Declared here, wired into :class:`gateway.config.loader.Config`; cross-references are
checked by :func:`check_notifications`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from gateway.config.schema import KeyProblem, setting
from gateway.core.keys import secret

SMTP_SECURITY = ("none", "starttls", "ssl")
STAKEHOLDER_EVENTS = ("major_declared", "update", "resolved")


@dataclass(frozen=True)
class NotificationsSection:
    enabled: bool = setting(True, help="Write notifications at all (false: the outbox stays empty).")
    from_address: str = setting(
        "inlet@localhost", help="The intake address: From and Reply-To of every email Inlet sends."
    )
    from_name: str = setting("", help="Display name in From (empty: the [inlet] name).")
    smtp_host: str = setting("127.0.0.1", help="SMTP relay for emails to reporters.")
    smtp_port: int = setting(25, help="Port of the SMTP relay.", minimum=1)
    smtp_security: str = setting("none", help="none | starttls | ssl.", choices=SMTP_SECURITY)
    helo_name: str = setting(
        "", help="Name Inlet gives in HELO/EHLO to the relay (empty: the host of [inlet] base_url)."
    )
    smtp_user: str = setting("", help="SMTP login (empty: no authentication).")
    smtp_password_env: str = setting("", help="Environment variable holding the SMTP password.")
    templates_dir: str = setting("", help="Folder whose templates override the built-in ones (same file names).")
    acknowledge_reporter: bool = setting(True, help="Send the reporter an acknowledgement with the reference.")
    max_attempts: int = setting(8, help="Attempts per target before the notification is failed.", minimum=1)
    backoff: timedelta = setting(timedelta(seconds=30), help="Delay before the first retry; doubles each time.")
    backoff_max: timedelta = setting(timedelta(hours=1), help="Longest delay between two attempts.")
    concurrency: int = setting(8, help="Sends in flight at once per process (across rows and targets).", minimum=1)
    batch: int = setting(50, help="Rows one worker claims at a time.", minimum=1)
    lease: timedelta = setting(timedelta(minutes=5), help="How long a claim holds before another worker may retry.")
    send_timeout: timedelta = setting(timedelta(seconds=10), help="Longest one send may take (connect, then read).")
    apprise_throttle: timedelta = setting(
        timedelta(seconds=0),
        help="Apprise's pause between two requests of one plugin (one URL with many targets); 0 = none.",
    )
    rate_limit: int = setting(
        20, help="Messages per channel per rate_window; more are folded into one digest.", minimum=1
    )
    rate_window: timedelta = setting(timedelta(minutes=5), help="Window of the per-channel rate limit.")
    reporter_mail_limit: int = setting(
        20,
        help="Loop brake: most emails to one address about one incident per reporter_mail_window; more are not sent.",
        minimum=1,
    )
    reporter_mail_window: timedelta = setting(timedelta(hours=1), help="The window of the loop brake.")
    failing_warning_after: timedelta = setting(
        timedelta(minutes=15), help="The queue warns when notifications have been failing this long."
    )
    failing_incident_after: timedelta = setting(
        timedelta(0),
        help="When notifications have been failing this long (as the queue's warning counts it), Inlet opens one"
        " incident (the built-in heartbeat 'outbox:deliveries') and resolves it when they work again. 0: off.",
    )
    failing_incident_group: str = setting("", help="Group of that incident (empty: fallback_group).")

    def smtp_password(self) -> str:
        """The relay's password, read from ``smtp_password_env`` ("" when unset): notifiers get the value."""
        return secret(self.smtp_password_env) or ""


@dataclass(frozen=True)
class Stakeholder:
    name: str = setting(help="Name of the subscription (unique).")
    notify: list[str] = setting(factory=list, help="Apprise URLs told about matching incidents.")
    services: list[str] = setting(factory=list, help="Only incidents of these services (empty: any).")
    categories: list[str] = setting(factory=list, help="Only incidents of these categories (empty: any).")
    priorities: list[str] = setting(factory=list, help="Only incidents of these priorities (empty: any).")
    procedures: list[str] = setting(factory=list, help="Only incidents of these procedures (empty: any).")
    events: list[str] = setting(
        factory=lambda: list(STAKEHOLDER_EVENTS),
        help="What to tell: major_declared, update (public updates), resolved.",
    )
    security: bool = setting(False, help="Also security incidents (neutral text, no details).")


def check_notifications(config) -> None:
    """Cross-checks of ``[notifications]`` and ``[[stakeholder]]``; raises KeyProblem."""
    section = config.notifications
    if "@" not in section.from_address:
        raise KeyProblem(("[notifications]", "from_address"), "must be an email address")
    if section.backoff_max < section.backoff:
        raise KeyProblem(("[notifications]", "backoff_max"), "must be at least 'backoff'")
    if section.lease < 4 * section.send_timeout:
        raise KeyProblem(
            ("[notifications]", "lease"), "must be at least 4 × send_timeout, or a slow round loses its claim"
        )
    if section.rate_window.total_seconds() <= 0:
        raise KeyProblem(("[notifications]", "rate_window"), "must be longer than 0s")
    for s in config.stakeholder:
        where = f"[[stakeholder]] {s.name!r}"
        if not s.notify:
            raise KeyProblem((where, "notify"), "needs at least one Apprise URL")
        for event in s.events:
            if event not in STAKEHOLDER_EVENTS:
                raise KeyProblem((where, "events"), f"must be among {', '.join(STAKEHOLDER_EVENTS)}; got {event!r}")
        for target in s.notify:
            if "://" not in target:
                raise KeyProblem((where, "notify"), f"{target!r} is not an Apprise URL")
