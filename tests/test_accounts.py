"""Accounts and teams without editing TOML or restarting (issue 19, point 1), through the real interfaces:
the CLI (in-process entry, and a subprocess for stdin), the web UI and API of a served app over HTTP, and
`inlet serve` + `inlet reload` as subprocesses. Every store behaviour runs on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time

import pytest
import requests

from gateway import accounts, membership
from gateway.cli.main import main
from gateway.service import build_lifecycle
from store.models import AccountEvent, GroupMember, User
from tests.conftest import INLET, ROOT, SUPPORT, free_port, in_db, service_running, wait_for

PASSWORD = "correct horse battery"
GROUPS = [
    {"name": "service-desk", "escalation": "default", "members": ["ann"]},
    {"name": "network", "escalation": "default"},
    {"name": "security"},
]


def groups_of(name: str) -> set[str]:
    return set(in_db(lambda: membership.groups_of(name)))


def log_of(name: str) -> list[tuple[str, str, str]]:
    rows = in_db(lambda: list(AccountEvent.select().where(AccountEvent.user == name).order_by(AccountEvent.id)))
    return [(r.actor, r.action, r.detail) for r in rows]


# ---------------------------------------------------------------- membership in the store


def test_sync_seeds_the_file_and_never_drops_a_membership_made_by_hand(store):
    config = store.config(group=GROUPS)
    for name in ("ann", "bob"):
        accounts.create_user(name, "agent", PASSWORD)
    assert membership.sync_config(config) == ([("service-desk", "ann")], [])
    assert membership.sync_config(config) == ([], [])  # idempotent: nothing twice, nothing logged twice
    membership.add_member(config, "network", "bob", "admin")
    membership.add_member(config, "service-desk", "ann", "admin")  # listed in the file and now kept by hand
    with pytest.raises(Exception, match="remove them from .* then run 'inlet reload'"):
        membership.remove_member(config, "service-desk", "ann", "admin")

    emptied = store.config(group=[{**GROUPS[0], "members": []}, *GROUPS[1:]])
    assert membership.sync_config(emptied) == ([], [])  # ann stays: kept by hand too; bob's was never the file's
    assert membership.groups_of("ann") == {"service-desk"} and membership.groups_of("bob") == {"network"}
    membership.remove_member(emptied, "service-desk", "ann", "admin")  # no longer the file's: removable
    assert membership.groups_of("ann") == frozenset()

    membership.sync_config(config)  # back in the file: seeded again, then dropped with it
    assert membership.sync_config(emptied) == ([], [("service-desk", "ann")])
    assert membership.members_of("network") == ["bob"]
    assert log_of("ann")[1:] == [
        ("configuration", "group-added", f"service-desk (listed in {config.path})"),
        ("admin", "group-added", "service-desk (kept if the configuration file drops it)"),
        ("admin", "group-removed", "service-desk"),
        ("configuration", "group-added", f"service-desk (listed in {config.path})"),
        ("configuration", "group-removed", f"service-desk (no longer listed in {config.path})"),
    ]


def test_who_may_join_a_group_and_who_may_be_assigned(store):
    config = store.config(group=GROUPS)
    accounts.create_user("vic", "viewer", PASSWORD)
    accounts.create_user("dan", "agent", PASSWORD)
    with pytest.raises(Exception, match="viewer and cannot work incidents"):
        membership.add_member(config, "network", "vic", "admin")
    with pytest.raises(Exception, match="no group 'netwrok'"):
        membership.add_member(config, "netwrok", "dan", "admin")
    lifecycle = build_lifecycle(config)
    secret = lifecycle.create(title="Phish", actor="t", group="security", security=True)
    with pytest.raises(Exception, match="may not see security incidents"):
        lifecycle.assign(secret.ref, "admin", assignee="dan")
    membership.add_member(config, "security", "dan", "admin")
    assert lifecycle.assign(secret.ref, "admin", assignee="dan").assignee.name == "dan"
    accounts.set_active("dan", False, "admin")
    with pytest.raises(Exception, match="dan is disabled"):
        lifecycle.assign(secret.ref, "admin", assignee="dan")


def test_the_last_active_admin_stays_and_nobody_demotes_or_disables_themselves(store):
    accounts.create_user("root", "admin", PASSWORD)
    accounts.create_user("ops", "agent", PASSWORD)
    with pytest.raises(Exception, match="cannot take away your own admin role"):
        accounts.set_role("root", "agent", "root")
    with pytest.raises(Exception, match="cannot disable yourself"):
        accounts.set_active("root", False, "root")
    with pytest.raises(Exception, match="last active admin"):
        accounts.set_active("root", False, "cli")
    with pytest.raises(Exception, match="last active admin"):
        accounts.set_role("root", "viewer", "cli")
    accounts.set_role("ops", "admin", "root")
    assert not accounts.set_active("root", False, "ops").active
    assert [a for _, a, _ in log_of("root")] == ["created", "disabled"]  # refusals change nothing


# ---------------------------------------------------------------- the CLI


@pytest.fixture
def cli(store, capsys):
    path = store.write_config(group=GROUPS)

    def run(*args):
        code = main(["-c", str(path), *args])
        out, err = capsys.readouterr()
        return code, out, err

    run.path = path
    assert run("db", "upgrade")[0] == 0  # seeds [[group]] members
    return run


def test_cli_disable_enable_role_groups_and_the_log(cli):
    for name, role in (("ann", "agent"), ("bob", "agent"), ("vic", "viewer")):
        assert cli("user", "add", name, "--role", role)[0] == 0
    assert cli("db", "upgrade")[0] == 0  # ann exists now; her membership was seeded before she did
    token = accounts.issue_api_token("bob")
    version = User.get(User.name == "bob").session_version

    assert cli("user", "disable", "bob")[0] == 0
    bob = User.get(User.name == "bob")
    assert not bob.active and bob.session_version > version and accounts.user_for_token(token) is None
    assert cli("user", "enable", "bob")[0] == 0
    assert accounts.user_for_token(token).name == "bob"  # the token of an enabled user works again
    assert cli("user", "disable", "nobody")[1:] == ("", "inlet: error: no user 'nobody'\n")

    assert cli("group", "add-member", "network", "bob") == (0, "bob is now a member of network\n", "")
    code, _, err = cli("group", "add-member", "network", "vic")
    assert code == 1 and "vic is a viewer" in err
    code, out, _ = cli("group", "list")
    assert code == 0 and "service-desk\tann (config)\n" in out and "network\tbob\n" in out
    code, _, err = cli("group", "remove-member", "service-desk", "ann")
    assert code == 1 and "by the configuration file" in err and "inlet reload" in err
    assert cli("group", "remove-member", "network", "bob")[0] == 0
    assert membership.groups_of("bob") == frozenset()
    assert cli("user", "role", "vic", "agent")[0] == 0

    code, out, _ = cli("user", "show", "bob")
    assert code == 0 and "groups: -" in out
    actions = re.findall(r"  \S+Z  (\S+)\s+by (\w+)", out)
    assert actions == [  # newest first
        ("group-removed", "cli"),
        ("group-added", "cli"),
        ("enabled", "cli"),
        ("disabled", "cli"),
        ("token", "cli"),
        ("created", "cli"),
    ]


def test_cli_passwd_reads_stdin_and_applies_the_rule(cli):
    assert cli("user", "add", "ann", "--role", "agent", "--password-env", "NOPE")[0] == 1  # unset variable
    assert cli("user", "add", "ann", "--role", "agent")[0] == 0
    before = User.get(User.name == "ann").session_version

    def passwd(stdin: str):
        return subprocess.run(
            [*INLET, "-c", str(cli.path), "user", "passwd", "ann"],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )

    done = passwd("a fresh long passphrase\n")
    assert done.returncode == 0, done.stderr
    assert "new password for 'ann'; their sessions are ended" in done.stdout
    assert in_db(lambda: accounts.authenticate("ann", "a fresh long passphrase")) is not None
    assert in_db(lambda: User.get(User.name == "ann").session_version) == before + 1
    weak = passwd("Password2026!\n")
    assert weak.returncode == 1 and "too common" in weak.stderr and "Traceback" not in weak.stderr
    short = passwd("short\n")
    assert short.returncode == 1 and "at least 10 characters" in short.stderr
    empty = passwd("")
    assert empty.returncode == 1 and "no password on standard input" in empty.stderr
    assert in_db(lambda: accounts.authenticate("ann", "a fresh long passphrase")) is not None  # unchanged
    assert [a for _, a, _ in log_of("ann")][-2:] == ["created", "password"]  # (after group-added: the file)


def test_cli_passwd_asks_twice_on_a_terminal(cli):
    cli("user", "add", "ann", "--role", "agent")
    for first, again, code in (("typed on a terminal", "typed differently", 1), ("typed on a terminal", None, 0)):
        main_fd, tty = pty.openpty()
        proc = subprocess.Popen(
            [*INLET, "-c", str(cli.path), "user", "passwd", "ann"],
            stdin=tty,
            stdout=tty,
            stderr=tty,
            cwd=ROOT,
            start_new_session=True,  # no controlling terminal: getpass asks on the pty it was given
        )
        os.close(tty)
        seen = _expect(main_fd, "New password for ann: ")
        os.write(main_fd, f"{first}\n".encode())
        seen += _expect(main_fd, "Again: ")
        os.write(main_fd, f"{again or first}\n".encode())
        assert proc.wait(timeout=60) == code
        seen += _expect(main_fd, "differ" if code else "their sessions are ended")
        os.close(main_fd)
        assert first not in seen  # not echoed
    assert in_db(lambda: accounts.authenticate("ann", "typed on a terminal")) is not None


def _expect(fd: int, text: str, timeout: float = 60) -> str:
    """What the terminal shows until ``text`` appears (a deadline, never a sleep)."""
    seen, deadline = "", time.monotonic() + timeout
    while text not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"no {text!r} on the terminal; it showed {seen!r}")
        try:
            seen += os.read(fd, 4096).decode(errors="replace")
        except OSError:  # the process ended and closed the terminal
            raise AssertionError(f"no {text!r} on the terminal; it showed {seen!r}") from None
    return seen


def test_cli_assign_refuses_a_viewer(cli):
    cli("user", "add", "vic", "--role", "viewer")
    cli("user", "add", "ann", "--role", "agent")
    code, out, _ = cli("incident", "create", "--title", "Printer jam")
    ref = out.split("\t")[0]
    code, _, err = cli("incident", "assign", ref, "--to", "vic")
    assert code == 1 and "vic is a viewer and cannot work incidents" in err
    assert cli("incident", "assign", ref, "--to", "ann")[0] == 0


# ---------------------------------------------------------------- the served web UI and API


class Browserless:
    """A signed-in requests session against the served app, with the CSRF token of its pages."""

    def __init__(self, base: str, name: str, password: str = PASSWORD):
        self.base, self.http = base, requests.Session()
        self.token = self._csrf("/login")
        response = self.post("/login", {"name": name, "password": password}, allow_redirects=False)
        assert response.status_code == 302, response.text

    def _csrf(self, path: str) -> str:
        page = self.http.get(self.base + path, timeout=10)
        return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)

    def get(self, path: str, **kwargs):
        return self.http.get(self.base + path, timeout=10, **kwargs)

    def post(self, path: str, data: dict, **kwargs):
        return self.http.post(self.base + path, data={**data, "csrf_token": self.token}, timeout=10, **kwargs)

    def signed_in(self) -> bool:
        return self.get("/incidents", allow_redirects=False).status_code == 200


@pytest.fixture
def served(store):
    config = store.config(group=GROUPS, inlet={"data_dir": str(store.tmp_path)}, web={"port": free_port()})
    for name, role in (("admin", "admin"), ("ann", "agent"), ("bob", "agent"), ("vic", "viewer")):
        accounts.create_user(name, role, PASSWORD)
    with service_running(config, {"web"}) as running:
        running.base = f"http://127.0.0.1:{config.web.port}"
        yield running


def user_id(name: str) -> int:
    return in_db(lambda: User.get(User.name == name).id)


def test_admin_disables_a_user_their_sessions_and_token_stop_and_the_page_shows_it(served):
    admin, bob = Browserless(served.base, "admin"), Browserless(served.base, "bob")
    token = in_db(lambda: accounts.issue_api_token("bob"))
    api = {"Authorization": f"Bearer {token}"}
    assert requests.get(served.base + "/api/v1/incidents", headers=api, timeout=10).status_code == 200
    assert bob.signed_in()
    assert bob.get(f"/users/{user_id('bob')}").status_code == 403  # admins only, even one's own page
    assert bob.post(f"/users/{user_id('bob')}/groups", {"group": "network"}).status_code == 403

    page = admin.post(f"/users/{user_id('bob')}/active", {"active": "0"})
    assert page.status_code == 200 and "bob disabled" in page.text
    assert not bob.signed_in()
    assert requests.get(served.base + "/api/v1/incidents", headers=api, timeout=10).status_code == 401
    assert admin.post(f"/users/{user_id('admin')}/active", {"active": "0"}).text.count("cannot disable yourself")
    admin.post(f"/users/{user_id('bob')}/active", {"active": "1"})
    assert not bob.signed_in()  # enabling brings no old session back
    page = admin.get(f"/users/{user_id('bob')}")
    log = page.text[page.text.index('id="account-log"') :]
    assert re.search(r"<td>admin</td><td>enabled</td>.*<td>admin</td><td>disabled</td>", log, re.S)
    assert re.search(r"<td>cli</td><td>API token</td>", log)


def test_passwords_own_and_reset_end_the_other_sessions(served):
    ann, ann_elsewhere = Browserless(served.base, "ann"), Browserless(served.base, "ann")
    new = "a brand new passphrase"
    for data, why in (
        ({"current": "wrong one entirely", "new": new, "repeat": new}, "current password is wrong"),
        ({"current": PASSWORD, "new": "short", "repeat": "short"}, "at least 10 characters"),
        ({"current": PASSWORD, "new": "Sunshine2026!!", "repeat": "Sunshine2026!!"}, "too common"),
        ({"current": PASSWORD, "new": new, "repeat": "another one"}, "differ"),
    ):
        response = ann.post("/password", data)
        assert response.status_code == 400 and why in response.text
    assert ann_elsewhere.signed_in()
    response = ann.post(
        "/password", {"current": PASSWORD, "new": "a brand new passphrase", "repeat": "a brand new passphrase"}
    )
    assert response.status_code == 200 and "your other sessions are signed out" in response.text
    assert ann.signed_in() and not ann_elsewhere.signed_in()

    admin = Browserless(served.base, "admin")
    page = admin.post(f"/users/{user_id('ann')}/password", {"password": "set by the admin now"})
    assert "Their sessions are signed out" in page.text
    assert not ann.signed_in()
    Browserless(served.base, "ann", "set by the admin now")
    assert [(actor, detail) for actor, action, detail in log_of("ann") if action == "password"] == [
        ("ann", "changed own password"),
        ("admin", "set a new password"),
    ]


def test_a_newcomer_joins_a_group_in_the_ui_and_works_its_incidents_at_once(served):
    incident = build_lifecycle(served.config).create(title="Core switch down", actor="t", group="network")
    admin, bob = Browserless(served.base, "admin"), Browserless(served.base, "bob")
    ack = f"/incidents/{incident.ref}/acknowledge"
    assert bob.post(ack, {}, allow_redirects=False).status_code == 403
    page = admin.post(f"/users/{user_id('bob')}/groups", {"group": "network", "action": "add"})
    assert "bob joined network" in page.text
    assert bob.post(ack, {}, allow_redirects=False).status_code == 303  # no restart, no new sign-in
    page = admin.post(f"/users/{user_id('ann')}/groups", {"group": "service-desk", "action": "remove"})
    assert "by the configuration file" in page.text and groups_of("ann") == {"service-desk"}
    page = admin.post(f"/users/{user_id('vic')}/groups", {"group": "network", "action": "add"})
    assert "vic is a viewer" in page.text and groups_of("vic") == set()
    page = admin.post(f"/users/{user_id('bob')}/role", {"role": "viewer"})
    assert "bob is now viewer" in page.text
    assert ("admin", "role", "agent → viewer") in log_of("bob")


def test_a_viewer_cannot_be_assigned_in_the_ui_or_the_api(served):
    incident = build_lifecycle(served.config).create(title="VPN flaps", actor="t", group="service-desk")
    ann = Browserless(served.base, "ann")
    page = ann.post(f"/incidents/{incident.ref}/assign", {"assignee": "vic"})
    assert page.status_code == 422 and "vic is a viewer and cannot work incidents" in page.text
    token = in_db(lambda: accounts.issue_api_token("ann"))
    response = requests.post(
        f"{served.base}/api/v1/incidents/{incident.ref}/actions/assign",
        json={"assignee": "vic"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 422
    assert (
        response.json()["error"]["code"] == "not_assignable"
        and "vic is a viewer" in response.json()["error"]["message"]
    )
    assert in_db(lambda: type(incident).get_by_id(incident.id).assignee_id) is None


# ---------------------------------------------------------------- inlet serve + inlet reload


def test_reload_follows_the_file_and_keeps_what_the_ui_added(store, serve):
    for name, role in (("admin", "admin"), ("ann", "agent"), ("bob", "agent"), ("carol", "agent")):
        accounts.create_user(name, role, PASSWORD)
    served = serve(group=GROUPS)
    wait_for(lambda: groups_of("ann") == {"service-desk"}, message="ann seeded from the file at start")
    admin = Browserless(f"http://127.0.0.1:{served.web_port}", "admin")
    admin.post(f"/users/{user_id('bob')}/groups", {"group": "service-desk", "action": "add"})
    assert groups_of("bob") == {"service-desk"}

    store.write_config(  # the file now lists carol, no longer ann, and nothing about bob
        web={"host": "127.0.0.1", "port": served.web_port},
        smtp={"port": served.smtp_port},
        address=[{"address": SUPPORT}],
        integration=[{"name": "plain", "kind": "generic", "token_env": "SUPERVISOR_TEST_TOKEN"}],
        group=[{**GROUPS[0], "members": ["carol"]}, *GROUPS[1:]],
    )
    reload = [*INLET, "-c", str(served.path), "reload"]
    done = subprocess.run(reload, cwd=ROOT, env=served.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    wait_for(lambda: served.said("inlet: reloaded configuration"), message="the reload")
    wait_for(lambda: groups_of("carol") == {"service-desk"}, timeout=20, message="carol seeded at the reload")
    wait_for(lambda: groups_of("ann") == set(), timeout=20, message="ann dropped with the file")
    assert groups_of("bob") == {"service-desk"}  # added in the UI: the reload kept it
    rows = in_db(lambda: {(r.user, r.by_config, r.by_hand) for r in GroupMember.select()})
    assert rows == {("carol", True, False), ("bob", False, True)}
