"""`bcm report`: one self-contained HTML file about a run, from its ledger and its outputs.

Works while the manager runs and after it has stopped: the ledger is opened read-only.
The page has a summary table (files, reads, bases, time, throughput, retries,
quarantines, the exactly-once verdict of `bcmanager.verify`), per-engine and per-run
tables, and plots drawn by matplotlib as inline SVG (no network needed to view it):
throughput over time, an engine timeline, read-length and mean-quality distributions
from the FASTQ, and the latency from a pod5 being written to being basecalled.

FASTQ records and bases are counted exactly; the length and quality distributions use
up to `max_reads` records spread over all FASTQ files, so a three-day run's report
takes minutes, not hours.
"""

from __future__ import annotations

import gzip
import html
import io
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from bcmanager import __version__
from bcmanager.layout import Layout
from bcmanager.output.records import detect_format, open_alignments
from bcmanager.output.yields import Yield
from bcmanager.progress import nice_bucket
from bcmanager.runstats import FileTimes, JobSpan, LedgerReader, RunTotals

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from bcmanager.verify import VerifyReport

log = logging.getLogger("bcmanager.report")

_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)  # RDF links, a date: noise
MAX_READS = 200_000
MAX_SCATTER = 5000
_ERROR_P = 10 ** (-np.arange(94, dtype=np.float64) / 10)  # phred -> error probability
_JOB_COLOURS = {
    "done": "#2e9e5b",
    "merging": "#7cc49a",
    "assigned": "#3a7bd5",
    "failed": "#d64545",
    "expired": "#d89b1d",
    "late": "#a05a00",
    "released": "#9aa1aa",
}


# -- reading the outputs ------------------------------------------------------------------


@dataclass
class FastqStats:
    files: int = 0
    records: int = 0
    bases: int = 0
    lengths: list[int] = field(default_factory=list)  # a sample, see MAX_READS
    mean_q: list[float] = field(default_factory=list)

    @property
    def sampled(self) -> bool:
        return len(self.lengths) < self.records


def mean_quality(qual: bytes) -> float:
    """A read's mean quality as basecallers define it: phred of the mean error probability."""
    q = np.frombuffer(qual, dtype=np.uint8).astype(np.intp) - 33
    if q.size == 0:
        return 0.0
    p = _ERROR_P[np.clip(q, 0, 93)].mean()
    return float(-10 * math.log10(p))


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def scan_reads(paths: list[Path], max_reads: int = MAX_READS) -> FastqStats:
    """Count every record and base of BAM and (gzipped) FASTQ files; keep lengths and mean
    qualities of a spread sample."""
    stats = FastqStats(files=len(paths))
    per_file = max(1, max_reads // max(1, len(paths)))
    for path in paths:
        if detect_format(path) in ("bam", "sam"):
            _scan_bam(path, stats, per_file)
            continue
        taken = 0
        with _open(path) as fh:
            while True:
                header = fh.readline()
                if not header:
                    break
                seq = fh.readline().rstrip(b"\r\n")
                fh.readline()
                qual = fh.readline().rstrip(b"\r\n")
                stats.records += 1
                stats.bases += len(seq)
                if taken < per_file:
                    stats.lengths.append(len(seq))
                    stats.mean_q.append(mean_quality(qual))
                    taken += 1
    return stats


def _scan_bam(path: Path, stats: FastqStats, per_file: int) -> None:
    taken = 0
    with open_alignments(path) as handle:
        for segment in handle.fetch(until_eof=True):
            if segment.is_secondary or segment.is_supplementary:
                continue
            length = segment.query_length
            stats.records += 1
            stats.bases += length
            if taken < per_file:
                stats.lengths.append(length)
                qs = segment.get_tag("qs") if segment.has_tag("qs") else None
                quals = segment.query_qualities
                stats.mean_q.append(
                    float(qs)
                    if qs is not None
                    else mean_quality(bytes(q + 33 for q in quals) if quals is not None else b"")
                )
                taken += 1


# -- the numbers ------------------------------------------------------------------------


@dataclass
class ReportData:
    """Everything the report shows, gathered before anything is drawn."""

    input: Path | None
    output: Path
    ledger: Path
    files: list[FileTimes]
    jobs: list[JobSpan]
    runs: list[RunTotals]
    job_counts: dict[str, int]
    quarantined: list[tuple[str, str | None, int]]
    fastq: FastqStats
    yields: list[Yield]
    verify: VerifyReport | None
    verify_error: str | None = None
    created: float = field(default_factory=lambda: datetime.now(UTC).timestamp())

    def files_in(self, state: str) -> list[FileTimes]:
        return [f for f in self.files if f.state == state]

    def summary(self) -> dict[str, Any]:
        """The summary table's values (also what tests compare with verify and the ledger)."""
        done = self.files_in("done")
        counts = Counter(f.state for f in self.files)
        known = [f for f in done if f.reads is not None and f.samples is not None]
        starts = [j.created for j in self.jobs]
        ends = [f.done_at for f in done if f.done_at is not None]
        span = (max(ends) - min(starts)) if starts and ends else 0.0
        latencies = sorted(f.done_at - f.mtime for f in done if f.done_at is not None and f.mtime)
        retried = [f for f in self.files if f.attempts > 0]
        return {
            "files_written": len(self.files),
            "files_done": counts["done"],
            "files_quarantined": counts["quarantined"],
            "files_pending": counts["queued"] + counts["assigned"],
            "pod5_bytes": sum(f.size for f in self.files),
            "pod5_bytes_done": sum(f.size for f in done),
            "reads_ledger": sum(f.reads or 0 for f in known),
            "samples_ledger": sum(f.samples or 0 for f in known),
            "counts_known_files": len(known),
            "fastq_files": self.fastq.files,
            "fastq_records": self.fastq.records,
            "bases": self.fastq.bases,
            "first_discovered": min((f.discovered_at for f in self.files), default=None),
            "first_claim": min(starts, default=None),
            "last_done": max(ends, default=None),
            "basecalling_s": span,
            "samples_per_s": sum(f.samples or 0 for f in known) / span if span else 0.0,
            "bases_per_s": self.fastq.bases / span if span else 0.0,
            "files_per_h": len(done) * 3600 / span if span else 0.0,
            "jobs": dict(self.job_counts),
            "files_retried": len(retried),
            "failed_attempts": sum(f.attempts for f in retried),
            "latency_p50_s": _quantile(latencies, 0.5),
            "latency_p95_s": _quantile(latencies, 0.95),
            "latency_max_s": latencies[-1] if latencies else None,
            "exactly_once": None if self.verify is None else self.verify.ok,
        }


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(q * len(values)))]


def gather(
    output: Path,
    input_dir: Path | None = None,
    ledger: Path | None = None,
    verify: bool = True,
    max_reads: int = MAX_READS,
    workers: int | None = None,
) -> ReportData:
    """Read the ledger (read-only), the FASTQ and, with `verify`, check exactly-once."""
    output = Path(output)
    ledger = ledger or Layout(output, output).default_ledger_path()
    reader = LedgerReader(ledger)
    try:
        recorded = reader.meta("input")
        input_dir = input_dir or (Path(recorded) if recorded else None)
        files, jobs, runs = reader.files(), reader.jobs(), reader.runs()
        job_counts, quarantined = reader.job_counts(), reader.quarantined()
        yields = [Yield.from_dict(d) for d in reader.yield_totals()]
    finally:
        reader.close()
    from bcmanager.verify import output_read_files

    fastq = scan_reads(output_read_files(output), max_reads)
    data = ReportData(
        input_dir,
        output,
        ledger,
        files,
        jobs,
        runs,
        job_counts,
        quarantined,
        fastq,
        yields,
        None,
    )
    if verify:
        _verify(data, workers)
    return data


def _verify(data: ReportData, workers: int | None) -> None:
    from bcmanager.verify import verify_run

    if data.input is None or not data.input.is_dir():
        data.verify_error = f"input folder {data.input} not found; pass --input"
        return
    try:
        data.verify = verify_run(data.input, data.output, workers=workers)
    except Exception as exc:  # a report without the verdict beats no report
        log.exception("verify failed")
        data.verify_error = f"verify failed: {type(exc).__name__}: {exc}"


# -- the plots ----------------------------------------------------------------------------


def _figure(width: float = 9.0, height: float = 3.2) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def svg(fig: Figure) -> str:
    """The figure as an inline <svg> element (no XML prologue, text kept as text)."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "bcmanager"}):
        fig.savefig(buf, format="svg")
    text = buf.getvalue()
    return _METADATA.sub("", text[text.index("<svg") :])


def _time_unit(span_s: float) -> tuple[float, str]:
    if span_s <= 300:
        return 1.0, "s"
    if span_s <= 3 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def plot_throughput(data: ReportData, t0: float) -> str | None:
    done = [f for f in data.files_in("done") if f.done_at is not None]
    if not done:
        return None
    last = max(f.done_at or 0.0 for f in done)
    bucket = nice_bucket(last - t0, 120)
    scale, unit = _time_unit(last - t0)
    by_samples = all(f.samples is not None for f in done)
    sums: Counter[int] = Counter()
    files: Counter[int] = Counter()
    for f in done:
        b = int(((f.done_at or 0.0) - t0) // bucket)
        sums[b] += (f.samples or 0) if by_samples else f.size
        files[b] += 1
    xs = np.arange(0, max(sums) + 1)
    rate = np.array([sums[b] / bucket for b in xs])
    fig = _figure()
    ax = fig.add_subplot()
    ax.step((xs + 0.5) * bucket / scale, rate, where="mid", color="#3a7bd5")
    ax.fill_between((xs + 0.5) * bucket / scale, rate, step="mid", alpha=0.25, color="#3a7bd5")
    ax.set_xlabel(f"time since the first claim ({unit})")
    ax.set_ylabel("samples / s" if by_samples else "pod5 bytes / s")
    ax.set_title(f"Throughput ({bucket:g} s buckets)", loc="left")
    twin = ax.twinx()
    cumulative = np.concatenate([[0], np.cumsum([files[b] for b in xs])])
    twin.plot(np.arange(0, len(xs) + 1) * bucket / scale, cumulative, color="#2e9e5b")
    twin.set_ylim(bottom=0)
    twin.set_ylabel("files basecalled (cumulative)", color="#2e9e5b")
    return svg(fig)


def plot_engine_timeline(data: ReportData, t0: float) -> str | None:
    if not data.jobs:
        return None
    end = max((j.ended or data.created) for j in data.jobs)
    scale, unit = _time_unit(end - t0)
    engines = sorted({j.engine for j in data.jobs})
    row = {name: i for i, name in enumerate(engines)}
    fig = _figure(height=max(2.0, 0.8 + 0.32 * len(engines)))
    ax = fig.add_subplot()
    for state, colour in _JOB_COLOURS.items():
        jobs = [j for j in data.jobs if j.state == state]
        if not jobs:
            continue
        for name in engines:
            spans = [
                ((j.created - t0) / scale, max(((j.ended or end) - j.created) / scale, 1e-9))
                for j in jobs
                if j.engine == name
            ]
            if spans:
                ax.broken_barh(spans, (row[name] - 0.4, 0.8), color=colour, edgecolor="white")
        ax.bar(0, 0, color=colour, label=state)  # legend entry only
    ax.set_yticks(range(len(engines)), engines)
    ax.set_ylim(-0.6, len(engines) - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel(f"time since the first claim ({unit})")
    ax.set_title("Engine timeline: which engine ran which batch when", loc="left")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize="small")
    return svg(fig)


def plot_distributions(data: ReportData) -> str | None:
    stats = data.fastq
    if not stats.lengths:
        return None
    fig = _figure()
    left, right = fig.subplots(1, 2)
    lengths = np.asarray(stats.lengths)
    if lengths.max() > 20 * max(1, lengths.min()):
        bins = np.logspace(np.log10(max(1, lengths.min())), np.log10(lengths.max() + 1), 50)
        left.set_xscale("log")
    else:
        bins = np.linspace(lengths.min(), lengths.max() + 1, 50)
    left.hist(lengths, bins=bins, color="#3a7bd5")
    left.set_xlabel("read length (bases)")
    left.set_ylabel("reads")
    left.set_title("Read lengths", loc="left")
    right.hist(stats.mean_q, bins=40, color="#2e9e5b")
    right.set_xlabel("mean quality (phred of mean error probability)")
    right.set_title("Mean read quality", loc="left")
    if stats.sampled:
        fig.suptitle(f"{len(stats.lengths):,} of {stats.records:,} reads", fontsize="small")
    return svg(fig)


def plot_latency(data: ReportData, t0: float) -> str | None:
    pairs = [
        (f.mtime, f.done_at - f.mtime)
        for f in data.files_in("done")
        if f.done_at is not None and f.mtime
    ]
    if not pairs:
        return None
    latency = np.array([p[1] for p in pairs])
    written = np.array([p[0] for p in pairs])
    lat_scale, lat_unit = _time_unit(float(latency.max()))
    scale, unit = _time_unit(float(written.max() - written.min()))
    fig = _figure()
    left, right = fig.subplots(1, 2)
    left.hist(latency / lat_scale, bins=40, color="#d89b1d")
    left.set_xlabel(f"written to basecalled ({lat_unit})")
    left.set_ylabel("files")
    left.set_title("Latency", loc="left")
    step = max(1, len(pairs) // MAX_SCATTER)
    right.scatter(
        (written[::step] - written.min()) / scale, latency[::step] / lat_scale, s=6, alpha=0.6
    )
    right.set_xlabel(f"when the file was written ({unit} from the first)")
    right.set_ylabel(f"latency ({lat_unit})")
    right.set_title("Latency over the run", loc="left")
    return svg(fig)


# -- the page -----------------------------------------------------------------------------


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 120:
        return f"{seconds:.1f} s"
    if s < 3 * 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def _table(headers: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def verdict_of(data: ReportData) -> tuple[str, str]:
    """(css class, sentence) of the exactly-once check."""
    v = data.verify
    if v is None:
        return "unknown", f"not checked: {data.verify_error or 'skipped (--no-verify)'}"
    if v.ok:
        spared = f"; {len(v.quarantined)} quarantined file(s) excepted" if v.quarantined else ""
        return "pass", (
            f"PASS: all {v.input_reads:,} reads of {v.pod5_files:,} pod5 files are in exactly"
            f" one output record{spared}"
        )
    return "fail", (
        f"FAIL: {v.missing:,} missing, {v.duplicated:,} duplicated, {v.unexpected:,} unexpected,"
        f" {v.unreadable:,} unreadable pod5, {len(v.fastq_errors):,} bad FASTQ"
        " (run `bcm verify` for the details)"
    )


def summary_rows(data: ReportData) -> list[list[Any]]:
    s = data.summary()
    verdict = verdict_of(data)[1]
    counts_note = (
        ""
        if s["counts_known_files"] == s["files_done"]
        else f" (known for {s['counts_known_files']:,} of {s['files_done']:,} files)"
    )
    jobs = s["jobs"]
    return [
        [
            "files",
            f"{s['files_done']:,} basecalled of {s['files_written']:,} written;"
            f" {s['files_quarantined']:,} quarantined; {s['files_pending']:,} not yet done",
        ],
        ["pod5", f"{_si(s['pod5_bytes_done'], 'B')} of {_si(s['pod5_bytes'], 'B')}"],
        [
            "reads",
            f"{s['fastq_records']:,} records in {s['fastq_files']:,} BAM/FASTQ files;"
            f" ledger: {s['reads_ledger']:,} reads, {s['samples_ledger']:,} samples{counts_note}",
        ],
        ["bases", f"{s['bases']:,}"],
        [
            "time",
            f"{_dur(s['basecalling_s'])} from the first claim ({_when(s['first_claim'])})"
            f" to the last file basecalled ({_when(s['last_done'])})",
        ],
        [
            "throughput",
            f"{_si(s['samples_per_s'], 'samples/s')}, {_si(s['bases_per_s'], 'bases/s')},"
            f" {s['files_per_h']:,.1f} files/h",
        ],
        [
            "latency (written to basecalled)",
            f"median {_dur(s['latency_p50_s'])}, 95% {_dur(s['latency_p95_s'])},"
            f" max {_dur(s['latency_max_s'])}",
        ],
        [
            "retries",
            f"{s['files_retried']:,} file(s) needed another attempt ({s['failed_attempts']:,}"
            f" failed attempts); jobs: {jobs.get('failed', 0):,} failed,"
            f" {jobs.get('expired', 0) + jobs.get('late', 0):,} lease expired"
            f" ({jobs.get('late', 0):,} reported late), {jobs.get('released', 0):,} handed back",
        ],
        ["quarantines", f"{s['files_quarantined']:,}"],
        ["exactly once", verdict],
    ]


def engine_rows(data: ReportData) -> list[list[Any]]:
    by_engine: dict[str, list[JobSpan]] = {}
    for j in data.jobs:
        by_engine.setdefault(j.engine, []).append(j)
    rows = []
    for engine, jobs in sorted(by_engine.items()):
        states = Counter(j.state for j in jobs)
        busy = sum((j.ended or j.created) - j.created for j in jobs)
        done_files = sum(j.n_files for j in jobs if j.state == "done")
        rows.append(
            [
                engine,
                len(jobs),
                states["done"],
                states["failed"],
                states["expired"] + states["late"],
                done_files,
                _dur(busy),
                _when(min(j.created for j in jobs)),
            ]
        )
    return rows


def yield_rows(data: ReportData) -> list[list[Any]]:
    """Reads, bases, N50, mean qscore and pass share per run and barcode."""
    return [
        [
            y.run,
            y.barcode,
            f"{y.reads:,}",
            _si(y.bases, "b"),
            f"{y.n50:,}",
            f"{y.mean_qscore:.1f}",
            f"{100 * y.pass_share:.1f}%",
        ]
        for y in data.yields
    ]


def run_rows(data: ReportData) -> list[list[Any]]:
    rows = []
    for run in data.runs:
        total = run.total()
        done = run.by_state.get("done")
        rows.append(
            [
                run.run,
                run.state,
                f"{done.files if done else 0:,} / {total.files:,}",
                _si(total.bytes, "B"),
                _when(run.first_seen),
                _when(run.ended),
            ]
        )
    return rows


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2430;
max-width:1100px;margin:24px auto;padding:0 16px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:16px;margin-top:28px;border-bottom:1px solid
#e3e6ea;padding-bottom:4px} .meta{color:#6b7480;font-size:12px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums;margin:8px 0}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e3e6ea;vertical-align:top}
th{color:#6b7480;font-size:12px} table.summary td:first-child{font-weight:600;width:230px}
.verdict{padding:8px 12px;border-radius:6px;font-weight:600;margin:12px 0}
.verdict.pass{background:#e3f4ea;color:#1f6e3f} .verdict.fail{background:#fbe5e5;color:#9b2121}
.verdict.unknown{background:#f1f2f4;color:#555} figure{margin:12px 0} figure svg{max-width:100%;
height:auto} figcaption{color:#6b7480;font-size:12px} td.mono{font-family:ui-monospace,monospace}
"""


def render_html(data: ReportData) -> str:
    """The whole report page."""
    t0 = min((j.created for j in data.jobs), default=None) or min(
        (f.discovered_at for f in data.files), default=data.created
    )
    cls, verdict = verdict_of(data)
    plots = [
        ("throughput", "Throughput over time", plot_throughput(data, t0)),
        ("engines", "Engine timeline", plot_engine_timeline(data, t0)),
        ("reads", "Read lengths and mean qualities", plot_distributions(data)),
        ("latency", "From written to basecalled", plot_latency(data, t0)),
    ]
    figures = "".join(
        f'<figure id="plot-{key}">{svg_text}<figcaption>{html.escape(caption)}</figcaption></figure>'
        if svg_text
        else f'<p class="meta" id="plot-{key}">{html.escape(caption)}: no data yet.</p>'
        for key, caption, svg_text in plots
    )
    quarantine = (
        _table(["file", "reason", "attempts"], [list(q) for q in data.quarantined])
        if data.quarantined
        else "<p>None.</p>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bcmanager report: {html.escape(str(data.output))}</title>
<style>{_CSS}</style></head><body>
<h1>Basecalling report</h1>
<p class="meta">input {html.escape(str(data.input))} &rarr; output {html.escape(str(data.output))}<br>
ledger {html.escape(str(data.ledger))}; written {_when(data.created)} by bcmanager {__version__}</p>
<div class="verdict {cls}" id="verdict">{html.escape(verdict)}</div>
<h2>Summary</h2>
{_table(["", ""], summary_rows(data), "summary")}
<h2>Plots</h2>
{figures}
<h2>Engines</h2>
{_table(["engine", "jobs", "done", "failed", "expired", "files basecalled", "busy", "first claim"], engine_rows(data))}
<h2>Runs</h2>
{_table(["run", "state", "done / files", "pod5", "first file", "ended"], run_rows(data))}
<h2>Yield per run and barcode</h2>
{_table(["run folder", "barcode", "reads", "bases", "N50", "mean qscore", "pass"], yield_rows(data)) if data.yields else '<p class="meta" id="yield-none">No yield counted: engines that split their output (dorado, simulated) count it.</p>'}
<h2>Quarantined files</h2>
{quarantine}
</body></html>
"""


def write_report(data: ReportData, destination: Path) -> None:
    """Write atomically, so a reader never sees half a report."""
    tmp = destination.with_name(destination.name + ".tmp")
    tmp.write_text(render_html(data), encoding="utf-8")
    tmp.replace(destination)
