"""The operator's files in contrib/, run by the tools they are for: the systemd unit through
`systemd-analyze verify`, the alert rules through `promtool` against the series /metrics serves,
and the nginx site in a real nginx in front of a real Inlet."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from gateway.cli.main import build_parser
from gateway.service import Service
from store.db import db
from store.models import Inbound
from tests.conftest import ROOT, TOKEN, free_port, wait_for
from web.metrics import collect

CONTRIB = ROOT / "contrib"


def test_systemd_unit_verifies_and_runs_real_commands(tmp_path):
    unit = (CONTRIB / "inlet.service").read_text()
    inlet = shutil.which("inlet", path=str(ROOT / ".venv" / "bin")) or shutil.which("inlet")
    assert inlet, "the inlet command is installed (pip install -e .)"
    local = tmp_path / "inlet.service"
    local.write_text(unit.replace("/opt/inlet/.venv/bin/inlet", inlet))
    verified = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0 and not (verified.stdout + verified.stderr).strip(), verified.stderr
    commands = re.findall(r"^Exec\w+=/opt/inlet/\.venv/bin/inlet (.+)$", unit, re.MULTILINE)
    assert commands == ["db status", "serve"]
    for command in commands:
        assert build_parser().parse_args(command.split()).func  # each names a real command
    for option in ("NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=\n", "KillMode=mixed"):
        assert option in unit


def test_prometheus_rules_check_fire_and_name_only_served_series(store):
    rules = CONTRIB / "prometheus-rules.yml"
    checked = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(["promtool", "test", "rules", "prometheus-rules.test.yml"], cwd=CONTRIB,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr
    families = list(collect().collect())
    served = {m.name for m in families} | {f"{m.name}_total" for m in families if m.type == "counter"}
    named = set(re.findall(r"\binlet_[a-z_]+\b", rules.read_text()))
    assert named and named <= served, named - served


# ------------------------------------------------------------ nginx in front of the web UI


@pytest.fixture
def certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture
def nginx(tmp_path, certificate):
    """contrib/nginx-inlet.conf in a real nginx: its ports, certificate and upstream made local."""
    cert, key = certificate
    ports = {"http": free_port(), "https": free_port(), "inlet": free_port()}
    site = (CONTRIB / "nginx-inlet.conf").read_text()
    for old, new in (
        ("listen 80;", f"listen 127.0.0.1:{ports['http']};"),
        ("listen 443 ssl;", f"listen 127.0.0.1:{ports['https']} ssl;"),
        ("/etc/ssl/inlet/fullchain.pem", str(cert)),
        ("/etc/ssl/inlet/privkey.pem", str(key)),
        ("server 127.0.0.1:8025;", f"server 127.0.0.1:{ports['inlet']};"),
    ):
        assert old in site
        site = site.replace(old, new)
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"""
worker_processes 1;
daemon off;
pid {tmp_path}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    include {tmp_path}/site.conf;
}}
"""
    )
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() == "0":
        (tmp_path / "nginx.conf").write_text("user root;\n" + (tmp_path / "nginx.conf").read_text())
    proc = subprocess.Popen(["nginx", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
                             "-e", str(tmp_path / "error.log")], stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for(lambda: listening(ports["https"]) or proc.poll() is not None, timeout=20, message="nginx to listen")
        assert proc.poll() is None, proc.stderr.read()
        yield ports, cert
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        proc.stderr.close()


def post_hook(port: int, title: str, *, context: ssl.SSLContext | None = None) -> http.client.HTTPResponse:
    """POST a webhook from 127.0.0.2 (another loopback address), claiming to be 203.0.113.9."""
    kind = http.client.HTTPSConnection if context else http.client.HTTPConnection
    extra = {"context": context} if context else {}
    conn = kind("127.0.0.1", port, timeout=10, source_address=("127.0.0.2", 0), **extra)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json", "X-Forwarded-For": "203.0.113.9"}
    conn.request("POST", "/hooks/plain", body=json.dumps({"title": title, "dedup_key": title}), headers=headers)
    answer = conn.getresponse()
    answer.read()
    conn.close()
    return answer


def test_nginx_example_terminates_tls_and_inlet_sees_the_real_client(nginx, store, monkeypatch):
    ports, cert = nginx
    monkeypatch.setenv("SUPERVISOR_TEST_TOKEN", TOKEN)
    config = store.config(
        web={"host": "127.0.0.1", "port": ports["inlet"], "trusted_proxy": "127.0.0.1", "secure_cookies": True},
        integration=[{"name": "plain", "kind": "generic", "token_env": "SUPERVISOR_TEST_TOKEN"}],
    )
    db.close()
    service = Service(config, roles={"web"})
    service.start()
    try:
        wait_for(lambda: listening(ports["inlet"]), timeout=20, message="Inlet's web role")
        context = ssl.create_default_context(cafile=str(cert))
        assert post_hook(ports["https"], "through nginx", context=context).status == 202
        # Straight to Inlet from an address that is not the trusted proxy: its forwarding header is dropped.
        assert post_hook(ports["inlet"], "straight in").status == 202
        plain = http.client.HTTPConnection("127.0.0.1", ports["http"], timeout=10)
        plain.request("GET", "/login")
        redirect = plain.getresponse()
        assert redirect.status == 301 and redirect.getheader("Location").startswith("https://")
        plain.close()

        def peers():
            with db.connection_context():
                return {json.loads(bytes(row.raw))["title"]: row.peer for row in Inbound.select()}

        found = wait_for(lambda: len(peers()) == 2 and peers(), timeout=10, message="both webhooks stored")
        # nginx replaced the client's claim with its real address; Inlet believed nginx, and only nginx.
        assert found == {"through nginx": "127.0.0.2", "straight in": "127.0.0.2"}
    finally:
        service.stop()
        db.connect(reuse_if_open=True)


def test_every_contrib_file_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for path in sorted(Path(CONTRIB).iterdir()):
        assert f"contrib/{path.name}" in readme, path.name
