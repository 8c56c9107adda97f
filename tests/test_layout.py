import json
import os
from pathlib import Path

import pytest

from bcmanager.layout import MANIFEST_NAME, Layout, is_complete_pod5
from bcmanager.output.layouts import LegacyOutput, MinknowOutput
from bcmanager.pod5io import write_pod5

LEGACY, MINKNOW = LegacyOutput(), MinknowOutput()
INPUTS = [{"path": "a.pod5", "size": 1, "reads": None}]


def _plan(lay: Layout, job: int, engine: str = "e", output=LEGACY, run: str = "run1") -> dict:
    return lay.plan_merge(job, engine, INPUTS, output, lambda: run)


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    (tmp_path / "in" / "run1" / "pod5").mkdir(parents=True)
    for rel in ("a.pod5", "run1/pod5/b.pod5"):
        (tmp_path / "in" / rel).write_bytes(b"x")
    lay = Layout(tmp_path / "in", tmp_path / "out")
    lay.ensure_output_dirs(LEGACY)
    return lay


def _basecaller_writes(lay: Layout, job: int, engine: str, names: list[str]) -> None:
    (lay.tmp_output_dir(job, engine) / "pass").mkdir()
    for name in names:
        (lay.tmp_output_dir(job, engine) / "pass" / name).write_text(f"@{name}\n")


def test_a_job_folder_links_to_the_input_files(layout: Layout) -> None:
    layout.prepare_job(7, "gpu1", ["a.pod5", "run1/pod5/b.pod5"])
    job_dir = layout.input / "ASSIGNED_7_gpu1"
    assert sorted(os.listdir(job_dir)) == ["a.pod5", "run1__pod5__b.pod5"]
    assert os.readlink(job_dir / "run1__pod5__b.pod5") == str(layout.input / "run1/pod5/b.pod5")
    assert (layout.output / "TMPOUTPUT_7_gpu1").is_dir()
    layout.prepare_job(7, "gpu1", ["a.pod5"])  # again: idempotent


def test_merge_moves_outputs_under_job_names_and_keeps_a_manifest(layout: Layout) -> None:
    layout.prepare_job(3, "e", ["a.pod5"])
    _basecaller_writes(layout, 3, "e", ["a.fastq", "b.fastq"])
    plan = _plan(layout, 3)
    layout.write_manifest(plan)
    layout.apply_merge(plan)
    assert sorted(os.listdir(layout.output / "pass")) == ["job_id_3_a.fastq", "job_id_3_b.fastq"]
    manifest = json.loads((layout.output / "LOGOUTPUT_3_e" / MANIFEST_NAME).read_text())
    assert manifest["inputs"][0]["path"] == "a.pod5"
    assert not (layout.input / "ASSIGNED_3_e").exists()
    layout.apply_merge(plan)  # a repeat changes nothing
    assert sorted(os.listdir(layout.output / "pass")) == ["job_id_3_a.fastq", "job_id_3_b.fastq"]


def test_a_merge_interrupted_halfway_finishes_without_doubling(layout: Layout) -> None:
    layout.prepare_job(4, "e", ["a.pod5"])
    _basecaller_writes(layout, 4, "e", ["x.fastq", "y.fastq"])
    plan = _plan(layout, 4)
    layout.write_manifest(plan)
    src, dst = plan["outputs"][0]
    os.rename(layout.tmp_output_dir(4, "e") / src, layout.output / dst)  # the crash came here
    layout.apply_merge(plan)
    assert sorted(os.listdir(layout.output / "pass")) == ["job_id_4_x.fastq", "job_id_4_y.fastq"]


def test_the_layout_alone_tells_what_is_done_running_failed(layout: Layout) -> None:
    layout.prepare_job(1, "e", ["a.pod5"])
    plan = _plan(layout, 1)
    layout.write_manifest(plan)
    layout.apply_merge(plan)
    layout.prepare_job(2, "e", ["run1/pod5/b.pod5"])
    layout.set_aside_failed(2, "e")
    layout.prepare_job(5, "f", ["run1/pod5/b.pod5"])
    layout.record_quarantine("bad.pod5", "failed 3 attempts")
    snap = layout.read_snapshot()
    assert snap.done == {"a.pod5"}
    assert snap.running == [(5, "f", ["run1/pod5/b.pod5"])]
    assert snap.failures["run1/pod5/b.pod5"] == 1
    assert snap.quarantined == {"bad.pod5": "failed 3 attempts"}
    assert snap.max_job_id == 5


def test_a_pod5_is_complete_only_with_its_signature_at_both_ends(tmp_path: Path) -> None:
    path = tmp_path / "r.pod5"
    write_pod5(path, 2, 200, seed=1)
    assert is_complete_pod5(path)
    data = path.read_bytes()
    (tmp_path / "half.pod5").write_bytes(data[: len(data) // 2])
    assert not is_complete_pod5(tmp_path / "half.pod5")
    (tmp_path / "empty.pod5").write_bytes(b"")
    assert not is_complete_pod5(tmp_path / "empty.pod5")
    assert not is_complete_pod5(tmp_path / "missing.pod5")


def test_engine_ids_are_names_safe_inside_folder_names() -> None:
    from bcmanager.layout import is_engine_id

    assert all(map(is_engine_id, ["gpu1", "slurm-123-node7", "a.b", "x" * 64]))
    bad = ["", "..", "a..b", "a/b", "x" * 65, "gpu1\n", "é", "a b"]
    assert not any(map(is_engine_id, bad))


def _engine_split(
    lay: Layout, job: int, rows: list[str], summary: str = "sequencing_summary_FC1_p1_r1"
) -> None:
    """What an engine's split leaves in TMPOUTPUT: MinKNOW's tree and a summary fragment."""
    tmp = lay.tmp_output_dir(job, "e")
    reads = tmp / "run1" / "bam_pass" / "barcode01"
    reads.mkdir(parents=True)
    (reads / f"FC1_pass_barcode01_p1_r1_{job}.bam").write_bytes(b"BAM")
    (tmp / "run1" / f"{summary}_{job}.txt").write_text("read_id\tq\n" + "".join(rows))
    (tmp / "basecaller.log").write_text("log")


def test_minknow_merge_moves_the_tree_and_appends_summary_rows_once(layout: Layout) -> None:
    summary = layout.output / "run1" / "sequencing_summary_FC1_p1_r1.txt"
    for job, rows in ((1, ["r1\t9\n", "r2\t7\n"]), (2, ["r3\t12\n"])):
        layout.prepare_job(job, "e", ["a.pod5"])
        _engine_split(layout, job, rows)
        plan = layout.write_manifest(_plan(layout, job, output=MINKNOW))
        layout.apply_merge(plan)
        layout.apply_merge(plan)  # a repeat changes nothing
    assert summary.read_text() == "read_id\tq\nr1\t9\nr2\t7\nr3\t12\n"
    assert sorted(os.listdir(layout.output / "run1" / "bam_pass" / "barcode01")) == [
        "FC1_pass_barcode01_p1_r1_1.bam",
        "FC1_pass_barcode01_p1_r1_2.bam",
    ]
    assert (layout.output / "LOGOUTPUT_2_e" / "basecaller.log").exists()  # logs stay aside


def test_a_run_folder_removed_by_hand_is_made_again_for_outputs_and_summary(
    layout: Layout,
) -> None:
    """Merges remember the folders they made (no mkdir per output); a run folder a user
    removed between two merges is made again, and its summary starts again with a header."""
    import shutil

    for job, rows in ((1, ["r1\t9\n"]), (2, ["r3\t12\n"])):
        if job == 2:
            shutil.rmtree(layout.output / "run1")
        layout.prepare_job(job, "e", ["a.pod5"])
        _engine_split(layout, job, rows)
        layout.apply_merge(layout.write_manifest(_plan(layout, job, output=MINKNOW)))
    summary = layout.output / "run1" / "sequencing_summary_FC1_p1_r1.txt"
    assert summary.read_text() == "read_id\tq\nr3\t12\n"
    assert os.listdir(layout.output / "run1" / "bam_pass" / "barcode01") == [
        "FC1_pass_barcode01_p1_r1_2.bam"
    ]


def test_a_summary_append_cut_short_by_a_crash_is_redone_from_its_offset(layout: Layout) -> None:
    summary = layout.output / "run1" / "sequencing_summary_FC1_p1_r1.txt"
    layout.prepare_job(1, "e", ["a.pod5"])
    _engine_split(layout, 1, ["r1\t9\n"])
    layout.apply_merge(layout.write_manifest(_plan(layout, 1, output=MINKNOW)))
    layout.prepare_job(2, "e", ["a.pod5"])
    _engine_split(layout, 2, ["r2\t7\n", "r3\t8\n"])
    plan = layout.write_manifest(_plan(layout, 2, output=MINKNOW))
    with open(summary, "a") as fh:
        fh.write("r2\t7\nr3")  # the crash came in the middle of job 2's append
    again = layout.write_manifest(_plan(layout, 2, output=MINKNOW))  # after the restart
    assert again["appends"] == plan["appends"]  # the offset of the first manifest holds
    layout.apply_merge(again)
    assert summary.read_text() == "read_id\tq\nr1\t9\nr2\t7\nr3\t8\n"


def test_minknow_puts_an_original_engines_fastq_under_its_run_folder(layout: Layout) -> None:
    layout.prepare_job(6, "old1", ["a.pod5"])
    _basecaller_writes(layout, 6, "old1", ["a.fastq"])
    plan = layout.write_manifest(_plan(layout, 6, "old1", output=MINKNOW, run="exp/FC9_abcd"))
    layout.apply_merge(plan)
    assert (layout.output / "exp/FC9_abcd/fastq_pass/job_id_6_a.fastq").read_text() == "@a.fastq\n"
    assert plan["layout"] == "minknow" and "appends" not in plan


def test_an_output_remembers_its_layout_from_its_results(tmp_path: Path) -> None:
    lay = Layout(tmp_path / "in", tmp_path / "out")
    assert lay.output_layout_on_disk() is None
    (tmp_path / "out" / "pass").mkdir(parents=True)
    assert lay.output_layout_on_disk() is None  # empty folders say nothing
    (tmp_path / "out" / "pass" / "job_id_1_a.fastq").write_text("@r\n")
    assert lay.output_layout_on_disk() == "legacy"


@pytest.mark.parametrize("dst", ["../escape.fastq", "/tmp/escape.fastq", "pass/../../x.fastq"])
def test_a_plan_naming_a_path_outside_output_moves_nothing(layout: Layout, dst: str) -> None:
    """A manifest is read back from the job's output folder, which its engine writes too:
    one whose paths leave OUTPUT (forged, or damaged) is refused before anything moves."""
    from bcmanager.errors import CorruptState

    layout.prepare_job(5, "e", ["a.pod5"])
    _basecaller_writes(layout, 5, "e", ["a.fastq"])
    plan = _plan(layout, 5)
    plan["outputs"] = [["pass/a.fastq", dst]]
    with pytest.raises(CorruptState, match="not a path inside"):
        layout.apply_merge(plan)
    assert (layout.tmp_output_dir(5, "e") / "pass" / "a.fastq").exists()
    assert not (layout.output.parent / "escape.fastq").exists()
