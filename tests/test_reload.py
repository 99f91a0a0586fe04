"""Reloading the configuration: SIGHUP and `inlet reload` swap rules in; a bad file is refused, the old stays."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys

import tomli_w

from gateway.cli.main import main
from gateway.config.loader import load_config
from gateway.core.errors import ConfigError
from gateway.service import Service
from tests.conftest import ROOT, base_config_dict, free_port, wait_for

INLET = [sys.executable, "-m", "gateway.cli.main"]
VPN = {"name": "vpn", "subject": {"any": ["vpn"]}, "group": "network"}
MAILBOX = {"name": "desk", "host": "127.0.0.1", "user": "desk", "password_env": "DESK_IMAP_PASSWORD"}


def write(path, url, **sections):
    path.write_text(tomli_w.dumps(base_config_dict(url, **sections)))


def test_service_reload_swaps_the_config_everywhere_and_keeps_it_on_error(store):
    from gateway.audiences import Audiences

    path = store.tmp_path / "config.toml"
    smtp = {"host": "127.0.0.1", "port": free_port()}
    write(path, store.url, inlet={"data_dir": str(store.tmp_path)}, smtp=smtp)
    service = Service(load_config(path), roles={"smtp"})
    service.start()
    try:
        assert len(service.config.ruleset) == 0
        address = [{"address": "new-desk@example.org"}]
        write(path, store.url, inlet={"data_dir": str(store.tmp_path)}, smtp=smtp, rule=[VPN], address=address)
        new = service.reload()
        assert service.config is new and service.pipeline.config is new
        assert service.lifecycle.policy.config is new
        assert service.smtp.handler.config is new  # it accepts mail for the new address
        assert all(parse.config is new for parse in service.pipeline.parsers.values() if hasattr(parse, "config"))
        assert [h.config for h in service.lifecycle.hooks if isinstance(h, Audiences)] == [new]
        assert len(service.lifecycle.policy.config.ruleset) == 1
        bad = {**VPN, "subject": {"regex": "(unclosed"}}
        write(path, store.url, inlet={"data_dir": str(store.tmp_path)}, smtp=smtp, rule=[bad])
        try:
            service.reload()
            raise AssertionError("a bad regex must be refused")
        except ConfigError as exc:
            assert "regex" in str(exc)
        assert service.config is new  # the running configuration stays
        write(path, store.url, inlet={"data_dir": str(store.tmp_path)}, smtp=smtp, web={"port": 1})
        try:
            service.reload()
            raise AssertionError("a changed [web] needs a restart")
        except ConfigError as exc:
            assert "[web] changed: restart" in str(exc)
        assert service.config is new
        for changed, shown in (
            ({"smtp": {**smtp, "max_recipients": 5}}, "[smtp]"),  # bound when the server started
            ({"smtp": smtp, "mailbox": [MAILBOX]}, "the first [[mailbox]] was added"),  # no imap role runs yet
        ):
            write(path, store.url, inlet={"data_dir": str(store.tmp_path)}, **changed)
            try:
                service.reload()
                raise AssertionError(f"{shown} needs a restart")
            except ConfigError as exc:
                assert f"{shown}" in str(exc) and "restart" in str(exc)
            assert service.config is new
    finally:
        service.stop()


def test_sighup_and_inlet_reload_keep_connections_open(store, capsys):
    port = free_port()
    path = store.tmp_path / "config.toml"
    settings = {"inlet": {"data_dir": str(store.tmp_path)}, "web": {"host": "127.0.0.1", "port": port}}
    write(path, store.url, **settings)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*INLET, "-c", str(path), "serve"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    lines = []

    def said(text):
        def seen():
            while text not in "".join(lines):
                line = proc.stdout.readline()
                if not line:
                    return False
                lines.append(line)
            return True

        return seen

    try:
        wait_for(said("inlet: running"), timeout=20, message="inlet serve to start")
        wait_for(lambda: (store.tmp_path / "inlet.pid").exists(), message="the pid file")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)  # one keep-alive connection throughout
        conn.request("GET", "/healthz")
        assert json.load(conn.getresponse()) == {"status": "ok"}
        sock = conn.sock

        write(path, store.url, rule=[VPN], **settings)
        assert main(["-c", str(path), "reload"]) == 0
        wait_for(said("reloaded configuration (1 rules"), message="the reload")

        path.write_text("this is = = not toml")
        assert main(["-c", str(path), "reload"]) == 1  # refused before signalling
        assert "TOML syntax error" in capsys.readouterr().err
        proc.send_signal(1)  # SIGHUP anyway: the process refuses it too
        wait_for(said("reload refused, the running configuration stays"), message="the refusal")

        conn.request("GET", "/healthz")
        assert json.load(conn.getresponse()) == {"status": "ok"}
        assert conn.sock is sock  # the same TCP connection: nothing was dropped
        conn.close()
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0 and "Traceback" not in "".join(lines) + out
    assert not (store.tmp_path / "inlet.pid").exists()


def test_reload_rebuilds_the_notifier_channels(store):
    """A channel added to a group and reloaded gets the next notification (the notify role's old copy
    of the configuration would send only to the channels it started with)."""
    from store.models import Notification
    from tests.conftest import in_db
    from tests.sinks import HttpSink

    first, added = HttpSink(free_port()).start(), HttpSink(free_port()).start()
    path = store.tmp_path / "config.toml"
    settings = {"inlet": {"data_dir": str(store.tmp_path)}, "notifications": {"apprise_throttle": "0s"}}

    def groups(*sinks):
        return [{"name": "service-desk", "channels": [f"json://{s.url}" for s in sinks]}, {"name": "network"}]

    write(path, store.url, group=groups(first), **settings)
    service = Service(load_config(path), roles={"notify"})
    service.start()
    try:
        service.lifecycle.create(title="Before the reload", actor="test", group="service-desk")
        wait_for(lambda: first.json(), timeout=20, message="the first channel")
        write(path, store.url, group=groups(first, added), **settings)
        service.reload()
        service.lifecycle.create(title="After the reload", actor="test", group="service-desk")
        wait_for(lambda: added.json(), timeout=20, message="the channel added by the reload")
        assert ["After the reload" in r["message"] for r in added.json()] == [True]
        wait_for(lambda: len(first.json()) == 2, timeout=20, message="the first channel, again")
        sent = Notification.status == "sent"
        wait_for(lambda: in_db(lambda: Notification.select().where(sent).count()) == 2, message="both sent")
    finally:
        service.stop()
        first.stop()
        added.stop()
