"""Yield per run and barcode: reads, bases, pass share, mean qscore and N50.

The engine counts its job's reads from the summary rows its split writes and sends the
totals with its DONE report; the manager adds them up (exactly once, in the same ledger
transaction that marks the job done) without reading a read. N50 comes from a length
histogram with bins 5 % wide, so totals of any number of jobs stay small and add up;
it is exact to within a bin (the mean length of the bin where half the bases are
reached, counting from the longest reads).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

BIN_RATIO = 1.05
_LOG_RATIO = math.log(BIN_RATIO)
MAX_BINS = 1000  # lengths up to 1.05**1000: far beyond any read


def length_bin(length: int) -> int:
    """The histogram bin of a read length (0 for an empty read)."""
    return 0 if length < 1 else min(MAX_BINS - 1, 1 + int(math.log(length) / _LOG_RATIO))


@dataclass
class Yield:
    """Totals of one run (OUTPUT-relative run folder) and barcode (`unclassified`, or
    `all` without barcoding)."""

    run: str
    barcode: str
    reads: int = 0
    bases: int = 0
    pass_reads: int = 0
    pass_bases: int = 0
    qscore_sum: float = 0.0
    hist: dict[int, list[int]] = field(default_factory=dict)  # bin -> [reads, bases]

    def add_read(self, length: int, qscore: float, passed: bool) -> None:
        self.reads += 1
        self.bases += length
        self.qscore_sum += qscore
        if passed:
            self.pass_reads += 1
            self.pass_bases += length
        cell = self.hist.setdefault(length_bin(length), [0, 0])
        cell[0] += 1
        cell[1] += length

    def add(self, other: Yield) -> None:
        self.reads += other.reads
        self.bases += other.bases
        self.pass_reads += other.pass_reads
        self.pass_bases += other.pass_bases
        self.qscore_sum += other.qscore_sum
        for b, (reads, bases) in other.hist.items():
            cell = self.hist.setdefault(b, [0, 0])
            cell[0] += reads
            cell[1] += bases

    @property
    def key(self) -> tuple[str, str]:
        return (self.run, self.barcode)

    @property
    def n50(self) -> int:
        """The length at which reads this long or longer hold half the bases."""
        half, seen = self.bases / 2, 0
        for b in sorted(self.hist, reverse=True):
            reads, bases = self.hist[b]
            seen += bases
            if seen >= half and reads:
                return round(bases / reads)
        return 0

    @property
    def mean_qscore(self) -> float:
        return self.qscore_sum / self.reads if self.reads else 0.0

    @property
    def pass_share(self) -> float:
        return self.pass_reads / self.reads if self.reads else 0.0

    def to_dict(self) -> dict[str, Any]:
        """As the engine sends it and the ledger keeps it."""
        return {
            "run": self.run,
            "barcode": self.barcode,
            "reads": self.reads,
            "bases": self.bases,
            "pass_reads": self.pass_reads,
            "pass_bases": self.pass_bases,
            "qscore_sum": round(self.qscore_sum, 3),
            "hist": [[b, *cell] for b, cell in sorted(self.hist.items())],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Yield:
        return cls(
            run=str(data["run"]),
            barcode=str(data["barcode"]),
            reads=int(data["reads"]),
            bases=int(data["bases"]),
            pass_reads=int(data["pass_reads"]),
            pass_bases=int(data["pass_bases"]),
            qscore_sum=float(data["qscore_sum"]),
            hist={int(b): [int(reads), int(bases)] for b, reads, bases in data.get("hist", ())},
        )

    def view(self) -> dict[str, Any]:
        """What status, the dashboard and the report show."""
        return {
            "run": self.run,
            "barcode": self.barcode,
            "reads": self.reads,
            "bases": self.bases,
            "n50": self.n50,
            "mean_qscore": round(self.mean_qscore, 2),
            "pass_share": round(self.pass_share, 4),
        }


def yields_from_rows(run: str, rows: Iterable[Mapping[str, str]]) -> list[Yield]:
    """Totals per barcode of one run's sequencing summary rows."""
    by_barcode: dict[str, Yield] = {}
    for row in rows:
        barcode = row.get("barcode_arrangement") or "unclassified"
        y = by_barcode.setdefault(barcode, Yield(run, barcode))
        y.add_read(
            int(row.get("sequence_length_template") or 0),
            float(row.get("mean_qscore_template") or 0.0),
            row.get("passes_filtering") == "TRUE",
        )
    return [by_barcode[b] for b in sorted(by_barcode)]


def added(totals: Mapping[tuple[str, str], Yield], more: Iterable[Yield]) -> dict:
    """The totals that `more` changes, as new objects (`totals` is left as it is, so a
    ledger write that fails changes nothing)."""
    out: dict[tuple[str, str], Yield] = {}
    for y in more:
        if y.key not in out:
            old = totals.get(y.key)
            out[y.key] = Yield.from_dict(old.to_dict()) if old else Yield(y.run, y.barcode)
        out[y.key].add(y)
    return out
