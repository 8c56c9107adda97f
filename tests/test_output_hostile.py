"""Hostile and odd run metadata through the real basecall and filing (issue 22).

Each example writes real pod5 files whose run metadata is drawn from what breaks
names: protocol run ids that share their first 8 hex digits without being random
(`00000000-0000-0000-0000-000000000001`, `...0002`, as converted or hand-made data
have them), one acquisition under several protocol runs, several flow cells in one
folder, empty ids, flow cell ids with `/`, `..`, spaces and non-ASCII characters, and
ids that differ only in what `naming.safe` maps alike (`a/b`, `a-b`, `a b`). The real
simulated basecaller (a subprocess) calls them into Dorado-like BAM and FASTQ, which
is filed both from the finished file (`file_native_output`) and as a stream
(`stream_filing`), as the engine files it. Then, in every case:

- every read of the pod5 files is in the filed output exactly once (`bcm verify`'s
  reader, split reads counted for their parent);
- every output reads to its end when read strictly (BAM: pysam with its truncation
  check, every record; FASTQ: gzip to its end, well-formed records);
- everything written lies inside the job's output folder: no `..`, no absolute path,
  no link, nothing next to it or in INPUT;
- no output file (reads or summary fragment) holds reads of two runs, a run being a
  (flow cell, protocol run id, acquisition id) triple: so two runs never share a
  file name; a BAM's header holds only its own acquisition's read groups.

MinKNOW's own ids are random (a version 4 UUID, or 40 hex digits), and two of those
that share their first 8 characters may still share a name (the one documented
residual of `naming`): random ids here are drawn so that they do not.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import tempfile
import uuid
from collections import Counter
from itertools import combinations
from pathlib import Path

import pysam
from hypothesis import HealthCheck, Phase, assume, example, given, note, settings
from hypothesis import strategies as st

from bcmanager.basecallers.simulated import (
    KIT_BARCODES,
    SimulatedBasecaller,
    read_group_id,
    resolve_model,
)
from bcmanager.layout import link_name
from bcmanager.output import naming
from bcmanager.output.filing import file_native_output, finish_stream_filing, stream_filing
from bcmanager.output.naming import RunIds
from bcmanager.output.summary import read_summary
from bcmanager.verify import output_read_ids
from tests.helpers import run_invocation, write_run_pod5

JOB_ID = 7
KIT = "SQK-NBD114-24"
MIN_QSCORE = 9
MODEL = "hac"
READS_PER_FILE = 3
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
READ_SUFFIXES = {"bam": ".bam", "fastq": ".fastq.gz"}
SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")
# The shapes of MinKNOW's random ids (see the module docstring)
RANDOM_ID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}|[0-9a-f]{40}"
)


def random_uuid(n: int) -> str:
    """A version 4 UUID as MinKNOW draws one, the same for the same `n`."""
    return str(uuid.UUID(bytes=hashlib.sha256(b"uuid4-%d" % n).digest()[:16], version=4))


def random_sha1(n: int) -> str:
    """A 40-hex acquisition id as MinKNOW's SHA-1 ones, the same for the same `n`."""
    return hashlib.sha1(b"acquisition-%d" % n).hexdigest()


# Protocol run ids: not random, sharing their first 8 characters (the issue's shape)
PREFIX_SHARING = tuple(f"00000000-0000-0000-0000-{n:012d}" for n in (1, 2, 3, 10))
FLOW_CELLS = (
    "PAK00000",
    "PAW11111",
    "PAK00000 ",  # safe() drops the trailing space: PAK00000
    "",
    "a/b",  # a/b, a-b, a b: all `a-b` once made safe
    "a-b",
    "a b",
    "a_b",
    "a.b",
    "..",
    "../..",
    "/",
    "/etc",
    "ü",
    "PA/K 01ü",  # slash, space and non-ASCII at once
    "../PAK00000/..",
)
PROTOCOL_RUN_IDS = (
    *PREFIX_SHARING,
    "run1",
    "run1x",
    "",
    "p/1",
    "p-1",
    "p 1",
    "..",
    "/",
)
ACQUISITION_IDS = (  # no `_`: a read group is `<acquisition>_<model>`
    "00000000-0000-0000-0000-0000000000a0",
    "00000000-0000-0000-0000-0000000000a1",
    "acq1",
    "acq1x",
    "",
    "r/1",
    "r-1",
    "r 1",
    "..",
)
FOLDERS = ("", "", "loose/", "exp/pod5/")  # INPUT-relative; mostly flat

random_uuids = st.integers(0, 2**20).map(random_uuid)
protocol_run_ids = st.one_of(st.sampled_from(PROTOCOL_RUN_IDS), random_uuids)
acquisition_ids = st.one_of(
    st.sampled_from(ACQUISITION_IDS), random_uuids, st.integers(0, 2**20).map(random_sha1)
)


@st.composite
def runs(draw: st.DrawFn) -> list[tuple[str, RunIds]]:
    """2 to 6 pod5 files as (INPUT-relative path, run), their runs drawn from a few flow
    cells, protocol runs and acquisitions, so that they share parts of their ids."""
    flow_cells = draw(st.lists(st.sampled_from(FLOW_CELLS), min_size=1, max_size=3, unique=True))
    protocols = draw(st.lists(protocol_run_ids, min_size=1, max_size=4, unique=True))
    acquisitions = draw(st.lists(acquisition_ids, min_size=1, max_size=2, unique=True))
    files = []
    for i in range(draw(st.integers(2, 6))):
        ids = RunIds(
            draw(st.sampled_from(flow_cells)),
            draw(st.sampled_from(protocols)),
            draw(st.sampled_from(acquisitions)),
        )
        files.append((f"{draw(st.sampled_from(FOLDERS))}f{i:02d}.pod5", ids))
    return files


def documented_residual(ids: list[str]) -> bool:
    """Two different random ids sharing their first 8 characters (see the docstring)."""
    randoms = {i for i in ids if RANDOM_ID.fullmatch(i)}
    return any(a[:8] == b[:8] for a, b in combinations(sorted(randoms), 2))


def issue_22(n: int) -> list[tuple[str, RunIds]]:
    """The issue's run: one flow cell, one acquisition, a protocol run id per file."""
    acquisition = random_uuid(22)
    return [
        (f"f{i:02d}.pod5", RunIds("PAK00000", f"00000000-0000-0000-0000-{i:012d}", acquisition))
        for i in range(1, n + 1)
    ]


# -- reading the outputs strictly ------------------------------------------------------


def read_bam(path: Path) -> tuple[dict, list[tuple[str, str, str]]]:
    """(header, [(read id, parent read id, read group)]) of a BAM read to its end;
    raises if it is truncated or garbled."""
    assert path.read_bytes()[-len(BGZF_EOF) :] == BGZF_EOF, f"{path.name}: no BGZF EOF block"
    with pysam.AlignmentFile(str(path), "rb", check_sq=False, ignore_truncation=False) as bam:
        bam.check_truncation()
        header = bam.header.to_dict()
        records = [
            (
                r.query_name,
                str(r.get_tag("pi")) if r.has_tag("pi") else r.query_name,
                str(r.get_tag("RG")),
            )
            for r in bam.fetch(until_eof=True)
        ]
    return header, records


def read_fastq_gz(path: Path) -> list[tuple[str, str, str]]:
    """[(read id, parent read id, read group)] of a gzipped FASTQ decompressed to its end
    (gzip checks its CRC and length); AssertionError on a record that is not one."""
    with open(path, "rb") as raw:
        assert raw.read(2) == b"\x1f\x8b", f"{path.name}: not gzip"
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    assert data.endswith(b"\n"), f"{path.name}: the last line is not ended"
    lines = data[:-1].split(b"\n")
    assert len(lines) % 4 == 0, f"{path.name}: {len(lines)} lines"
    records = []
    for at in range(0, len(lines), 4):
        head, seq, plus, qual = lines[at : at + 4]
        assert head.startswith(b"@") and plus.startswith(b"+"), f"{path.name}: {head[:80]!r}"
        assert seq and len(seq) == len(qual), f"{path.name}: {head[:80]!r}"
        name, *fields = head[1:].decode("utf-8").split("\t")
        tags = {f.split(":", 2)[0]: f.split(":", 2)[2] for f in fields if f.count(":") >= 2}
        records.append((name, tags.get("pi", name), tags.get("RG", "")))
    return records


def read_groups(acquisition_id: str, barcoding: bool) -> set[str]:
    """The read groups the basecaller gives an acquisition's reads."""
    model = resolve_model(MODEL)[0]
    barcodes = [f"barcode{i + 1:02d}" for i in range(KIT_BARCODES)] if barcoding else []
    return {read_group_id(acquisition_id, model)} | {
        read_group_id(acquisition_id, model, KIT, b) for b in barcodes
    }


def files_under(folder: Path) -> dict[str, Path]:
    """{folder-relative path: path} of every entry below `folder` but folders, links
    included (not followed)."""
    found = {}
    for where, dirs, names in os.walk(folder, followlinks=False):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(where, d))]:
            path = Path(where, name)
            found[path.relative_to(folder).as_posix()] = path
    return found


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime)} of everything under `folder` (INPUT must not change)."""
    return {
        rel: (p.lstat().st_size, p.lstat().st_mtime_ns) for rel, p in files_under(folder).items()
    }


# -- one example ---------------------------------------------------------------------


def check_filed(
    dest: Path,
    filed_files: list[str],
    fmt: str,
    barcoding: bool,
    run_of_read: dict[str, RunIds],
) -> None:
    """Every property of the module docstring for the filing of one job into `dest`."""
    root = dest.resolve()
    written = files_under(dest)
    for rel, path in written.items():
        assert not path.is_symlink(), f"{rel}: a link"
        assert path.resolve().is_relative_to(root), f"{rel}: outside the job's folder"
        assert all(part not in ("", ".", "..") for part in rel.split("/")), rel
    for rel in filed_files:
        assert not os.path.isabs(rel) and ".." not in rel.split("/"), rel
        assert (dest / rel).resolve().is_relative_to(root), rel
    reads_files = sorted(r for r in written if r.endswith(READ_SUFFIXES[fmt]))
    summaries = sorted(r for r in written if r.rsplit("/", 1)[-1].startswith("sequencing_summary"))
    assert reads_files == sorted(filed_files), (reads_files, filed_files)
    left = set(written) - set(reads_files) - set(summaries)
    assert not left, f"more than the outputs in the job's folder: {sorted(left)}"
    for rel in reads_files + summaries:
        assert SAFE_NAME.fullmatch(rel.rsplit("/", 1)[-1]), f"an unsafe name: {rel!r}"

    # exactly once: bcm verify's reader, split reads counted for their parent
    copies = output_read_ids(dest)
    missing = sorted(set(run_of_read) - set(copies))
    doubled = sorted(r for r, n in copies.items() if n > 1)
    unexpected = sorted(set(copies) - set(run_of_read))
    assert not missing, f"{len(missing)} of {len(run_of_read)} read(s) lost"
    assert not doubled, f"{len(doubled)} read(s) filed more than once"
    assert not unexpected, f"{len(unexpected)} read(s) of no pod5"

    # whole, strictly read; one run per file
    file_of_record: dict[str, str] = {}
    for rel in reads_files:
        if fmt == "bam":
            header, records = read_bam(dest / rel)
            header_groups = {rg["ID"] for rg in header.get("RG", [])}
        else:
            records, header_groups = read_fastq_gz(dest / rel), None
        assert records, f"{rel}: an empty output"
        runs_in_file = {run_of_read.get(parent) for _, parent, _ in records}
        assert len(runs_in_file) == 1, f"{rel} holds reads of {len(runs_in_file)} runs"
        (ids,) = runs_in_file
        assert ids is not None, f"{rel}: a read of no pod5"
        own = read_groups(ids.run_id, barcoding)
        assert {rg for _, _, rg in records} <= own, f"{rel}: reads of another acquisition"
        if header_groups is not None:
            assert header_groups <= own, f"{rel}: the header has another acquisition's groups"
            assert {rg for _, _, rg in records} <= header_groups, rel
        for read_id, _, _ in records:
            assert read_id not in file_of_record, f"{read_id} in {rel} and elsewhere"
            file_of_record[read_id] = rel.rsplit("/", 1)[-1]

    # summary fragments: one run each, a row per record naming its file
    rows = []
    for rel in summaries:
        fragment = read_summary(dest / rel)
        owners = {run_of_read.get(row["parent_read_id"]) for row in fragment}
        assert len(owners) == 1, f"{rel} holds rows of {len(owners)} runs"
        rows += fragment
    assert Counter(row["read_id"] for row in rows) == Counter(set(file_of_record)), "summary rows"
    for row in rows:
        assert row[f"filename_{fmt}"] == file_of_record[row["read_id"]], row["read_id"]


def basecall_and_file(
    tmp: Path, input_root: Path, job_in: Path, files: list[dict], fmt: str, barcoding: bool
) -> dict[str, tuple[Path, list[str]]]:
    """Basecall the job once in `fmt`, file it from the finished file and as a stream,
    each into its own folder: {mode: (folder, files filed)}."""
    whole, streamed = tmp / f"out-{fmt}-whole", tmp / f"out-{fmt}-stream"
    basecaller = SimulatedBasecaller(
        0, model=MODEL, kit_name=KIT if barcoding else None, emit_fastq=fmt == "fastq"
    )
    inv = basecaller.invocation(job_in, whole)
    assert inv.stdout_path is not None
    done = run_invocation(inv)
    assert done.returncode == 0, done.stderr
    shutil.copytree(inv.stdout_path.parent, streamed / inv.stdout_path.parent.name)
    options = {"layout": "minknow", "job_id": JOB_ID, "min_qscore": MIN_QSCORE}
    filed = file_native_output(whole, job_in, files, barcoding=barcoding, **options)
    stream = streamed / inv.stdout_path.parent.name / inv.stdout_path.name
    filing = stream_filing(stream, streamed, job_in, files, barcoding=barcoding, **options)
    assert filing is not None
    filing.basecaller_exited()
    by_stream = finish_stream_filing(filing, streamed)
    return {"whole": (whole, filed.files), "stream": (streamed, by_stream.files)}


def check_example(pod5_files: list[tuple[str, RunIds]], barcoding: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="bcm-hostile-") as name:
        tmp = Path(name)
        input_root, job_in = tmp / "INPUT", tmp / "ASSIGNED_7_e1"
        job_in.mkdir()
        run_of_read: dict[str, RunIds] = {}
        files = []
        for seed, (rel, ids) in enumerate(pod5_files, start=1):
            for read_id in write_run_pod5(input_root / rel, ids, READS_PER_FILE, seed):
                run_of_read[read_id] = ids
            os.symlink(input_root / rel, job_in / link_name(rel))
            files.append({"name": link_name(rel), "path": rel})
        before = snapshot(input_root), snapshot(job_in)
        made = {"INPUT", "ASSIGNED_7_e1"}
        for fmt in ("bam", "fastq"):
            for mode, (dest, filed) in basecall_and_file(
                tmp, input_root, job_in, files, fmt, barcoding
            ).items():
                made.add(dest.name)
                try:
                    check_filed(dest, filed, fmt, barcoding, run_of_read)
                except AssertionError as exc:
                    raise AssertionError(f"{fmt}, filed {mode}: {exc}") from exc
        assert {p.name for p in tmp.iterdir()} == made, "something written next to the job"
        assert (snapshot(input_root), snapshot(job_in)) == before, "INPUT or the job changed"


@settings(
    max_examples=15,
    deadline=None,
    database=None,
    derandomize=True,  # the same examples on every run: a failure is never a fluke
    phases=[Phase.explicit, Phase.generate],  # a failure is shown as found (each costs ~2 s)
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(pod5_files=runs(), barcoding=st.booleans())
@example(pod5_files=issue_22(6), barcoding=False)  # the issue, in one batch
@example(  # names alike once made safe; empty ids; one acquisition, several protocol runs
    pod5_files=[
        ("a.pod5", RunIds("a/b", "run1", "acq1")),
        ("b.pod5", RunIds("a-b", "run1", "acq1")),
        ("c.pod5", RunIds("a b", "run1", "acq1")),
        ("d.pod5", RunIds("", "", "")),
        ("e.pod5", RunIds("..", "..", "..")),
        ("f.pod5", RunIds("PA/K 01ü", "run1x", "acq1x")),  # its own acquisition: its PU
        ("g.pod5", RunIds("PAK00000", PREFIX_SHARING[0], "acq1")),
        ("h.pod5", RunIds("PAK00000", PREFIX_SHARING[1], "acq1")),
    ],
    barcoding=True,
)
def test_hostile_run_metadata_is_filed_whole_once_and_apart(
    pod5_files: list[tuple[str, RunIds]], barcoding: bool
) -> None:
    ids = [i for _, r in pod5_files for i in (r.protocol_run_id, r.run_id)]
    assume(not documented_residual(ids))
    note(f"pod5 files: {pod5_files!r}, barcoding: {barcoding}")
    check_example(pod5_files, barcoding)


# -- names alone: many more examples, no I/O -----------------------------------------------


@settings(max_examples=400, deadline=None, database=None, derandomize=True)
@given(
    a=st.builds(RunIds, st.sampled_from(FLOW_CELLS), protocol_run_ids, acquisition_ids),
    b=st.builds(RunIds, st.sampled_from(FLOW_CELLS), protocol_run_ids, acquisition_ids),
    folder=st.sampled_from(FOLDERS),
)
def test_two_runs_never_share_a_name(a: RunIds, b: RunIds, folder: str) -> None:
    """The names filing gives two different runs' outputs and summary fragments differ,
    and each is one safe path component, for every status and barcode."""
    assume(a != b)
    note(f"a: {a!r}, b: {b!r}, folder: {folder!r}")
    assume(not documented_residual([a.protocol_run_id, b.protocol_run_id]))
    assume(not documented_residual([a.run_id, b.run_id]))
    relpath = f"{folder}x.pod5"
    for fmt in ("bam", "fastq"):
        for passed in (True, False):
            for barcode in (None, "barcode01", "unclassified"):
                paths = [
                    naming.reads_path(naming.run_folder(relpath, ids), ids, fmt, passed, barcode, 7)
                    for ids in (a, b)
                ]
                assert paths[0] != paths[1], paths
                for path in paths:  # INPUT's folders here are safe names too
                    assert all(
                        SAFE_NAME.fullmatch(p) and p not in (".", "..") for p in path.split("/")
                    ), path
    fragments = [naming.summary_fragment_name(ids, 7) for ids in (a, b)]
    assert fragments[0] != fragments[1], fragments
    assert all(SAFE_NAME.fullmatch(f) for f in fragments), fragments
