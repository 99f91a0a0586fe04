"""Failures are logged, not flooded: a flood on an error path grows the log by a bounded amount.

`inlet serve` runs as a subprocess on SQLite whose write lock the test holds, so every webhook is
refused 503 and every SMTP message 451 ("store unavailable"): hundreds of identical errors. The log
(the process's stderr) gets one line per kind per [inlet] log_repeat_window, then a line with the
count of the repeats, and no traceback per event.
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.conftest import ROOT, base_config_dict, free_port, wait_for

TOKEN = "flood-test-token-0123456789"
DESK = "desk@inlet.example.org"
FLOOD = 300


def write_config(tmp_path, web_port: int, smtp_port: int):
    import tomli_w

    data = base_config_dict(
        f"sqlite:///{tmp_path / 'inlet.db'}",
        inlet={"data_dir": str(tmp_path / "state"), "log_repeat_window": "1s"},
        database={"url": f"sqlite:///{tmp_path / 'inlet.db'}", "busy_timeout": "0s"},
        web={"host": "127.0.0.1", "port": web_port},
        smtp={"host": "127.0.0.1", "port": smtp_port},
        address=[{"address": DESK, "group": "service-desk"}],
        integration=[{"name": "plain", "kind": "generic", "token_env": "FLOOD_TOKEN"}],
    )
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def test_a_flood_of_store_failures_grows_the_log_by_a_bounded_amount(tmp_path):
    web_port, smtp_port = free_port(), free_port()
    config = write_config(tmp_path, web_port, smtp_port)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "FLOOD_TOKEN": TOKEN}
    inlet = [sys.executable, "-m", "gateway.cli.main", "-c", str(config)]
    assert subprocess.run([*inlet, "db", "upgrade"], cwd=ROOT, env=env, capture_output=True, timeout=60).returncode == 0
    log_path = tmp_path / "inlet.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*inlet, "serve", "--only", "web,smtp"], cwd=ROOT, env=env, stdout=log, stderr=log)
    http = requests.Session()
    url = f"http://127.0.0.1:{web_port}/hooks/plain"
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    def post(i: int) -> int:
        body = {"title": "Disk full", "dedup_key": f"disk-{i}", "status": "firing"}
        return http.post(url, json=body, headers=headers, timeout=30).status_code

    try:

        def answering():
            assert proc.poll() is None, log_path.read_text()
            try:
                return post(-1) == 202
            except requests.ConnectionError:
                return False

        wait_for(answering, timeout=30, message="inlet serve to take a webhook")
        before = len(log_path.read_text().splitlines())

        holder = sqlite3.connect(tmp_path / "inlet.db", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # the store is unavailable for writes from now on
        try:
            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(post, range(FLOOD)))
            assert answers == [503] * FLOOD
            refused = 0
            for _ in range(20):
                with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
                    try:
                        client.sendmail("ann@example.org", [DESK], b"Subject: hello\r\n\r\nhi\r\n")
                    except smtplib.SMTPDataError as exc:
                        refused += exc.smtp_code == 451
            assert refused == 20
            flood = log_path.read_text().splitlines()[before:]
            # Without the limit: two lines per refused webhook and per refused message (≥ 640). With it: a
            # few lines per kind (the flood lasts a few 1 s windows on a busy machine), no traceback per event.
            assert len(flood) < 80, f"{len(flood)} lines"

            def counted():  # one more failure once the 1 s window has passed reports the repeats
                post(FLOOD)
                return "more like this not logged" in log_path.read_text()

            wait_for(counted, timeout=20, interval=0.2, message="the repeat count in the log")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    text = "\n".join(log_path.read_text().splitlines()[before:])
    assert text.count("Traceback") <= 1
    held = sum(int(n) for n in re.findall(r"\[(\d+) more like this not logged", text))
    assert held > 0
    assert "store unavailable" in text and "not stored" in text  # each kind was still logged


def test_one_traceback_per_window_then_a_count_without_one():
    import io
    import logging

    from gateway.cli.log_repeats import RepeatFilter

    now = [0.0]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RepeatFilter(60, clock=lambda: now[0]))
    logger = logging.getLogger("inlet.test-flood")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        for i in range(1000):
            try:
                raise ConnectionRefusedError(f"channel {i} refused")
            except ConnectionRefusedError:
                logger.exception("notification %s failed", i)
            logger.warning(f"apprise: failed to send to channel {i}")  # noqa: G004 -- a library's f-string
            logger.info("inbound %s: processed", i)  # INFO is not limited
        now[0] = 61.0
        try:
            raise ConnectionRefusedError("channel 1000 refused")
        except ConnectionRefusedError:
            logger.exception("notification %s failed", 1000)
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert stream.getvalue().count("Traceback") == 1
    assert sum("apprise: failed" in line for line in lines) == 1
    assert sum("inbound" in line for line in lines) == 1000
    assert lines[-1] == (
        "notification 1000 failed (ConnectionRefusedError: channel 1000 refused) "
        "[999 more like this not logged since the last one shown; one line per 60s]"
    )
