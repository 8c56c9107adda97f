"""MinKNOW names for the output tree (bcmanager.output.naming) and qscore defaults."""

from __future__ import annotations

import pytest

from bcmanager.output import naming
from bcmanager.output.naming import RunIds
from bcmanager.output.split import default_min_qscore

IDS = RunIds(
    flow_cell_id="PAW12345",
    protocol_run_id="e05460c6-1111-4222-8333-444455556666",
    run_id="646d7417-aaaa-4bbb-8ccc-ddddeeeeffff",
)


@pytest.mark.parametrize(
    ("relpath", "folder"),
    [
        (
            "exp/sample/20250603_1201_3E_PAW12345_e05460c6/pod5/x_0.pod5",
            "exp/sample/20250603_1201_3E_PAW12345_e05460c6",
        ),
        ("run/pod5_pass/barcode03/x.pod5", "run"),
        ("run/pod5_skip/x.pod5", "run"),
        ("pod5/x.pod5", "."),
        ("x.pod5", "PAW12345_646d7417"),
        ("loose/files/x.pod5", "loose/files/PAW12345_646d7417"),
        ("pod5_data/project/x.pod5", "pod5_data/project/PAW12345_646d7417"),
    ],
)
def test_run_folder(relpath: str, folder: str) -> None:
    assert naming.run_folder(relpath, IDS) == folder


def test_fallback_folder_is_safe_from_pod5_metadata() -> None:
    hostile = RunIds(flow_cell_id="../../etc", protocol_run_id="", run_id="a/b")
    folder = naming.run_folder("x.pod5", hostile)
    assert "/" not in folder and ".." not in folder
    assert naming.run_folder("x.pod5", RunIds("", "p", "r")).startswith("UNKNOWN_")


def test_reads_names_follow_minknow() -> None:
    barcoded = naming.reads_path("run", IDS, "bam", True, "barcode01", 42)
    assert barcoded == "run/bam_pass/barcode01/PAW12345_pass_barcode01_e05460c6_646d7417_42.bam"
    plain = naming.reads_path(".", IDS, "fastq", False, None, 7)
    assert plain == "fastq_fail/PAW12345_fail_e05460c6_646d7417_7.fastq.gz"
    unclassified = naming.reads_file_name(IDS, "bam", False, "unclassified", 3)
    assert unclassified == "PAW12345_fail_unclassified_e05460c6_646d7417_3.bam"


def test_names_are_unique_per_job_and_repeatable() -> None:
    first = {
        naming.reads_path("r", IDS, "bam", p, b, 5)
        for p in (True, False)
        for b in ("barcode01", None)
    }
    assert len(first) == 4
    again = {
        naming.reads_path("r", IDS, "bam", p, b, 5)
        for p in (True, False)
        for b in ("barcode01", None)
    }
    assert first == again
    other_job = {
        naming.reads_path("r", IDS, "bam", p, b, 6)
        for p in (True, False)
        for b in ("barcode01", None)
    }
    assert not first & other_job


def test_summary_names() -> None:
    assert naming.summary_name(IDS) == "sequencing_summary_PAW12345_e05460c6_646d7417.txt"
    assert (
        naming.summary_fragment_name(IDS, 9)
        == "sequencing_summary_PAW12345_e05460c6_646d7417_9.txt"
    )


@pytest.mark.parametrize(
    ("model", "qscore"),
    [
        ("fast", 8),
        ("hac", 9),
        ("sup", 10),
        ("hac@v5.0.0", 9),
        ("sup@v5.0.0,6mA", 10),
        ("dna_r10.4.1_e8.2_400bps_fast@v5.2.0", 8),
        ("/models/dna_r10.4.1_e8.2_400bps_sup@v5.2.0/", 10),
        ("rna004_130bps_hac@v5.1.0", 9),
    ],
)
def test_default_min_qscore_follows_the_model(model: str, qscore: int) -> None:
    assert default_min_qscore(model) == qscore


def test_default_min_qscore_needs_a_speed() -> None:
    with pytest.raises(ValueError, match="min-qscore"):
        default_min_qscore("/models/my_custom_model")


def test_minknows_random_ids_keep_their_8_characters_other_ids_get_a_digest() -> None:
    """MinKNOW's ids are random, so 8 characters tell them apart; ids that share their
    first 8 characters (converted or hand-made data) never share a name."""
    assert naming.short_id("e05460c6-1111-4222-8333-444455556666") == "e05460c6"
    assert naming.short_id("a" * 40) == "aaaaaaaa"  # an acquisition id (SHA-1)
    one = naming.short_id("00000000-0000-0000-0000-000000000001")
    two = naming.short_id("00000000-0000-0000-0000-000000000002")
    assert one != two and one.startswith("00000000-") and two.startswith("00000000-")
    assert naming.short_id("run1") == naming.short_id("run1")  # the same on every engine
    assert naming.flowcell_name("PAW12345") == "PAW12345"
    assert naming.flowcell_name("a/b") != naming.flowcell_name("a-b")
    assert "/" not in naming.flowcell_name("../x") and naming.flowcell_name("") == "UNKNOWN"


def test_runs_whose_short_ids_would_collide_get_distinct_file_names() -> None:
    ids = [
        RunIds("PAK00000", f"00000000-0000-0000-0000-{i:012d}", "aaaaaaaa-0000-4000-8000-0000")
        for i in range(1, 21)
    ]
    names = {naming.reads_file_name(r, "bam", True, None, 1) for r in ids}
    summaries = {naming.summary_name(r) for r in ids}
    assert len(names) == 20 and len(summaries) == 20
