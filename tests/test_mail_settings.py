"""Mail settings: reference checks with key paths, address matching, the Message-ID key."""

from __future__ import annotations

import pytest

from gateway.config.loader import config_from_dict
from gateway.config.mail_settings import match_address, message_id_secret
from gateway.core.errors import ConfigError
from tests.conftest import base_config_dict


def config(**sections):
    return config_from_dict(base_config_dict("sqlite:///unused.db", **sections), "inlet.toml")


def refused(**sections) -> str:
    with pytest.raises(ConfigError) as err:
        config(**sections)
    return str(err.value)


def test_dangling_and_bad_references_are_refused_with_the_key_path():
    assert refused(address=[{"address": "net@example.org", "group": "nope"}]) == (
        "inlet.toml: [[address]] 'net@example.org' → group: no [[group]] named 'nope'"
    )
    assert "expected name@domain or @domain" in refused(address=[{"address": "support"}])
    assert "duplicate address" in refused(address=[{"address": "a@example.org"}, {"address": "A@example.org"}])
    box = {"name": "in", "host": "imap.example.org", "user": "u", "password_env": "P", "address": "x@example.org"}
    assert refused(mailbox=[box]) == "inlet.toml: [[mailbox]] 'in' → address: no [[address]] 'x@example.org'"
    assert "password_env: required key is missing" in refused(mailbox=[{"name": "in", "host": "h", "user": "u"}])
    assert "tls_cert and tls_key go together" in refused(smtp={"tls_cert": "c.pem"})
    assert "auth_required: needs at least one entry in users" in refused(smtp={"auth_required": True})
    assert "did you mean 'max_recipients'" in refused(smtp={"max_recipient": 3})


def test_exact_address_wins_over_its_domain():
    c = config(address=[{"address": "@example.org", "group": "network"}, {"address": "security@example.org"}])
    assert match_address(c, "<Security@Example.org>").address == "security@example.org"
    assert match_address(c, "anyone@example.org").group == "network"
    assert match_address(c, "anyone@sub.example.org") is None
    assert match_address(c, "not-an-address") is None


def test_message_id_key_from_the_environment_else_generated_once_in_data_dir(tmp_path, monkeypatch):
    c = config(inlet={"data_dir": str(tmp_path / "state")}, mail={"message_id_secret_env": "INLET_TEST_MID"})
    monkeypatch.delenv("INLET_TEST_MID", raising=False)
    first = message_id_secret(c)
    assert len(first) == 64 and message_id_secret(c) == first
    assert (tmp_path / "state" / "message-id.key").stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("INLET_TEST_MID", "from-the-environment")
    assert message_id_secret(c) == b"from-the-environment"
    monkeypatch.setenv("INLET_TEST_MID", "short")
    with pytest.raises(ConfigError, match=r"the key in \$INLET_TEST_MID is too short \(5 characters; at least 16\)"):
        message_id_secret(c)
