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

Model generations (`bcmanager.generations`): every number, table and verdict is per
generation, each from its own rows of the ledger and its own tree under OUTPUT; nothing
is summed over them. The throughput plot draws one line per generation, the latency
plot is the live generation's (a backfill's latency is only when it was scheduled).
A run that only ever had the implicit generation reads as before generations existed.
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
from bcmanager.errors import ConfigError
from bcmanager.generations import Generation
from bcmanager.layout import Layout
from bcmanager.output.yields import Yield
from bcmanager.progress import nice_bucket
from bcmanager.records import detect_format, open_alignments
from bcmanager.runstats import ALL, FileTimes, JobSpan, LedgerReader, RunTotals

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
class GenerationData:
    """One model generation of the run: its files, jobs and runs in the ledger, the reads
    in its tree and its exactly-once verdict."""

    gen: Generation
    files: list[FileTimes]
    jobs: list[JobSpan]
    runs: list[RunTotals]
    job_counts: dict[str, int]
    quarantined: list[tuple[str, str | None, int]]
    fastq: FastqStats
    yields: list[Yield]
    # large files handed out in slices: (files, slices, files not done yet)
    sliced: tuple[int, int, int] = (0, 0, 0)
    verify: VerifyReport | None = None
    verify_error: str | None = None

    @property
    def name(self) -> str:
        return self.gen.name

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
            "generation": self.gen.name,
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


@dataclass
class ReportData:
    """Everything the report shows, gathered before anything is drawn: the run's jobs
    and each model generation's own numbers (the live generation first)."""

    input: Path | None
    output: Path
    ledger: Path
    jobs: list[JobSpan]  # every generation's
    generations: list[GenerationData]
    created: float = field(default_factory=lambda: datetime.now(UTC).timestamp())

    @property
    def live(self) -> GenerationData:
        """The live generation (or the first one reported, with `--generation`)."""
        return next((g for g in self.generations if g.gen.is_live), self.generations[0])

    @property
    def by_generation(self) -> bool:
        """More than the implicit generation: tables and verdicts name theirs."""
        return len(self.generations) > 1 or any(g.gen.model for g in self.generations)

    # The live generation's, as they were before generations existed.
    @property
    def files(self) -> list[FileTimes]:
        return self.live.files

    @property
    def runs(self) -> list[RunTotals]:
        return self.live.runs

    @property
    def fastq(self) -> FastqStats:
        return self.live.fastq

    @property
    def yields(self) -> list[Yield]:
        return self.live.yields

    @property
    def verify(self) -> VerifyReport | None:
        return self.live.verify

    def files_in(self, state: str) -> list[FileTimes]:
        return self.live.files_in(state)

    def summary(self) -> dict[str, Any]:
        """The live generation's summary (`summaries()` has every generation's)."""
        return self.live.summary()

    def summaries(self) -> dict[str, dict[str, Any]]:
        return {g.name: g.summary() for g in self.generations}


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
    generations: list[str] | None = None,
) -> ReportData:
    """Read the ledger (read-only), each generation's reads and, with `verify`, check
    exactly-once per generation. `generations`: the names to report (default: all)."""
    output = Path(output)
    ledger = ledger or Layout(output, output).default_ledger_path()
    reader = LedgerReader(ledger)
    try:
        recorded = reader.meta("input")
        input_dir = input_dir or (Path(recorded) if recorded else None)
        jobs = reader.jobs(ALL)
        gens = _chosen(reader.generations(), generations)
        yields = reader.yield_totals()
        data = ReportData(
            input_dir,
            output,
            ledger,
            jobs,
            [_generation_data(reader, gen, output, yields, max_reads) for gen in gens],
        )
    finally:
        reader.close()
    if verify:
        for gen in data.generations:
            _verify(data, gen, workers)
    return data


def _chosen(known: list[Generation], names: list[str] | None) -> list[Generation]:
    if not names:
        return known
    unknown = sorted(set(names) - {g.name for g in known})
    if unknown:
        held = ", ".join(g.name for g in known)
        raise ConfigError(f"no generation {', '.join(unknown)} in the ledger; it holds {held}")
    return [g for g in known if g.name in names]


def _generation_data(
    reader: LedgerReader, gen: Generation, output: Path, yields: list[dict], max_reads: int
) -> GenerationData:
    from bcmanager.verify import output_read_files

    return GenerationData(
        gen,
        reader.files(gen.id),
        reader.jobs(gen.id),
        reader.runs(gen.id),
        reader.job_counts(gen.id),
        reader.quarantined(gen.id),
        scan_reads(output_read_files(output / gen.output_root), max_reads),
        [Yield.from_dict(y) for y in yields if y["gen"] == gen.id],
        reader.slice_totals(gen.id),
    )


def _verify(data: ReportData, gen: GenerationData, workers: int | None) -> None:
    from bcmanager.verify import verify_run

    if data.input is None or not data.input.is_dir():
        gen.verify_error = f"input folder {data.input} not found; pass --input"
        return
    try:
        gen.verify = verify_run(
            data.input,
            data.output,
            workers=workers,
            generation=gen.name if gen.gen.output_root else None,
        )
    except Exception as exc:  # a report without the verdict beats no report
        log.exception("verify of generation %s failed", gen.name)
        gen.verify_error = f"verify failed: {type(exc).__name__}: {exc}"


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


_GEN_COLOURS = ("#3a7bd5", "#2e9e5b", "#d89b1d", "#8e44ad", "#d64545", "#16a2b8")


def plot_throughput(data: ReportData, t0: float) -> str | None:
    """Basecalling rate and cumulative files over time, one line per generation."""
    done = {
        g.name: [f for f in g.files_in("done") if f.done_at is not None] for g in data.generations
    }
    everything = [f for files in done.values() for f in files]
    if not everything:
        return None
    last = max(f.done_at or 0.0 for f in everything)
    bucket = nice_bucket(last - t0, 120)
    scale, unit = _time_unit(last - t0)
    by_samples = all(f.samples is not None for f in everything)
    fig = _figure()
    ax = fig.add_subplot()
    twin = ax.twinx()
    several = len(data.generations) > 1
    for i, (name, files) in enumerate(done.items()):
        colour = _GEN_COLOURS[i % len(_GEN_COLOURS)]
        # one generation: the rate in blue, its cumulative files in green, as ever
        style = (colour, colour, "--") if several else ("#3a7bd5", "#2e9e5b", "-")
        if files:
            _throughput_line(ax, twin, files, (t0, bucket, scale), by_samples, name, style)
    ax.set_xlabel(f"time since the first claim ({unit})")
    ax.set_ylabel("samples / s" if by_samples else "pod5 bytes / s")
    ax.set_title(f"Throughput ({bucket:g} s buckets)", loc="left")
    twin.set_ylim(bottom=0)
    twin.set_ylabel("files basecalled (cumulative)", color="#2e9e5b")
    if several:
        ax.legend(loc="upper left", frameon=False, fontsize="small")
    return svg(fig)


def _throughput_line(
    ax: Any,
    twin: Any,
    files: list[FileTimes],
    axis: tuple[float, float, float],
    by_samples: bool,
    name: str,
    style: tuple[str, str, str],
) -> None:
    """One generation's rate (filled steps) and its cumulative files (on `twin`);
    `axis`: (time zero, bucket width, seconds per x unit); `style`: (rate colour,
    cumulative colour, cumulative line style)."""
    t0, bucket, scale = axis
    colour, cumulative_colour, linestyle = style
    sums: Counter[int] = Counter()
    counts: Counter[int] = Counter()
    for f in files:
        b = int(((f.done_at or 0.0) - t0) // bucket)
        sums[b] += (f.samples or 0) if by_samples else f.size
        counts[b] += 1
    xs = np.arange(0, max(sums) + 1)
    rate = np.array([sums[b] / bucket for b in xs])
    ax.step((xs + 0.5) * bucket / scale, rate, where="mid", color=colour, label=name)
    ax.fill_between((xs + 0.5) * bucket / scale, rate, step="mid", alpha=0.25, color=colour)
    cumulative = np.concatenate([[0], np.cumsum([counts[b] for b in xs])])
    twin.plot(
        np.arange(0, len(xs) + 1) * bucket / scale,
        cumulative,
        color=cumulative_colour,
        linestyle=linestyle,
    )


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
    """Read lengths and mean qualities, overlaid per generation where there are several."""
    sampled = [g for g in data.generations if g.fastq.lengths]
    if not sampled:
        return None
    fig = _figure()
    left, right = fig.subplots(1, 2)
    lengths = np.concatenate([np.asarray(g.fastq.lengths) for g in sampled])
    if lengths.max() > 20 * max(1, lengths.min()):
        bins = np.logspace(np.log10(max(1, lengths.min())), np.log10(lengths.max() + 1), 50)
        left.set_xscale("log")
    else:
        bins = np.linspace(lengths.min(), lengths.max() + 1, 50)
    several = len(sampled) > 1
    for i, g in enumerate(sampled):
        style: dict[str, Any] = (
            {"histtype": "step", "color": _GEN_COLOURS[i % len(_GEN_COLOURS)], "label": g.name}
            if several
            else {}
        )
        left.hist(g.fastq.lengths, bins=bins, **({"color": "#3a7bd5"} | style))
        right.hist(g.fastq.mean_q, bins=40, **({"color": "#2e9e5b"} | style))
    left.set_xlabel("read length (bases)")
    left.set_ylabel("reads")
    left.set_title("Read lengths", loc="left")
    right.set_xlabel("mean quality (phred of mean error probability)")
    right.set_title("Mean read quality", loc="left")
    if several:
        right.legend(frameon=False, fontsize="small")
    notes = [
        f"{g.name + ': ' if several else ''}{len(g.fastq.lengths):,} of {g.fastq.records:,} reads"
        for g in sampled
        if g.fastq.sampled
    ]
    if notes:
        fig.suptitle("; ".join(notes), fontsize="small")
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


def verdict_of(gen: GenerationData) -> tuple[str, str]:
    """(css class, sentence) of a generation's exactly-once check."""
    v = gen.verify
    if v is None:
        return "unknown", f"not checked: {gen.verify_error or 'skipped (--no-verify)'}"
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


def verdicts(data: ReportData) -> list[tuple[str, str]]:
    """(css class, sentence) per generation, the sentence naming it where there are more
    than the implicit one."""
    out = []
    for gen in data.generations:
        cls, sentence = verdict_of(gen)
        out.append((cls, f"{gen.name}: {sentence}" if data.by_generation else sentence))
    return out


def summary_rows(gen: GenerationData) -> list[list[Any]]:
    s = gen.summary()
    verdict = verdict_of(gen)[1]
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
        *_sliced_row(gen.sliced),
        ["exactly once", verdict],
    ]


def _sliced_row(sliced: tuple[int, int, int]) -> list[list[Any]]:
    """Large files handed out in slices (`--slice-above`), when there were any."""
    files, pieces, going = sliced
    if not files:
        return []
    text = f"{files:,} large file(s) basecalled in {pieces:,} slices"
    return [["slices", text + (f"; {going:,} still going out" if going else "")]]


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


def _role(gen: Generation) -> str:
    return "live" if gen.is_live else "backfill"


def _recipe(gen: Generation) -> str:
    """The model and its options, without the name (`Generation.describe`)."""
    return gen.describe().removeprefix(f"{gen.name}: ")


def generation_rows(data: ReportData) -> list[list[Any]]:
    """Each generation: role, recipe, tree, files, reads, when it last basecalled, verdict."""
    rows = []
    for gen in data.generations:
        s = gen.summary()
        rows.append(
            [
                gen.name,
                _role(gen.gen),
                _recipe(gen.gen),
                gen.gen.output_root or ".",
                f"{s['files_done']:,} / {s['files_written']:,}",
                f"{s['files_quarantined']:,}",
                f"{s['files_pending']:,}",
                f"{s['fastq_records']:,}",
                f"{s['bases']:,}",
                _when(s["last_done"]),
                verdict_of(gen)[0].upper(),
            ]
        )
    return rows


def _per_generation(data: ReportData, rows: list[tuple[str, list[Any]]]) -> list[list[Any]]:
    """Rows led by their generation's name where there is more than the implicit one."""
    return [[name, *row] if data.by_generation else row for name, row in rows]


def _headers(data: ReportData, headers: list[str]) -> list[str]:
    return ["generation", *headers] if data.by_generation else headers


def yield_rows(data: ReportData) -> list[list[Any]]:
    """Reads, bases, N50, mean qscore and pass share per generation, run and barcode."""
    return _per_generation(
        data,
        [
            (
                gen.name,
                [
                    y.run,
                    y.barcode,
                    f"{y.reads:,}",
                    _si(y.bases, "b"),
                    f"{y.n50:,}",
                    f"{y.mean_qscore:.1f}",
                    f"{100 * y.pass_share:.1f}%",
                ],
            )
            for gen in data.generations
            for y in gen.yields
        ],
    )


def run_rows(data: ReportData) -> list[list[Any]]:
    """Each run's state and files done per generation."""
    rows = []
    for gen in data.generations:
        for run in gen.runs:
            total = run.total()
            done = run.by_state.get("done")
            row = [
                run.run,
                run.state,
                f"{done.files if done else 0:,} / {total.files:,}",
                _si(total.bytes, "B"),
                _when(run.first_seen),
                _when(run.ended),
            ]
            rows.append((gen.name, row))
    return _per_generation(data, rows)


def quarantine_rows(data: ReportData) -> list[list[Any]]:
    return _per_generation(
        data, [(gen.name, list(q)) for gen in data.generations for q in gen.quarantined]
    )


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2430;
max-width:1100px;margin:24px auto;padding:0 16px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:16px;margin-top:28px;border-bottom:1px solid
#e3e6ea;padding-bottom:4px} h3{font-size:14px;margin:16px 0 4px} .meta{color:#6b7480;font-size:12px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums;margin:8px 0}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e3e6ea;vertical-align:top}
th{color:#6b7480;font-size:12px} table.summary td:first-child{font-weight:600;width:230px}
.verdict{padding:8px 12px;border-radius:6px;font-weight:600;margin:12px 0}
.verdict.pass{background:#e3f4ea;color:#1f6e3f} .verdict.fail{background:#fbe5e5;color:#9b2121}
.verdict.unknown{background:#f1f2f4;color:#555} figure{margin:12px 0} figure svg{max-width:100%;
height:auto} figcaption{color:#6b7480;font-size:12px} td.mono{font-family:ui-monospace,monospace}
"""


def _verdict_html(data: ReportData) -> str:
    """One verdict per generation; the first (the live one) keeps the id `verdict`."""
    out = []
    for i, (gen, (cls, sentence)) in enumerate(zip(data.generations, verdicts(data), strict=True)):
        ident = "verdict" if i == 0 else f"verdict-{gen.name}"
        out.append(
            f'<div class="verdict {cls}" id="{html.escape(ident)}">{html.escape(sentence)}</div>'
        )
    return "\n".join(out)


def _summaries_html(data: ReportData) -> str:
    if not data.by_generation:
        return _table(["", ""], summary_rows(data.live), "summary")
    return "\n".join(
        f'<h3 id="summary-{html.escape(gen.name)}">{html.escape(gen.name)}'
        f" ({_role(gen.gen)}): {html.escape(_recipe(gen.gen))}</h3>\n"
        + _table(["", ""], summary_rows(gen), "summary")
        for gen in data.generations
    )


def _generations_html(data: ReportData) -> str:
    if not data.by_generation:
        return ""
    headers = ["generation", "role", "model", "tree", "done / files", "quarantined", "pending"]
    headers += ["records", "bases", "last basecalled", "exactly once"]
    return "<h2>Generations</h2>\n" + _table(headers, generation_rows(data), "generations")


def _figures_html(data: ReportData, t0: float) -> str:
    latency = "From written to basecalled"
    if data.by_generation:
        latency += f" (the live generation, {data.live.name})"
    plots = [
        ("throughput", "Throughput over time", plot_throughput(data, t0)),
        ("engines", "Engine timeline", plot_engine_timeline(data, t0)),
        ("reads", "Read lengths and mean qualities", plot_distributions(data)),
        ("latency", latency, plot_latency(data, t0)),
    ]
    return "".join(
        f'<figure id="plot-{key}">{svg_text}<figcaption>{html.escape(caption)}</figcaption></figure>'
        if svg_text
        else f'<p class="meta" id="plot-{key}">{html.escape(caption)}: no data yet.</p>'
        for key, caption, svg_text in plots
    )


def render_html(data: ReportData) -> str:
    """The whole report page."""
    t0 = min((j.created for j in data.jobs), default=None) or min(
        (f.discovered_at for f in data.files), default=data.created
    )
    quarantined = quarantine_rows(data)
    quarantine = (
        _table(_headers(data, ["file", "reason", "attempts"]), quarantined)
        if quarantined
        else "<p>None.</p>"
    )
    yields = yield_rows(data)
    yield_title = (
        "Yield per generation, run and barcode"
        if data.by_generation
        else "Yield per run and barcode"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bcmanager report: {html.escape(str(data.output))}</title>
<style>{_CSS}</style></head><body>
<h1>Basecalling report</h1>
<p class="meta">input {html.escape(str(data.input))} &rarr; output {html.escape(str(data.output))}<br>
ledger {html.escape(str(data.ledger))}; written {_when(data.created)} by bcmanager {__version__}</p>
{_verdict_html(data)}
{_generations_html(data)}
<h2>Summary</h2>
{_summaries_html(data)}
<h2>Plots</h2>
{_figures_html(data, t0)}
<h2>Engines</h2>
{_table(["engine", "jobs", "done", "failed", "expired", "files basecalled", "busy", "first claim"], engine_rows(data))}
<h2>Runs</h2>
{_table(_headers(data, ["run", "state", "done / files", "pod5", "first file", "ended"]), run_rows(data))}
<h2>{yield_title}</h2>
{_table(_headers(data, ["run folder", "barcode", "reads", "bases", "N50", "mean qscore", "pass"]), yields) if yields else '<p class="meta" id="yield-none">No yield counted: engines that split their output (dorado, simulated) count it.</p>'}
<h2>Quarantined files</h2>
{quarantine}
</body></html>
"""


def write_report(data: ReportData, destination: Path) -> None:
    """Write atomically, so a reader never sees half a report."""
    tmp = destination.with_name(destination.name + ".tmp")
    tmp.write_text(render_html(data), encoding="utf-8")
    tmp.replace(destination)
