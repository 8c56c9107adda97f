"""MinKNOW/Dorado sample sheets: read as Dorado reads them, refused where Dorado would
refuse them (or quietly lose the aliases), always with the file and the line."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bcmanager.errors import ConfigError
from bcmanager.samplesheet import SampleSheet, load_sample_sheet

KIT = "SQK-NBD114-24"
HEADER = "flow_cell_id,experiment_id,kit,barcode,alias,type"
MINKNOW = f"""{HEADER}
PAO25751,exp1,{KIT},barcode01,patient_a,test_sample
PAO25751,exp1,{KIT},barcode02,patient_b,test_sample
PAO25752,exp1,{KIT},barcode01,patient_c,positive_control
"""


def write(tmp_path: Path, text: str | bytes, name: str = "sheet.csv") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def test_a_minknow_sheet_gives_each_barcode_its_alias(tmp_path: Path) -> None:
    sheet = load_sample_sheet(write(tmp_path, MINKNOW), kit=KIT)
    assert isinstance(sheet, SampleSheet)
    assert sheet.kits == frozenset({KIT})
    assert sheet.barcodes() == frozenset({"barcode01", "barcode02"})
    assert sheet.alias("barcode01", flow_cell_id="PAO25751", experiment_id="exp1") == "patient_a"
    assert sheet.alias("barcode01", flow_cell_id="PAO25752", experiment_id="exp1") == "patient_c"
    assert sheet.alias("barcode02", flow_cell_id="PAO25751") == "patient_b"
    # Dorado's classification names the kit too: KIT_barcode02
    assert sheet.alias(f"{KIT}_barcode02", flow_cell_id="PAO25751") == "patient_b"
    # not in the sheet: no alias (Dorado writes those reads as unclassified)
    assert sheet.alias("barcode03", flow_cell_id="PAO25751", experiment_id="exp1") is None
    assert sheet.alias("barcode02", flow_cell_id="PAO25752", experiment_id="exp1") is None
    assert sheet.alias("barcode01", flow_cell_id="PAO25751", experiment_id="exp2") is None
    assert sheet.alias("unclassified", flow_cell_id="PAO25751") is None
    # without the flow cell barcode01 could be patient_a or patient_c: no guess
    assert sheet.alias("barcode01") is None
    assert sheet.alias("barcode02") == "patient_b"


def test_a_sheet_by_position_and_one_with_both_ids(tmp_path: Path) -> None:
    by_position = load_sample_sheet(
        write(tmp_path, "position_id,experiment_id,kit,barcode,alias\nX1,e,K,barcode07,s7\n")
    )
    assert by_position.alias("barcode07", position_id="X1", experiment_id="e") == "s7"
    assert by_position.alias("barcode07", position_id="X2", experiment_id="e") is None
    both = load_sample_sheet(
        write(
            tmp_path,
            "protocol_run_id,flow_cell_id,position_id,sample_id,experiment_id,"
            "flow_cell_product_code,kit,alias,type,barcode\n"
            "p,FC1,1A,lib-1,e,FLO-MIN114,K,s12,test_sample,barcode12\n",
            "both.csv",
        ),
        kit="K",
    )
    assert both.alias("barcode12", "FC1", "1A", "e") == "s12"
    assert both.alias("barcode12", "FC1", "1B", "e") is None  # Dorado matches every id given


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_line_ends_as_dorado_reads_them(tmp_path: Path, newline: str) -> None:
    text = MINKNOW.replace("\n", newline)
    sheet = load_sample_sheet(write(tmp_path, text), kit=KIT)
    assert sheet.alias("barcode02", "PAO25751", None, "exp1") == "patient_b"
    assert len(sheet.rows) == 3
    no_last_newline = load_sample_sheet(write(tmp_path, text.rstrip(newline), "b.csv"))
    assert no_last_newline.rows == sheet.rows


def test_a_sheet_without_barcodes_names_no_samples(tmp_path: Path) -> None:
    """Dorado accepts a sheet without barcode and alias columns; it names no aliases."""
    sheet = load_sample_sheet(write(tmp_path, "flow_cell_id,experiment_id,kit\nFC1,e,K\n"), "K")
    assert sheet.barcodes() == frozenset()
    assert sheet.alias("barcode01", "FC1", None, "e") is None
    assert sheet.kits == frozenset({"K"})


BAD_SHEETS = [
    # (name, text, what the message says, line)
    ("empty", "", "is empty", None),
    ("blank header", "\nFC1,e,K\n", "line 1: empty", 1),
    ("unknown column", f"{HEADER},notes\n", "column 'notes' is not one Dorado takes", 1),
    ("padded column", "flow_cell_id, experiment_id,kit\n", "spaces around it", 1),
    ("duplicate column", "flow_cell_id,kit,kit,experiment_id\n", "'kit' appears twice", 1),
    ("no flow cell or position", "experiment_id,kit\ne,K\n", "flow_cell_id or a position_id", 1),
    ("no experiment_id", "flow_cell_id,kit\nFC1,K\n", "no experiment_id column", 1),
    ("no kit", "flow_cell_id,experiment_id\nFC1,e\n", "no kit column", 1),
    (
        "barcode without alias",
        "flow_cell_id,experiment_id,kit,barcode\nF,e,K,barcode01\n",
        "barcode column but no alias",
        1,
    ),
    (
        "alias without barcode",
        "flow_cell_id,experiment_id,kit,alias\nF,e,K,a\n",
        "alias column but no barcode",
        1,
    ),
    ("header only", f"{HEADER}\n", "no rows", None),
    ("too few fields", f"{HEADER}\nF,e,{KIT},barcode01,a\n", "5 field(s), the header has 6", 2),
    (
        "a quoted comma",
        f'{HEADER}\nF,e,{KIT},barcode01,"a,b",test_sample\n',
        "knows no quoting",
        2,
    ),
    ("bad barcode", f"{HEADER}\nF,e,{KIT},bc01,a,t\n", "'bc01' is not a barcode name", 2),
    ("one-digit barcode", f"{HEADER}\nF,e,{KIT},barcode1,a,t\n", "not a barcode name", 2),
    ("empty alias", f"{HEADER}\nF,e,{KIT},barcode01,,t\n", "alias of barcode01 is empty", 2),
    ("alias with a space", f"{HEADER}\nF,e,{KIT},barcode01,my sample,t\n", "free text", 2),
    ("alias with a slash", f"{HEADER}\nF,e,{KIT},barcode01,a/b,t\n", "no spaces or slashes", 2),
    ("alias too long", f"{HEADER}\nF,e,{KIT},barcode01,{'a' * 41},t\n", "at most 40", 2),
    ("alias a barcode", f"{HEADER}\nF,e,{KIT},barcode01,barcode05,t\n", "barcode name", 2),
    ("alias unclassified", f"{HEADER}\nF,e,{KIT},barcode01,unclassified,t\n", "forbids", 2),
    ("bad experiment_id", f"{HEADER}\nF,e 1,{KIT},barcode01,a,t\n", "experiment_id 'e 1'", 2),
    ("empty flow cell", f"{HEADER}\n,e,{KIT},barcode01,a,t\n", "flow_cell_id is empty", 2),
    (
        "duplicate barcode",
        f"{HEADER}\nF,e,{KIT},barcode01,a,t\nF,e,{KIT},barcode02,b,t\nF,e,{KIT},barcode01,c,t\n",
        "barcode01 of flow cell F, experiment 'e', is already on line 2",
        4,
    ),
    (
        "two experiments",
        f"{HEADER}\nF,e1,{KIT},barcode01,a,t\nF,e2,{KIT},barcode02,b,t\n",
        "one experiment per sheet",
        3,
    ),
    (
        "an empty line",
        f"{HEADER}\nF,e,{KIT},barcode01,a,t\n\nF,e,{KIT},barcode02,b,t\n",
        "empty",
        3,
    ),
]


@pytest.mark.parametrize(
    ("text", "says", "line"), [b[1:] for b in BAD_SHEETS], ids=[b[0] for b in BAD_SHEETS]
)
def test_what_dorado_would_refuse_is_refused_with_file_and_line(
    tmp_path: Path, text: str, says: str, line: int | None
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_sample_sheet(path)
    message = str(caught.value)
    assert str(path) in message
    assert says in message
    if line is not None:
        assert f"line {line}:" in message


def test_a_kit_other_than_the_engines_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, MINKNOW.replace(f"{KIT},barcode02", "SQK-RBK114-24,barcode02"))
    assert load_sample_sheet(path).kits == {KIT, "SQK-RBK114-24"}  # no kit asked: loads
    with pytest.raises(ConfigError) as caught:
        load_sample_sheet(path, kit=KIT)
    message = str(caught.value)
    assert str(path) in message and "line 3" in message
    assert f"kit 'SQK-RBK114-24' is not the --kit-name {KIT!r}" in message


def test_files_that_are_not_sheets(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_sample_sheet(tmp_path / "missing.csv")
    with pytest.raises(ConfigError, match="is a folder"):
        load_sample_sheet(tmp_path)
    with pytest.raises(ConfigError, match="byte-order mark"):
        load_sample_sheet(write(tmp_path, b"\xef\xbb\xbf" + MINKNOW.encode(), "bom.csv"))
    latin1 = f"{HEADER}\nF,e,{KIT},barcode01,caf\xe9,t\n".encode("latin-1")
    with pytest.raises(ConfigError, match=r"line 2: not UTF-8"):
        load_sample_sheet(write(tmp_path, latin1, "latin.csv"))
    with pytest.raises(ConfigError, match="NUL"):
        load_sample_sheet(write(tmp_path, b"\x1f\x8b\x08\x00\x00\x00", "sheet.csv.gz"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.one_of(
        st.binary(max_size=400),
        st.lists(
            st.lists(
                st.sampled_from(
                    [
                        "flow_cell_id",
                        "position_id",
                        "experiment_id",
                        "kit",
                        "barcode",
                        "alias",
                        "type",
                        "barcode01",
                        "barcode02",
                        "unclassified",
                        "FC1",
                        "K",
                        "e",
                        "",
                        " ",
                        "a/b",
                        "\r",
                        '"',
                        "é",
                    ]
                ),
                max_size=7,
            ).map(",".join),
            max_size=6,
        ).map(lambda lines: "\n".join(lines).encode()),
    ),
    kit=st.sampled_from([None, "K"]),
)
def test_no_bytes_crash_the_loader(tmp_path_factory: pytest.TempPathFactory, data, kit) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "sheet.csv"
    path.write_bytes(data)
    try:
        sheet = load_sample_sheet(path, kit)
    except ConfigError as exc:
        assert str(path) in str(exc)
        return
    assert sheet.rows and all(row.alias != "" for row in sheet.rows)
    if kit is not None:
        assert sheet.kits == {kit}
    for barcode in sheet.barcodes():
        sheet.alias(barcode)  # answers, never raises
