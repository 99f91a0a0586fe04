"""The example configuration works end to end, and mistakes explain themselves (through the CLI as a
newcomer runs it): `inlet check` refuses a from_address that is no [[address]], warns about an unreachable
relay and about groups without managers; a second `inlet serve` says the port is taken in one line;
relative paths follow the configuration file; escalating to management with no managers says so."""

from __future__ import annotations

import json
import os
import smtplib
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import tomli_w

from gateway.cli.main import main
from gateway.config.loader import load_config
from gateway.config.mail_settings import match_address
from store.models import Event, Incident
from tests.conftest import ROOT, free_port, in_db, service_running, wait_for

EXAMPLE = ROOT / "config.example.toml"
INLET = [sys.executable, "-m", "gateway.cli"]


def check(path, capsys) -> tuple[int, str]:
    code = main(["check", str(path)])
    out, err = capsys.readouterr()
    return code, out + err


def test_the_example_replies_come_back_to_an_address_inlet_accepts():
    config = load_config(EXAMPLE)
    assert match_address(config, config.notifications.from_address) is not None


def test_check_refuses_a_from_address_that_is_no_address(store, capsys):
    path = store.write_config(
        address=[{"address": "desk@example.org", "group": "service-desk"}],
        notifications={"from_address": "inlet@localhost"},
    )
    code, said = check(path, capsys)
    assert code == 1
    assert "from_address 'inlet@localhost' is not an [[address]]" in said and "550" in said
    path = store.write_config(
        address=[{"address": "desk@example.org", "group": "service-desk"}],
        notifications={"from_address": "desk@example.org"},
    )
    assert "is not an [[address]]" not in check(path, capsys)[1]


def test_check_warns_when_the_relay_cannot_be_reached(store, capsys, reporter_mailbox):
    closed = free_port()  # nothing listens here
    address = [{"address": "desk@example.org", "group": "service-desk"}]
    notifications = {"from_address": "desk@example.org", "smtp_port": closed}
    code, said = check(store.write_config(address=address, notifications=notifications), capsys)
    assert code == 0  # a warning: the outbox keeps the mail until the relay answers
    assert f"warning: the SMTP relay 127.0.0.1:{closed} cannot be reached" in said
    notifications["smtp_port"] = reporter_mailbox.port
    assert "cannot be reached" not in check(store.write_config(address=address, notifications=notifications), capsys)[1]


def test_check_warns_about_groups_without_managers(store, capsys):
    groups = [{"name": "service-desk", "managers": ["json://127.0.0.1:9/"]}, {"name": "network"}, {"name": "security"}]
    code, said = check(store.write_config(group=groups), capsys)
    assert "groups network, security have no managers: escalating to management (hierarchical) pages nobody" in said
    assert "service-desk" not in said.split("no managers")[0].split("warning: groups")[-1]


def test_escalating_to_management_without_managers_says_no_manager_to_page(store, capsys):
    path = store.write_config()
    assert main(["-c", str(path), "incident", "create", "--title", "Disk full", "--group", "network"]) == 0
    ref = capsys.readouterr().out.split()[0]
    code = main(["-c", str(path), "incident", "escalate", ref, "--to", "management", "--reason", "stuck"])
    out = capsys.readouterr().out
    assert code == 0 and "no manager to page: group network has no managers" in out and "done" not in out
    event = Event.get(Event.type == "escalated")
    assert "No manager to page" in event.body and event.data["outcome"].startswith("no manager to page")


def test_relative_paths_follow_the_configuration_file(tmp_path):
    folder = tmp_path / "etc"
    folder.mkdir()
    data = tomli_w.dumps(
        {
            "inlet": {"data_dir": "state"},
            "database": {"url": "sqlite:///state/inlet.db"},
            "group": [{"name": "service-desk"}],
        }
    )
    (folder / "inlet.toml").write_text(data)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = subprocess.run(
        [*INLET, "-c", str(folder / "inlet.toml"), "db", "upgrade"],
        cwd=elsewhere,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert (folder / "state" / "inlet.db").exists()
    assert list(elsewhere.iterdir()) == []  # no stray database where the command ran
    config = load_config(folder / "inlet.toml")
    assert Path(config.inlet.data_dir) == folder / "state"


@pytest.mark.timeout(120)
def test_a_second_serve_says_the_port_is_in_use_in_one_line(store):
    web, smtp = free_port(), free_port()
    path = store.write_config(web={"host": "127.0.0.1", "port": web}, smtp={"host": "127.0.0.1", "port": smtp})
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    assert subprocess.run([*INLET, "-c", str(path), "db", "upgrade"], cwd=ROOT, capture_output=True).returncode == 0
    first = subprocess.Popen([*INLET, "-c", str(path), "serve"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    try:

        def healthy():
            assert first.poll() is None, "the first inlet serve stopped"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web}/healthz", timeout=1) as resp:
                    return json.load(resp) == {"status": "ok"}
            except OSError:
                return False

        wait_for(healthy, timeout=60, message="the first inlet serve")
        wait_for(lambda: _listening(smtp), timeout=30, message="the first inlet's SMTP port")
        second = subprocess.run(
            [*INLET, "-c", str(path), "serve"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        lines = (second.stdout + second.stderr).strip().splitlines()
        assert second.returncode != 0
        assert lines == [f"inlet: error: port {web} is in use — is Inlet already running?"], lines
        assert first.poll() is None  # the running one is untouched
    finally:
        first.terminate()
        first.wait(timeout=30)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


ADDRESSES = [
    {"address": "support@example.org", "group": "service-desk"},
    {"address": "network@example.org", "group": "network", "category": "network", "impact": "high"},
    {"address": "security@example.org", "group": "security", "category": "security", "security": True},
    {"address": "@ops.example.org", "group": "network", "urgency": "high", "service": "ops"},
]


def test_classify_applies_the_address_defaults_exactly_as_intake_does(store, tmp_path, capsys):
    config = store.config(smtp={"host": "127.0.0.1", "port": free_port()}, address=ADDRESSES)
    path = store.write_config(address=ADDRESSES)
    fields = ("group", "category", "service", "impact", "urgency", "priority", "security", "major")
    with service_running(config, {"smtp", "worker"}) as running:
        for n, to in enumerate(
            ["support@example.org", "network@example.org", "security@example.org", "pager@ops.example.org"]
        ):
            raw = (
                f"From: Ann <ann@example.org>\r\nTo: {to}\r\nSubject: Trouble number {n}\r\n"
                f"Message-ID: <t{n}@example.org>\r\n\r\nSomething is wrong.\r\n"
            ).encode()
            with smtplib.SMTP("127.0.0.1", running.smtp.port, timeout=10) as client:
                client.sendmail("ann@example.org", [to], raw)
            title = f"Trouble number {n}"
            incident = wait_for(
                lambda t=title: in_db(lambda: Incident.get_or_none(Incident.title == t)), timeout=30, message=title
            )
            eml = tmp_path / f"{n}.eml"
            eml.write_bytes(raw)
            for extra in (["--recipient", to], []):  # told where it came to, or reading the To header
                capsys.readouterr()  # what the service printed at start
                code = main(["-c", str(path), "classify", str(eml), "--json", *extra])
                out, err = capsys.readouterr()
                assert code == 0, err
                said = json.loads(out)
                assert {k: said[k] for k in fields} == {k: getattr(incident, k) for k in fields}, (to, extra)


@pytest.mark.timeout(300)
def test_packaging_prints_no_warnings(tmp_path):
    """What `make` runs (pip install -e .) builds the package; setuptools has nothing to warn about (data
    folders are packages of data, the editable install is one .pth line)."""
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert built.returncode == 0, built.stderr
    said = [line for line in (built.stdout + built.stderr).splitlines() if "Warning" in line or "!!" in line]
    assert said == []
