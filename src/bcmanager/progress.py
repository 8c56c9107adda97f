"""What the run looks like right now: the data behind `/v1/status`, `/metrics`, the dashboard.

Two sources, each for what it does cheaply:

- the manager tells (`Manager.add_hearer`) of every finished batch, failure, expiry and
  late report; rates (samples/s, files/min, per engine) come from the batches of the
  last `window_s` seconds, kept in memory, and event counters count since this process
  started (Prometheus counters may reset on restart);
- totals per run and state (bytes, reads, samples) and the rate-over-time history come
  from the ledger file on a separate read-only connection, cached for a while that
  grows with what the query costs, so a million-file ledger is not scanned on every
  dashboard poll and the manager's lock is never held for it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bcmanager.manager import Happening, Manager
from bcmanager.runstats import LedgerReader, RunTotals, Totals
from bcmanager.states import FileState

WINDOW_S = 300.0  # rates are measured over the batches finished in this window
MIN_CACHE_S = 1.0
COST_FACTOR = 20  # a cached query is reused for COST_FACTOR times what it took to run
HISTORY_POINTS = 120
_NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)


CHEAP_S = 0.05  # a query this quick is rerun as soon as the file counts show it is stale


@dataclass
class _Cached:
    value: Any = None
    at: float = 0.0
    ttl: float = 0.0
    took: float = 0.0


@dataclass
class _Window:
    """Finished batches of the last WINDOW_S seconds, and when work began (this process)."""

    batches: deque[Happening] = field(default_factory=deque)
    started: float | None = None

    def add(self, h: Happening) -> None:
        began = h.at - h.seconds
        self.started = began if self.started is None else min(self.started, began)
        self.batches.append(h)

    def rates(self, now: float, window_s: float) -> dict[str, Any]:
        while self.batches and self.batches[0].at < now - window_s:
            self.batches.popleft()
        span = min(window_s, now - self.started) if self.started is not None else 0.0
        recent = list(self.batches)
        samples_known = all(b.samples is not None for b in recent)
        reads_known = all(b.reads is not None for b in recent)

        def per_s(total: float) -> float:
            return round(total / span, 3) if span > 0 else 0.0

        files = sum(b.files for b in recent)
        return {
            "window_s": round(span, 1),
            "files_per_min": round(per_s(files) * 60, 3),
            "bytes_per_s": per_s(sum(b.bytes for b in recent)),
            "samples_per_s": per_s(sum(b.samples or 0 for b in recent)) if samples_known else None,
            "reads_per_s": per_s(sum(b.reads or 0 for b in recent)) if reads_known else None,
            "basis": "samples" if samples_known else "bytes",
        }


def nice_bucket(span_s: float, points: int = HISTORY_POINTS) -> float:
    """The smallest round step that splits `span_s` into at most `points` buckets."""
    for step in _NICE_STEPS:
        if span_s / step <= points:
            return float(step)
    return float(_NICE_STEPS[-1])


class Progress:
    """Rates and totals of one manager's run; attach with `Progress(manager)`."""

    def __init__(
        self,
        manager: Manager,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.manager = manager
        self.window_s = window_s
        self.clock = clock or manager.clock
        self.counters: Counter[str] = Counter(
            {"lease_expiries": 0, "retries": 0, "quarantines": 0, "late_reports": 0}
        )
        self._all = _Window()
        self._engines: dict[str, _Window] = {}
        self._lock = threading.Lock()
        self._reader: LedgerReader | None = None
        self._cache: dict[str, _Cached] = {}
        self._cache_lock = threading.RLock()  # history() reads runs() while holding it
        manager.add_hearer(self.hear)

    # -- what the manager tells ---------------------------------------------------------

    def hear(self, h: Happening) -> None:
        with self._lock:
            if h.kind == "done":
                self._all.add(h)
                self._engines.setdefault(h.engine, _Window()).add(h)
            elif h.kind in ("failed", "expired"):
                self.counters["lease_expiries"] += h.kind == "expired"
                self.counters["retries"] += h.files - h.quarantined
                self.counters["quarantines"] += h.quarantined
            elif h.kind == "late":
                self.counters["late_reports"] += 1

    def rates(self, now: float) -> dict[str, Any]:
        with self._lock:
            return self._all.rates(now, self.window_s)

    def engine_rates(self, engine: str, now: float) -> dict[str, Any]:
        with self._lock:
            window = self._engines.get(engine)
            return (window or _Window()).rates(now, self.window_s)

    # -- what the ledger says (cached) --------------------------------------------------

    def reader(self) -> LedgerReader:
        if self._reader is None:
            self._reader = LedgerReader(self.manager.db.path)
        return self._reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _cached(self, key: str, compute: Callable[[], Any], stale: bool = False) -> Any:
        """`compute()` again once its last result is older than its cost allows, or at
        once when it is known to be `stale` and cheap to redo."""
        with self._cache_lock:
            entry = self._cache.setdefault(key, _Cached())
            expired = time.monotonic() - entry.at >= entry.ttl
            if entry.value is None or expired or (stale and entry.took < CHEAP_S):
                started = time.monotonic()
                entry.value = compute()
                entry.took = time.monotonic() - started
                entry.at = time.monotonic()
                entry.ttl = max(MIN_CACHE_S, COST_FACTOR * entry.took)
            return entry.value

    def runs(self, counts: dict[str, int] | None = None) -> list[RunTotals]:
        """Per-run totals; `counts` (files by state, known live) tells when they are stale."""
        cached = self._cache.get("runs")
        stale = False
        if counts is not None and cached is not None and cached.value is not None:
            seen: Counter[str] = Counter()
            for run in cached.value:
                for state, totals in run.by_state.items():
                    seen[state] += totals.files
            stale = any(seen[state] != n for state, n in counts.items())
        return self._cached("runs", lambda: self.reader().runs(), stale)

    def engine_totals(self, done_files: int | None = None) -> dict[str, Totals]:
        """Basecalled per engine; stale when their sum is not `done_files` (known live)."""
        cached = self._cache.get("engines")
        stale = (
            done_files is not None
            and cached is not None
            and cached.value is not None
            and sum(t.files for t in cached.value.values()) != done_files
        )
        return self._cached("engines", lambda: self.reader().engine_totals(), stale)

    def history(self) -> dict[str, Any]:
        """Basecalled per time bucket over the whole run (from the ledger's done times)."""
        return self._cached("history", self._history)

    def _history(self) -> dict[str, Any]:
        done = Totals()
        for run in self.runs():
            done.add(run.by_state.get("done", Totals()))
        if done.first_done_at is None or done.last_done_at is None:
            return {"bucket_s": 1.0, "basis": "bytes", "points": []}
        bucket = nice_bucket(done.last_done_at - done.first_done_at)
        timeline = self.reader().done_timeline(bucket)
        known = all(t.known_samples == t.files for _, t in timeline)
        points = [
            {"t": t, "files": v.files, "bytes": v.bytes, "reads": v.reads, "samples": v.samples}
            for t, v in timeline
        ]
        return {"bucket_s": bucket, "basis": "samples" if known else "bytes", "points": points}

    # -- the status ---------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """`Manager.status()` with progress, throughput, ETA, runs, counters, engine rates."""
        status: dict[str, Any] = dict(self.manager.status())
        now = float(status["now"])
        runs = self.runs(status.get("files"))
        by_state: dict[str, Totals] = {}
        for run in runs:
            for state, totals in run.by_state.items():
                by_state.setdefault(state, Totals()).add(totals)
        written = Totals()
        for totals in by_state.values():
            written.add(totals)
        rates = self.rates(now)
        status["progress"] = _progress(written, by_state)
        status["throughput"] = rates
        status["eta_s"] = _eta(by_state, rates)
        # The manager's own run list (if any) may carry more, e.g. the final summary's name.
        theirs = {r.get("run"): r for r in status.get("runs") or [] if isinstance(r, dict)}
        status["runs"] = [{**theirs.get(r.run, {}), **_run_view(r)} for r in runs]
        status["counters"] = dict(self.counters)
        running = {int(j["job_id"]) for j in status.get("running_jobs", [])}
        status["engines"] = self._engines_view(
            status.get("engines", []), running, status["files"].get("done", 0), now
        )
        status["ledger_bytes"] = self.reader().size_bytes()
        return status

    def _engines_view(
        self, engines: list[dict[str, Any]], running: set[int], done_files: int, now: float
    ) -> list[dict[str, Any]]:
        totals = self.engine_totals(done_files)
        out = []
        for entry in engines:
            name = entry["engine"]
            done = totals.get(name)
            # The manager remembers an engine's last job until its next report; a job
            # that has expired meanwhile is no longer the engine's current one.
            job_id = entry.get("job_id") if entry.get("job_id") in running else None
            out.append(
                {
                    **entry,
                    "job_id": job_id,
                    "throughput": self.engine_rates(name, now),
                    "basecalled": done.as_dict() if done else Totals().as_dict(),
                }
            )
        return out


def _progress(written: Totals, by_state: dict[str, Totals]) -> dict[str, Any]:
    done = by_state.get("done", Totals())
    ended = done.files + by_state.get("quarantined", Totals()).files
    return {
        "written": written.as_dict(),
        "done": done.as_dict(),
        "quarantined": by_state.get("quarantined", Totals()).as_dict(),
        "remaining": {
            "files": sum(by_state.get(s, Totals()).files for s in ("queued", "assigned")),
            "bytes": sum(by_state.get(s, Totals()).bytes for s in ("queued", "assigned")),
        },
        "fraction_done": round(ended / written.files, 4) if written.files else 0.0,
        "fraction_bytes_done": round(done.bytes / written.bytes, 4) if written.bytes else 0.0,
    }


def _eta(by_state: dict[str, Totals], rates: dict[str, Any]) -> float | None:
    """Seconds to basecall what has been written so far at the current rate (None: no rate)."""
    remaining = sum(by_state.get(s, Totals()).bytes for s in ("queued", "assigned"))
    if remaining == 0:
        return 0.0
    speed = rates["bytes_per_s"]
    return round(remaining / speed, 1) if speed > 0 else None


def _run_view(run: RunTotals) -> dict[str, Any]:
    total = run.total()
    return {
        "run": run.run,
        "state": run.state,
        "first_seen": run.first_seen,
        "ended": run.ended,
        "files": {s.value: run.by_state.get(s.value, Totals()).files for s in FileState},
        "written": total.as_dict(),
        "done": run.by_state.get("done", Totals()).as_dict(),
    }
