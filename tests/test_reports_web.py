"""The reports in the API, the Reports page, its CSV downloads and the self-contained HTML file (both databases)."""

from __future__ import annotations

import csv
import io
import re

import pytest

from tests.test_api import Api
from tests.test_web import Web
from web.reports import standalone_html


@pytest.fixture
def api(store):
    return Api(Web(store))


def test_api_reports_scoped_to_who_may_see(api):
    # Web made three incidents now: one of them a security incident (group "security")
    admin = api.call("GET", "/api/v1/reports?since=1d", "admin")
    assert admin.status_code == 200, admin.text
    assert admin.json["totals"]["opened"] == 3
    assert admin.json["totals"]["security"] == 1
    agent = api.call("GET", "/api/v1/reports?since=1d", "desk").json
    assert (agent["totals"]["opened"], agent["totals"]["security"], agent["security_included"]) == (2, 0, False)
    assert agent["backlog"]["open"] == 2
    assert api.call("GET", "/api/v1/reports?since=1d", "sec").json["totals"]["opened"] == 3  # the security group
    scoped = api.call("GET", "/api/v1/reports?since=1d&group=network", "admin").json
    assert (scoped["totals"]["opened"], scoped["filters"]) == (1, {"group": "network"})


def test_api_reports_refuses_viewers_and_bad_periods(api):
    viewer = api.call("GET", "/api/v1/reports", "view")
    assert viewer.status_code == 403
    assert viewer.json["error"]["code"] == "forbidden"
    assert api.call("GET", "/api/v1/reports", None).status_code == 401
    for query, message in (
        ("since=yesterday", "is not a time"),
        ("since=1d&until=2d", "empty"),
        ("tz=Nowhere/Else", "time zone"),
        ("since=3000d", "longer"),
    ):
        response = api.call("GET", f"/api/v1/reports?{query}", "admin")
        assert response.status_code == 400, query
        assert message in response.json["error"]["message"], query


def test_reports_page_and_csv(api):
    web = api.web
    page = web.client("desk").get("/reports?since=1d")
    assert page.status_code == 200
    assert 'data-chart="daily"' in page.text and "chart.umd.min.js" in page.text
    assert "<script>" not in page.text  # no inline script: only the JSON data block and static files
    assert re.search(r'<script type="application/json" id="report-data">\{', page.text)
    assert "security incidents are not shown to you" in page.text
    totals = re.search(r'id="table-totals".*?<td data-key="opened" data-value="(\d+)"', page.text, re.S)
    assert totals.group(1) == "2"

    download = web.client("desk").get("/reports.csv?since=1d&table=daily")
    assert download.status_code == 200
    assert download.headers["Content-Disposition"] == 'attachment; filename="inlet-daily.csv"'
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert sum(int(row["opened"]) for row in rows) == 2
    assert web.client("desk").get("/reports.csv?table=nope").status_code == 404
    assert web.client("desk").get("/reports.csv?table=daily&since=never").status_code == 400

    bad = web.client("admin").get("/reports?since=never")
    assert bad.status_code == 400 and "is not a time" in bad.text
    assert web.client("view").get("/reports").status_code == 403
    assert web.client().get("/reports").status_code == 302  # to the login page


def test_standalone_html_has_its_charts_inline(api):
    result = api.call("GET", "/api/v1/reports?since=1d", "admin").json
    html = standalone_html(result, title="Weekly <report>")
    assert "Chart.js v4" in html and "new Chart(" in html
    assert "<title>Weekly &lt;report&gt;</title>" in html
    assert "src=" not in html and "href=" not in html  # nothing to fetch: one file


@pytest.mark.parametrize("value", ["%00", "a%00b", "x" * 201])
def test_a_filter_no_store_can_hold_is_a_400_not_a_500(api, value):
    """Found by schemathesis: a NUL in a filter reached PostgreSQL, which refuses it in text (500)."""
    response = api.call("GET", f"/api/v1/reports?category={value}", "admin")
    assert response.status_code == 400 and "category" in response.json["error"]["message"]
