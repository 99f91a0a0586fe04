"""`inlet classify` explains decisions; `inlet check` runs [[rule_test]] cases and warns about dead rules."""

from __future__ import annotations

import io
import json
import shutil

import pytest

from gateway.cli.main import main
from gateway.config.loader import load_config
from gateway.explain import explain, read_signals, run_rule_tests
from parsers.signal import Signal
from tests.conftest import ROOT

DATA = ROOT / "tests" / "data"
RULES = [
    {"name": "vpn", "subject": {"any": ["vpn"]}, "category": "network", "impact": "medium", "urgency": "high",
     "group": "network", "service": "VPN"},
    {"name": "disk", "labels": {"alertname": {"any": ["diskfull", "disk"]}}, "impact": "high", "group": "network"},
    {"name": "fs", "text": {"any": ["filesystem"]}, "category": "storage", "urgency": "low"},
    {"name": "outage", "text": {"any": ["outage"]}, "major": True},
]  # fmt: skip


@pytest.fixture
def config_path(tmp_path):
    import tomli_w

    from tests.conftest import base_config_dict

    def write(**extra):
        data = base_config_dict(f"sqlite:///{tmp_path / 'inlet.db'}", **{"rule": RULES, **extra})
        path = tmp_path / "config.toml"
        path.write_text(tomli_w.dumps(data))
        return path

    return write


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_classify_an_email_explains_each_field(config_path, capsys):
    code, out, err = run(capsys, "-c", str(config_path()), "classify", str(DATA / "email" / "plain.eml"))
    assert code == 0, err
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "network" in lines["group"] and "rule 'vpn'" in lines["group"]
    assert "P2" in lines["priority"] and "impact=medium × urgency=high" in lines["priority"]
    assert "respond 1h, resolve 8h" in lines["sla"]
    assert "standard" in lines["procedure"]


def test_classify_webhook_json_from_stdin(config_path, capsys, monkeypatch):
    raw = (DATA / "webhooks" / "alertmanager_firing.json").read_bytes()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(raw)))
    code, out, err = run(capsys, "-c", str(config_path()), "classify", "--json", "-")
    assert code == 0, err
    results = json.loads(out)
    results = results if isinstance(results, list) else [results]
    assert {r["format"] for r in results} == {"alertmanager"}
    first = results[0]
    assert set(first) >= {"category", "service", "impact", "urgency", "priority", "group", "procedure", "sla", "why"}
    assert first["why"]["priority"].startswith("matrix")


def test_classify_reports_unreadable_input(config_path, capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, out, err = run(capsys, "-c", str(config_path()), "classify", str(bad))
    assert code == 1 and err.startswith("inlet: error:") and "Traceback" not in err
    code, _, err = run(capsys, "-c", str(config_path()), "classify", str(tmp_path / "missing.eml"))
    assert code == 1 and "cannot read" in err


def test_explain_names_the_rule_or_default_behind_each_field(config_path):
    config = load_config(config_path())
    result = explain(config, Signal(source="email", title="Total outage of the VPN"))
    assert result["procedure"] == "major" and result["why"]["procedure"] == "rule 'outage'"
    assert result["why"]["group"] == "rule 'vpn'"
    plain = explain(config, Signal(source="email", title="Coffee machine"))
    assert plain["why"]["group"] == "fallback group" and plain["why"]["impact"] == "sla.default_impact"


def test_read_signals_detects_formats():
    assert read_signals((DATA / "email" / "plain.eml").read_bytes())[0] == "email"
    assert read_signals((DATA / "webhooks" / "alertmanager_firing.json").read_bytes())[0] == "alertmanager"
    assert read_signals(b'{"title": "x"}')[0] == "generic"


def test_check_runs_rule_tests(config_path, capsys, tmp_path):
    shutil.copy(DATA / "email" / "plain.eml", tmp_path / "vpn.eml")
    tests = [
        {"name": "vpn mail", "input": "vpn.eml", "group": "network", "priority": "P2", "category": "network"},
        {"name": "inline", "subject": "Filesystem full", "body": "", "category": "storage", "procedure": "standard"},
    ]
    code, out, err = run(capsys, "check", str(config_path(rule_test=tests)))
    assert code == 0, err
    assert "2 rule tests passed" in out


def test_check_fails_with_a_readable_diff(config_path, capsys):
    tests = [{"name": "wrong", "subject": "VPN broken", "group": "security", "priority": "P2", "impact": "low"}]
    code, out, err = run(capsys, "check", str(config_path(rule_test=tests)))
    assert code == 1
    assert "rule test 'wrong' failed:" in err
    assert "group: expected 'security', got 'network'  (rule 'vpn')" in err
    assert "impact: expected 'low', got 'medium'  (rule 'vpn')" in err
    assert "priority" not in err.split("failed:")[1]  # what matched is not listed
    assert "1 of 1 rule tests failed" in err


def test_check_reports_an_unreadable_rule_test_input(config_path):
    config = load_config(config_path(rule_test=[{"name": "junk", "input": "nope.eml"}]))
    with pytest.raises(Exception, match="cannot read"):
        run_rule_tests(config)


def test_check_warns_about_rules_that_never_match(config_path, capsys):
    rules = [*RULES, {"name": "all", "stop": True, "category": "other"}, {"name": "late", "category": "x"}]
    code, out, err = run(capsys, "check", str(config_path(rule=rules)))
    assert code == 0
    assert "warning: rule 'late' can never match" in err


def test_example_config_rule_tests_pass(capsys):
    code, out, err = run(capsys, "check", str(ROOT / "config.example.toml"))
    assert code == 0, err
    assert "rule tests passed" in out
