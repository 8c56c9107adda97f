"""The footer check decides that a fresh pod5 is complete: a half-copied file must never pass."""

import os
import random
from pathlib import Path

import pytest

from bcmanager.pod5footer import footer_is_whole
from bcmanager.pod5io import write_pod5


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("pod5") / "whole.pod5"
    write_pod5(path, 5, 400, seed=11)
    return path.read_bytes()


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "f.pod5"
    path.write_bytes(data)
    return path


def test_a_whole_file_passes(tmp_path: Path, whole: bytes) -> None:
    assert footer_is_whole(_write(tmp_path, whole))


def test_no_prefix_of_a_file_passes(tmp_path: Path, whole: bytes) -> None:
    cuts = sorted({0, 1, 8, 24, len(whole) - 1, len(whole) - 8, *range(0, len(whole), 97)})
    passed = [n for n in cuts if footer_is_whole(_write(tmp_path, whole[:n]))]
    assert passed == []


def test_a_file_copied_out_of_order_does_not_pass_until_its_middle_is_there(
    tmp_path: Path, whole: bytes
) -> None:
    """A copy that wrote its head and tail first (sparse middle, zeros) is not whole."""
    sparse = bytearray(len(whole))
    sparse[:4096] = whole[:4096]
    sparse[-4096:] = whole[-4096:]
    assert not footer_is_whole(_write(tmp_path, bytes(sparse)))


def test_any_flipped_byte_in_the_trailer_or_footer_frame_fails(
    tmp_path: Path, whole: bytes
) -> None:
    footer_len = int.from_bytes(whole[-32:-24], "little")
    magic = len(whole) - 32 - footer_len - 8
    frame = [*range(len(whole) - 32, len(whole)), *range(magic - 16, magic + 8), *range(24)]
    passed = []
    for at in frame:
        data = bytearray(whole)
        data[at] ^= 0x5A
        if footer_is_whole(_write(tmp_path, bytes(data))):
            passed.append(at)
    assert passed == []


def test_random_garbage_never_raises(tmp_path: Path, whole: bytes) -> None:
    rng = random.Random(5)
    results = set()
    for _ in range(300):
        data = bytearray(whole)
        for _ in range(rng.randint(1, 8)):  # mostly in the footer flatbuffer
            data[rng.randrange(len(data) - 400, len(data) - 32)] = rng.randrange(256)
        results.add(footer_is_whole(_write(tmp_path, bytes(data))))
    for n in (40, 100, 1000):
        results.add(footer_is_whole(_write(tmp_path, rng.randbytes(n))))
    assert results <= {True, False} and False in results


def test_missing_and_unreadable_paths_are_not_whole(tmp_path: Path) -> None:
    assert not footer_is_whole(tmp_path / "missing.pod5")
    (tmp_path / "dir.pod5").mkdir()
    assert not footer_is_whole(tmp_path / "dir.pod5")
    assert not footer_is_whole(_write(tmp_path, b""))
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling.pod5")
    assert not footer_is_whole(tmp_path / "dangling.pod5")


def test_run_ids_come_from_the_run_table_alone(tmp_path) -> None:
    """A file's one run, as the pod5 library reads it; None for a file of several runs
    (the caller asks the pod5 library) and for one that is not whole."""
    from bcmanager.output.naming import RunIds
    from bcmanager.pod5footer import run_ids
    from tests.helpers import write_run_pod5

    ids = RunIds("PA/K 01ü", "00000000-0000-0000-0000-000000000001", "acq-1")
    one = tmp_path / "one.pod5"
    write_run_pod5(one, ids, 5, seed=1)
    assert run_ids(one) == (ids.flow_cell_id, ids.protocol_run_id, ids.run_id)
    cut = tmp_path / "cut.pod5"
    cut.write_bytes(one.read_bytes()[:-100])
    assert run_ids(cut) is None
    assert run_ids(tmp_path / "missing.pod5") is None


def test_run_ids_of_a_merged_file_of_two_runs_is_none(tmp_path) -> None:
    import dataclasses

    import pod5

    from bcmanager.pod5footer import run_ids
    from bcmanager.pod5io import make_reads

    a, b = make_reads(2, 400, seed=1), make_reads(2, 400, seed=2)  # runs run1, run2
    merged = tmp_path / "merged.pod5"
    with pod5.Writer(merged) as writer:
        writer.add_reads([*a, *[dataclasses.replace(r) for r in b]])
    assert run_ids(merged) is None


def test_run_ids_of_files_of_several_runs_read_interleaved_parse_each_run_once(
    tmp_path, monkeypatch
) -> None:
    """Each file gets its own run however the reads interleave (flow cells, protocol runs
    and acquisitions all differ), and a run's files share one Arrow parse of its table."""
    from bcmanager import pod5footer
    from bcmanager.output.naming import RunIds
    from bcmanager.pod5footer import run_ids
    from tests.helpers import write_run_pod5

    runs = [
        RunIds(f"FC{k}", f"00000000-0000-0000-0000-00000000000{k}", f"acq-{k}") for k in range(3)
    ]
    files = []
    for i in range(9):
        ids = runs[i % 3]
        path = tmp_path / f"f{i}.pod5"
        write_run_pod5(path, ids, 2 + i % 2, seed=i)
        files.append((path, (ids.flow_cell_id, ids.protocol_run_id, ids.run_id)))
    parsed = []
    parse = pod5footer._run_table
    monkeypatch.setattr(pod5footer, "_run_table", lambda data: parsed.append(1) or parse(data))
    monkeypatch.setattr(pod5footer, "_run_tables", {})
    for path, want in [*files, *reversed(files)]:
        assert run_ids(path) == want
    assert len(parsed) == 3
