"""What crafted messages cost the email parser (issue #11 point 7), next to plain messages of the same size.

Each crafted input (tests/crafted_mail.py: ``Re:`` × 20,000, MIME nested 2,000 deep, 20,000
parts, 200,000 header fields, 50,000 References, 20,000 Cc, 100,000 nested <div>, a 20,000-line
quote) is parsed a few times with ``parse_email``; the baseline is a plain text message of the
same size (one header block, the rest body), measured in the same run. Printed: median ms of
each, and the ratio. Linear means the ratio stays small whatever the size; before the limits
(commit "Mail trust boundaries") the same inputs took 3.8 s to 88 s each.

Then the incident page: each crafted message is sent through Inlet's SMTP server (smtplib) into a
SQLite store, processed by the pipeline, and its incident page rendered through the Flask test
client (median ms), next to the page of a plain message's incident. Target: under 200 ms.

Also: nh3 (the incident page's HTML sanitiser) on nested <div>, which is why the page keeps an
email's HTML only up to 200 levels deep (gateway/pipeline/mail_steps.py).

Run: ``PYTHONPATH=. python bench/mail_limits.py``
"""

from __future__ import annotations

import re
import smtplib
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nh3  # noqa: E402

from gateway import accounts  # noqa: E402
from gateway.config.loader import config_from_dict  # noqa: E402
from gateway.service import (
    Service,  # noqa: E402
    build_services,  # noqa: E402
)
from parsers.email import EmailOptions, parse_email  # noqa: E402
from store.db import db, open_database  # noqa: E402
from store.migrations import upgrade  # noqa: E402
from store.models import PENDING, Inbound, Incident  # noqa: E402
from tests.crafted_mail import CRAFTED  # noqa: E402
from web.app import create_app  # noqa: E402

RUNS = 5


def median_ms(function, runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def plain_of_size(size: int) -> bytes:
    head = b"From: Ann <ann@example.org>\r\nTo: support@example.org\r\nSubject: plain\r\n"
    head += b"Message-ID: <p@example.org>\r\n\r\n"
    line = b"The printer on floor 3 prints blank pages since this morning, please help.\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def main() -> None:
    options = EmailOptions()
    print(f"{'input':<12} {'bytes':>10} {'crafted ms':>11} {'plain ms':>9} {'ratio':>6}  how it was read")
    for name, raw in CRAFTED.items():
        crafted = median_ms(lambda raw=raw: parse_email(raw, options))
        plain_raw = plain_of_size(len(raw))
        plain = median_ms(lambda plain_raw=plain_raw: parse_email(plain_raw, options))
        how = parse_email(raw, options).details.get("parse_limit", "structurally")
        print(f"{name:<12} {len(raw):>10} {crafted:>11.1f} {plain:>9.1f} {crafted / plain:>6.1f}  {how}")
    print()
    pages()
    print()
    print("nh3.clean on nested <div> (quadratic in depth):")
    for depth in (200, 1000, 5000, 10000):
        html = "<div>" * depth + "x" + "</div>" * depth
        print(f"  depth {depth:>6}: {median_ms(lambda html=html: nh3.clean(html), runs=3):8.1f} ms")


def pages() -> None:
    folder = Path(tempfile.mkdtemp(prefix="inlet-bench-"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = config_from_dict(
        {
            "database": {"url": f"sqlite:///{folder / 'inlet.db'}"},
            "inlet": {"data_dir": str(folder)},
            "smtp": {"port": port},
            "group": [{"name": "service-desk"}],
            "address": [{"address": "support@example.org"}],
            "notifications": {"enabled": False},
        }
    )
    open_database(config)
    upgrade()
    db.close()
    service = Service(config, roles={"smtp", "worker"})
    service.start()
    try:
        inputs = {"plain (baseline)": plain_of_size(2000), **CRAFTED}
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            for raw in inputs.values():
                client.sendmail("bench@example.org", ["support@example.org"], raw)
        with db.connection_context():
            deadline = time.monotonic() + 120
            while Inbound.select().where(Inbound.status == PENDING).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            refs = {}
            for name, row in zip(inputs, Inbound.select().order_by(Inbound.id), strict=True):
                refs[name] = Incident.get_by_id(row.incident_id).ref if row.incident_id else None
            accounts.create_user("admin", "admin", "bench password")
        client = create_app(config, build_services(config)).test_client()
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
        client.post("/login", data={"name": "admin", "password": "bench password", "csrf_token": token})
        print(f"{'incident page of':<18} {'median ms':>10}")
        for name, ref in refs.items():
            if ref is None:
                print(f"{name:<18} {'(no incident)':>10}")
                continue
            client.get(f"/incidents/{ref}")  # warm
            print(f"{name:<18} {median_ms(lambda ref=ref: client.get(f'/incidents/{ref}')):>10.1f}")
    finally:
        service.stop()


if __name__ == "__main__":
    main()
