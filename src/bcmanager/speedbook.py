"""Engine speeds that outlive the manager: what each engine was measured to do with each
model, kept in a small JSON file, so that a restarted manager (or the next run's, where
runs share the file) sizes an engine's batches from what it did before instead of
probing it again (issue 23: a probe is a start-up more, and sized for a GPU of unknown
speed it may hold the tail).

The book lies beside the ledger by default (`OUTPUT/.bcmanager/speeds.json`): it outlives
a restart of the manager. `--speed-book PATH` names a file that several runs share: an
engine is known by its id, so ids that name the GPU (`bcm engine --engine-id
node12-gpu0`) carry its speed from run to run (the default id, host-pid, is new with
every engine process). A book is a hint: one that cannot be read is started afresh (with
a warning), one that cannot be written is kept in memory.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bcmanager.generations import Generation
from bcmanager.scheduler import Speed

log = logging.getLogger("bcmanager.manager")

BOOK_VERSION = 1
# A book changed since it was last written is written this often; an engine or model
# measured for the first time at the next tick (a manager killed a minute after its start
# has every engine's first speed in its book).
SAVE_EVERY_S = 30.0
KEEP_S = 90 * 86400.0  # an entry not renewed for this long is dropped (the GPU may be gone)
BOOK_NAME = "speeds.json"


def model_key(gen: Generation) -> str:
    """What an engine's speed depends on besides its GPU: the model and the options that
    change the work (modified bases, alignment). The engines' own model (the implicit
    generation) is "" (an engine keeps its own model from batch to batch)."""
    key = gen.model or ""
    options = gen.options()
    options.pop("kit_name", None)  # barcode classification costs next to nothing
    return key + (json.dumps(options, sort_keys=True) if options else "")


@dataclass(frozen=True)
class Remembered:
    """One engine's speed with one model, as last measured."""

    startup_s: float
    bytes_per_s: float
    filing_s_per_byte: float
    updated: float  # when it was last measured (the manager's clock: seconds since the epoch)

    def speed(self) -> Speed:
        return Speed(self.startup_s, self.bytes_per_s, filing_s_per_byte=self.filing_s_per_byte)

    def to_dict(self) -> dict[str, float]:
        return {
            "startup_s": self.startup_s,
            "bytes_per_s": self.bytes_per_s,
            "filing_s_per_byte": self.filing_s_per_byte,
            "updated": self.updated,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Remembered | None:
        """An entry as the file has it, or None where it is not one (a hand-edited book)."""
        try:
            entry = cls(
                float(data["startup_s"]),
                float(data["bytes_per_s"]),
                float(data.get("filing_s_per_byte", 0.0)),
                float(data["updated"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        values = (entry.startup_s, entry.bytes_per_s, entry.filing_s_per_byte, entry.updated)
        if not all(math.isfinite(v) and v >= 0 for v in values) or entry.bytes_per_s <= 0:
            return None
        return entry


class SpeedBook:
    """The speeds of engines by id and model key, read from and written to `path`.

    Not thread-safe: the manager notes and snapshots under its lock, and writes the
    snapshot outside it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Remembered]] = {}
        self._changed = False
        self._new = False  # an engine or model not in the book before
        self._written_at = -math.inf

    @classmethod
    def load(cls, path: Path, now: float) -> SpeedBook:
        """The book at `path` (entries older than KEEP_S dropped); empty where there is
        none, or it cannot be read."""
        book = cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return book
        except (OSError, ValueError) as exc:
            log.warning("speed book %s cannot be read (%s): engines are measured afresh", path, exc)
            return book
        if not isinstance(data, dict) or data.get("version") != BOOK_VERSION:
            log.warning("speed book %s is not a version %d book: not used", path, BOOK_VERSION)
            return book
        engines = data.get("engines")
        for engine, models in (engines if isinstance(engines, dict) else {}).items():
            for key, raw in (models if isinstance(models, dict) else {}).items():
                entry = Remembered.from_dict(raw)
                if entry is not None and now - entry.updated <= KEEP_S:
                    book.entries.setdefault(str(engine), {})[str(key)] = entry
        return book

    def recall(self, engine: str) -> dict[str, Speed]:
        """An engine's speeds by model key (none: never measured)."""
        return {key: e.speed() for key, e in self.entries.get(engine, {}).items()}

    def note(self, engine: str, key: str, speed: Speed, now: float) -> None:
        """An engine's speed with a model, as just measured."""
        if not speed.bytes_per_s:
            return
        entry = Remembered(speed.startup_s, speed.bytes_per_s, speed.filing_s_per_byte, now)
        models = self.entries.setdefault(engine, {})
        self._new = self._new or key not in models
        models[key] = entry
        self._changed = True

    def snapshot(self, now: float, force: bool = False) -> dict[str, Any] | None:
        """What to write now, or None: nothing changed, or it was written less than
        SAVE_EVERY_S ago and nothing in it is new (unless `force`)."""
        due = force or self._new or now - self._written_at >= SAVE_EVERY_S
        if not self._changed or not due:
            return None
        self._changed, self._new, self._written_at = False, False, now
        engines = {
            engine: {key: e.to_dict() for key, e in models.items()}
            for engine, models in self.entries.items()
        }
        return {"version": BOOK_VERSION, "engines": engines}

    def write(self, snapshot: dict[str, Any]) -> None:
        """Write a snapshot atomically (a reader never sees half a book); a disk error is
        logged, and the next change is written again."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(snapshot, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("speed book %s not written (%s)", self.path, exc)
