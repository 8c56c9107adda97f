"""`/metrics` of a real manager: Prometheus text that parses, and values that move with work."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bcmanager.metrics import Metrics
from bcmanager.progress import Progress
from tests.helpers import LegacyDriver, basecall_dir, make_run, wait_until
from tests.test_status import FAST, SUP, generations_manager, live_done_backfill_started

NAME = re.compile(r"^bcmanager_[a-z0-9_]+$")


def scrape(m) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}} of one scrape."""
    r = m.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(r.text):
        assert NAME.match(family.name), family.name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics[name][tuple(sorted(labels.items()))]


def ledger_counts(output: Path) -> tuple[int, int, int]:
    """(reads, samples, 1 if known for every file) of the basecalled files, from the ledger."""
    db = sqlite3.connect(output / ".bcmanager" / "ledger.sqlite3")
    try:
        reads, samples, n, n_known = db.execute(
            "SELECT sum(reads), sum(samples), count(*), count(samples) FROM files"
            " WHERE state = 'done'"
        ).fetchone()
    finally:
        db.close()
    return reads or 0, samples or 0, int(n == n_known)


def test_metrics_parse_and_move_after_work(run_dirs, start_manager) -> None:
    inp, out = run_dirs
    make_run(inp, 5, reads=4)
    m = start_manager(inp, out, "--lease", "1", "--max-attempts", "2", "--batch-size", "1")
    wait_until(lambda: m.status()["files_total"] == 5, what="the scan")

    before = scrape(m)
    assert value(before, "bcmanager_files", state="queued") == 5
    assert value(before, "bcmanager_files", state="done") == 0
    assert value(before, "bcmanager_basecalled_files_total") == 0
    assert value(before, "bcmanager_lease_expiries_total") == 0
    assert value(before, "bcmanager_run_finished") == 0
    assert value(before, "bcmanager_ledger_size_bytes") > 0
    assert value(before, "bcmanager_input_bytes") > 0
    assert value(before, "bcmanager_build_info", version=__import__("bcmanager").__version__) == 1

    # One file fails twice (retried, then quarantined); a silent engine loses its lease.
    for _ in range(2):
        job = m.get("/assignwork", engineid="bad", batchsize=1).json()
        assert m.get("/completed", job_id=job["jobid"], job_state="FAILED").status_code == 200
    silent = m.get("/assignwork", engineid="silent", batchsize=1).json()
    wait_until(lambda: m.status()["jobs"]["expired"] == 1, what="the lease to expire")
    job = m.get("/assignwork", engineid="drv", batchsize=1).json()
    basecall_dir(inp / job["job_input_dir"], out / job["job_output_dir"])
    m.get("/completed", job_id=job["jobid"], job_state="DONE")
    assert LegacyDriver(m.url, inp, out).run(timeout=30) == "finished"
    assert silent["batch_size"] == 1

    after = scrape(m)
    assert value(after, "bcmanager_files", state="done") == 4
    assert value(after, "bcmanager_files", state="quarantined") == 1
    assert value(after, "bcmanager_files", state="queued") == 0
    assert value(after, "bcmanager_basecalled_files_total") == 4
    reads, samples, known = ledger_counts(out)  # counted only for files seen being written
    assert value(after, "bcmanager_basecalled_reads_total") == reads
    assert value(after, "bcmanager_basecalled_samples_total") == samples
    assert value(after, "bcmanager_basecalled_counts_known") == known
    assert value(after, "bcmanager_basecalled_bytes_total") > 0
    assert value(after, "bcmanager_jobs", state="failed") == 2
    assert value(after, "bcmanager_jobs", state="expired") == 1
    assert value(after, "bcmanager_lease_expiries_total") == 1
    assert value(after, "bcmanager_retries_total") == 2  # one after the failure, one expiry
    assert value(after, "bcmanager_quarantines_total") == 1
    assert value(after, "bcmanager_run_finished") == 1
    assert value(after, "bcmanager_remaining_bytes") == 0
    assert value(after, "bcmanager_eta_seconds") == 0
    assert value(after, "bcmanager_run_files", run=".", state="done") == 4
    assert value(after, "bcmanager_throughput_files_per_second") > 0

    done_jobs = m.status()["jobs"]["done"]
    assert value(after, "bcmanager_merge_duration_seconds_count") == done_jobs
    assert value(after, "bcmanager_merge_duration_seconds_sum") > 0
    claimed = sum(m.status()["jobs"].values())  # every job ever handed out, however it ended
    assert value(after, "bcmanager_claim_seconds_count") == claimed
    assert 0 < value(after, "bcmanager_claim_seconds_sum") < claimed * 5

    assert value(after, "bcmanager_engine_basecalled_files_total", engine="drv") == 4
    assert value(after, "bcmanager_engine_busy", engine="drv") == 0
    assert value(after, "bcmanager_engine_busy", engine="silent") == 0  # its job expired
    assert 0 <= value(after, "bcmanager_engine_last_seen_age_seconds", engine="drv") < 30
    assert value(after, "bcmanager_engine_throughput_bytes_per_second", engine="drv") > 0
    if known:
        assert value(after, "bcmanager_engine_throughput_samples_per_second", engine="drv") > 0
    else:  # no samples/s where the counts are not known, rather than a wrong number
        drv = (("engine", "drv"),)
        assert drv not in after.get("bcmanager_engine_throughput_samples_per_second", {})

    latency = after["bcmanager_http_request_duration_seconds_count"]
    assign = value(
        after,
        "bcmanager_http_request_duration_seconds_count",
        method="GET",
        route="/assignwork",
        status="200",
    )
    assert assign >= 4
    assert (("method", "GET"), ("route", "/v1/status"), ("status", "200")) in latency
    m.get("/no/such/route")
    unmatched = scrape(m)["bcmanager_http_request_duration_seconds_count"]
    assert unmatched[(("method", "GET"), ("route", "unmatched"), ("status", "404"))] == 1


def test_yield_per_run_and_barcode_matches_the_reads_on_disk(
    run_dirs, start_manager, start_engine
) -> None:
    from bcmanager.verify import verify_run

    inp, out = run_dirs
    make_run(inp / "exp/s/20261128_1200_1A_FAX1_abcd1234/pod5", 4, reads=12, samples=1500)
    m = start_manager(inp, out, "--batch-size", "2")
    engine = start_engine(m.url, "gpu1", "--until-empty", "--kit-name", "SQK-NBD114-24")
    assert engine.wait(timeout=60) == 0, engine.log.read_text()
    metrics = scrape(m)
    report = verify_run(inp, out, workers=0)
    assert report.ok, report.to_dict()
    (run,) = report.runs
    assert run.run_folder == "exp/s/20261128_1200_1A_FAX1_abcd1234"
    assert len(run.barcodes) >= 3  # several barcodes, unclassified among them
    for b in run.barcodes:
        labels = {"run": run.run_folder, "barcode": b.barcode, "generation": "default"}
        assert value(metrics, "bcmanager_yield_reads", **labels) == b.reads
        assert value(metrics, "bcmanager_yield_bases", **labels) == b.bases
        assert value(metrics, "bcmanager_yield_pass_ratio", **labels) == pytest.approx(
            b.pass_reads / b.reads, abs=1e-3
        )
        assert value(metrics, "bcmanager_yield_n50_bases", **labels) > 0
        assert 0 < value(metrics, "bcmanager_yield_mean_qscore", **labels) < 50


def test_metrics_per_generation_add_up_to_the_totals(run_dirs) -> None:
    inp, out = run_dirs
    m = generations_manager(inp, out)
    progress = Progress(m)
    try:
        live_done_backfill_started(m)  # fast: 5 done; sup: 2 done, 1 quarantined, 2 queued
        text = Metrics(m, progress).render()[0].decode()
    finally:
        progress.close()
        m.close()
    metrics: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        assert NAME.match(family.name), family.name
        for sample in family.samples:
            metrics.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    input_bytes = sum(p.stat().st_size for p in inp.glob("*.pod5"))

    expected = {
        "fast": {"queued": 0, "assigned": 0, "done": 5, "quarantined": 0},
        "sup": {"queued": 2, "assigned": 0, "done": 2, "quarantined": 1},
    }
    for name, by_state in expected.items():
        for state, n in by_state.items():
            assert value(metrics, "bcmanager_generation_files", generation=name, state=state) == n
    for state in expected["fast"]:  # the unlabelled gauge: every generation
        total = sum(by_state[state] for by_state in expected.values())
        assert value(metrics, "bcmanager_files", state=state) == total
    assert value(metrics, "bcmanager_input_bytes") == input_bytes  # each pod5 once
    assert value(metrics, "bcmanager_basecalled_files_total") == 7
    assert value(metrics, "bcmanager_generation_basecalled_files_total", generation="fast") == 5
    assert value(metrics, "bcmanager_generation_basecalled_files_total", generation="sup") == 2
    sup_left = value(metrics, "bcmanager_generation_remaining_bytes", generation="sup")
    assert value(metrics, "bcmanager_generation_remaining_bytes", generation="fast") == 0
    assert 0 < sup_left < input_bytes
    assert value(metrics, "bcmanager_remaining_bytes") == sup_left
    assert value(metrics, "bcmanager_generation_eta_seconds", generation="fast") == 0
    assert value(metrics, "bcmanager_generation_eta_seconds", generation="sup") > 0
    assert value(metrics, "bcmanager_generation_throughput_bytes_per_second", generation="sup") > 0
    assert value(metrics, "bcmanager_eta_seconds") > 0  # the fleet still has sup to do
    assert (
        value(
            metrics, "bcmanager_generation_info", generation="fast", model=FAST.model, role="live"
        )
        == 1
    )
    assert (
        value(
            metrics, "bcmanager_generation_info", generation="sup", model=SUP.model, role="backfill"
        )
        == 1
    )
    assert value(metrics, "bcmanager_run_files", run=".", state="done") == 5  # the live run
    for name, reads in (("fast", 15), ("sup", 6)):
        labels = {"run": ".", "barcode": "unclassified", "generation": name}
        assert value(metrics, "bcmanager_yield_reads", **labels) == reads
