"""`make audit`: the dependency floors exclude every release with a known security fix missing (offline)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

CHECK = [sys.executable, str(ROOT / "audit" / "check.py")]


def test_floors_and_installed_versions_pass_the_audit():
    done = subprocess.run(CHECK, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("audit: OK")


def test_a_floor_below_a_security_fix_fails_the_audit(tmp_path):
    setup_cfg = tmp_path / "setup.cfg"
    text = (ROOT / "setup.cfg").read_text()
    setup_cfg.write_text(text.replace("aiosmtpd>=1.4.6", "aiosmtpd>=1.4.4").replace("    idna>=3.7\n", "    idna\n"))
    done = subprocess.run([*CHECK, "--setup-cfg", str(setup_cfg)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "audit: aiosmtpd: setup.cfg allows 1.4.4, below 1.4.6 which fixes: " in done.stderr
    assert "CVE-2024-34083" in done.stderr
    assert "audit: idna: no floor in setup.cfg" in done.stderr
