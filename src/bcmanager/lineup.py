"""The model generations one manager serves, as its ledger and OUTPUT know them.

The live generation (id 0, or the implicit one of an OUTPUT from before generations)
and any backfill generations added since (`bcmanager.generations`). Called under the
manager's lock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bcmanager.errors import NotFound
from bcmanager.generations import Generation, implicit
from bcmanager.layout import Layout
from bcmanager.ledger import Ledger


class Lineup:
    """The generations by id, settled at start and grown by `add`."""

    def __init__(self, db: Callable[[], Ledger], layout: Layout) -> None:
        self._db = db
        self._layout = layout
        self.by_id: dict[int, Generation] = {}

    def settle(self, wanted: Sequence[Generation], now: float) -> None:
        """The ledger's generations, plus those on disk (a rebuilt ledger) and those the
        settings name; an OUTPUT that has files but never had a generation keeps the
        implicit one first (its reads are at OUTPUT's root)."""
        db = self._db()
        wanted = list(wanted)
        if not db.generations():
            on_disk = self._layout.generations_on_disk()
            has_files = sum(db.file_counts(0).values()) > 0  # a ledger of schema 1
            had_implicit = has_files or bool(on_disk and on_disk[0].id > 0)
            if had_implicit or not (on_disk or wanted):
                db.add_generation(implicit(), now)
            wanted = on_disk + wanted
        for gen in wanted:
            self.add(gen, now)
        self.by_id = {g.id: g for g in db.generations()}

    def add(self, gen: Generation, now: float) -> Generation:
        """Add `gen` (the same one again changes nothing; the same name with another recipe
        is a Conflict) and write its spec beside its OUTPUT tree."""
        added = self._db().add_generation(gen, now)
        if added.output_root:
            self._layout.write_generation_spec(added)
        self.by_id[added.id] = added
        return added

    def has(self, name: str) -> bool:
        return any(g.name == name for g in self.by_id.values())

    def get(self, gen_id: int) -> Generation:
        try:
            return self.by_id[gen_id]
        except KeyError:
            raise NotFound(f"no generation {gen_id}") from None

    def view(self) -> list[dict[str, object]]:
        """Every generation, the live one first, with its files by state."""
        db = self._db()
        return [
            {**gen.to_dict(), "files": {s.value: n for s, n in db.file_counts(i).items()}}
            for i, gen in sorted(self.by_id.items())
        ]
