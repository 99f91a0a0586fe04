"""`inlet import PATH` (mbox, Maildir, folder of .eml) and `inlet inbound show ID`, on both databases."""

from __future__ import annotations

import json
import mailbox
import shutil
from pathlib import Path

import pytest

from gateway.cli.main import main
from store.models import Inbound, Incident

DATA = Path(__file__).parent / "data" / "email"
FILES = ["plain.eml", "html_only.eml", "auto_reply_exchange.eml", "binary_junk.eml", "list_mail.eml"]


@pytest.fixture
def cli(store, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("INLET_MESSAGE_ID_SECRET", "import-test-secret")
    path = store.write_config(inlet={"data_dir": str(tmp_path)}, address=[{"address": "support@example.org"}])

    def run(*args):
        code = main(["-c", str(path), *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def eml_folder(tmp_path) -> Path:
    folder = tmp_path / "emls"
    folder.mkdir()
    for name in FILES:
        shutil.copy(DATA / name, folder / name)
    (folder / "notes.txt").write_text("not a message")
    return folder


# list_mail.eml is ignored (mailing-list mail never opens an incident), auto_reply_exchange.eml too.
SUMMARY = "imported 5 messages: 2 new incidents, 0 updates, 2 ignored, 1 failed, 0 already imported\n"


def test_import_a_folder_of_eml_files_twice_adds_nothing(cli, tmp_path):
    folder = eml_folder(tmp_path)
    code, out, err = cli("import", str(folder))
    assert (code, out, err) == (0, SUMMARY, "")
    assert Incident.select().count() == 2 and Inbound.select().count() == 5
    code, out, _ = cli("import", str(folder))
    assert out == "imported 5 messages: 0 new incidents, 0 updates, 0 ignored, 0 failed, 5 already imported\n"
    assert Incident.select().count() == 2 and Inbound.select().count() == 5


def test_import_mbox_and_maildir(cli, tmp_path):
    mbox = mailbox.mbox(str(tmp_path / "archive.mbox"))
    maildir = mailbox.Maildir(str(tmp_path / "Maildir"))
    for name in FILES:
        mbox.add((DATA / name).read_bytes())
        maildir.add((DATA / name).read_bytes())
    mbox.close()
    assert cli("import", str(tmp_path / "archive.mbox"))[1] == SUMMARY
    code, out, _ = cli("import", str(tmp_path / "Maildir"))
    # The same messages, whatever the container; the one without a Message-ID is known by its bytes,
    # and an mbox stores it with an extra trailing newline: it differs, fails again, and is kept again.
    assert out.endswith("0 ignored, 1 failed, 4 already imported\n")
    assert Incident.select().count() == 2
    assert {i.source for i in Inbound.select()} == {"import"}


def test_import_refuses_what_it_cannot_read(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    code, out, err = cli("import", str(tmp_path / "empty"))
    assert code == 1 and "no .eml files and not a Maildir" in err
    (tmp_path / "x.txt").write_text("hello")
    assert "not an mbox file" in cli("import", str(tmp_path / "x.txt"))[2]
    assert "no such file" in cli("import", str(tmp_path / "missing"))[2]


def test_inbound_show_prints_status_class_decisions_and_raw_headers(cli, tmp_path):
    folder = eml_folder(tmp_path)
    cli("import", str(folder))
    plain = Inbound.get(Inbound.dedup_key == "mid:CAF3k2jd83=ab@mail.customer.example")
    code, out, _ = cli("inbound", "show", str(plain.id))
    assert code == 0
    assert "status        processed" in out and "mail_class    human" in out and "incident      INC-" in out
    assert "mail-class: mail_class=human, reason=no automation markers" in out
    assert "[0] apply: incident=INC-" in out and "result=created" in out
    ran = "mail-heartbeat → mail-screen → mail-thread → correlate → classify → allocate → apply → mail-record"
    assert f"[0] steps ran: {ran}\n" in out  # the email step list, and the after step for an applied signal
    assert "Subject: VPN gateway unreachable from Berlin office" in out
    oof = Inbound.get(Inbound.dedup_key == "mid:oof-1@customer.example")
    out = cli("inbound", "show", str(oof.id))[1]
    assert "status        ignored" in out and "reason        auto-reply: Auto-Submitted" in out
    assert "[0] steps ran: mail-heartbeat → mail-screen\n" in out  # discarded by the first step: nothing after it ran
    doc = json.loads(cli("inbound", "show", str(oof.id), "--json")[1])
    assert doc["mail_class"] == "auto-reply" and doc["decisions"][0]["step"] == "mail-class"
    junk = Inbound.get(Inbound.status == "failed")
    out = cli("inbound", "show", str(junk.id))[1]
    assert "parse error" in out and "\x1b" not in out and "\x00" not in out
    assert cli("inbound", "show", "9999")[2] == "inlet: error: no inbound 9999\n"
