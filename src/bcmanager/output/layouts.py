"""Output layouts: where a finished job's files go in OUTPUT, as a plan of renames and appends.

Two layouts, chosen once per OUTPUT (the ledger remembers it):

- `legacy`, the original BC-pipelines names: `TMPOUTPUT/{pass,fail}/NAME` becomes
  `OUTPUT/{pass,fail}/job_id_<job>_NAME`.
- `minknow`, MinKNOW's tree per run. An engine that splits its basecaller's output
  (`bcmanager.output.split`) leaves `TMPOUTPUT/<run folder>/{bam,fastq}_{pass,fail}/...`
  and per-job summary fragments; they move to the same paths under OUTPUT, and each
  fragment's rows are appended to its run's `sequencing_summary_*.txt`. FASTQ that an
  engine left in `TMPOUTPUT/{pass,fail}/` (an original engine, a script backend) goes
  to `OUTPUT/<the job's run folder>/fastq_{pass,fail}/job_id_<job>_NAME`.

In both, a job's list of the reads its basecaller filtered on purpose,
`filtered_reads_<job>.txt` (`bcmanager.output.check`), moves to the same place in OUTPUT.

A plan only names paths; the layout module (`bcmanager.layout`) carries it out, so the
manager never reads a read. Pure: no I/O but listing the job's output folder.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bcmanager.output.naming import filtered_list_name, join

LEGACY_SUBDIRS = ("pass", "fail")
_READS_DIR = re.compile(r"^(bam|fastq)_(pass|fail)$")
_FRAGMENT = re.compile(r"^(sequencing_summary_.+)_(\d+)\.txt$")


@dataclass
class MergeParts:
    """What to do with a job's output: renames and summary appends (TMPOUTPUT-relative
    source, OUTPUT-relative destination)."""

    moves: list[list[str]] = field(default_factory=list)
    appends: list[list[str]] = field(default_factory=list)


class OutputLayout(ABC):
    name: str

    @abstractmethod
    def plan(self, tmp: Path, job_id: int, run_folder: Callable[[], str]) -> MergeParts:
        """The parts of job `job_id`'s output in `tmp`. `run_folder()` names the job's run
        folder (OUTPUT-relative), for output that does not say it itself."""

    def ensure_dirs(self, output: Path) -> None:  # noqa: B027 - most layouts need none
        """Folders OUTPUT always has in this layout."""


class LegacyOutput(OutputLayout):
    name = "legacy"

    def plan(self, tmp: Path, job_id: int, run_folder: Callable[[], str]) -> MergeParts:
        parts = MergeParts()
        for sub, name in _legacy_files(tmp):
            parts.moves.append([f"{sub}/{name}", f"{sub}/{legacy_name(job_id, name)}"])
        if (tmp / filtered_list_name(job_id)).is_file():
            parts.moves.append([filtered_list_name(job_id)] * 2)
        return parts

    def ensure_dirs(self, output: Path) -> None:
        for sub in LEGACY_SUBDIRS:
            (output / sub).mkdir(parents=True, exist_ok=True)


class MinknowOutput(OutputLayout):
    name = "minknow"

    def plan(self, tmp: Path, job_id: int, run_folder: Callable[[], str]) -> MergeParts:
        parts = MergeParts()
        legacy = list(_legacy_files(tmp))
        if legacy:
            folder = run_folder()
            for sub, name in legacy:
                dst = join(folder, f"fastq_{sub}", legacy_name(job_id, name))
                parts.moves.append([f"{sub}/{name}", dst])
        for rel in _tree_files(tmp):
            folder, _, name = rel.rpartition("/")
            fragment = _FRAGMENT.match(name)
            if fragment is not None and int(fragment.group(2)) == job_id:
                parts.appends.append([rel, join(folder, f"{fragment.group(1)}.txt")])
            elif any(_READS_DIR.match(p) for p in folder.split("/")) or name == filtered_list_name(
                job_id
            ):
                parts.moves.append([rel, rel])
        return parts


LAYOUTS: dict[str, OutputLayout] = {lay.name: lay for lay in (MinknowOutput(), LegacyOutput())}


def output_layout(name: str) -> OutputLayout:
    """The layout called `name` (minknow or legacy)."""
    return LAYOUTS[name]


def legacy_name(job_id: int, name: str) -> str:
    """The original system's merged name: `job_id_<job>_<name>`."""
    return f"job_id_{job_id}_{name}"


def _legacy_files(tmp: Path) -> list[tuple[str, str]]:
    out = []
    for sub in LEGACY_SUBDIRS:
        folder = tmp / sub
        if folder.is_dir():
            out += [(sub, name) for name in sorted(os.listdir(folder))]
    return out


def _tree_files(tmp: Path) -> list[str]:
    """Regular files below `tmp` (hidden names, symlinks and the legacy folders skipped)."""
    out = []
    for folder, dirs, files in os.walk(tmp):
        rel_dir = os.path.relpath(folder, tmp)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".") and not (rel_dir == "." and d in LEGACY_SUBDIRS)
        )
        for name in sorted(files):
            path = os.path.join(folder, name)
            if name.startswith(".") or os.path.islink(path):
                continue
            out.append(join(rel_dir, name) if rel_dir != "." else name)
    return out
