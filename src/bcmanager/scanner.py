"""Find complete pod5 files under INPUT that the ledger does not know yet.

Flat folders and MinKNOW layouts
(`<experiment>/<sample>/<run>/pod5{,_pass,_fail,_skip}/*.pod5`) alike. Hidden
entries, non-pod5 files, symlinks (which could point outside INPUT or name a file
twice) and bcmanager's own job folders are skipped.

A rescan is cheap at a million files: a folder whose modification time has not
changed since it was last listed is not listed again, and known names are never
opened; only new names get a look (a stat and the pod5 footer: a few small reads).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bcmanager.layout import INPUT_JOB_PREFIXES, is_complete_pod5
from bcmanager.ledger import NewFile
from bcmanager.pod5footer import footer_is_whole

# A folder changed this recently may still gain entries within the same mtime tick.
_SETTLE_NS = 2_000_000_000
# Found files go to the ledger (and to waiting engines) in chunks of this many.
FLUSH_EVERY = 2000

log = logging.getLogger("bcmanager.scanner")


@dataclass
class ScanResult:
    new: list[NewFile] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    folders_listed: int = 0
    ended_runs: list[tuple[str, str]] = field(default_factory=list)  # (run, final summary)
    # takes found files in chunks of FLUSH_EVERY as they are found (then not in `new`)
    sink: Callable[[list[NewFile]], object] | None = field(default=None, repr=False)


def run_of(relpath: str) -> str:
    """The sequencing run (flow cell folder) a file belongs to: the folder above `pod5*/`."""
    folders = relpath.split("/")[:-1]
    if folders and folders[-1].startswith("pod5"):
        folders = folders[:-1]
    return "/".join(folders) or "."


def is_pod5_name(name: str) -> bool:
    return name.endswith(".pod5") and not name.startswith(".")


def _join(rel_dir: str, name: str) -> str:
    return f"{rel_dir}/{name}" if rel_dir else name


def list_folder(root: Path, rel_dir: str) -> tuple[list[str], list[str], list[str]]:
    """The pod5 names, the subfolders to visit and the run-end summaries in one folder."""
    names: list[str] = []
    subdirs: list[str] = []
    summaries: list[str] = []
    try:
        with os.scandir(root / rel_dir if rel_dir else root) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                try:
                    if entry.is_symlink():
                        continue
                    if entry.is_dir():
                        if not name.startswith(INPUT_JOB_PREFIXES):
                            subdirs.append(name)
                    elif is_pod5_name(name):
                        names.append(name)
                    elif is_final_summary(name):
                        summaries.append(name)
                except OSError:
                    continue
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        pass
    return names, subdirs, summaries


def is_final_summary(name: str) -> bool:
    """MinKNOW writes `final_summary_<flowcell>_<id>.txt` into a run's folder when it ends."""
    return name.startswith("final_summary_") and name.endswith(".txt")


def walk_pod5(root: Path) -> Iterator[str]:
    """Every `.pod5` path below `root`, relative to it (used by tools such as verify)."""
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        names, subdirs, _ = list_folder(root, rel_dir)
        for name in names:
            yield _join(rel_dir, name)
        stack.extend(_join(rel_dir, d) for d in subdirs)


@dataclass
class _Pending:
    size: int
    mtime_ns: int
    since: float  # when this size and mtime were first seen
    closed: bool = False  # the writer closed it (inotify IN_CLOSE_WRITE)


class Discovery:
    """Finds complete pod5 files under one INPUT tree, scan after scan.

    A file is complete the moment its pod5 footer is whole (`footer_is_whole`: the
    writer closed it, or it was renamed in whole), fresh or old alike. A file without
    a whole footer waits for the settle rule: the signature at both ends and either
    its writer closed it (an inotify hint) or its size and mtime have not changed for
    `settle_s`. Files still waiting are kept in a small pending set that
    `check_pending` re-examines often, so a closed file is queued within a second
    without rescanning the tree. Until a file is handed out, it costs a `stat` and a
    few small reads, never a pod5 open: a burst of a million copied files is queued
    as fast as the folder can be listed.

    With a `sink`, found files are handed over in chunks of FLUSH_EVERY as they are
    found, by the walk and by the pending check alike.

    `known_in(rel_dir)` answers the names the ledger already has in a folder.
    Thread-safe: the scan loop, the pending loop and the inotify thread share it.
    """

    def __init__(
        self,
        root: Path,
        known_in: Callable[[str], set[str]],
        settle_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.settle_s = settle_s
        self._known_in = known_in
        self._clock = clock
        self._folders: dict[str, tuple[int, list[str]]] = {}
        self._pending: dict[str, _Pending] = {}
        self._hints: dict[str, bool] = {}
        self._ended_runs: set[str] = set()
        self._known: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._hint_lock = threading.Lock()

    # -- hints from inotify (any thread) ---------------------------------------------

    def hint(self, rel: str, closed: bool = False) -> None:
        """A watcher saw `rel` change (or close); look at it in the next `check_pending`."""
        with self._hint_lock:
            self._hints[rel] = self._hints.get(rel, False) or closed

    def forget(self, rel_dir: str) -> None:
        """Make the next scan list a folder again (e.g. an inotify event named it)."""
        with self._hint_lock:
            self._folders.pop(rel_dir, None)

    def unfound(self, paths: Iterable[str]) -> None:
        """Files handed over that the ledger could not take (its disk full, say): their
        folders are listed again and their names asked of the ledger again at the next
        scan, so that they are found again, not taken as known for ever."""
        folders = {p.rpartition("/")[0] for p in paths}
        with self._hint_lock:
            for folder in folders:
                self._known.pop(folder, None)
                self._folders.pop(folder, None)

    @property
    def pending_count(self) -> int:
        return len(self._pending) + len(self._hints)

    # -- scanning ---------------------------------------------------------------------

    def scan(self, sink: Callable[[list[NewFile]], object] | None = None) -> ScanResult:
        """Walk the whole tree (skipping settled folders), then check what is pending.

        With a `sink`, found files are handed over every FLUSH_EVERY files (a first
        start over a million-file backlog hands out work after a second, not after the
        whole walk); what is left stays in the result."""
        with self._lock:
            result = ScanResult(sink=sink)
            now = self._clock()
            stack = [""]
            while stack:
                rel_dir = stack.pop()
                subdirs = self._visit(rel_dir, now, result)
                stack.extend(_join(rel_dir, d) for d in subdirs)
            self._check_pending(now, result)
            return result

    def check_pending(self, sink: Callable[[list[NewFile]], object] | None = None) -> ScanResult:
        """Look again at the files still settling and at the watcher's hints only."""
        with self._lock:
            result = ScanResult(sink=sink)
            self._check_pending(self._clock(), result)
            return result

    def _visit(self, rel_dir: str, now: float, result: ScanResult) -> list[str]:
        folder = self.root / rel_dir if rel_dir else self.root
        try:
            mtime_ns = os.stat(folder).st_mtime_ns
        except OSError:
            self._folders.pop(rel_dir, None)
            return []
        cached = self._folders.get(rel_dir)
        if cached is not None and cached[0] == mtime_ns:
            return cached[1]
        result.folders_listed += 1
        subdirs = self._list_and_consider(folder, rel_dir, now, result)
        if now * 1e9 - mtime_ns > _SETTLE_NS:
            self._folders[rel_dir] = (mtime_ns, subdirs)
        else:
            self._folders.pop(rel_dir, None)
        return subdirs

    def _list_and_consider(
        self, folder: Path, rel_dir: str, now: float, result: ScanResult
    ) -> list[str]:
        """One pass over a folder's entries, streamed: a flat folder of a million files is
        never held as a list (only the known names are, once)."""
        subdirs: list[str] = []
        known: set[str] | None = None
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith(".") or entry.is_symlink():
                        continue
                    if entry.is_dir():
                        if not name.startswith(INPUT_JOB_PREFIXES):
                            subdirs.append(name)
                    elif is_pod5_name(name):
                        known = self._known_names(rel_dir) if known is None else known
                        rel = _join(rel_dir, name)
                        if name not in known and rel not in self._pending:
                            self._consider(rel, now, closed=False, result=result)
                    elif is_final_summary(name):
                        self._run_ended(rel_dir, name, result)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            pass
        return subdirs

    def _run_ended(self, rel_dir: str, summary: str, result: ScanResult) -> None:
        run = rel_dir or "."
        if run not in self._ended_runs:
            self._ended_runs.add(run)
            result.ended_runs.append((run, _join(rel_dir, summary)))

    def _check_pending(self, now: float, result: ScanResult) -> None:
        with self._hint_lock:
            hints, self._hints = self._hints, {}
        for rel, closed in hints.items():
            if rel in self._pending:
                self._pending[rel].closed |= closed
            elif self._is_new(rel):
                self._consider(rel, now, closed, result)
        for rel in list(self._pending):
            self._consider(rel, now, closed=False, result=result)
        result.incomplete = sorted(self._pending)
        result.new.sort(key=lambda f: (f.mtime, f.path))

    def _known_names(self, folder: str) -> set[str]:
        """Known names in a folder, asked of the ledger once, then kept up to date here:
        a flat folder of a million files is not re-read from SQLite at every change."""
        known = self._known.get(folder)
        if known is None:
            known = self._known[folder] = self._known_in(folder)
        return known

    def _is_new(self, rel: str) -> bool:
        folder, _, name = rel.rpartition("/")
        return name not in self._known_names(folder)

    def _consider(self, rel: str, now: float, closed: bool, result: ScanResult) -> None:
        """Queue `rel` if complete, keep it pending if not yet, drop it if gone."""
        path = self.root / rel
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            self._pending.pop(rel, None)
            return
        seen = self._pending.get(rel)
        if seen is None or (seen.size, seen.mtime_ns) != (st.st_size, st.st_mtime_ns):
            # new or changed: complete at once if its footer is whole
            if footer_is_whole(path, st.st_size):
                self._found(rel, st, result)
                return
            was_closed = seen.closed if seen is not None else False
            seen = _Pending(st.st_size, st.st_mtime_ns, now, closed or was_closed)
            self._pending[rel] = seen
        else:
            seen.closed |= closed
        age = now - st.st_mtime_ns / 1e9
        settled = seen.closed or now - seen.since >= self.settle_s or age >= self.settle_s
        if settled and is_complete_pod5(path, st.st_size):
            self._found(rel, st, result)

    def _found(self, rel: str, st: os.stat_result, result: ScanResult) -> None:
        """`rel` is complete: known from now on, handed to the sink in chunks."""
        self._pending.pop(rel, None)
        folder, _, name = rel.rpartition("/")
        self._known_names(folder).add(name)
        result.new.append(NewFile(rel, st.st_size, st.st_mtime, run_of(rel)))
        if result.sink is not None and len(result.new) >= FLUSH_EVERY:
            result.sink(result.new)
            result.new = []
