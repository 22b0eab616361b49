"""The Dagster UI in a real browser: Debian's Chromium, headless, driven by Playwright.
It opens the asset graph, launches a materialization from the UI, waits for the run to
succeed and finds the metadata on the asset page; on the way it takes the screenshots
the README shows (written to AI_PIPELINES_SCREENSHOTS_DIR when set, else the test's
temporary folder)."""

import os
import shutil
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.conftest import graphql

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialling out of a closed network.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
GROUPS = ["ingestion", "retrieval", "signals", "drafts", "fact_checks", "summaries"]
LATEST = '{ assetNodes(assetKeys: [{path: ["digest_report"]}]) { assetMaterializations(limit: 1) { runId } } }'
RUNS = "{ runsOrError(limit: 20) { ... on Runs { results { runId status } } } }"


@pytest.fixture
def page(tmp_path):
    assert Path(CHROMIUM).exists(), "Chromium is missing: `make setup` installs Debian's chromium package"
    expect.set_options(timeout=60_000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        yield page
        browser.close()


@pytest.fixture
def screenshots(tmp_path) -> Path:
    folder = Path(os.environ.get("AI_PIPELINES_SCREENSHOTS_DIR") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def runs(port: int) -> dict[str, str]:
    return {r["runId"]: r["status"] for r in graphql(port, RUNS)["data"]["runsOrError"]["results"]}


DIGEST_GROUPS = ["ingestion", "retrieval", "signals", "drafts", "fact_checks", "summaries"]


def expand_asset_graph(page: Page) -> None:
    """The digest's groups only (support triage shares the code location), filtered in the graph's
    search box; groups start collapsed, and the graph's context menu opens them all."""
    page.locator(".CodeMirror").first.click()  # the asset selection editor
    page.keyboard.type(" or ".join(f"group:{group}" for group in DIGEST_GROUPS))
    page.keyboard.press("Enter")
    graph = page.get_by_text("ingestion", exact=True).filter(visible=True).last
    box = graph.bounding_box()
    page.mouse.click(box["x"] + 20, box["y"] + 250, button="right")  # the empty canvas below the group
    page.get_by_role("menuitem", name="Expand all groups").click()
    for asset in ["source_documents", "retrieval_index", "signals", "drafts", "fact_checks", "digest_report"]:
        expect(page.get_by_text(asset, exact=True).filter(visible=True).last).to_be_visible()


def test_asset_graph_materialize_from_the_ui_and_see_metadata(dagster_dev, page, screenshots, settings):
    base = f"http://127.0.0.1:{dagster_dev}"
    page.goto(f"{base}/asset-groups")
    expect(page.get_by_role("button", name="Materialize all…")).to_be_visible()
    page.get_by_role("button", name="Hide navigation").click()
    expand_asset_graph(page)
    page.wait_for_timeout(1500)
    page.screenshot(path=str(screenshots / "asset-graph.png"))

    before = runs(dagster_dev)
    page.goto(f"{base}/assets/digest_report")
    page.locator("button").filter(has_text="Materialize").filter(visible=True).first.click()
    deadline = time.monotonic() + 60
    while not (launched := set(runs(dagster_dev)) - set(before)):
        assert time.monotonic() < deadline, "the Materialize button launched no run"
        time.sleep(0.5)
    [run_id] = launched
    page.goto(f"{base}/runs/{run_id}")
    expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=180_000)
    assert runs(dagster_dev)[run_id] == "SUCCESS"

    page.goto(f"{base}/assets/digest_report")
    metadata = page.locator("table")
    for label in ["location", "report", "claims", "traced_calls"]:
        expect(metadata.get_by_text(label, exact=True).first).to_be_visible()
    latest = graphql(dagster_dev, LATEST)["data"]["assetNodes"][0]["assetMaterializations"][0]["runId"]
    assert latest == run_id  # the metadata shown is that of the run launched from the UI

    report = settings.output_dir / "digest.html"
    page.goto(report.resolve().as_uri())
    expect(page.get_by_role("heading", name="Digest report")).to_be_visible()
    assert page.locator("svg").count() >= 4 and page.locator("span.verdict").count() > 0
    page.screenshot(path=str(screenshots / "digest-report.png"), full_page=True)
    assert (screenshots / "asset-graph.png").stat().st_size > 20_000
