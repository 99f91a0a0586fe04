"""Full-text search (store/search.py) through the API, the queue page and the CLI, on SQLite and PostgreSQL:
words, prefixes, phrases, field filters, ranking, closed incidents, the index kept in step and backfilled,
hostile input, security incidents never found by who may not see them, and similar incidents."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.cli.main import main
from store import migrations, search
from store.db import db, is_postgres
from store.models import CorrelationKey, Incident
from tests.test_api import Api
from tests.test_web import Web


@pytest.fixture
def api(store):
    api = Api(Web(store))
    life = api.web.lifecycle
    api.disk = life.create(
        title="Disk full on storage-07",
        description="The backup volume ran out of space overnight.",
        actor="t",
        group="service-desk",
        reporter_email="Olga.Ops@Example.com",
        labels={"service": "storage", "severity": "critical"},
    )
    api.mail = life.create(title="Mail queue stuck", description="full of bounces", actor="t", group="network")
    life.note(api.mail.ref, "t", "Restarted the postfix relay on mx2")
    return api


def refs(api, query: str, user: str = "admin", **params) -> list[str]:
    response = api.call("GET", "/api/v1/incidents", user, query_string={"q": query, **params})
    assert response.status_code == 200, (query, response.get_json())
    return [i["ref"] for i in response.get_json()["incidents"]]


def test_words_prefixes_phrases_and_fields(api):
    disk, mail = api.disk.ref, api.mail.ref
    assert refs(api, "full") == [disk, mail] or set(refs(api, "full")) == {disk, mail}
    assert refs(api, "full disk") == [disk]  # any order
    assert refs(api, "stor") == [disk]  # a prefix
    assert refs(api, '"disk full"') == [disk] and refs(api, '"full disk"') == []  # an exact phrase
    assert refs(api, "postfix mx2") == [mail]  # the text of an update
    assert refs(api, "backup volume") == [disk]  # the body
    assert refs(api, "olga") == [disk]  # the reporter's address
    assert refs(api, "from:olga.ops@example.com") == [disk]
    assert refs(api, "from:example.com") == [disk] and refs(api, "from:@example.com") == [disk]
    assert refs(api, "from:rita@example.org") == [api.web.desk.ref]
    assert refs(api, "full group:network") == [mail]
    assert refs(api, "label:service=storage") == [disk]
    assert refs(api, "label:service=stor") == [] and refs(api, "label:severity") == [disk]
    assert refs(api, "critical") == [disk]  # label values are words too
    assert refs(api, disk.lower()) == [disk]  # a ref, any case
    assert refs(api, "nothing-like-this") == []


def test_phrases_of_every_kind(api):
    """PostgreSQL finds a phrase through the word pairs its index holds (store/search.py pairs_tsquery_text):
    every kind of phrase finds what it found by its words alone, before and after migration 13's reindex."""
    life = api.web.lifecycle
    cafe = life.create(title="Café crème machine leaks", description="the drip tray of the espresso unit", actor="t")
    life.note(cafe.ref, "t", "ordered a new drip tray gasket")
    disk, mail = api.disk.ref, api.mail.ref
    cases = {
        '"drip tray of the espresso"': [cafe.ref],  # five words in the body
        '"new drip tray gasket"': [cafe.ref],  # in an update
        '"café crème"': [cafe.ref],  # words PostgreSQL's parser may split otherwise: no pair, the words still
        '"crème machine leaks"': [cafe.ref],
        "full-on-stor": [disk],  # words joined by punctuation are a phrase, whose last word is a prefix
        '"storage 07"': [disk],
        '"full disk"': [],
        '"tray drip"': [],
        "from:olga.ops@example.com": [disk],  # the address is a phrase of its words
        '"postfix relay on mx2"': [mail],
    }
    found = {text: refs(api, text) for text in cases}
    assert found == cases
    search.reindex(db.obj)  # migration 13: every document recomputed, the same answers
    assert {text: refs(api, text) for text in cases} == cases
    assert search.pairs_tsquery_text(search.parse('"Drip tray" on-stor "café crème"').terms) == "'_drip_tray'"
    if is_postgres():
        pairs = db.execute_sql(
            "SELECT lexeme FROM incident_search, unnest(document) WHERE incident_id = %s AND lexeme LIKE %s",
            [cafe.id, "%\\_%"],
        ).fetchall()
        assert {"_drip_tray", "_espresso_unit", "_machine_leaks"} <= {p for (p,) in pairs}


def test_ranked_title_before_body_before_updates(api):
    life = api.web.lifecycle
    in_update = life.create(title="Unrelated one", actor="t")
    life.note(in_update.ref, "t", "the kraken was seen")
    in_body = life.create(title="Unrelated two", description="a kraken in the body", actor="t")
    in_title = life.create(title="Kraken in the title", actor="t")
    assert refs(api, "kraken") == [in_title.ref, in_body.ref, in_update.ref]


def test_closed_and_resolved_incidents_are_found_and_the_status_filter_applies_to_browsing(api):
    life = api.web.lifecycle
    ref = api.disk.ref
    life.resolve(ref, "t", code="fixed", notes="grew the volume", cause="capacity", fix="permanent")
    life.close(ref, "t")
    assert refs(api, "disk") == [ref] and refs(api, ref) == [ref]  # a search looks at every status
    assert ref not in [i["ref"] for i in api.call("GET", "/api/v1/incidents").get_json()["incidents"]]  # browsing
    assert refs(api, "disk", status="open") == []  # asked for: applied
    assert refs(api, "disk status:closed") == [ref] and refs(api, "disk status:open") == []
    client = api.web.client("admin")
    page = client.get("/incidents", query_string={"q": "disk", "status": "open"}).text
    assert "1 more incident matches this search outside the status filter" in page
    assert "show every status" in page
    shown = client.get("/incidents", query_string={"q": "disk"}).text
    assert f">{ref}</a>" in shown and "outside the status filter" not in shown
    exported = client.get("/incidents/export.csv", query_string={"q": "full"}).text.splitlines()
    assert sorted(line.split(",")[0] for line in exported[1:]) == sorted([ref, api.mail.ref])


def test_the_index_follows_every_change(api):
    life = api.web.lifecycle
    ref = api.mail.ref
    life.update(ref, "t", title="Outbound relay jammed", reason="better title")
    assert refs(api, "jammed") == [ref] and refs(api, "stuck") == []
    life.reply(ref, "t", "We are on it, zanzibar")
    assert refs(api, "zanzibar") == [ref]
    Incident.delete().where(Incident.id == api.mail.id).execute()
    assert refs(api, "jammed") == []


def test_upgrade_indexes_incidents_stored_before_search(empty_store, monkeypatch):
    open_database_config = empty_store.config()
    from store.db import open_database

    open_database(open_database_config)
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:10])
    migrations.upgrade()
    from gateway.service import build_lifecycle

    with db.connection_context():
        life = build_lifecycle(empty_store.config())
        old = life.create(title="Legacy toaster incident", actor="t", reporter_email="ann@example.net")
        life.note(old.ref, "t", "crumb tray overflow")
    monkeypatch.undo()
    assert migrations.upgrade()[0] == (11, "full-text search")
    with db.connection_context():
        for text in ("toaster", "crumb", "from:ann@example.net"):
            found = search.restrict(Incident.select(Incident.ref), search.parse(text))
            assert [i.ref for i in found] == [old.ref], text
    db.close()


def test_security_incidents_are_not_found_by_who_may_not_see_them(api):
    secret = api.web.secret  # "Phishing wave hits finance", security
    life = api.web.lifecycle
    life.note(secret.ref, "t", "credential harvest on payroll")
    for user in ("desk", "neto", "view"):
        for query in ("phishing", "payroll", secret.ref, "phish status:any", "group:security"):
            assert refs(api, query, user) == [], (user, query)
        page = api.web.client(user).get("/incidents", query_string={"q": "phishing", "status": "open"}).text
        assert "Phishing" not in page and "outside the status filter" not in page
    assert refs(api, "payroll", "sec") == [secret.ref] and refs(api, "phishing", "admin") == [secret.ref]


HOSTILE = [
    '"unbalanced', 'a "b', '"""', "AND OR NOT", "NEAR(a b)", "a*", "*", "^title", "title:x", "(", ")", "-", "!!!",
    "{ref title}: x", "a:b:c", "' OR 1=1 --", "\\", "&|!<->", "'a' & 'b'", "x\x00y", "\x00", "status:", "label:=",
    "label:a=b=c", "from:", "from:@", "ünïcødé", "😀 fire", "\u202e", " ", "é" * 400, "a" * 500,
]  # fmt: skip


def test_hostile_search_text_gives_results_or_a_clear_400(api):
    for query in HOSTILE:
        refs(api, query)  # 200
        assert api.web.client("admin").get("/incidents", query_string={"q": query}).status_code == 200, query
    for query, message in (
        ("x" * 10_240, "search text is too long"),
        ("a " * 17, "too many words"),
        ("status:gone", "status:gone is not a status"),
    ):
        response = api.call("GET", "/api/v1/incidents", query_string={"q": query})
        assert response.status_code == 400, query
        assert message in response.get_json()["error"]["message"]
        page = api.web.client("admin").get("/incidents", query_string={"q": query}, follow_redirects=True)
        assert page.status_code == 200 and message in page.text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=80) | st.sampled_from(HOSTILE))
def test_any_search_text_through_the_api_is_200_or_400(api, text):
    response = api.call("GET", "/api/v1/incidents", query_string={"q": text, "sort": "relevance"})
    assert response.status_code in (200, 400), (text, response.status_code)
    if response.status_code == 400:
        assert response.get_json()["error"]["code"] == "invalid"


def test_parse_writes_only_tokens_into_the_fts_syntax():
    found = search.parse('disk "exact PHRASE" from:a@b.c label:k=v NEAR( ") OR *')
    for term in found.terms:
        assert all(re.fullmatch(r"[^\W_]+", t) for t in term.tokens), term
    assert search.fts5_expression(found.terms).count('"') == 2 * len(found.terms)
    assert search.parse('"').empty and search.parse("!!! ---").empty


def test_cli_incident_list_search(api, capsys, store):
    path = store.write_config()
    assert main(["-c", str(path), "incident", "list", "--search", "postfix"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(api.mail.ref + "\t") and out.count("\n") == 1
    assert main(["-c", str(path), "incident", "list", "--search", "status:nope"]) == 1
    assert "not a status" in capsys.readouterr().err


def test_similar_incidents_with_their_resolution(api):
    life = api.web.lifecycle
    first = life.create(
        title="Storage array degraded", actor="t", keys=[("fingerprint", "fp-array")], group="service-desk"
    )
    life.resolve(first.ref, "t", code="fixed", notes="swapped disk 3", cause="hardware", fix="permanent")
    CorrelationKey.update(open=False).where(CorrelationKey.incident == first.id).execute()
    secret = life.create(title="Storage array breach", actor="t", security=True, group="security")
    again = life.create(title="Array degraded again", actor="t", keys=[("fingerprint", "fp-array")])
    found = search.similar(again, include_security=False)
    assert [(i.ref, why) for i, why in found][0] == (first.ref, "same alert")
    assert secret.ref not in [i.ref for i, _ in found]
    assert secret.ref in [i.ref for i, _ in search.similar(again, include_security=True)]
    later = life.create(title="Disk full again", actor="t", reporter_email="olga.ops@example.com")
    assert (api.disk.ref, "same reporter") in [(i.ref, why) for i, why in search.similar(later, include_security=True)]
    page = api.web.client("desk").get(f"/incidents/{again.ref}").text
    section = page.split("<h3>Similar incidents</h3>", 1)[1].split("<h3>", 1)[0]
    assert first.ref in section and "same alert" in section and "swapped disk 3" in section
    assert "hardware" in section and "permanent fix" in section and secret.ref not in section
