"""MinKNOW and Dorado sample sheets: which sample (alias) each barcode of a run holds.

A sample sheet is the CSV that MinKNOW takes (and writes) and `dorado basecaller
--kit-name KIT --sample-sheet CSV` reads: one row per barcode of a flow cell (or
position) and experiment, e.g.

    flow_cell_id,experiment_id,kit,barcode,alias,type
    PAO25751,exp1,SQK-NBD114-24,barcode01,patient_a,test_sample
    PAO25751,exp1,SQK-NBD114-24,barcode02,patient_b,test_sample

`load_sample_sheet` checks it the way Dorado 1.x does (`dorado/utils/SampleSheet.cpp`),
so that a sheet Dorado would refuse stops the engine at its start, with the file and the
line, instead of failing every batch:

- the columns are among Dorado's: protocol_run_id, flow_cell_id, position_id, sample_id,
  experiment_id, flow_cell_product_code, kit, alias, type, barcode; at least one of
  flow_cell_id and position_id, and experiment_id and kit, are required; barcode and
  alias come together (a sheet without them names no samples);
- fields are split on every ',' (Dorado knows no quoting) and each row has as many as the
  header; lines end in LF, CRLF or CR, as Dorado reads them; every row has the same
  experiment_id;
- experiment_id, sample_id and alias are MinKNOW free text: at most 40 letters, digits,
  '-' or '_' (so no spaces or slashes); an alias is not itself a barcode name
  (`barcodeNN`) nor `unclassified`;
- bcmanager asks a little more, where Dorado would quietly lose the aliases: a barcode is
  `barcode` and two or more digits, an alias is not empty, the flow_cell_id and
  position_id a row gives are not empty (Dorado matches each column the sheet has), no
  two rows name the same barcode of one flow cell (or position) and experiment, the sheet
  has rows, and, given the engine's `--kit-name`, every row's kit is that kit.

Dorado keeps only the barcodes a sheet lists: a read classified as any other barcode is
written as unclassified. `SampleSheet.alias` answers None for those (and for reads of
another flow cell or experiment); what such a read becomes is the basecaller's to say.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from bcmanager.errors import ConfigError

COLUMNS = (
    "protocol_run_id",
    "flow_cell_id",
    "position_id",
    "sample_id",
    "experiment_id",
    "flow_cell_product_code",
    "kit",
    "alias",
    "type",
    "barcode",
)  # every column Dorado accepts; any other makes it refuse the sheet
INDEX_COLUMNS = ("flow_cell_id", "position_id")  # a sheet needs one or both
FREE_TEXT_COLUMNS = ("experiment_id", "sample_id", "alias")
MAX_FREE_TEXT = 40  # MinKNOW's limit on user free text, as Dorado checks it
MAX_BYTES = 16 * 1024 * 1024  # far above any real sheet (a few hundred rows)

_FREE_TEXT = re.compile(rf"[A-Za-z0-9_-]{{0,{MAX_FREE_TEXT}}}")
_BARCODE = re.compile(r"barcode[0-9]{2,}")
_FORBIDDEN_ALIAS = re.compile(r"barcode[0-9]+|unclassified")


@dataclass(frozen=True)
class SampleRow:
    """One row of a sample sheet; None where the sheet has no such column."""

    line: int
    experiment_id: str
    kit: str
    flow_cell_id: str | None = None
    position_id: str | None = None
    barcode: str | None = None
    alias: str | None = None
    type: str | None = None
    sample_id: str | None = None

    def matches(
        self, flow_cell_id: str | None, position_id: str | None, experiment_id: str | None
    ) -> bool:
        """Whether this row is for these ids (None: not known, any matches)."""
        given = (
            (self.flow_cell_id, flow_cell_id),
            (self.position_id, position_id),
            (self.experiment_id, experiment_id),
        )
        return all(mine is None or theirs is None or mine == theirs for mine, theirs in given)


@dataclass(frozen=True)
class SampleSheet:
    """A checked sample sheet (`load_sample_sheet`)."""

    kits: frozenset[str]
    rows: tuple[SampleRow, ...] = ()
    path: str = ""
    columns: tuple[str, ...] = field(default_factory=tuple)

    def alias(
        self,
        barcode: str,
        flow_cell_id: str | None = None,
        position_id: str | None = None,
        experiment_id: str | None = None,
    ) -> str | None:
        """The alias of `barcode` (`barcode01`, or Dorado's `KIT_barcode01`) for a read of
        this flow cell, position and experiment, as Dorado looks it up; an id given as None
        is not known and matches any row. None when the sheet does not list the barcode
        for them (Dorado writes such a read as unclassified), or when ids left out leave
        two aliases possible."""
        wanted = barcode.split("_", 1)[1] if "_" in barcode else barcode
        found = {
            row.alias
            for row in self.rows
            if row.barcode == wanted and row.matches(flow_cell_id, position_id, experiment_id)
        }
        return found.pop() if len(found) == 1 else None

    def barcodes(self) -> frozenset[str]:
        """Every barcode the sheet lists (`barcodeNN`): the only ones Dorado keeps."""
        return frozenset(row.barcode for row in self.rows if row.barcode is not None)


def load_sample_sheet(path: str | os.PathLike[str], kit: str | None = None) -> SampleSheet:
    """Read and check a sample sheet (the module's docstring says what is checked); with
    `kit` (the engine's `--kit-name`) every row must name that kit.

    Raises ConfigError naming the file, and the line where there is one."""
    name = os.fspath(path)
    text = _read_text(Path(name), name)
    lines = _split_lines(text)
    if not lines:
        raise ConfigError(f"sample sheet {name} is empty: it needs a header line and rows")
    columns = _header(lines[0], name)
    rows: list[SampleRow] = []
    seen: dict[tuple[str | None, ...], int] = {}
    for number, line in enumerate(lines[1:], start=2):
        row = _row(line, number, columns, name)
        if rows and row.experiment_id != rows[0].experiment_id:
            raise ConfigError(
                f"sample sheet {name}, line {number}: experiment_id {row.experiment_id!r}"
                f" differs from {rows[0].experiment_id!r} on line {rows[0].line}"
                " (Dorado takes one experiment per sheet)"
            )
        if kit is not None and row.kit != kit:
            raise ConfigError(
                f"sample sheet {name}, line {number}: kit {row.kit!r} is not the"
                f" --kit-name {kit!r} the engine basecalls with (Dorado classifies the"
                " barcodes of --kit-name only)"
            )
        if row.barcode is not None:
            key = (row.flow_cell_id, row.position_id, row.experiment_id, row.barcode)
            if key in seen:
                where = " ".join(
                    f"{what} {value}"
                    for what, value in zip(("flow cell", "position"), key[:2], strict=True)
                    if value is not None
                )
                raise ConfigError(
                    f"sample sheet {name}, line {number}: {row.barcode} of {where},"
                    f" experiment {row.experiment_id!r}, is already on line {seen[key]}"
                )
            seen[key] = number
        rows.append(row)
    if not rows:
        raise ConfigError(f"sample sheet {name} has a header but no rows: it names no samples")
    return SampleSheet(
        kits=frozenset(row.kit for row in rows), rows=tuple(rows), path=name, columns=columns
    )


def _read_text(path: Path, name: str) -> str:
    try:
        if path.is_dir():
            raise ConfigError(f"sample sheet {name} is a folder, not a CSV file")
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ConfigError(f"sample sheet {name} is {size} bytes: not a sample sheet")
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"sample sheet {name}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"sample sheet {name} cannot be read: {exc.strerror or exc}") from None
    if data.startswith(b"\xef\xbb\xbf"):
        raise ConfigError(
            f"sample sheet {name} starts with a byte-order mark, which Dorado reads as part"
            " of the first column's name: save it as plain CSV (UTF-8 without BOM)"
        )
    if b"\0" in data:
        raise ConfigError(f"sample sheet {name} is not text (it holds NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"sample sheet {name}, line {line}: not UTF-8 text") from None


def _split_lines(text: str) -> list[str]:
    """Lines as Dorado reads them: the first line end found (LF, CRLF or CR) is the
    file's; a last line end adds no line."""
    ends = re.search(r"\r\n|\r|\n", text)
    crlf = ends is not None and ends.group(0) == "\r\n"
    lines = text.split("\r" if ends is not None and ends.group(0) == "\r" else "\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines] if crlf else lines


def _header(line: str, name: str) -> tuple[str, ...]:
    if not line.strip():
        raise ConfigError(f"sample sheet {name}, line 1: empty; the first line names the columns")
    columns = tuple(line.split(","))
    for column in columns:
        if column not in COLUMNS:
            hint = " (spaces around it?)" if column.strip() in COLUMNS else ""
            raise ConfigError(
                f"sample sheet {name}, line 1: column {column!r}{hint} is not one Dorado"
                f" takes ({', '.join(COLUMNS)})"
            )
        if columns.count(column) > 1:
            raise ConfigError(f"sample sheet {name}, line 1: column {column!r} appears twice")
    if not any(index in columns for index in INDEX_COLUMNS):
        raise ConfigError(
            f"sample sheet {name}, line 1: it needs a flow_cell_id or a position_id column"
        )
    for needed in ("experiment_id", "kit"):
        if needed not in columns:
            raise ConfigError(f"sample sheet {name}, line 1: no {needed} column (Dorado needs it)")
    if ("barcode" in columns) != ("alias" in columns):
        have, lack = ("barcode", "alias") if "barcode" in columns else ("alias", "barcode")
        raise ConfigError(
            f"sample sheet {name}, line 1: it has a {have} column but no {lack} column"
            " (Dorado needs both)"
        )
    return columns


def _row(line: str, number: int, columns: tuple[str, ...], name: str) -> SampleRow:
    where = f"sample sheet {name}, line {number}"
    if not line:
        raise ConfigError(f"{where}: empty (Dorado refuses a sheet with an empty line)")
    fields = line.split(",")
    if len(fields) != len(columns):
        raise ConfigError(
            f"{where}: {len(fields)} field(s), the header has {len(columns)}"
            " (Dorado splits on every comma and knows no quoting)"
        )
    values = dict(zip(columns, fields, strict=True))
    for column in FREE_TEXT_COLUMNS:
        value = values.get(column)
        if value is not None and not _FREE_TEXT.fullmatch(value):
            raise ConfigError(
                f"{where}: {column} {value!r} is not MinKNOW free text (at most"
                f" {MAX_FREE_TEXT} letters, digits, '-' or '_'; no spaces or slashes)"
            )
    for column in INDEX_COLUMNS:
        if values.get(column) == "":
            raise ConfigError(
                f"{where}: {column} is empty (Dorado matches every id column a sheet has:"
                " fill it in or leave the column out)"
            )
    barcode, alias = values.get("barcode"), values.get("alias")
    if barcode is not None and not _BARCODE.fullmatch(barcode):
        raise ConfigError(f"{where}: barcode {barcode!r} is not a barcode name such as barcode01")
    if alias is not None:
        if not alias:
            raise ConfigError(f"{where}: the alias of {barcode} is empty")
        if _FORBIDDEN_ALIAS.fullmatch(alias):
            raise ConfigError(
                f"{where}: alias {alias!r} is a barcode name (or unclassified), which Dorado"
                " forbids: a sample's reads would pass for another barcode's"
            )
    return SampleRow(
        line=number,
        experiment_id=values["experiment_id"],
        kit=values["kit"],
        flow_cell_id=values.get("flow_cell_id"),
        position_id=values.get("position_id"),
        barcode=barcode,
        alias=alias,
        type=values.get("type"),
        sample_id=values.get("sample_id"),
    )
