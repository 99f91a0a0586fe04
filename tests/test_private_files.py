"""Local state is private and keys are whole: owner-only files under umask 022, atomic key files,
empty or short keys refused. Through the real `inlet` command (subprocesses), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import smtplib
import stat
import subprocess
import sys
import textwrap
import time
import urllib.request
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, wait_for

DESK = "desk@inlet.example.org"
KEY_VARIABLES = ("INLET_SECRET_KEY", "INLET_MESSAGE_ID_SECRET")


def environment() -> dict:
    """Keys come from files in data_dir, not from the environment."""
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARIABLES}
    return {**env, "PYTHONUNBUFFERED": "1"}


def inlet_command(config: Path, *args: str) -> list[str]:
    """`inlet -c CONFIG ARGS…` started from a shell whose umask is the common 022."""
    command = " ".join(f"'{a}'" for a in (sys.executable, "-m", "gateway.cli.main", "-c", str(config), *args))
    return ["sh", "-c", f"umask 022 && exec {command}"]


def inlet(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        inlet_command(config, *args), cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def setup(empty_store, tmp_path):
    """A configuration whose data folder (and SQLite folder) do not exist yet, and a migrated database."""
    ports = {"web": free_port(), "smtp": free_port()}
    sections = {
        "inlet": {"data_dir": str(tmp_path / "state")},
        "web": {"host": "127.0.0.1", "port": ports["web"]},
        "smtp": {"host": "127.0.0.1", "port": ports["smtp"]},
        "address": [{"address": DESK, "group": "service-desk"}],
        "mail": {"loop_token": DESK, "message_id_domain": "inlet.example.org"},
        "notifications": {"from_address": DESK},  # mail Inlet sends comes from an address it takes replies at
    }
    if empty_store.kind == "sqlite":
        sections["database"] = {"url": f"sqlite:///{tmp_path / 'db' / 'inlet.db'}"}
    path = empty_store.write_config(**sections)
    done = inlet(path, "db", "upgrade")
    assert done.returncode == 0, done.stderr
    return empty_store, path, tmp_path, ports


def serve(config: Path) -> subprocess.Popen:
    return subprocess.Popen(
        inlet_command(config, "serve"), cwd=ROOT, env=environment(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return out


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_everything_inlet_creates_is_owner_only_under_umask_022(setup):
    store, config, tmp_path, ports = setup
    proc = serve(config)
    try:

        def healthy():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ports['web']}/healthz", timeout=1) as resp:
                    return resp.status == 200
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                return False

        wait_for(healthy, timeout=30, message="inlet serve to answer")
        message = EmailMessage()
        message["From"] = "ann@example.org"
        message["To"] = DESK
        message["Subject"] = "Payslip attached"
        message.set_content("See the attachment.")
        message.add_attachment(b"salary: 1\n", maintype="text", subtype="plain", filename="payslip.txt")
        with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=10) as client:
            client.send_message(message)

        def incidents():
            done = inlet(config, "incident", "list", "--json")
            return done.returncode == 0 and json.loads(done.stdout)

        wait_for(incidents, timeout=30, message="the incident with its attachment")
        state = tmp_path / "state"
        wait_for(lambda: (state / "inlet.pid").exists(), timeout=10, message="the pid file")
        folders = [state, *(p for p in state.iterdir() if p.is_dir())]  # e.g. the wakeup sockets' folder
        files = [p for p in state.iterdir() if p.is_file()]
        assert {"secret_key", "message-id.key", "inlet.pid"} <= {p.name for p in files}
        if store.kind == "sqlite":
            database = tmp_path / "db" / "inlet.db"
            folders.append(database.parent)
            files += [database, *(Path(f"{database}{end}") for end in ("-wal", "-shm", "-turn"))]
        wide = {str(p): oct(mode(p)) for p in folders if mode(p) != 0o700}
        wide.update({str(p): oct(mode(p)) for p in files if mode(p) != 0o600})
        assert wide == {}
    finally:
        out = stop(proc)
    assert "Traceback" not in out

    checked = inlet(config, "check")
    assert checked.returncode == 0 and "mode" not in checked.stderr
    (tmp_path / "state" / "secret_key").chmod(0o644)
    (tmp_path / "state").chmod(0o755)
    checked = inlet(config, "check")
    assert checked.returncode == 0, checked.stderr
    assert f"warning: file {tmp_path / 'state' / 'secret_key'} has mode 0644" in checked.stderr
    assert f"warning: folder {tmp_path / 'state'} has mode 0755" in checked.stderr
    assert "chmod 600" in checked.stderr and "chmod 700" in checked.stderr


@pytest.mark.parametrize("name", ["secret_key", "message-id.key"])
@pytest.mark.parametrize("content", ["", "short-key\n"])
def test_an_empty_or_short_key_file_is_refused_with_a_clear_error(setup, name, content):
    _store, config, tmp_path, _ports = setup
    state = tmp_path / "state"
    state.mkdir(mode=0o700, exist_ok=True)
    (state / name).write_text(content)
    proc = serve(config)
    try:
        wait_for(lambda: proc.poll() is not None, timeout=30, message="inlet serve to refuse the key and exit")
    finally:
        out = stop(proc)
    assert proc.returncode == 1, out
    assert f"inlet: error: the key file {state / name} " in out
    assert ("is empty" if not content.strip() else "holds only 9 characters") in out
    assert "Traceback" not in out


RACE = textwrap.dedent(
    """
    import sys, time
    from gateway.config.loader import config_from_dict
    from gateway.core.keys import local_secret
    config = config_from_dict({"inlet": {"data_dir": sys.argv[1]}, "fallback_group": "g", "group": [{"name": "g"}]})
    start = float(sys.argv[2])
    while time.time() < start:
        pass
    print(local_secret(config, "", "racing.key"))
    """
)


def test_processes_racing_to_create_a_key_all_get_the_same_whole_key(tmp_path):
    for round_ in range(3):
        folder = tmp_path / f"round{round_}"
        start = time.time() + 1.5
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", RACE, str(folder), str(start)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for _ in range(8)
        ]
        keys = [p.communicate(timeout=60)[0].strip() for p in procs]
        assert len(set(keys)) == 1 and len(keys[0]) == 64, keys
        assert (folder / "racing.key").read_text().strip() == keys[0]
        assert [p.name for p in folder.iterdir()] == ["racing.key"]  # no temporary file left behind
