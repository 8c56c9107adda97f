"""Prometheus metrics of one manager: `GET /metrics` in the text exposition format.

Each app has its own registry. Most values are read at scrape time from the same data
as `/v1/status` (`bcmanager.progress`), so the two always agree; request latency and
merge time are histograms observed as they happen. Names follow the Prometheus
conventions: `bcmanager_` prefix, base units in the name (`_seconds`, `_bytes`),
`_total` on counters. docs/observability.md lists them all.

Model generations: the unlabelled file, byte and basecalled totals and the ETA cover
every generation (a file counts once per generation it is basecalled with), as do the
fleet's throughput and the engines'; `bcmanager_input_bytes` is what INPUT holds, once.
The `bcmanager_generation_*` families break them down with a `generation` label, and the
yield families carry one too. Runs (flow cells) are the live generation's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bcmanager import __version__
from bcmanager.progress import Progress
from bcmanager.reports import Happening
from bcmanager.states import FileState, JobState

if TYPE_CHECKING:
    from bcmanager.manager import Manager

# Requests include long-poll claims that wait up to a minute on purpose.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
CLAIM_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
MERGE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
RUN_STATES = ("basecalling", "caught up", "ended, basecalling", "finished")


class Metrics:
    """The registry of one app: a collector over `Progress` plus two live histograms."""

    def __init__(self, manager: Manager, progress: Progress) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "bcmanager_http_request_duration_seconds",
            "HTTP requests by method, route template and status code (claims long-poll).",
            ["method", "route", "status"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.merges = Histogram(
            "bcmanager_merge_duration_seconds",
            "Time to merge a finished job's output into OUTPUT/{pass,fail}.",
            buckets=MERGE_BUCKETS,
            registry=self.registry,
        )
        self.claims = Histogram(
            "bcmanager_claim_seconds",
            "Time to hand out a batch (the manager's lock waited for, the ledger written),"
            " a long poll's wait for work excluded.",
            buckets=CLAIM_BUCKETS,
            registry=self.registry,
        )
        # the histogram's child per (method, route, status): routes are templates and
        # unmatched paths share one label, so this stays as small as the label set
        self._by_labels: dict[tuple[str, str, int], Any] = {}
        self.registry.register(RunCollector(progress))
        manager.add_hearer(self._hear)

    def _hear(self, h: Happening) -> None:
        if h.kind == "merged":
            self.merges.observe(h.seconds)
        elif h.kind == "claimed":
            self.claims.observe(h.seconds)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        child = self._by_labels.get(key)
        if child is None:  # labels() checks and joins its values each call: once a key
            child = self._by_labels[key] = self.requests.labels(method, route, str(status))
        child.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class RequestTimer:
    """ASGI middleware: time every HTTP request, labelled by its route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            # The router puts the matched route in the scope; unmatched paths share one
            # label so that random URLs cannot blow up the label set.
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            elapsed = time.perf_counter() - started
            self.metrics.observe_request(scope["method"], route, status, elapsed)


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def _counter(name: str, doc: str, labels: list[str] | None = None) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=labels)


class RunCollector(Collector):
    """Turns one `Progress.status()` into metric families at each scrape."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def collect(self) -> Iterator[Metric]:
        status = self.progress.status()
        yield from _files_and_jobs(status)
        yield from _basecalled(status)
        yield from _generations(status)
        yield from _engines(status)
        yield from _counters(status)
        yield from _runs(status)
        yield from _service(status)


def _files_and_jobs(status: dict[str, Any]) -> Iterator[Metric]:
    files = _gauge("bcmanager_files", "Input pod5 files by state, every generation.", ["state"])
    for state in FileState:
        files.add_metric([state.value], status["files"].get(state.value, 0))
    yield files
    jobs = _gauge("bcmanager_jobs", "Jobs (batches) by state.", ["state"])
    for state in JobState:
        jobs.add_metric([state.value], status["jobs"].get(state.value, 0))
    yield jobs
    written = status["progress"]["written"]  # the live generation's: each pod5 once
    yield GaugeMetricFamily(
        "bcmanager_input_bytes", "Bytes of pod5 found under INPUT.", value=written["bytes"]
    )
    remaining = status["all_generations"]["remaining"]
    yield GaugeMetricFamily(
        "bcmanager_remaining_bytes",
        "Bytes of pod5 queued or assigned (not yet basecalled), every generation.",
        value=remaining["bytes"],
    )


_BASECALLED = (
    ("basecalled_files", "files", "Files basecalled and merged"),
    ("basecalled_bytes", "bytes", "Bytes of pod5 basecalled"),
    ("basecalled_reads", "reads", "Reads basecalled (files with known counts)"),
    ("basecalled_samples", "samples", "Signal samples basecalled (known counts)"),
)


def _basecalled(status: dict[str, Any]) -> Iterator[Metric]:
    every = status["all_generations"]
    done = every["done"]
    for name, key, doc in _BASECALLED:
        family = _counter(f"bcmanager_{name}", f"{doc}, every generation.")
        family.add_metric([], done[key])
        yield family
    yield GaugeMetricFamily(
        "bcmanager_basecalled_counts_known",
        "1 when reads/samples are known for every basecalled file; 0: those totals undercount.",
        value=int(done["counts_known"]),
    )
    rates = status["throughput"]
    for key, name, doc in (
        ("samples_per_s", "samples", "Signal samples basecalled per second"),
        ("bytes_per_s", "bytes", "pod5 bytes basecalled per second"),
    ):
        if rates[key] is not None:
            yield GaugeMetricFamily(
                f"bcmanager_throughput_{name}_per_second",
                f"{doc}, over the last {int(rates['window_s'])} s of finished batches.",
                value=rates[key],
            )
    yield GaugeMetricFamily(
        "bcmanager_throughput_files_per_second",
        "Files basecalled per second over the recent window.",
        value=rates["files_per_min"] / 60,
    )
    if every["eta_s"] is not None:
        yield GaugeMetricFamily(
            "bcmanager_eta_seconds",
            "Time to basecall what has been written so far, every generation, at the current rate.",
            value=every["eta_s"],
        )
    last = done.get("last_done_at")  # any generation: the fleet is working
    if last is not None:
        yield GaugeMetricFamily(
            "bcmanager_last_basecalled_timestamp_seconds",
            "When a file was last basecalled (alert on time() minus this while files are queued).",
            value=last,
        )


def _generations(status: dict[str, Any]) -> Iterator[Metric]:
    """The `bcmanager_generation_*` families: each generation's share of the totals."""
    gens = status.get("generations") or []
    info = _gauge(
        "bcmanager_generation_info",
        "Each model generation (always 1): its model and role, live or backfill.",
        ["generation", "model", "role"],
    )
    files = _gauge(
        "bcmanager_generation_files",
        "Input pod5 files by generation and state.",
        ["generation", "state"],
    )
    remaining = _gauge(
        "bcmanager_generation_remaining_bytes",
        "Bytes of pod5 queued or assigned for each generation.",
        ["generation"],
    )
    done = {
        key: _counter(f"bcmanager_generation_{name}", f"{doc}, per generation.", ["generation"])
        for name, key, doc in _BASECALLED
    }
    rate = _gauge(
        "bcmanager_generation_throughput_bytes_per_second",
        "pod5 bytes per second of each generation over the recent window (ledger done times).",
        ["generation"],
    )
    eta = _gauge(
        "bcmanager_generation_eta_seconds",
        "Time to basecall each generation's queue at its own recent rate (absent without one).",
        ["generation"],
    )
    for g in gens:
        name = [g["name"]]
        info.add_metric([g["name"], g.get("model") or "", g["role"]], 1)
        for state in FileState:
            files.add_metric([g["name"], state.value], g["files"].get(state.value, 0))
        remaining.add_metric(name, g["progress"]["remaining"]["bytes"])
        for key, family in done.items():
            family.add_metric(name, g["progress"]["done"][key])
        rate.add_metric(name, g["throughput"]["bytes_per_s"])
        if g["eta_s"] is not None:
            eta.add_metric(name, g["eta_s"])
    yield from (info, files, remaining, *done.values(), rate, eta)


def _engines(status: dict[str, Any]) -> Iterator[Metric]:
    samples = _gauge(
        "bcmanager_engine_throughput_samples_per_second",
        "Samples per second of each engine over the recent window (known counts only).",
        ["engine"],
    )
    by_bytes = _gauge(
        "bcmanager_engine_throughput_bytes_per_second",
        "pod5 bytes per second of each engine over the recent window.",
        ["engine"],
    )
    age = _gauge(
        "bcmanager_engine_last_seen_age_seconds",
        "Seconds since each engine last called the manager.",
        ["engine"],
    )
    busy = _gauge("bcmanager_engine_busy", "1 while the engine holds a job.", ["engine"])
    files = _counter(
        "bcmanager_engine_basecalled_files",
        "Files each engine basecalled (ledger; all engines of the run).",
        ["engine"],
    )
    for e in status["engines"]:
        name = [e["engine"]]
        rates = e["throughput"]
        if rates["samples_per_s"] is not None:
            samples.add_metric(name, rates["samples_per_s"])
        by_bytes.add_metric(name, rates["bytes_per_s"])
        age.add_metric(name, e["last_seen_s"])
        busy.add_metric(name, int(e["job_id"] is not None))
        files.add_metric(name, e["basecalled"]["files"])
    yield from (samples, by_bytes, age, busy, files)


def _counters(status: dict[str, Any]) -> Iterator[Metric]:
    counts = status["counters"]
    for key, doc in (
        ("lease_expiries", "Jobs whose lease expired (since the manager started)."),
        ("retries", "Files put back in the queue after a failure or an expired lease."),
        ("quarantines", "Files quarantined after max_attempts failures (since start)."),
        ("late_reports", "Reports from engines whose lease had already expired."),
    ):
        family = _counter(f"bcmanager_{key}", doc)
        family.add_metric([], counts[key])
        yield family


def _runs(status: dict[str, Any]) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "bcmanager_run_finished",
        "1 when every file found is basecalled or quarantined.",
        value=int(bool(status["finished"])),
    )
    state = _gauge(
        "bcmanager_run_state",
        "Each run (flow cell): 1 for its current state (the live generation's).",
        ["run", "state"],
    )
    files = _gauge(
        "bcmanager_run_files", "Files of each run by state (the live generation).", ["run", "state"]
    )
    for run in status["runs"]:
        for name in RUN_STATES:
            state.add_metric([run["run"], name], int(run["state"] == name))
        for file_state, n in run["files"].items():
            files.add_metric([run["run"], file_state], n)
    yield state
    yield files
    yield from _yields(status)


def _yields(status: dict[str, Any]) -> Iterator[Metric]:
    labels = ["run", "barcode", "generation"]
    families = {
        "reads": _gauge("bcmanager_yield_reads", "Reads basecalled per run and barcode.", labels),
        "bases": _gauge("bcmanager_yield_bases", "Bases basecalled per run and barcode.", labels),
        "n50": _gauge("bcmanager_yield_n50_bases", "Read length N50 per run and barcode.", labels),
        "mean_qscore": _gauge(
            "bcmanager_yield_mean_qscore", "Mean read qscore per run and barcode.", labels
        ),
        "pass_share": _gauge(
            "bcmanager_yield_pass_ratio", "Share of reads that pass, per run and barcode.", labels
        ),
    }
    for y in status.get("yields", []):
        for key, family in families.items():
            family.add_metric([y["run"], y["barcode"], y.get("generation", "")], y[key])
    yield from families.values()


def _service(status: dict[str, Any]) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "bcmanager_ledger_size_bytes",
        "Size of the ledger (SQLite file and write-ahead log).",
        value=status["ledger_bytes"],
    )
    scan = status.get("scan") or {}
    if "seconds" in scan:
        yield GaugeMetricFamily(
            "bcmanager_scan_duration_seconds",
            "How long the last full rescan of INPUT took.",
            value=scan["seconds"],
        )
    info = _gauge("bcmanager_build_info", "The bcmanager version (always 1).", ["version"])
    info.add_metric([__version__], 1)
    yield info
