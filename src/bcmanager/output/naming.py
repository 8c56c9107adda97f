"""MinKNOW's output names, from ONT's output specification (ont-output-specifications,
MinKNOW "Output Structure" and the BAM/FASTQ read formats).

A MinKNOW run folder holds::

    <run folder>/bam_pass/<barcode>/<flowcell>_pass_<barcode>_<prot8>_<run8>_<n>.bam
    <run folder>/fastq_fail/<flowcell>_fail_<prot8>_<run8>_<n>.fastq.gz   (no barcoding)
    <run folder>/sequencing_summary_<flowcell>_<prot8>_<run8>.txt

where `prot8`/`run8` are the first 8 characters of the protocol run id and of the run
(acquisition) id, and the barcode level (folder and name part) only exists when
barcoding is on, exactly as MinKNOW and `dorado basecaller --output-dir` do.

bcmanager's `<n>` (MinKNOW's batch number) is the job id: a job writes at most one file
per (run, pass/fail, barcode), so `<n>` = job id is unique, keeps MinKNOW's integer
shape, and a merge repeated after a crash lands on the same names.

MinKNOW's 8-character short ids tell runs apart because its ids are random (a version 4
UUID for the protocol run, a UUID or a 40-hex SHA-1 for the acquisition). Ids of any
other shape (converted, hand-made or test data: `00000000-0000-0000-0000-000000000001`
and `...0002` share their first 8 characters) get a digest of the whole id after their
short form, and so do flow cell ids that are not plain letters and digits. The rule
looks at one id at a time, so every engine, before and after a restart, names a run
alike.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

Format = Literal["bam", "fastq"]

SHORT_ID_LEN = 8  # MinKNOW's short protocol run id / run id
UNCLASSIFIED = "unclassified"
UNKNOWN_FLOWCELL = "UNKNOWN"  # MinKNOW's placeholder for a missing flow cell id
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_POD5_FOLDER = re.compile(r"^pod5(_pass|_fail|_skip)?$")
_BARCODE_FOLDER = re.compile(r"^(barcode\d+|unclassified|mixed)$")
EXTENSIONS: dict[Format, str] = {"bam": ".bam", "fastq": ".fastq.gz"}
# The ids MinKNOW writes: random, so their first 8 characters tell them apart.
_RANDOM_ID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}|[0-9a-f]{40}"
)
_PLAIN_FLOWCELL = re.compile(r"[A-Za-z0-9]+")
DIGEST_LEN = 8
FILTERED_LIST_PREFIX = "filtered_reads_"
FILTERED_LIST = re.compile(r"^filtered_reads_\d+\.txt$")


@dataclass(frozen=True)
class RunIds:
    """The ids that MinKNOW names a run's files with."""

    flow_cell_id: str
    protocol_run_id: str
    run_id: str  # the acquisition id; Dorado's `runid`


def safe(value: str, placeholder: str = "unknown") -> str:
    """A value from a pod5 made safe as one path component (no '/', no '..')."""
    cleaned = _UNSAFE.sub("-", value).strip(".-")
    return cleaned or placeholder


def digest(value: str) -> str:
    """8 hex digits of the SHA-256 of `value`: the same on every machine and run."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:DIGEST_LEN]


def short_id(value: str) -> str:
    """MinKNOW's short id: the first 8 characters of a random id (as MinKNOW writes
    them); of any other id, its first 8 safe characters, `-` and its digest, so that ids
    sharing their first 8 characters never share a name."""
    if _RANDOM_ID.fullmatch(value):
        return value[:SHORT_ID_LEN]
    return f"{safe(value)[:SHORT_ID_LEN]}-{digest(value)}"


def flowcell_name(value: str) -> str:
    """A flow cell id as a name part: as it is when plain letters and digits (MinKNOW's
    `PAW12345`), else made safe with its digest (`a/b` and `a-b` stay apart)."""
    if _PLAIN_FLOWCELL.fullmatch(value):
        return value
    if not value:
        return UNKNOWN_FLOWCELL
    return f"{safe(value, UNKNOWN_FLOWCELL)}-{digest(value)}"


def barcode_name(value: str) -> str:
    """A barcode or its sample-sheet alias as a folder and name part: as it is when made of
    `[A-Za-z0-9._-]` (`barcode01`, `patient-7`), else made safe with its digest, so that
    two aliases never share a folder."""
    if value and not _UNSAFE.search(value) and not value.startswith((".", "-")):
        return value  # a leading dot would hide it from every reader of the tree
    return f"{safe(value)}-{digest(value)}"


def fallback_run_folder(ids: RunIds) -> str:
    """The run folder for a pod5 outside any MinKNOW run folder: `<flowcell>_<run8>`."""
    return f"{flowcell_name(ids.flow_cell_id)}_{short_id(ids.run_id)}"


def minknow_run_folder(relpath: str) -> str | None:
    """The run folder of a pod5 that MinKNOW wrote into `<run folder>/pod5/` (or
    `pod5_pass`, `pod5_fail`, `pod5_skip`, optionally with a barcode folder below): the
    folder above it, as `bcmanager.scanner.run_of` says ("." when INPUT itself is the run
    folder). None for a pod5 outside any MinKNOW run folder."""
    folders = [p for p in relpath.split("/")[:-1] if p not in ("", ".")]
    if len(folders) >= 2 and _BARCODE_FOLDER.match(folders[-1]) and _POD5_FOLDER.match(folders[-2]):
        return "/".join(folders[:-2]) or "."
    if folders and _POD5_FOLDER.match(folders[-1]):
        return "/".join(folders[:-1]) or "."
    return None


def run_folder(relpath: str, ids: RunIds) -> str:
    """The OUTPUT-relative run folder of the pod5 at INPUT-relative `relpath`: MinKNOW's
    (`minknow_run_folder`), or for any other pod5 a folder of its own run beside it."""
    found = minknow_run_folder(relpath)
    if found is not None:
        return found
    folders = [p for p in relpath.split("/")[:-1] if p not in ("", ".")]
    return "/".join([*folders, fallback_run_folder(ids)])


def status(passed: bool) -> str:
    return "pass" if passed else "fail"


def reads_dir(fmt: Format, passed: bool, barcode: str | None) -> str:
    """`bam_pass/barcode01` (or the barcode's alias), `fastq_fail/unclassified`, or
    `bam_pass` without barcoding."""
    top = f"{fmt}_{status(passed)}"
    return f"{top}/{barcode_name(barcode)}" if barcode else top


def reads_file_name(
    ids: RunIds, fmt: Format, passed: bool, barcode: str | None, job_id: int
) -> str:
    """`<flowcell>_<pass|fail>_[<alias>_]<prot8>_<run8>_<job>.bam` (or `.fastq.gz`); the
    alias is the barcode's name unless a sample sheet gave it one."""
    parts = [flowcell_name(ids.flow_cell_id), status(passed)]
    if barcode:
        parts.append(barcode_name(barcode))
    parts += [short_id(ids.protocol_run_id), short_id(ids.run_id), str(int(job_id))]
    return "_".join(parts) + EXTENSIONS[fmt]


def reads_path(
    folder: str, ids: RunIds, fmt: Format, passed: bool, barcode: str | None, job_id: int
) -> str:
    """OUTPUT-relative path of a job's reads of one run, status and barcode."""
    name = reads_file_name(ids, fmt, passed, barcode, job_id)
    return join(folder, reads_dir(fmt, passed, barcode), name)


def summary_name(ids: RunIds) -> str:
    """`sequencing_summary_<flowcell>_<prot8>_<run8>.txt`: one per run, in its run folder."""
    flowcell = flowcell_name(ids.flow_cell_id)
    return (
        f"sequencing_summary_{flowcell}_{short_id(ids.protocol_run_id)}_{short_id(ids.run_id)}.txt"
    )


def summary_fragment_name(ids: RunIds, job_id: int) -> str:
    """A job's rows of a run's summary: the summary's name with `_<job>` before `.txt`."""
    return summary_name(ids).removesuffix(".txt") + f"_{int(job_id)}.txt"


def filtered_list_name(job_id: int) -> str:
    """`filtered_reads_<job>.txt`: beside a run's outputs, the reads of a job that the
    basecaller left out on purpose (`bcmanager.output.check`), one read id a line."""
    return f"{FILTERED_LIST_PREFIX}{int(job_id)}.txt"


def join(*parts: str) -> str:
    """Join OUTPUT-relative path parts, dropping "." (the OUTPUT root itself)."""
    return "/".join(p for p in parts if p and p != ".")
