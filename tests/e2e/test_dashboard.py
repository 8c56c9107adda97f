"""The dashboard in real headless Chromium (Debian's, driven by Playwright for Python)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import LegacyDriver, basecall_dir, make_run, wait_for_files

CHROMIUM = os.environ.get("BCM_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def browser() -> Iterator:
    """Chromium from the system (Playwright's own browser download cannot work here)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright for Python is missing: pip install -e '.[test]'")
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.fail(f"no Chromium at {CHROMIUM}: run scripts/system-deps.sh (as root)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def test_dashboard_shows_live_numbers(
    run_dirs, start_manager, start_engine, browser, tmp_path
) -> None:
    inp, out = run_dirs
    make_run(inp, 6, reads=3)
    # no live reserve: the backfill added at the end may start at once
    m = start_manager(inp, out, "--max-attempts", "1", "--live-window", "0")
    wait_for_files(m, 6)

    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("requestfailed", lambda req: problems.append(f"request failed: {req.url}"))
    external: list[str] = []
    page.on(
        "request",
        lambda req: None if req.url.startswith((m.url, "data:")) else external.append(req.url),
    )

    page.goto(m.url + "/")
    expect_text(page, "#files-total", "6")
    expect_text(page, "#files-done", "0")
    assert page.text_content("#state") == "basecalling"
    page.screenshot(path=str(tmp_path / "dashboard-start.png"), full_page=True)

    # One poison file (quarantined with its reason), one batch basecalled by hand.
    bad = m.get("/assignwork", engineid="gpu-bad", batchsize=1).json()
    m.get("/completed", job_id=bad["jobid"], job_state="FAILED")
    job = m.get("/assignwork", engineid="gpu-a", batchsize=2).json()
    expect_text(page, "#engines", "gpu-a")
    expect_text(page, "#jobs", "gpu-a")
    basecall_dir(inp / job["job_input_dir"], out / job["job_output_dir"])
    m.get("/completed", job_id=job["jobid"], job_state="DONE")
    expect_text(page, "#files-done", "2")
    expect_text(page, "#quarantined-count", "1")
    expect_text(page, "#quarantine", bad["batch"][0])
    expect_text(page, "#quarantine", "engine reported FAILED")

    assert LegacyDriver(m.url, inp, out).run(timeout=30) == "finished"
    expect_text(page, "#files-done", "5")
    expect_text(page, "#state", "caught up")
    progress = m.status()["progress"]["done"]
    expect_text(page, "#reads-done", f"{progress['reads']:,}")
    if not progress["counts_known"]:
        expect_text(page, "#reads-label", "not known for every file")
    expect_text(page, "#eta", "done")
    expect_text(page, "#engines", "drv")
    expect_text(page, "#events", "done")
    expect_text(page, "#runs", "5 / 6")
    expect_text(page, "#yields", "nothing counted yet")  # original engines count no yield
    make_run(inp / "barcoded", 2, reads=12, seed=7)
    engine = start_engine(m.url, "gpu-kit", "--until-empty", "--kit-name", "SQK-NBD114-24")
    assert engine.wait(timeout=60) == 0, engine.log.read_text()
    kit_runs = {y["run"] for y in m.status()["yields"]}
    assert len(kit_runs) == 2  # two pod5 of two flow cells outside any MinKNOW folder
    for run in kit_runs:
        expect_text(page, "#yields", run)
    expect_text(page, "#yields", "barcode0")
    counted = sum(y["reads"] for y in m.status()["yields"])
    expect_text(page, "#reads-done", f"{counted:,}")
    expect_text(page, "#reads-label", "engines' count")
    page.wait_for_selector("#chart-line", state="attached", timeout=15_000)
    assert page.get_attribute("#bar-done", "style").count("width") == 1
    assert page.is_hidden("#generations-section")  # only the implicit generation

    # A backfill generation added after the run: the cards and the bar stay on the live
    # run, the generations table shows each one's progress, yield and chart name them.
    live = m.status()["progress"]
    added = m.post("/v1/generations", json={"name": "sup", "model": "sup@v5.0.0"})
    assert added.status_code == 200, added.text
    page.wait_for_selector("#generations-section", state="visible", timeout=15_000)
    expect_text(page, "#generations", "backfill")
    backfill = start_engine(m.url, "gpu-sup", "--until-empty")
    assert backfill.wait(timeout=60) == 0, backfill.log.read_text()
    sup = next(g for g in m.status()["generations"] if g["name"] == "sup")
    assert sup["files"]["done"] == live["written"]["files"] == 8
    expect_text(page, "#generations", "sup@v5.0.0")
    expect_text(page, "#generations tbody tr:nth-child(2)", "100.0%")
    cells = [
        row.locator("td").all_text_contents() for row in page.locator("#generations tbody tr").all()
    ]
    assert [c[:3] for c in cells] == [
        ["default", "live", "the engines' own"],
        ["sup", "backfill", "sup@v5.0.0"],
    ]
    assert cells[0][3:8] == ["7", "0", "0", "1", "100.0%"]  # done, queued, running, quar.
    assert cells[1][3:8] == ["8", "0", "0", "0", "100.0%"]
    assert page.text_content("#files-done") == str(live["done"]["files"]) == "7"
    assert page.text_content("#files-total") == "8"  # the pod5 written, not once per model
    assert page.text_content("#reads-done") == f"{counted:,}"  # the live generation's reads
    expect_text(page, "#progress-title", "live generation: default")
    expect_text(page, "#yields", "sup")
    assert page.locator("#yields th").first.text_content() == "generation"
    expect_text(page, "#chart", "sup")  # one line per generation

    shot = tmp_path / "dashboard-end.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert not problems, problems
    assert not external, f"the page loaded from elsewhere: {external}"


def expect_text(page, selector: str, text: str, timeout_s: float = 15) -> None:
    """Wait until the element's text contains `text` (the page polls every 2 s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = page.text_content(selector) or ""
        if text in got:
            return
        assert time.monotonic() < deadline, f"{selector}: {got[:300]!r} never showed {text!r}"
        page.wait_for_timeout(100)


def test_dashboard_says_when_a_full_output_pauses_the_run(run_dirs, start_manager, browser) -> None:
    """OUTPUT under --min-free (here: more than any disk has) pauses hand-outs, and the
    page says why, in a banner of its own."""
    inp, out = run_dirs
    make_run(inp, 2, reads=2)
    m = start_manager(inp, out, "--min-free", "1e9")
    wait_for_files(m, 2)
    page = browser.new_page()
    page.goto(m.url + "/")
    expect_text(page, "#space-banner", "Paused since")
    assert page.is_visible("#space-banner") and not page.is_visible("#banner")
    assert "--min-free" in (page.text_content("#space-banner") or "")
    assert m.post("/v1/claim", {"engine_id": "gpu1"}).json()["job"] is None


def test_dashboard_shows_a_file_going_out_in_slices(run_dirs, start_manager, browser) -> None:
    """A file above --slice-above claimed by an engine that takes slices: the claim's
    answer names a read list of the slice's reads (in the file's order), and the page
    shows the file with its reads out and queued."""
    inp, out = run_dirs
    run = make_run(inp, 1, reads=60, samples=4000, prefix="big")
    m = start_manager(inp, out, "--slice-above", "0.1")
    wait_for_files(m, 1)
    job = m.post("/v1/claim", {"engine_id": "gpu1", "slices": True}).json()["job"]
    (item,) = job["files"]
    first, count = item["slice"]["first"], item["slice"]["count"]
    assert item["slice"]["of"] == 60 and 0 < count < 60
    listed = Path(job["read_ids"]).read_text().split()
    assert listed == run["big0000.pod5"][first : first + count]
    page = browser.new_page()
    page.goto(m.url + "/")
    expect_text(page, "#sliced", "big0000.pod5")
    expect_text(page, "#sliced", "0 / 60")
    text = page.text_content("#sliced") or ""
    assert str(count) in text and str(60 - count) in text
