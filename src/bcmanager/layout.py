"""The on-disk protocol shared with BC-pipelines engines, and reading it back.

    INPUT/ASSIGNED_<job>_<engine>/<name>.pod5      symlinks to the job's files
    OUTPUT/TMPOUTPUT_<job>_<engine>/{pass,fail}/   where the basecaller writes
    OUTPUT/{pass,fail}/job_id_<job>_<name>         merged results
    OUTPUT/LOGOUTPUT_<job>_<engine>/               the job's folder after the merge
    INPUT/FAILED_<job>_<engine>, OUTPUT/FAILEDOUTPUT_<job>_<engine>   after FAILED
    OUTPUT/QUARANTINE/                             late outputs and the poison-file list

Every step is a rename or an idempotent create, so a step interrupted by a crash
can simply be run again. The merge manifest written into the job's folder before
any output moves lets the layout alone rebuild the ledger (`read_snapshot`).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from bcmanager import failpoints
from bcmanager.errors import CorruptState
from bcmanager.generations import SPEC_FILE, TREE_DIR, Generation
from bcmanager.output.layouts import LEGACY_SUBDIRS, OutputLayout
from bcmanager.output.summary import conform_rows

POD5_SIGNATURE = b"\x8bPOD\r\n\x1a\n"
MANIFEST_NAME = "bcmanager-manifest.json"
READ_LIST_NAME = "bcmanager-read-ids.txt"  # a slice job's reads, beside its link
QUARANTINE_DIR = "QUARANTINE"
QUARANTINE_LIST = "quarantined.tsv"
STATE_DIR = ".bcmanager"
APPENDED_DIR = ".appended"  # summary fragments, once their rows are in the run's summary
INPUT_JOB_PREFIXES = ("ASSIGNED_", "FAILED_", "UNKNOWN_")

# An engine id becomes part of folder names: [A-Za-z0-9._-]{1,64} (design 2.7), no "..".
ENGINE_ID_PATTERN = r"^[A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*\.?$"
ENGINE_ID_MAX = 64

_JOB_DIR = re.compile(r"^(ASSIGNED|TMPOUTPUT|LOGOUTPUT|FAILED|FAILEDOUTPUT)_(\d+)_(.+)$")


def is_complete_pod5(path: str | os.PathLike[str], size: int | None = None) -> bool:
    """A pod5 is complete when its signature stands at both its start and its end."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if head != POD5_SIGNATURE:
                return False
            end = size if size is not None else os.fstat(fh.fileno()).st_size
            if end < 16:
                return False
            fh.seek(end - 8)
            return fh.read(8) == POD5_SIGNATURE
    except OSError:
        return False


def is_engine_id(name: str) -> bool:
    """Whether `name` is safe to use as an engine id (and so inside folder names)."""
    return 0 < len(name) <= ENGINE_ID_MAX and re.fullmatch(ENGINE_ID_PATTERN, name) is not None


def link_name(relpath: str) -> str:
    """The name of a file's symlink in a job folder: its INPUT-relative path, flattened."""
    return relpath.replace("/", "__")


@dataclass
class Snapshot:
    """What the layout alone says about the run (used when the ledger is lost)."""

    finished: list[dict] = field(default_factory=list)  # merge plans of merged jobs
    merging: list[dict] = field(default_factory=list)  # plans of interrupted merges
    running: list[tuple[int, str, list[str]]] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    quarantined: dict[str, str] = field(default_factory=dict)
    max_job_id: int = 0

    @property
    def done(self) -> set[str]:
        """Paths basecalled whole in the live generation (id 0)."""
        plans = [p for p in self.finished + self.merging if plan_generation(p) == 0]
        return {i["path"] for plan in plans for i in plan["inputs"] if "slice" not in i}


class Layout:
    """Paths and moves of the on-disk protocol under one INPUT and one OUTPUT."""

    def __init__(self, input_dir: Path, output_dir: Path) -> None:
        self.input = Path(os.path.abspath(input_dir))
        self.output = Path(os.path.abspath(output_dir))
        # how a job's INPUT folder goes once the job no longer needs it (the manager
        # hands this to a background thread; see bcmanager.janitor)
        self.remove_job_dir: Callable[[Path], None] = remove_tree
        # OUTPUT folders merges have made or found (a run's fastq_pass, ...): not made
        # again at every merge (a mkdir and a stat each time, the folder being there)
        self._folders: set[Path] = set()

    # -- names ------------------------------------------------------------------------

    def assigned_dir(self, job_id: int, engine: str) -> Path:
        return self.input / f"ASSIGNED_{job_id}_{engine}"

    def failed_dir(self, job_id: int, engine: str) -> Path:
        return self.input / f"FAILED_{job_id}_{engine}"

    def tmp_output_dir(self, job_id: int, engine: str) -> Path:
        return self.output / f"TMPOUTPUT_{job_id}_{engine}"

    def log_output_dir(self, job_id: int, engine: str) -> Path:
        return self.output / f"LOGOUTPUT_{job_id}_{engine}"

    def failed_output_dir(self, job_id: int, engine: str) -> Path:
        return self.output / f"FAILEDOUTPUT_{job_id}_{engine}"

    def read_list_path(self, job_id: int, engine: str) -> Path:
        """Where a slice job's read list lies (`bcmanager.slicing`)."""
        return self.assigned_dir(job_id, engine) / READ_LIST_NAME

    def quarantine_dir(self) -> Path:
        return self.output / QUARANTINE_DIR

    def late_output_dir(self, job_id: int, engine: str) -> Path:
        return self.quarantine_dir() / f"LATE_{job_id}_{engine}"

    def default_ledger_path(self) -> Path:
        return self.output / STATE_DIR / "ledger.sqlite3"

    # -- steps ------------------------------------------------------------------------

    def ensure_output_dirs(self, output_layout: OutputLayout) -> None:
        self.output.mkdir(parents=True, exist_ok=True)
        output_layout.ensure_dirs(self.output)

    def output_layout_on_disk(self) -> str | None:
        """The layout an OUTPUT already holds (from a merge manifest, or the original
        system's `pass`/`fail` folders with files), None for an OUTPUT with no results."""
        for kind, _job_id, _engine, path in _job_dirs(self.output):
            plan = self.read_manifest(path) if kind in ("LOGOUTPUT", "TMPOUTPUT") else None
            if plan is not None:
                return str(plan.get("layout", "legacy"))
        for sub in LEGACY_SUBDIRS:
            with suppress(OSError), os.scandir(self.output / sub) as entries:
                if any(True for _ in entries):
                    return "legacy"
        return None

    def prepare_job(self, job_id: int, engine: str, relpaths: Iterable[str]) -> None:
        """Create the job's input folder of symlinks and its empty output folder."""
        job_dir = os.fspath(self.assigned_dir(job_id, engine))
        with suppress(FileExistsError):
            os.mkdir(job_dir)
        for rel in relpaths:
            with suppress(FileExistsError):  # again after a crash: already linked
                os.symlink(f"{self.input}/{rel}", f"{job_dir}/{link_name(rel)}")
        with suppress(FileExistsError):
            os.mkdir(self.tmp_output_dir(job_id, engine))

    def plan_merge(
        self,
        job_id: int,
        engine: str,
        inputs: list[dict],
        output_layout: OutputLayout,
        run_folder: Callable[[], str],
        root: str = "",
    ) -> dict:
        """List what the engine left and where it goes (under `root`, the generation's tree,
        relative to OUTPUT); journaled before anything moves."""
        parts = output_layout.plan(self.tmp_output_dir(job_id, engine), job_id, run_folder)
        moves = [[src, _under(root, dst)] for src, dst in parts.moves]
        plan = {"job_id": job_id, "engine": engine, "inputs": inputs, "outputs": moves}
        if output_layout.name != "legacy":
            plan["layout"] = output_layout.name
        if parts.appends:
            plan["appends"] = [[src, _under(root, dst), *rest] for src, dst, *rest in parts.appends]
        return plan

    def write_generation_spec(self, gen: Generation) -> None:
        """Write which model made a generation's reads into the root of its tree (what a
        user reads, and what rebuilds the generations when the ledger is lost)."""
        folder = self.output / gen.output_root
        folder.mkdir(parents=True, exist_ok=True)
        _write_json_atomically(folder / SPEC_FILE, gen.to_dict())

    def generations_on_disk(self) -> list[Generation]:
        """The named generations whose trees OUTPUT holds, in their order."""
        found = []
        for spec in sorted((self.output / TREE_DIR).glob(f"*/{SPEC_FILE}")):
            try:
                found.append(Generation.from_dict(json.loads(spec.read_text(encoding="utf-8"))))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise CorruptState(f"{spec} cannot be read: {exc}") from exc
        return sorted(found, key=lambda g: g.id)

    def write_manifest(self, plan: dict) -> dict:
        """Write the manifest into the job's output folder (atomically), wherever it now is,
        and return the plan as the manifest has it.

        The manifest is the merge's journal: one already there for this job wins over
        `plan` (a DONE repeated after a crash plans only what was not moved yet). The first
        manifest fixes where each summary append starts (the summary's size now: merges
        run one at a time, so nothing else appends before this one ends); a merge run again
        after a crash truncates back to that offset and appends again."""
        job_id, engine = plan["job_id"], plan["engine"]
        folder = self.tmp_output_dir(job_id, engine)
        on_disk = self.read_manifest(folder)
        there = on_disk is not None or folder.is_dir()
        if not there:
            folder = self.log_output_dir(job_id, engine)
            on_disk = self.read_manifest(folder)
        if on_disk is not None and _same_job(on_disk, plan):
            return on_disk
        plan = dict(plan)
        if plan.get("appends"):
            plan["appends"] = [
                [src, dst, _size_or_zero(self.output / dst)] for src, dst, *_ in plan["appends"]
            ]
        if not there:
            folder.mkdir(exist_ok=True)
        _write_json_atomically(folder / MANIFEST_NAME, plan)
        return plan

    def begun_merge(self, job_id: int, engine: str) -> dict | None:
        """The manifest of a running job's merge that began and did not end (still in its
        `TMPOUTPUT_` folder), if one is there for this job."""
        plan = self.read_manifest(self.tmp_output_dir(job_id, engine))
        if plan is None or not _same_job(plan, {"job_id": job_id, "engine": engine}):
            return None
        return plan

    def apply_merge(self, plan: dict) -> None:
        """Move a DONE job's outputs into place; safe to run again after a crash."""
        job_id, engine = plan["job_id"], plan["engine"]
        tmp = self.tmp_output_dir(job_id, engine)
        log = self.log_output_dir(job_id, engine)
        _check_relative(job_id, plan)
        if tmp.is_dir():
            for src_rel, dst_rel in plan["outputs"]:
                src, dst = tmp / src_rel, self.output / dst_rel
                if os.path.lexists(src):
                    if os.path.lexists(dst):
                        raise CorruptState(f"merge of job {job_id}: {dst} already exists")
                    self._move(src, dst)
                    failpoints.hit("merge.after-move")
            for src_rel, dst_rel, offset in plan.get("appends", ()):
                self._append_summary(tmp, src_rel, self.output / dst_rel, offset)
            if not (tmp / MANIFEST_NAME).exists():
                _write_json_atomically(tmp / MANIFEST_NAME, plan)
            os.rename(tmp, log)
            failpoints.hit("merge.after-rename")
        elif not log.is_dir():
            raise CorruptState(f"merge of job {job_id}: neither {tmp.name} nor {log.name} exists")
        self.remove_job_dir(self.assigned_dir(job_id, engine))

    def _move(self, src: Path, dst: Path) -> None:
        """Rename `src` to `dst` (`_into_folder`)."""
        self._into_folder(dst, lambda: os.rename(src, dst), lambda: os.path.lexists(src))

    def _into_folder(
        self, dst: Path, write: Callable[[], None], source_there: Callable[[], bool]
    ) -> None:
        """`write` `dst`, making its folder where no merge has made or found it (one system
        call fewer per output than making it each time); a folder removed since (by hand)
        is made again, where the source is still there (else the miss is the source's)."""
        folder = dst.parent
        if folder not in self._folders:
            folder.mkdir(parents=True, exist_ok=True)
            self._folders.add(folder)
        try:
            write()
        except FileNotFoundError:
            if not source_there():
                raise
            self._folders.discard(folder)
            folder.mkdir(parents=True, exist_ok=True)
            self._folders.add(folder)
            write()

    def _append_summary(self, tmp: Path, src_rel: str, dst: Path, offset: int) -> None:
        """Append a job's summary rows to its run's summary, exactly once: the rows go in
        from `offset` (what the summary held before this job), then the fragment is moved
        aside; a fragment still in place after a crash is appended again from `offset`."""
        src = tmp / src_rel
        if not src.exists():
            return  # appended already
        self._into_folder(dst, lambda: self._append_rows(src, dst, offset), src.exists)
        failpoints.hit("merge.after-append")
        aside = tmp / APPENDED_DIR / src_rel.replace("/", "__")
        aside.parent.mkdir(exist_ok=True)
        os.rename(src, aside)

    @staticmethod
    def _append_rows(src: Path, dst: Path, offset: int) -> None:
        """The fragment's rows into the summary from `offset`: its header only into an
        empty summary, its columns put in the summary's order otherwise."""
        with open(dst, "ab") as out:
            if os.fstat(out.fileno()).st_size < offset:
                raise CorruptState(f"{dst} is shorter than before this job's rows: was it cut?")
            out.truncate(offset)
            with open(src, "rb") as rows:
                header = rows.readline()
                if offset == 0:
                    out.write(header)
                    shutil.copyfileobj(rows, out)
                else:
                    with open(dst, "rb") as existing:
                        run_header = existing.readline()
                    out.writelines(conform_rows(header, run_header, rows))

    def set_aside_failed(self, job_id: int, engine: str) -> None:
        """After FAILED: keep the job's folders for inspection under their FAILED names."""
        _rename_if_present(self.assigned_dir(job_id, engine), self.failed_dir(job_id, engine))
        _rename_if_present(
            self.tmp_output_dir(job_id, engine), self.failed_output_dir(job_id, engine)
        )

    def drop_assignment(self, job_id: int, engine: str) -> None:
        """After a lease expired or a batch was handed back: its files are no longer the job's."""
        self.remove_job_dir(self.assigned_dir(job_id, engine))

    def set_aside_late_output(self, job_id: int, engine: str) -> Path | None:
        """A late engine's output is kept, never merged."""
        tmp = self.tmp_output_dir(job_id, engine)
        if not tmp.exists():
            return None
        dest = self.late_output_dir(job_id, engine)
        dest.parent.mkdir(exist_ok=True)
        _rename_if_present(tmp, dest)
        return dest

    def record_quarantine(self, relpath: str, reason: str, root: str = "") -> None:
        """Append to QUARANTINE/quarantined.tsv in OUTPUT (or in a generation's tree under
        `root`): what a user reads, and a rebuild too."""
        folder = self.output / root / QUARANTINE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        clean = reason.replace("\t", " ").replace("\n", " ")
        line = f"{relpath}\t{clean}\n".encode()
        fd = os.open(folder / QUARANTINE_LIST, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:  # one line whole or none: a full disk must not leave half a line
                if os.write(fd, line) != len(line):
                    raise OSError(errno.ENOSPC, "short write", str(folder / QUARANTINE_LIST))
            except OSError:
                with suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)

    def job_dirs_on_input(self) -> list[tuple[str, int, str, Path]]:
        return _job_dirs(self.input)

    def job_dirs(self) -> list[tuple[str, int, str, Path]]:
        """Every job folder, on INPUT and on OUTPUT (kind, job id, engine, path)."""
        return _job_dirs(self.output) + _job_dirs(self.input)

    def read_manifest(self, job_dir: Path) -> dict | None:
        """The merge manifest in a TMPOUTPUT_/LOGOUTPUT_ folder, or None (none or unreadable)."""
        try:
            return json.loads((job_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    # -- reading the layout back ------------------------------------------------------

    def read_snapshot(self) -> Snapshot:
        """Rebuild what is known from the folders alone (the ledger was lost)."""
        snap = Snapshot()
        manifests = {}
        for kind, job_id, engine, path in _job_dirs(self.output):
            snap.max_job_id = max(snap.max_job_id, job_id)
            plan = self.read_manifest(path) if kind in ("LOGOUTPUT", "TMPOUTPUT") else None
            if plan is not None:
                manifests[job_id] = (kind, engine, plan)
        for kind, _engine, plan in manifests.values():
            (snap.merging if kind == "TMPOUTPUT" else snap.finished).append(plan)
        for kind, job_id, engine, path in _job_dirs(self.input):
            snap.max_job_id = max(snap.max_job_id, job_id)
            if (path / READ_LIST_NAME).exists():
                continue  # a slice's: its reads stay queued (rebuilt ledgers slice again)
            targets = self._link_targets(path)
            if kind == "ASSIGNED" and job_id not in manifests:
                snap.running.append((job_id, engine, targets))
            elif kind == "FAILED":
                snap.failures.update(targets)
        done = snap.done
        snap.quarantined = {
            p: why for p, why in self.read_quarantine_list().items() if p not in done
        }
        return snap

    def _link_targets(self, job_dir: Path) -> list[str]:
        out = []
        for entry in os.scandir(job_dir):
            if entry.is_symlink():
                rel = os.path.relpath(os.readlink(entry.path), self.input)
                if not rel.startswith(".."):
                    out.append(rel)
        return sorted(out)

    def read_quarantine_list(self, root: str = "") -> dict[str, str]:
        path = self.output / root / QUARANTINE_DIR / QUARANTINE_LIST
        if not path.exists():
            return {}
        out = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            rel, _, reason = line.partition("\t")
            if rel:
                out[rel] = reason
        return out


def _job_dirs(root: Path) -> list[tuple[str, int, str, Path]]:
    """Job folders directly under `root`; streamed, since a flat INPUT may hold a million files."""
    out = []
    try:
        with os.scandir(root) as entries:
            for entry in entries:
                match = _JOB_DIR.match(entry.name)
                if match and entry.is_dir(follow_symlinks=False):
                    out.append((match[1], int(match[2]), match[3], Path(entry.path)))
    except FileNotFoundError:
        pass
    return out


def plan_generation(plan: dict) -> int:
    """The id of the generation a merge plan basecalled (0 for plans made before any)."""
    return int((plan.get("generation") or {}).get("id", 0))


def _check_relative(job_id: int, plan: dict) -> None:
    """Every path a merge plan names stays below its folder (the job's output, OUTPUT): a
    manifest is read back from a folder the engine writes too."""
    for src, dst, *_ in [*plan["outputs"], *plan.get("appends", ())]:
        for rel in (src, dst):
            parts = PurePosixPath(rel).parts
            if not parts or parts[0] == "/" or ".." in parts:
                raise CorruptState(f"merge of job {job_id}: {rel!r} is not a path inside")


def _same_job(manifest: dict, plan: dict) -> bool:
    return manifest.get("job_id") == plan["job_id"] and manifest.get("engine") == plan["engine"]


def _under(root: str, rel: str) -> str:
    return f"{root}/{rel}" if root else rel


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


JSON_BUFFER = 1 << 16


def _write_json_atomically(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        # no indent: the C encoder, on every merge; a buffer size given: no tty check
        with open(tmp, "w", encoding="utf-8", buffering=JSON_BUFFER) as fh:
            fh.write(json.dumps(data))
        os.replace(tmp, path)
    except OSError:  # e.g. a full disk: leave no half-written file behind
        with suppress(OSError):
            os.unlink(tmp)
        raise


def _rename_if_present(src: Path, dst: Path) -> None:
    if src.exists() and not dst.exists():
        os.rename(src, dst)


def remove_tree(path: Path) -> None:
    """Remove a job folder: a few symlinks, unlinked directly (shutil.rmtree's fd-safe
    walk costs several times more per merge); anything else falls back to rmtree."""
    try:
        for name in os.listdir(path):
            os.unlink(path / name)
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
