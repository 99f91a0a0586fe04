"""Classification rules: conditions, first-match-per-field, stop, reasons, warnings, config errors."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.loader import config_from_dict
from gateway.core.errors import ConfigError
from gateway.rules import Keywords, Rule, compile_rules, words
from parsers.signal import Signal


def rules(*tables: dict) -> list[Rule]:
    """Rules through the real config loader, so tests see what a TOML file would give."""
    groups = [{"name": "service-desk"}, {"name": "network"}, {"name": "security"}, {"name": "dba"}]
    return config_from_dict({"group": groups, "rule": list(tables)}).rule


def classify(tables: list[dict], signal: Signal, **kw):
    ruleset = compile_rules(rules(*tables))
    decision = ruleset.classify(signal, **kw)
    assert decision == ruleset._classify_every_rule(signal, **kw)  # the index never changes a decision
    return decision


def mail(title: str = "", text: str = "", **kw) -> Signal:
    return Signal(source=kw.pop("source", "email"), title=title, text=text, **kw)


VPN = {"name": "vpn", "subject": {"any": ["vpn", "remote access"]}, "group": "network", "category": "network"}


# ---------------------------------------------------------------- keyword conditions


@pytest.mark.parametrize(
    ("title", "hit"),
    [
        ("VPN is down", True),
        ("my vpn-gw fails", True),
        ("vpnx is down", False),  # whole words, not substrings
        ("openvpn", False),
        ("Remote-Access broken", True),  # a phrase matches across punctuation and case
        ("remote  ACCESS", True),
        ("remote desktop access", False),  # a phrase is consecutive words
        ("", False),
    ],
)
def test_any_whole_words_and_phrases_case_insensitive(title, hit):
    d = classify([VPN], mail(title))
    assert (d.group == "network") is hit


def test_all_needs_every_word():
    rule = {"name": "db-down", "text": {"all": ["database", "down"]}, "group": "dba"}
    assert classify([rule], mail("Database down")).group == "dba"
    assert classify([rule], mail("Database", "is down since 9")).group == "dba"  # text: subject or body
    assert classify([rule], mail("Database slow")).group is None


def test_none_excludes():
    rule = {**VPN, "subject": {"any": ["vpn"], "none": ["test", "maintenance window"]}}
    assert classify([rule], mail("VPN down")).group == "network"
    assert classify([rule], mail("VPN down (TEST)")).group is None
    assert classify([rule], mail("VPN: Maintenance-window tonight")).group is None
    assert classify([rule], mail("VPN maintenance tonight")).group == "network"


def test_none_only_condition_matches_when_absent():
    rule = {"name": "not-test", "subject": {"none": ["test"]}, "category": "real"}
    assert classify([rule], mail("disk full")).category == "real"
    assert classify([rule], mail("test disk full")).category is None


def test_body_only_looks_at_body():
    rule = {"name": "b", "body": {"any": ["outage"]}, "impact": "high"}
    assert classify([rule], mail("outage", "nothing here")).impact is None
    assert classify([rule], mail("x", "total OUTAGE")).impact == "high"


def test_regex_condition():
    rule = {"name": "inc-code", "text": {"regex": r"\bERR-\d{4}\b"}, "category": "app"}
    assert classify([rule], mail("got err-1234 today")).category == "app"  # regexes are case-insensitive
    assert classify([rule], mail("ERR-12345")).category is None


def test_regex_and_words_together():
    rule = {"name": "r", "subject": {"any": ["disk"], "regex": r"\d+%"}, "category": "storage"}
    assert classify([rule], mail("disk at 95%")).category == "storage"
    assert classify([rule], mail("disk full")).category is None


def test_labels():
    rule = {
        "name": "crit",
        "labels": {"severity": {"any": ["critical"]}, "alertname": {"regex": "^Disk"}},
        "impact": "high",
    }
    alert = Signal(source="alertmanager", title="x", labels={"severity": "Critical", "alertname": "DiskFull"})
    assert classify([rule], alert).impact == "high"
    other = Signal(source="alertmanager", title="x", labels={"severity": "critical", "alertname": "CPU"})
    assert classify([rule], other).impact is None
    assert classify([rule], Signal(source="alertmanager", title="critical")).impact is None  # label absent


def test_sender_and_recipient():
    by_sender = {"name": "ceo", "sender": {"any": ["ceo@example.com"]}, "urgency": "high"}
    ceo = mail("hi", reporter_email="CEO@example.com", reporter_name="The Boss")
    assert classify([by_sender], ceo).urgency == "high"
    assert classify([by_sender], mail("hi", reporter_email="ceox@example.com")).urgency is None
    by_name = {"name": "boss", "sender": {"any": ["boss"]}, "urgency": "high"}
    assert classify([by_name], ceo).urgency == "high"

    to_sec = {"name": "sec", "recipient": {"any": ["security@example.com"]}, "group": "security", "security": True}
    assert classify([to_sec], mail("hi"), recipient="security@example.com").security is True
    assert classify([to_sec], mail("hi", recipients=("security@example.com",))).group == "security"
    assert classify([to_sec], mail("hi", cc=("Security@Example.com",))).group == "security"
    # An explicit recipient (the envelope) is what counts when given.
    assert classify([to_sec], mail("hi", recipients=("security@example.com",)), recipient="help@x").group is None


def test_source_and_integration():
    rule = {"name": "am", "source": ["alertmanager", "grafana"], "integration": ["prod"], "category": "monitoring"}
    am = Signal(source="alertmanager", title="x")
    assert classify([rule], am, integration="prod").category == "monitoring"
    assert classify([rule], am, integration="staging").category is None
    assert classify([rule], am).category is None
    assert classify([rule], mail("x"), integration="prod").category is None


def test_rule_without_conditions_matches_everything():
    assert classify([{"name": "default", "impact": "low"}], mail("anything")).impact == "low"


# ---------------------------------------------------------------- evaluation semantics


def test_first_matching_rule_wins_per_field_and_reasons_recorded():
    tables = [
        {"name": "vpn-urgent", "subject": {"all": ["vpn", "urgent"]}, "urgency": "high"},
        VPN,
        {"name": "net-default", "subject": {"any": ["vpn"]}, "group": "service-desk", "impact": "medium"},
    ]
    d = classify(tables, mail("URGENT: vpn down"))
    assert (d.urgency, d.group, d.category, d.impact) == ("high", "network", "network", "medium")
    assert d.reasons == {"urgency": "vpn-urgent", "group": "vpn", "category": "vpn", "impact": "net-default"}
    assert d.matched == ("vpn-urgent", "vpn", "net-default")
    assert "group = 'network' (rule 'vpn')" in d.explain()


def test_stop_ends_evaluation():
    tables = [
        {"name": "spam", "subject": {"any": ["newsletter"]}, "category": "noise", "stop": True},
        {"name": "all", "impact": "high", "tags": ["seen"]},
    ]
    d = classify(tables, mail("Newsletter: VPN tips"))
    assert (d.category, d.impact, d.tags, d.matched) == ("noise", None, (), ("spam",))
    d = classify(tables, mail("VPN down"))
    assert (d.category, d.impact, d.matched) == (None, "high", ("all",))


def test_tags_merged_in_order_without_duplicates():
    tables = [
        {"name": "a", "subject": {"any": ["vpn"]}, "tags": ["network", "vpn"]},
        {"name": "b", "subject": {"any": ["down"]}, "tags": ["outage", "vpn"]},
    ]
    d = classify(tables, mail("vpn down"))
    assert d.tags == ("network", "vpn", "outage")
    assert d.reasons["tag:outage"] == "b" and d.reasons["tag:vpn"] == "a"


def test_major_false_is_a_decision():
    tables = [
        {"name": "not-major", "subject": {"any": ["test"]}, "major": False},
        {"name": "major", "subject": {"any": ["outage"]}, "major": True},
    ]
    d = classify(tables, mail("test outage"))
    assert d.major is False and d.reasons["major"] == "not-major"
    assert classify(tables, mail("outage")).major is True


def test_no_match_decision_is_empty():
    d = classify([VPN], mail("printer jam"))
    assert d.matched == () and d.reasons == {} and d.explain() == ["no rule matched"]


def test_words_tokeniser():
    assert words("VPN-GW down; can't Connect") == ["vpn", "gw", "down", "can", "t", "connect"]


# ---------------------------------------------------------------- warnings


def test_warning_for_rule_after_identical_stop_rule():
    ruleset = compile_rules(
        rules(
            {**VPN, "stop": True},
            {**VPN, "name": "vpn-again", "subject": {"any": ["remote access", "VPN"]}},
        )
    )
    assert any("'vpn-again' can never match" in w and "'vpn'" in w for w in ruleset.warnings)


def test_warning_after_catch_all_stop():
    ruleset = compile_rules(rules({"name": "all", "impact": "low", "stop": True}, VPN))
    assert ruleset.warnings == ["rule 'vpn' can never match: rule 'all' matches everything and stops"]


def test_warning_any_and_none_share_a_word():
    ruleset = compile_rules(
        rules(
            {"name": "dead", "subject": {"any": ["vpn"], "none": ["VPN"]}, "impact": "low"},
            {"name": "half", "subject": {"any": ["vpn", "wifi"], "none": ["wifi"]}, "impact": "low"},
            {"name": "all-none", "body": {"all": ["db"], "none": ["db"]}, "impact": "low"},
        )
    )
    text = "\n".join(ruleset.warnings)
    assert "rule 'dead' can never match" in text
    assert "rule 'all-none' can never match" in text
    assert "rule 'half': subject has 'wifi' in both 'any' and 'none'" in text


def test_warning_shadowed_and_inert_rules():
    ruleset = compile_rules(
        rules(VPN, {**VPN, "name": "vpn2", "group": "service-desk"}, {"name": "nothing", "subject": {"any": ["x"]}})
    )
    text = "\n".join(ruleset.warnings)
    assert "rule 'vpn2' never decides anything" in text
    assert "rule 'nothing' sets nothing" in text


def test_no_warnings_for_a_sane_rule_set():
    assert compile_rules(rules(VPN, {"name": "default", "group": "service-desk"})).warnings == []


# ---------------------------------------------------------------- configuration errors


def config_error(*tables: dict) -> str:
    with pytest.raises(ConfigError) as info:
        rules(*tables)
    return str(info.value)


def test_invalid_regex_names_key_path():
    msg = config_error({"name": "bad", "subject": {"regex": "(unclosed"}})
    assert msg.startswith("<config>: [[rule]] 'bad' → subject → regex: invalid regular expression")


def test_invalid_label_regex_names_key_path():
    msg = config_error({"name": "bad", "labels": {"severity": {"regex": "[z-a]"}}})
    assert "[[rule]] 'bad' → labels → severity → regex: invalid regular expression" in msg


def test_unknown_group():
    msg = config_error({"name": "vpn", "group": "netwrk"})
    assert msg == "<config>: [[rule]] 'vpn' → group: no [[group]] named 'netwrk'"


def test_unknown_impact_value():
    msg = config_error({"name": "vpn", "impact": "hgh"})
    assert msg == "<config>: [[rule]] 'vpn' → impact: must be one of high, medium, low; got 'hgh'"


def test_unknown_source_value():
    msg = config_error({"name": "vpn", "source": ["mail"]})
    assert "[[rule]] 'vpn' → source[0]: must be one of email" in msg


def test_unknown_condition_key_suggests():
    msg = config_error({"name": "vpn", "subject": {"anyy": ["vpn"]}})
    assert "subject: unknown key 'anyy' (did you mean 'any'?)" in msg


def test_empty_condition_and_wordless_keyword():
    assert "[[rule]] 'e' → body: empty condition" in config_error({"name": "e", "body": {}})
    assert "[[rule]] 'w' → text → any[1]: '!!' has no letters" in config_error(
        {"name": "w", "text": {"any": ["ok", "!!"]}}
    )


def test_missing_name_and_duplicate_name():
    assert "name: required key is missing" in config_error({"impact": "low"})
    assert "duplicate name" in config_error(VPN, VPN)


def test_config_exposes_compiled_ruleset():
    groups = [{"name": "service-desk"}, {"name": "network"}]
    config = config_from_dict({"group": groups, "rule": [VPN]})
    assert config.ruleset is config.ruleset  # compiled once
    assert config.ruleset.classify(mail("vpn")).group == "network"


# ---------------------------------------------------------------- the index never changes a decision

VOCAB = ["vpn", "down", "disk", "full", "mail", "slow", "test", "urgent", "db", "wifi"]
phrase = st.lists(st.sampled_from(VOCAB), min_size=1, max_size=2).map(" ".join)
keywords = st.builds(
    Keywords,
    any=st.lists(phrase, max_size=3),
    all=st.lists(phrase, max_size=2),
    none=st.lists(phrase, max_size=2),
).filter(lambda k: k.any or k.all or k.none)
rule_strategy = st.builds(
    Rule,
    name=st.just(""),
    subject=st.none() | keywords,
    body=st.none() | keywords,
    text=st.none() | keywords,
    labels=st.dictionaries(st.sampled_from(["severity", "team"]), keywords, max_size=1),
    impact=st.sampled_from(["", "high", "low"]),
    group=st.sampled_from(["", "a", "b"]),
    tags=st.lists(st.sampled_from(["x", "y"]), max_size=2),
    stop=st.booleans(),
)
sentence = st.lists(st.sampled_from([*VOCAB, "other", "VPN-x"]), max_size=8).map(" ".join)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(rule_strategy, max_size=12),
    sentence,
    sentence,
    st.dictionaries(st.sampled_from(["severity", "team"]), sentence, max_size=2),
)
def test_index_agrees_with_evaluating_every_rule(rule_list, title, text, labels):
    named = [dataclasses.replace(r, name=f"r{i}") for i, r in enumerate(rule_list)]
    ruleset = compile_rules(named)
    signal = Signal(source="email", title=title, text=text, labels=labels)
    assert ruleset.classify(signal) == ruleset._classify_every_rule(signal)


def test_only_rules_whose_words_occur_are_evaluated(monkeypatch):
    import gateway.rules as module

    many = [Rule(name=f"r{i}", subject=Keywords(any=[f"svc{i}", f"svc{i} server"]), group="g") for i in range(1000)]
    many.append(Rule(name="catch-all", tags=["seen"]))
    ruleset = compile_rules(many)
    evaluated = []
    real = module._matches
    monkeypatch.setattr(module, "_matches", lambda c, *a: evaluated.append(c.rule.name) or real(c, *a))
    d = ruleset.classify(mail("svc42 server down, svc7 fine"))
    assert sorted(evaluated) == ["catch-all", "r42", "r7"]
    assert d.reasons["group"] == "r7" and d.tags == ("seen",)
