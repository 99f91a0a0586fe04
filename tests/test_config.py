"""Configuration: every bad input refused with file, key path and reason; every setting documented."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import tomli_w

from gateway.config.loader import Config, load_config
from gateway.config.schema import format_duration, iter_settings, parse_duration
from gateway.core.errors import ConfigError
from tests.conftest import ROOT, base_config_dict

EXAMPLE = ROOT / "config.example.toml"


def write(tmp_path, data) -> str:
    path = tmp_path / "inlet.toml"
    path.write_text(tomli_w.dumps(data))
    return str(path)


def refused(tmp_path, data) -> str:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(path + ": ")  # every error names the file
    return message


def test_example_config_loads():
    config = load_config(EXAMPLE)
    assert config.database.url == f"sqlite:///{ROOT / 'var' / 'inlet.db'}"  # beside the file, wherever we run
    assert config.web.host == "127.0.0.1"  # loopback by default
    assert config.group_named(config.fallback_group) is not None


def test_every_setting_is_documented_in_the_example():
    """A setting that is not in config.example.toml (set, or commented out) fails this test."""
    text = EXAMPLE.read_text()
    missing = []
    for section, key, _field in iter_settings(Config):
        header = ".".join(section)
        if section and not re.search(rf"^\s*#?\s*\[\[?{re.escape(header)}\]\]?\s*$", text, re.M):
            missing.append(f"[{header}]")
            continue
        table = re.escape(".".join((*section, key)))
        if not re.search(rf"^\s*#?\s*{re.escape(key)}(\s*=|\.\w)|^\s*#?\s*\[\[?{table}\]", text, re.M):
            missing.append(".".join((*section, key)))
    assert missing == []


def test_every_setting_has_help():
    assert [k for _s, k, f in iter_settings(Config) if not f.metadata.get("help")] == []


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "nope.toml")


def test_syntax_error_shows_the_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('fallback_group = "service-desk"\n[web]\nport = = 80\n')
    with pytest.raises(ConfigError, match=r"TOML syntax error: .*line 3"):
        load_config(path)


def test_unknown_key_is_refused_with_a_suggestion(tmp_path):
    data = base_config_dict("sqlite:///x.db", web={"prot": 8025})
    assert refused(tmp_path, data).endswith("[web]: unknown key 'prot' (did you mean 'port'?)")


def test_unknown_top_level_section(tmp_path):
    data = base_config_dict("sqlite:///x.db", smpt={"port": 25})
    assert "top level: unknown key 'smpt'" in refused(tmp_path, data)


def test_wrong_type(tmp_path):
    data = base_config_dict("sqlite:///x.db", web={"port": "8025"})
    assert refused(tmp_path, data).endswith("[web] → port: expected an integer, got a string")


def test_bad_duration(tmp_path):
    data = base_config_dict("sqlite:///x.db")
    data["escalation"][0]["steps"][0]["after"] = "15 minutes"
    message = refused(tmp_path, data)
    assert "[[escalation]] 'default' → [[steps]] #1 → after: bad duration '15 minutes'" in message


def test_dangling_reference(tmp_path):
    data = base_config_dict("sqlite:///x.db")
    data["group"][1]["escalation"] = "night-shift"
    assert refused(tmp_path, data).endswith("[[group]] 'network' → escalation: no [[escalation]] named 'night-shift'")


def test_dangling_fallback_group(tmp_path):
    data = base_config_dict("sqlite:///x.db", fallback_group="helpdesk")
    assert refused(tmp_path, data).endswith("fallback_group: no [[group]] named 'helpdesk'")


def test_duplicate_names(tmp_path):
    data = base_config_dict("sqlite:///x.db")
    data["group"].append({"name": "network"})
    assert refused(tmp_path, data).endswith("[[group]] 'network': duplicate name")


def test_missing_required_key(tmp_path):
    data = base_config_dict("sqlite:///x.db")
    data["group"].append({"description": "no name"})
    assert refused(tmp_path, data).endswith("[[group]] #4 → name: required key is missing")


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ({}, "required key is missing: one of password_env and password_file"),
        ({"password_env": "IMAP_PASSWORD", "password_file": "/run/secrets/imap"}, "give only one of"),
    ],
)
def test_a_mailbox_needs_exactly_one_password_source(tmp_path, password, problem):
    box = {"name": "desk", "host": "imap.example.org", "user": "desk", **password}
    data = base_config_dict("sqlite:///x.db", mailbox=[box])
    assert f"[[mailbox]] 'desk' → password_env: {problem}" in refused(tmp_path, data)
    box.pop("password_env", None)
    box["password_file"] = "/run/secrets/imap"
    assert load_config(write(tmp_path, data)).mailbox[0].password_file == "/run/secrets/imap"


def test_choice_and_minimum(tmp_path):
    assert "must be one of debug, info, warning, error" in refused(
        tmp_path, base_config_dict("sqlite:///x.db", inlet={"log_level": "loud"})
    )
    assert "must be at least 1" in refused(tmp_path, base_config_dict("sqlite:///x.db", web={"threads": 0}))


def test_escalation_step_needs_a_target(tmp_path):
    data = base_config_dict("sqlite:///x.db")
    data["escalation"][0]["steps"][0]["notify"] = []
    assert "a step needs a target" in refused(tmp_path, data)


@pytest.mark.parametrize(
    "text,expected",
    [("90s", timedelta(seconds=90)), ("15m", timedelta(minutes=15)), ("4h", timedelta(hours=4)),
     ("2d", timedelta(days=2)), ("1h30m", timedelta(minutes=90)), ("1w", timedelta(days=7))],
)  # fmt: skip
def test_durations(text, expected):
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("text", ["", "15", "m", "15x", "-5m", "1.5h", "15 m", "h4"])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


def test_config_is_frozen(tmp_path):
    config = load_config(write(tmp_path, base_config_dict("sqlite:///x.db")))
    with pytest.raises(AttributeError):
        config.web.port = 1  # type: ignore[misc]
