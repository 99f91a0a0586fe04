"""The `inlet` command line: every command, its JSON shape and its errors (both databases)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from gateway.cli.main import build_parser, main
from store.migrations import LATEST
from tests.conftest import ROOT, free_port, wait_for

INLET = [sys.executable, "-m", "gateway.cli.main"]
INCIDENT_KEYS = {
    "ref", "title", "status", "priority", "impact", "urgency", "category", "service", "group", "assignee",
    "reporter", "source", "opened_at", "acknowledged_at", "resolved_at", "closed_at", "signal_count",
}  # fmt: skip
ISO_UTC = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


@pytest.fixture
def cli(store, capsys):
    """Run `inlet -c <test config> ARGS…` in-process; return (exit code, stdout, stderr)."""
    path = store.write_config()

    def run(*args):
        code = main(["-c", str(path), *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def subcommands(parser, prefix=()):
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from subcommands(sub, (*prefix, name))


@pytest.mark.parametrize("command", [(), *subcommands(build_parser())], ids=lambda c: " ".join(c) or "inlet")
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: inlet")
    assert "-c FILE, --config FILE" in out


def test_incident_create_list_show_json(cli):
    code, out, _ = cli("incident", "create", "--title", "Mail server down", "--impact", "high", "--urgency", "high",
                       "--description", "Nobody can send mail", "--reporter", "ann@example.org")  # fmt: skip
    assert code == 0 and out.startswith("INC-1\tP1\tservice-desk\tMail server down")
    cli("incident", "create", "--title", "Printer jam", "--impact", "low", "--urgency", "low", "--group", "network")

    code, out, _ = cli("incident", "list", "--json")
    listed = json.loads(out)
    assert [i["ref"] for i in listed] == ["INC-2", "INC-1"]
    assert set(listed[0]) >= INCIDENT_KEYS
    first = listed[1]
    assert (first["priority"], first["reporter"], first["group"], first["signal_count"]) == (
        "P1", "ann@example.org", "service-desk", 0
    )  # fmt: skip
    assert first["acknowledged_at"] is None and first["category"] is None
    assert __import__("re").match(ISO_UTC, first["opened_at"])

    code, out, _ = cli("incident", "list", "--status", "new", "--json")
    assert len(json.loads(out)) == 2
    code, out, _ = cli("incident", "list", "--status", "closed", "--json")
    assert json.loads(out) == []

    code, out, _ = cli("incident", "show", "inc-1", "--json")
    shown = json.loads(out)
    assert shown["ref"] == "INC-1" and set(shown) >= INCIDENT_KEYS
    (created,) = shown["events"]
    assert {"at", "type", "actor", "visibility", "body"} <= set(created)
    assert (created["type"], created["actor"], created["new"], created["body"]) == (
        "created", "cli", "new", "Nobody can send mail"
    )  # fmt: skip

    code, out, _ = cli("incident", "show", "INC-1")
    assert code == 0 and "Mail server down" in out and "created" in out
    assert "status: — → new" in out and "None" not in out  # plain words, no Python values


def test_show_unknown_reference(cli):
    code, out, err = cli("incident", "show", "INC-77")
    assert (code, out) == (1, "")
    assert err == "inlet: error: no incident 'INC-77'\n"


def test_list_unknown_status(cli):
    code, _, err = cli("incident", "list", "--status", "open")
    assert code == 1 and "unknown status 'open'" in err


def test_user_add_and_duplicate(cli):
    code, out, _ = cli("user", "add", "alice", "--role", "agent")
    assert code == 0 and out.startswith("created agent user 'alice' with password: ")
    code, _, err = cli("user", "add", "alice", "--role", "viewer")
    assert code == 1 and err == "inlet: error: user 'alice' exists already\n"
    code, out, _ = cli("user", "list")
    assert "alice\tagent\tactive" in out


def test_user_token(cli):
    from gateway.accounts import user_for_token

    cli("user", "add", "robot", "--role", "agent")
    code, out, _ = cli("user", "token", "robot")
    assert code == 0 and out.startswith("inl_")
    assert user_for_token(out.strip()).name == "robot"
    code, _, err = cli("user", "token", "nobody")
    assert code == 1 and err == "inlet: error: no user 'nobody'\n"


def test_user_bootstrap_once(cli, monkeypatch):
    monkeypatch.setenv("INLET_ADMIN_PASSWORD", "correct horse")
    code, out, _ = cli("user", "bootstrap")
    assert code == 0 and "from INLET_ADMIN_PASSWORD" in out
    from gateway.accounts import authenticate

    assert authenticate("admin", "correct horse") is not None
    code, out, _ = cli("user", "bootstrap")
    assert out == "an admin user exists already\n"


def test_bad_role_is_a_usage_error(cli):
    with pytest.raises(SystemExit) as exit_:
        cli("user", "add", "bob", "--role", "root")
    assert exit_.value.code == 2


def test_db_upgrade_is_idempotent_and_status(empty_store, capsys):
    path = empty_store.write_config()
    assert main(["-c", str(path), "db", "status"]) == 1
    assert "needs 'inlet db upgrade'" in capsys.readouterr().out
    assert main(["-c", str(path), "db", "upgrade"]) == 0
    assert "applied 1: initial schema" in capsys.readouterr().out
    assert main(["-c", str(path), "db", "upgrade"]) == 0
    assert "applied" not in capsys.readouterr().out
    assert main(["-c", str(path), "db", "status"]) == 0


def test_outdated_schema_is_refused(empty_store, capsys):
    path = empty_store.write_config()
    assert main(["-c", str(path), "incident", "list"]) == 1
    assert f"schema is at version 0, this Inlet needs {LATEST}: run 'inlet db upgrade'" in capsys.readouterr().err
    assert main(["-c", str(path), "serve"]) == 1
    assert "run 'inlet db upgrade'" in capsys.readouterr().err


def test_check(tmp_path, capsys):
    assert main(["check", str(ROOT / "config.example.toml")]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[web]\nport = [\n")
    assert main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TOML syntax error" in err and "line" in err


def test_missing_config_file(tmp_path, capsys):
    assert main(["-c", str(tmp_path / "none.toml"), "incident", "list"]) == 1
    assert capsys.readouterr().err == f"inlet: error: {tmp_path / 'none.toml'}: configuration file not found\n"


def test_config_from_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("INLET_CONFIG", str(tmp_path / "from-env.toml"))
    assert main(["db", "status"]) == 1
    assert "from-env.toml: configuration file not found" in capsys.readouterr().err


def test_unreachable_database_names_host_never_password(tmp_path, capsys, monkeypatch):
    import tomli_w

    from tests.conftest import base_config_dict

    port = free_port()
    data = base_config_dict(f"postgresql://inlet@127.0.0.1:{port}/incidents", database={
        "url": f"postgresql://inlet@127.0.0.1:{port}/incidents", "password_env": "DB_PW"})  # fmt: skip
    monkeypatch.setenv("DB_PW", "s3cret-pw")
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(data))
    assert main(["-c", str(path), "incident", "list"]) == 1
    err = capsys.readouterr().err
    assert f"cannot connect to PostgreSQL database 'incidents' on 127.0.0.1:{port}" in err
    assert "s3cret-pw" not in err and "Traceback" not in err


@pytest.mark.parametrize("log_level", ["info", "warning"])
def test_serve_starts_answers_and_stops_on_sigterm(store, log_level):
    port = free_port()
    path = store.write_config(web={"host": "127.0.0.1", "port": port}, inlet={"log_level": log_level})
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*INLET, "-c", str(path), "serve"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:

        def healthy():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                    return json.load(resp) == {"status": "ok"}
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                return False

        wait_for(healthy, timeout=20, message="inlet serve to answer /healthz")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert f"web UI and webhooks on http://127.0.0.1:{port}/" in out
    assert "inlet: stopped" in out and "Traceback" not in out
    assert ("INFO inlet.service: started" in out) == (log_level == "info")  # [inlet] log_level applies


def test_every_command_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = [" ".join(c) for c in subcommands(build_parser()) if f"`inlet {' '.join(c)}" not in readme]
    assert missing == []
