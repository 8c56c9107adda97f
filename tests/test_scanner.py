import os
import shutil
import time
from pathlib import Path

from bcmanager.ledger import Ledger
from bcmanager.pod5io import count_reads, write_pod5
from bcmanager.runstats import LedgerReader
from bcmanager.scanner import Discovery, run_of


class Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


def _age(path: Path, seconds: float = 60) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_finds_complete_pod5_in_flat_and_minknow_layouts_and_skips_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "in"
    run = "exp/sample/20261128_0101_1A_FAX00001_abcd1234"
    write_pod5(root / "flat.pod5", 1, 100, seed=1)
    write_pod5(root / run / "pod5" / "FAX00001_0.pod5", 1, 100, seed=2)
    write_pod5(root / run / "pod5_fail" / "FAX00001_1.pod5", 1, 100, seed=3)
    write_pod5(root / ".hidden.pod5", 1, 100, seed=4)
    write_pod5(root / "ASSIGNED_1_e" / "x.pod5", 1, 100, seed=5)
    (root / "notes.txt").write_text("x")
    os.symlink(root / "flat.pod5", root / "link.pod5")
    os.symlink(tmp_path, root / "outside")
    clock = Clock()
    clock.t += 5  # everything has settled
    found = Discovery(root, lambda _: set(), clock=clock).scan()
    assert sorted(f.path for f in found.new) == sorted(
        ["flat.pod5", f"{run}/pod5/FAX00001_0.pod5", f"{run}/pod5_fail/FAX00001_1.pod5"]
    )
    assert {f.run for f in found.new} == {".", run}
    assert run_of(f"{run}/pod5/x.pod5") == run


def test_a_file_still_being_written_is_not_found_until_complete(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    write_pod5(tmp_path / "full.pod5", 3, 300, seed=1)
    data = (tmp_path / "full.pod5").read_bytes()
    (root / "growing.pod5").write_bytes(data[:1000])
    clock = Clock()
    discovery = Discovery(root, lambda _: set(), settle_s=1.0, clock=clock)
    first = discovery.scan()
    assert first.new == [] and first.incomplete == ["growing.pod5"]
    clock.t += 5  # settled, but the signature is not at its end: still being written
    assert discovery.check_pending().new == []
    shutil.copyfile(tmp_path / "full.pod5", root / "growing.pod5")
    os.utime(root / "growing.pod5", (clock.t, clock.t))
    assert discovery.check_pending().new == []  # complete, but only just changed
    clock.t += 1.5
    assert [f.path for f in discovery.check_pending().new] == ["growing.pod5"]


def test_a_file_closed_by_its_writer_is_taken_at_once_and_its_reads_counted(tmp_path: Path) -> None:
    root = tmp_path / "in"
    clock = Clock()
    write_pod5(root / "live.pod5", 3, 300, seed=1)
    discovery = Discovery(root, lambda _: set(), settle_s=30, count_reads=count_reads, clock=clock)
    assert discovery.scan().new == []  # fresh and not known to be closed: settling
    discovery.hint("live.pod5", closed=True)
    (found,) = discovery.check_pending().new
    assert (found.path, found.reads) == ("live.pod5", 3) and found.samples > 0


def test_a_backlog_is_queued_without_opening_files_and_run_ends_are_seen(tmp_path: Path) -> None:
    root = tmp_path / "in"
    run = "exp/s/20261128_0101_1A_FAX1_abcd"
    write_pod5(root / run / "pod5" / "a.pod5", 2, 200, seed=1)
    (root / run / "final_summary_FAX1_abcd.txt").write_text("done")
    clock = Clock()
    clock.t += 3600
    opened = []
    discovery = Discovery(
        root, lambda _: set(), count_reads=lambda p: opened.append(p), clock=clock
    )
    result = discovery.scan()
    assert [f.path for f in result.new] == [f"{run}/pod5/a.pod5"] and result.new[0].reads is None
    assert opened == []
    assert result.ended_runs == [(run, f"{run}/final_summary_FAX1_abcd.txt")]


def test_known_files_are_not_opened_and_settled_folders_not_relisted(tmp_path: Path) -> None:
    root = tmp_path / "in"
    ledger = Ledger(tmp_path / "l.sqlite3")
    for i in range(3):
        write_pod5(root / "d" / f"f{i}.pod5", 1, 100, seed=i)
    _age(root / "d")
    _age(root)
    clock = Clock()
    clock.t += 5
    discovery = Discovery(root, LedgerReader(ledger.path).known_names_in, clock=clock)
    first = discovery.scan()
    ledger.add_files(first.new, 1.0)
    assert len(first.new) == 3
    second = discovery.scan()
    assert second.new == [] and second.folders_listed == 0
    write_pod5(root / "d" / "f9.pod5", 1, 100, seed=9)
    clock.t += 5
    third = discovery.scan()
    assert [f.path for f in third.new] == ["d/f9.pod5"]


def test_a_large_walk_hands_files_over_as_it_goes(tmp_path: Path, monkeypatch) -> None:
    import bcmanager.scanner as scanner

    monkeypatch.setattr(scanner, "FLUSH_EVERY", 2)
    root = tmp_path / "in"
    for i in range(5):
        write_pod5(root / f"f{i}.pod5", 1, 100, seed=i)
    clock = Clock()
    clock.t += 5
    handed: list[list[str]] = []
    result = Discovery(root, lambda _: set(), clock=clock).scan(
        sink=lambda files: handed.append([f.path for f in files])
    )
    assert [len(batch) for batch in handed] == [2, 2]
    assert sorted([p for batch in handed for p in batch] + [f.path for f in result.new]) == [
        f"f{i}.pod5" for i in range(5)
    ]
