"""inotify glue: watchdog events become hints for the manager's discovery.

Events only say where to look; completeness is always decided by `Discovery`
(signature at both ends, settled size), and the periodic rescan still runs, since
shared filesystems (NFS, Lustre) drop inotify events.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from bcmanager.layout import INPUT_JOB_PREFIXES
from bcmanager.scanner import is_final_summary, is_pod5_name

if TYPE_CHECKING:
    from bcmanager.manager import Manager

log = logging.getLogger("bcmanager.watch")


class _Handler(FileSystemEventHandler):
    def __init__(self, manager: Manager) -> None:
        self.manager = manager
        self.root = str(manager.layout.input)

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
        name = rel.rpartition("/")[2]
        if event.is_directory:
            self.manager.rescan_soon(rel.rpartition("/")[0])
        elif is_pod5_name(name):
            self.manager.hint(rel, closed=event.event_type == "closed")
        elif is_final_summary(name):
            self.manager.rescan_soon(rel.rpartition("/")[0])


def start_watching(manager: Manager) -> Observer | None:
    """Watch INPUT recursively; returns the observer (None when inotify is unavailable)."""
    observer = Observer()
    try:
        observer.schedule(_Handler(manager), str(manager.layout.input), recursive=True)
        observer.start()
    except OSError as exc:
        log.warning("cannot watch %s (%s); relying on rescans", manager.layout.input, exc)
        return None
    log.info("watching %s with inotify", manager.layout.input)
    return observer
