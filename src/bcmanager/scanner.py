"""Find complete pod5 files under INPUT that the ledger does not know yet.

Flat folders and MinKNOW layouts
(`<experiment>/<sample>/<run>/pod5{,_pass,_fail,_skip}/*.pod5`) alike. Hidden
entries, non-pod5 files, symlinks (which could point outside INPUT or name a file
twice) and bcmanager's own job folders are skipped.

A rescan is cheap at a million files: a folder whose modification time has not
changed since it was last listed is not listed again, and known names are never
opened; only new names get a look (stat and the pod5 signature at both ends).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bcmanager.layout import INPUT_JOB_PREFIXES, is_complete_pod5
from bcmanager.ledger import NewFile

# A folder changed this recently may still gain entries within the same mtime tick.
_SETTLE_NS = 2_000_000_000


@dataclass
class ScanResult:
    new: list[NewFile] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    folders_listed: int = 0


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


def list_folder(root: Path, rel_dir: str) -> tuple[list[str], list[str]]:
    """The pod5 names and the subfolders to visit in one folder."""
    names: list[str] = []
    subdirs: list[str] = []
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
                except OSError:
                    continue
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        pass
    return names, subdirs


def walk_pod5(root: Path) -> Iterator[str]:
    """Every `.pod5` path below `root`, relative to it (used by tools such as verify)."""
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        names, subdirs = list_folder(root, rel_dir)
        for name in names:
            yield _join(rel_dir, name)
        stack.extend(_join(rel_dir, d) for d in subdirs)


def check_candidate(root: Path, rel: str) -> NewFile | None:
    """A NewFile when the file is a complete pod5, else None."""
    try:
        st = os.stat(root / rel, follow_symlinks=False)
    except OSError:
        return None
    if not is_complete_pod5(root / rel, st.st_size):
        return None
    return NewFile(rel, st.st_size, st.st_mtime, run_of(rel))


class Discovery:
    """Repeated scans of one INPUT tree, remembering what need not be looked at again.

    `known_in(rel_dir)` answers the names the ledger already has in a folder.
    """

    def __init__(self, root: Path, known_in: Callable[[str], set[str]]) -> None:
        self.root = root
        self._known_in = known_in
        self._folders: dict[str, tuple[int, list[str]]] = {}
        self._incomplete: set[str] = set()

    def scan(self, now_ns: int | None = None) -> ScanResult:
        result = ScanResult()
        now_ns = now_ns if now_ns is not None else time.time_ns()
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            subdirs = self._visit(rel_dir, now_ns, result)
            stack.extend(_join(rel_dir, d) for d in subdirs)
        for rel in sorted(self._incomplete):
            found = check_candidate(self.root, rel)
            if found is not None:
                self._incomplete.discard(rel)
                result.new.append(found)
        result.incomplete = sorted(self._incomplete)
        result.new.sort(key=lambda f: (f.mtime, f.path))
        return result

    def forget(self, rel_dir: str) -> None:
        """Make the next scan list a folder again (e.g. an inotify event named it)."""
        self._folders.pop(rel_dir, None)

    def _visit(self, rel_dir: str, now_ns: int, result: ScanResult) -> list[str]:
        try:
            mtime_ns = os.stat(self.root / rel_dir if rel_dir else self.root).st_mtime_ns
        except OSError:
            self._folders.pop(rel_dir, None)
            return []
        cached = self._folders.get(rel_dir)
        if cached is not None and cached[0] == mtime_ns:
            return cached[1]
        names, subdirs = list_folder(self.root, rel_dir)
        result.folders_listed += 1
        if now_ns - mtime_ns > _SETTLE_NS:
            self._folders[rel_dir] = (mtime_ns, subdirs)
        else:
            self._folders.pop(rel_dir, None)
        if names:
            known = self._known_in(rel_dir)
            for name in names:
                rel = _join(rel_dir, name)
                if name in known or rel in self._incomplete:
                    continue
                found = check_candidate(self.root, rel)
                if found is None:
                    self._incomplete.add(rel)
                else:
                    result.new.append(found)
        return subdirs
