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

Model generations (`bcmanager.generations`) each basecall every file once, so totals are
never summed over them unless the key says so:

- `progress`, `eta_s` and `runs` are the live generation's: the run as the sequencer
  writes it, each pod5 once (its `written` is what INPUT holds);
- `generations[]` gives each generation its own `progress`, `throughput` (from the
  ledger's done times, since the batches the manager tells of carry no generation),
  `eta_s` and `share` (the fraction of its files done or quarantined);
- `throughput` and the engines' rates are the fleet's, every generation's batches;
  `all_generations` sums the generations (a file counts once per generation) with the
  fleet's ETA to drain every generation's queue.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bcmanager import stepwise
from bcmanager.reports import Happening
from bcmanager.runstats import ALL, LedgerReader, RunTotals, Totals
from bcmanager.states import FileState
from bcmanager.stepwise import Steps, blocking, mapped

if TYPE_CHECKING:
    from bcmanager.manager import Manager

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
        samples = sum(b.samples or 0 for b in recent)
        reads = sum(b.reads or 0 for b in recent)
        return rates_over(
            span,
            sum(b.files for b in recent),
            sum(b.bytes for b in recent),
            samples if all(b.samples is not None for b in recent) else None,
            reads if all(b.reads is not None for b in recent) else None,
        )


def rates_over(
    span: float, files: int, size: int, samples: int | None, reads: int | None
) -> dict[str, Any]:
    """The throughput dict of what was basecalled in the last `span` seconds (samples or
    reads None: not known for every file)."""

    def per_s(total: float) -> float:
        return round(total / span, 3) if span > 0 else 0.0

    return {
        "window_s": round(span, 1),
        "files_per_min": round(per_s(files) * 60, 3),
        "bytes_per_s": per_s(size),
        "samples_per_s": per_s(samples) if samples is not None else None,
        "reads_per_s": per_s(reads) if reads is not None else None,
        "basis": "samples" if samples is not None else "bytes",
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

    def engine_rates(self, engines: list[str], now: float) -> dict[str, dict[str, Any]]:
        """Each of `engines`' throughput: one pass, under the lock once (thousands of
        engines in every status)."""
        none_yet = _Window().rates(now, self.window_s)
        with self._lock:
            windows = {e: self._engines.get(e) for e in engines}
            return {
                e: dict(none_yet) if w is None else w.rates(now, self.window_s)
                for e, w in windows.items()
            }

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

    def runs_by_generation(
        self, counts: dict[int, dict[str, int]] | None = None
    ) -> dict[int, list[RunTotals]]:
        """Per-run totals of each generation (by id); `counts` (each generation's files by
        state, known live) tells when they are stale."""
        cached = self._cache.get("runs")
        stale = False
        if counts is not None and cached is not None and cached.value is not None:
            stale = any(
                _files_by_state(cached.value.get(gen, [])) != {s: n for s, n in by.items() if n}
                for gen, by in counts.items()
            )
        return self._cached("runs", lambda: self.reader().runs_by_generation(), stale)

    def engine_totals(self, done_files: int | None = None) -> dict[str, Totals]:
        """Basecalled per engine, every generation; stale when their sum is not
        `done_files` (known live)."""
        cached = self._cache.get("engines")
        stale = (
            done_files is not None
            and cached is not None
            and cached.value is not None
            and sum(t.files for t in cached.value.values()) != done_files
        )
        return self._cached("engines", lambda: self.reader().engine_totals(ALL), stale)

    def generation_rates(self, now: float) -> dict[int, dict[str, Any]]:
        """Each generation's throughput over the last `window_s`, from the ledger's done
        times (the manager's batch reports do not say which generation they were)."""
        return self._cached("generation_rates", lambda: self._generation_rates(now))

    def _generation_rates(self, now: float) -> dict[int, dict[str, Any]]:
        reader = self.reader()
        recent = reader.recent_done(now - self.window_s)
        out = {}
        for gen, started in reader.work_started().items():
            span = max(0.0, min(self.window_s, now - started))
            done = recent.get(gen, Totals())
            known = done.known_samples == done.files
            out[gen] = rates_over(
                span,
                done.files,
                done.bytes,
                done.samples if known else None,
                done.reads if done.known_reads == done.files else None,
            )
        return out

    def history(self) -> dict[str, Any]:
        """Basecalled per time bucket over the whole run (from the ledger's done times):
        `points` sums every generation, `generations` has each one's own."""
        return self._cached("history", self._history)

    def _history(self) -> dict[str, Any]:
        done = Totals()
        for runs in self.runs_by_generation().values():
            for run in runs:
                done.add(run.by_state.get("done", Totals()))
        if done.first_done_at is None or done.last_done_at is None:
            return {"bucket_s": 1.0, "basis": "bytes", "points": [], "generations": []}
        bucket = nice_bucket(done.last_done_at - done.first_done_at)
        timelines = self.reader().done_timelines(bucket)
        names = {g.id: g.name for g in self.reader().generations()}
        summed: dict[float, Totals] = {}
        for timeline in timelines.values():
            for t, v in timeline:
                summed.setdefault(t, Totals()).add(v)
        known = all(v.known_samples == v.files for v in summed.values())
        return {
            "bucket_s": bucket,
            "basis": "samples" if known else "bytes",
            "points": _points(sorted(summed.items())),
            "generations": [
                {"id": gen, "name": names.get(gen, str(gen)), "points": _points(timeline)}
                for gen, timeline in sorted(timelines.items())
            ],
        }

    # -- the status ---------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """`Manager.status()` with progress, throughput, ETA, runs, counters, engine rates,
        per generation where it matters (see the module docstring)."""
        return stepwise.run(self.status_steps())

    def status_steps(self) -> Steps[dict[str, Any]]:
        """`status`, a step at a time (`bcmanager.stepwise`): what `/v1/status` builds on
        the event loop."""
        status: dict[str, Any] = dict((yield from self.manager.status_steps()))
        now = float(status["now"])
        gens: list[dict[str, Any]] = list(status.get("generations") or [])
        counts = {int(g["id"]): g["files"] for g in gens}
        by_gen = yield from blocking(lambda: self.runs_by_generation(counts))
        rates = self.rates(now)
        gen_rates = yield from blocking(lambda: self.generation_rates(now))
        views = [
            _generation_view(g, by_gen.get(int(g["id"]), []), gen_rates.get(int(g["id"])))
            for g in gens
        ]
        live = next((v for v in views if v.get("live")), views[0] if views else None)
        status["generations"] = views
        status["progress"] = live["progress"] if live else _progress(Totals(), {})
        status["eta_s"] = live["eta_s"] if live else 0.0
        status["throughput"] = rates
        status["all_generations"] = _all_generations(by_gen, rates)
        # The manager's own run list (if any) may carry more, e.g. the final summary's name.
        theirs = {r.get("run"): r for r in status.get("runs") or [] if isinstance(r, dict)}
        live_runs = by_gen.get(int(live["id"]), []) if live else []
        status["runs"] = [{**theirs.get(r.run, {}), **_run_view(r)} for r in live_runs]
        status["counters"] = dict(self.counters)
        running = {int(j["job_id"]) for j in status.get("running_jobs", [])}
        yield None
        status["engines"] = yield from self._engines_view(
            status.get("engines", []), running, status["files"].get("done", 0), now
        )
        status["ledger_bytes"] = self.reader().size_bytes()
        return status

    def _engines_view(
        self, engines: list[dict[str, Any]], running: set[int], done_files: int, now: float
    ) -> Steps[list[dict[str, Any]]]:
        totals = yield from blocking(lambda: self.engine_totals(done_files))
        rates = self.engine_rates([e["engine"] for e in engines], now)
        yield None
        nothing = Totals().as_dict()

        def view(entry: dict[str, Any]) -> dict[str, Any]:
            name = entry["engine"]
            done = totals.get(name)
            # The manager remembers an engine's last job until its next report; a job
            # that has expired meanwhile is no longer the engine's current one.
            job_id = entry.get("job_id") if entry.get("job_id") in running else None
            return {
                **entry,
                "job_id": job_id,
                "throughput": rates[name],
                "basecalled": done.as_dict() if done else dict(nothing),
            }

        return (yield from mapped(engines, view))


def _files_by_state(runs: list[RunTotals]) -> dict[str, int]:
    seen: Counter[str] = Counter()
    for run in runs:
        for state, totals in run.by_state.items():
            seen[state] += totals.files
    return {s: n for s, n in seen.items() if n}


def _by_state(runs: list[RunTotals]) -> dict[str, Totals]:
    out: dict[str, Totals] = {}
    for run in runs:
        for state, totals in run.by_state.items():
            out.setdefault(state, Totals()).add(totals)
    return out


def _points(timeline: list[tuple[float, Totals]]) -> list[dict[str, Any]]:
    return [
        {"t": t, "files": v.files, "bytes": v.bytes, "reads": v.reads, "samples": v.samples}
        for t, v in timeline
    ]


def _generation_view(
    gen: dict[str, Any], runs: list[RunTotals], rates: dict[str, Any] | None
) -> dict[str, Any]:
    """One generation of `Manager.status()` with its progress, own rate, ETA and share."""
    by_state = _by_state(runs)
    written = Totals()
    for totals in by_state.values():
        written.add(totals)
    progress = _progress(written, by_state)
    throughput = rates or rates_over(0.0, 0, 0, None, None)
    return {
        **gen,
        "role": "live" if gen.get("live") else "backfill",
        "progress": progress,
        "throughput": throughput,
        "eta_s": _eta(by_state, throughput),
        "share": progress["fraction_done"],
    }


def _all_generations(by_gen: dict[int, list[RunTotals]], rates: dict[str, Any]) -> dict[str, Any]:
    """Every generation summed (a file once per generation) and the fleet's ETA for it."""
    by_state: dict[str, Totals] = {}
    for runs in by_gen.values():
        for state, totals in _by_state(runs).items():
            by_state.setdefault(state, Totals()).add(totals)
    written = Totals()
    for totals in by_state.values():
        written.add(totals)
    return {**_progress(written, by_state), "eta_s": _eta(by_state, rates)}


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
