"""The Reports page in real Chromium: it renders its charts under the CSP, and its tables show the API's numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from playwright.sync_api import expect

from gateway import accounts
from gateway.reports.figures import Scope, report
from tests.test_browser import AGENT, browser, page, running, screenshot, sign_in, sqlite_store  # noqa: F401
from web.reports import standalone_html


def test_reports_page_draws_charts_and_matches_the_api(running, page):  # noqa: F811
    life = running.lifecycle
    for n in range(3):
        ref = life.create(title=f"Disk full {n}", actor="test", group="service-desk", service="files").ref
        life.acknowledge(ref, "test")
        if n:
            life.resolve(ref, "test", code="fixed", notes="cleaned up", cause="disk")
    life.create(title="Hidden", actor="test", group="security", security=True)
    token = accounts.issue_api_token(AGENT)
    api = page.request.get("/api/v1/reports?since=2d", headers={"Authorization": f"Bearer {token}"}).json()

    sign_in(page)
    page.get_by_role("link", name="Reports").click()
    expect(page.get_by_role("heading", name="Reports", exact=True)).to_be_visible()
    page.get_by_label("Since").fill("2d")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("html[data-charts='5']")).to_be_attached()
    drawn = page.eval_on_selector_all("canvas[data-chart]", "cs => cs.map(c => !!c.chart && c.width > 0)")
    assert drawn == [True] * 5

    def cell(table: str, key: str, row: int = 0) -> str:
        return (
            page.locator(f"#table-{table} tbody tr")
            .nth(row)
            .locator(f"td[data-key='{key}']")
            .get_attribute("data-value")
        )

    assert api["totals"]["opened"] == 3  # the security incident is not the agent's to see
    for key in ("opened", "resolved", "closed"):
        assert cell("totals", key) == str(api["totals"][key])
    assert cell("mtta_mttr", "count", 1) == str(api["mttr"]["count"]) == "2"
    assert [cell("daily", "opened", i) for i in range(len(api["daily"]))] == [str(d["opened"]) for d in api["daily"]]
    assert [cell("daily", "resolved", i) for i in range(len(api["daily"]))] == [
        str(d["resolved"]) for d in api["daily"]
    ]
    assert cell("top_causes", "cause") == "disk" and cell("top_causes", "incidents") == "2"
    assert [cell("backlog_age", "count", i) for i in range(4)] == [str(b["count"]) for b in api["backlog"]["buckets"]]
    with page.expect_download() as download:
        page.locator("#table-daily").locator("xpath=following::a[1]").click()
    assert download.value.suggested_filename == "inlet-daily.csv"
    screenshot(page, "reports")


def test_html_report_file_draws_its_charts_offline(sqlite_store, browser, tmp_path):  # noqa: F811
    now = datetime.now(UTC)
    result = report(Scope(since=now - timedelta(days=7), until=now), now=now)
    path = tmp_path / "report.html"
    path.write_text(standalone_html(result, title="Weekly report"), encoding="utf-8")
    context = browser.new_context(offline=True)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.goto(path.as_uri())
    expect(tab.locator("html[data-charts='5']")).to_be_attached()
    assert tab.eval_on_selector_all("canvas[data-chart]", "cs => cs.every(c => !!c.chart)")
    context.close()
    assert errors == []
