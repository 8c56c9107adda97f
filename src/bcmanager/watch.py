"""inotify glue: watchdog events become hints for discovery, through two callbacks.

Events only say where to look; completeness is always decided by `Discovery`
(signature at both ends, settled size), and the periodic rescan still runs, since
shared filesystems (NFS, Lustre) drop inotify events.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from bcmanager.layout import INPUT_JOB_PREFIXES
from bcmanager.scanner import is_final_summary, is_pod5_name

OnPod5 = Callable[[str, bool], None]  # (path relative to INPUT, closed by its writer)
OnFolder = Callable[[str], None]  # a folder (relative to INPUT) to list again

log = logging.getLogger("bcmanager.watch")

# What discovery needs: files and folders appearing (created or moved in) and files closed
# by their writer. Not opens, reads or closes without a write: bcmanager's own look at each
# new file (and every engine's reads) would otherwise cost the watcher an event apiece.
EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileClosedEvent,
    FileMovedEvent,
    DirCreatedEvent,
    DirMovedEvent,
]


class _Handler(FileSystemEventHandler):
    def __init__(
        self, root: Path, on_pod5: OnPod5, on_folder: OnFolder, watch_subtree: OnFolder
    ) -> None:
        self.root = str(root)
        self._prefix = os.path.join(self.root, "")  # events name absolute paths below it
        self._on_pod5 = on_pod5
        self._on_folder = on_folder
        self._watch_subtree = watch_subtree

    def _relative(self, path: str | bytes) -> str | None:
        path = os.fsdecode(path)
        if not path.startswith(self._prefix):  # outside INPUT, or INPUT itself
            return None
        rel = path[len(self._prefix) :]
        parts = rel.split(os.sep)
        if any(p.startswith(".") for p in parts) or parts[0].startswith(INPUT_JOB_PREFIXES):
            return None
        return "/".join(parts)

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write", "deleted"):
            return
        if event.is_synthetic and not event.is_directory:
            # watchdog makes one for every file of a folder moved in; the rescan that the
            # folder's own event asks for lists them at a fraction of the cost
            return
        path = getattr(event, "dest_path", "") or event.src_path
        rel = self._relative(path)
        if rel is None:
            return
        folder, _, name = rel.rpartition("/")
        if event.is_directory:
            if not folder and event.event_type in ("created", "moved"):
                self._watch_subtree(name)  # a new top-level folder (an experiment)
            self._on_folder(folder)
        elif is_pod5_name(name):
            # "moved": renamed into place (rsync, cp + mv), whole the moment it appears
            self._on_pod5(rel, event.event_type == "closed")
        elif is_final_summary(name):
            self._on_folder(folder)


class Watcher:
    """INPUT itself is watched on its own, each other top-level folder with its subtree.

    bcmanager's job folders (`ASSIGNED_…`) live at the top of INPUT and come and go
    with every batch; a recursive watch on INPUT would also add, walk and drop an
    inotify watch for each of them, only for their events to be thrown away. (Their
    creation and removal still cost an event each at the top.)"""

    def __init__(self, root: Path, on_pod5: OnPod5, on_folder: OnFolder) -> None:
        self.root = root
        self.observer = Observer()
        self._handler = _Handler(root, on_pod5, on_folder, self.watch_subtree)
        self._watched: set[str] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        self.observer.schedule(self._handler, str(self.root), recursive=False, event_filter=EVENTS)
        self.observer.start()
        with os.scandir(self.root) as entries:
            folders = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
        for name in folders:
            self.watch_subtree(name)

    def watch_subtree(self, name: str) -> None:
        if name.startswith(".") or name.startswith(INPUT_JOB_PREFIXES):
            return
        with self._lock:
            if name in self._watched:
                return
            self._watched.add(name)
        try:
            self.observer.schedule(
                self._handler, str(self.root / name), recursive=True, event_filter=EVENTS
            )
        except OSError as exc:  # gone again, or out of inotify watches: rescans cover it
            log.warning("cannot watch %s (%s); relying on rescans", name, exc)

    def stop(self) -> None:
        self.observer.stop()

    def join(self, timeout: float | None = None) -> None:
        self.observer.join(timeout)


def start_watching(root: Path, on_pod5: OnPod5, on_folder: OnFolder) -> Watcher | None:
    """Watch INPUT (see Watcher), reporting through the two callbacks; None when inotify
    is unavailable. The callbacks run in the watcher's thread."""
    watcher = Watcher(root, on_pod5, on_folder)
    try:
        watcher.start()
    except OSError as exc:
        log.warning("cannot watch %s (%s); relying on rescans", root, exc)
        return None
    log.info("watching %s with inotify", root)
    return watcher
