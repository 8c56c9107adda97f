"""inotify glue: watchdog events become hints for the manager's discovery.

Events only say where to look; completeness is always decided by `Discovery`
(signature at both ends, settled size), and the periodic rescan still runs, since
shared filesystems (NFS, Lustre) drop inotify events.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from bcmanager.layout import INPUT_JOB_PREFIXES
from bcmanager.scanner import is_final_summary, is_pod5_name

if TYPE_CHECKING:
    from bcmanager.manager import Manager

log = logging.getLogger("bcmanager.watch")


class _Handler(FileSystemEventHandler):
    def __init__(self, manager: Manager, watch_subtree: Callable[[str], None]) -> None:
        self.manager = manager
        self.root = str(manager.layout.input)
        self._watch_subtree = watch_subtree

    def _relative(self, path: str | bytes) -> str | None:
        path = os.fsdecode(path)
        rel = os.path.relpath(path, self.root)
        if rel.startswith("..") or rel == ".":
            return None
        parts = rel.split(os.sep)
        if any(p.startswith(".") for p in parts) or parts[0].startswith(INPUT_JOB_PREFIXES):
            return None
        return "/".join(parts)

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write", "deleted"):
            return
        path = getattr(event, "dest_path", "") or event.src_path
        rel = self._relative(path)
        if rel is None:
            return
        folder, _, name = rel.rpartition("/")
        if event.is_directory:
            if not folder and event.event_type in ("created", "moved"):
                self._watch_subtree(name)  # a new top-level folder (an experiment)
            self.manager.rescan_soon(folder)
        elif is_pod5_name(name):
            self.manager.hint(rel, closed=event.event_type == "closed")
        elif is_final_summary(name):
            self.manager.rescan_soon(folder)


class Watcher:
    """INPUT itself is watched on its own, each other top-level folder with its subtree.

    bcmanager's job folders (`ASSIGNED_…`) live at the top of INPUT and come and go
    with every batch; a recursive watch on INPUT would also add, walk and drop an
    inotify watch for each of them, only for their events to be thrown away. (Their
    creation and removal still cost an event each at the top.)"""

    def __init__(self, manager: Manager) -> None:
        self.root = manager.layout.input
        self.observer = Observer()
        self._handler = _Handler(manager, self.watch_subtree)
        self._watched: set[str] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        self.observer.schedule(self._handler, str(self.root), recursive=False)
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
            self.observer.schedule(self._handler, str(self.root / name), recursive=True)
        except OSError as exc:  # gone again, or out of inotify watches: rescans cover it
            log.warning("cannot watch %s (%s); relying on rescans", name, exc)

    def stop(self) -> None:
        self.observer.stop()

    def join(self, timeout: float | None = None) -> None:
        self.observer.join(timeout)


def start_watching(manager: Manager) -> Watcher | None:
    """Watch INPUT (see Watcher); None when inotify is unavailable."""
    watcher = Watcher(manager)
    try:
        watcher.start()
    except OSError as exc:
        log.warning("cannot watch %s (%s); relying on rescans", manager.layout.input, exc)
        return None
    log.info("watching %s with inotify", manager.layout.input)
    return watcher
