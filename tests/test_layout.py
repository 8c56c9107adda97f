import json
import os
from pathlib import Path

import pytest

from bcmanager.layout import MANIFEST_NAME, Layout, is_complete_pod5
from bcmanager.pod5io import write_pod5


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    (tmp_path / "in" / "run1" / "pod5").mkdir(parents=True)
    for rel in ("a.pod5", "run1/pod5/b.pod5"):
        (tmp_path / "in" / rel).write_bytes(b"x")
    lay = Layout(tmp_path / "in", tmp_path / "out")
    lay.ensure_output_dirs()
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
    plan = layout.plan_merge(3, "e", [{"path": "a.pod5", "size": 1, "reads": None}])
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
    plan = layout.plan_merge(4, "e", [{"path": "a.pod5", "size": 1, "reads": None}])
    layout.write_manifest(plan)
    src, dst = plan["outputs"][0]
    os.rename(layout.tmp_output_dir(4, "e") / src, layout.output / dst)  # the crash came here
    layout.apply_merge(plan)
    assert sorted(os.listdir(layout.output / "pass")) == ["job_id_4_x.fastq", "job_id_4_y.fastq"]


def test_the_layout_alone_tells_what_is_done_running_failed(layout: Layout) -> None:
    layout.prepare_job(1, "e", ["a.pod5"])
    plan = layout.plan_merge(1, "e", [{"path": "a.pod5", "size": 1, "reads": None}])
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
