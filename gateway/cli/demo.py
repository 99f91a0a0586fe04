"""``inlet demo``: a handful of realistic emails and alerts sent through the real intake of a
running instance (its SMTP server and its webhook endpoint), so a newcomer sees a populated queue.

Nothing is written to the database directly: what the demo sends takes the same path as
real mail and real alerts, and Inlet's answers (SMTP ``250``, HTTP ``202``) are printed.
"""

from __future__ import annotations

import json
import smtplib
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid

from gateway.config.loader import Config
from gateway.core.errors import InletError
from gateway.core.keys import secret

EMAILS = (
    ("Rita Reporter <rita@example.org>", None, "VPN drops every ten minutes",
     "Hi,\n\nsince this morning the VPN disconnects every ten minutes for the whole sales team.\n"
     "We cannot work with the CRM like this.\n\nRita"),
    ("Paul Payroll <paul@example.org>", None, "Payroll export fails with error 500",
     "The monthly payroll export stops with 'HTTP 500' after a minute. Salaries are due on Friday."),
    ("Frank Front Desk <frank@example.org>", None, "Printer on floor 2 jams",
     "The printer next to the kitchen jams on every second page."),
    ("Sam Sales <sam@example.org>", "security", "Suspicious email asking for my password",
     "I received a message that looks like our IT asking me to confirm my password on a strange site.\n"
     "I clicked the link but did not type anything. Is my account compromised?"),
)  # fmt: skip


def _alerts(now: datetime) -> dict:
    """An Alertmanager webhook (version 4) with one group of two firing alerts."""

    def alert(instance: str) -> dict:
        labels = {"alertname": "DiskAlmostFull", "instance": instance, "severity": "critical", "job": "node"}
        return {
            "status": "firing",
            "labels": labels,
            "annotations": {
                "summary": f"Disk /var on {instance} is 95 % full",
                "description": "Less than 5 % of /var is free; the database will stop writing when it is full.",
            },
            "startsAt": (now - timedelta(minutes=3)).isoformat().replace("+00:00", "Z"),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example.org/graph?g0.expr=node_filesystem_avail_bytes",
            "fingerprint": f"demo-{instance}",
        }

    return {
        "version": "4",
        "groupKey": '{}:{alertname="DiskAlmostFull"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "inlet",
        "groupLabels": {"alertname": "DiskAlmostFull"},
        "commonLabels": {"alertname": "DiskAlmostFull", "severity": "critical"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example.org",
        "alerts": [alert("db-1.example.org:9100"), alert("db-2.example.org:9100")],
    }


def run_demo(config: Config, report: Callable[[str], None] = print) -> int:
    """Send the demo inputs; return how many were accepted. InletError when nothing could be sent."""
    accepted = _send_emails(config, report) + _send_alerts(config, report)
    if accepted == 0:
        raise InletError("nothing was accepted: is `inlet serve` running with this configuration?")
    report(f"demo: {accepted} inputs accepted; open {config.inlet.base_url}/incidents to see the queue")
    return accepted


def _send_emails(config: Config, report) -> int:
    if not config.smtp.enabled or not config.address:
        report("demo: no SMTP intake or no [[address]] configured: no emails sent")
        return 0
    by_group = {a.group: a.address for a in config.address if not a.address.startswith("@")}
    default = next((a.address for a in config.address if not a.address.startswith("@")), None)
    if default is None:
        report("demo: only @domain addresses configured: no emails sent")
        return 0
    host = "127.0.0.1" if config.smtp.host in ("", "0.0.0.0", "::") else config.smtp.host  # noqa: S104
    sent = 0
    try:
        with smtplib.SMTP(host, config.smtp.port, timeout=10) as client:
            for sender, group, subject, body in EMAILS:
                message = EmailMessage()
                message["From"] = sender
                message["To"] = by_group.get(group, default) if group else default
                message["Subject"] = subject
                message["Message-ID"] = make_msgid(domain="demo.example.org")
                message.set_content(body)
                client.send_message(message)
                report(f"demo: email '{subject}' → {message['To']}: 250 accepted")
                sent += 1
    except (OSError, smtplib.SMTPException) as exc:
        report(f"demo: SMTP intake at {host}:{config.smtp.port} refused or unreachable: {exc}")
    return sent


def _send_alerts(config: Config, report) -> int:
    integration = next((i for i in config.integration if i.kind == "alertmanager" and i.auth == "bearer"), None)
    if integration is None:
        report("demo: no [[integration]] of kind alertmanager with bearer auth: no alerts sent")
        return 0
    token = secret(integration.token_env)
    if not token:
        report(f"demo: set {integration.token_env} (for `inlet serve` and the demo) to send alerts too")
        return 0
    host = "127.0.0.1" if config.web.host in ("", "0.0.0.0", "::") else config.web.host  # noqa: S104
    url = f"http://{host}:{config.web.port}/hooks/{integration.name}"
    body = json.dumps(_alerts(datetime.now(UTC))).encode()
    request = urllib.request.Request(  # noqa: S310 -- our own loopback endpoint
        url, data=body, method="POST", headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            report(f"demo: Alertmanager group of 2 alerts → {url}: {answer.status} accepted")
            return 1
    except urllib.error.HTTPError as exc:
        report(f"demo: {url} answered {exc.code}: {exc.read()[:200].decode('utf-8', 'replace')}")
    except OSError as exc:
        report(f"demo: {url} unreachable: {exc}")
    return 0
