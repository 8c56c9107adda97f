import os
import shutil
import time
from pathlib import Path

from bcmanager.ledger import Ledger
from bcmanager.pod5io import write_pod5
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


def test_a_file_still_being_written_waits_and_a_whole_one_is_taken_the_moment_it_is_seen(
    tmp_path: Path,
) -> None:
    root = tmp_path / "in"
    root.mkdir()
    write_pod5(tmp_path / "full.pod5", 3, 300, seed=1)
    data = (tmp_path / "full.pod5").read_bytes()
    (root / "growing.pod5").write_bytes(data[:1000])
    clock = Clock()
    discovery = Discovery(root, lambda _: set(), settle_s=30.0, clock=clock)
    first = discovery.scan()
    assert first.new == [] and first.incomplete == ["growing.pod5"]
    clock.t += 60  # settled, but the signature is not at its end: still being written
    assert discovery.check_pending().new == []
    shutil.copyfile(tmp_path / "full.pod5", root / "growing.pod5")
    os.utime(root / "growing.pod5", (clock.t, clock.t))
    # just changed and the settle time is long, but its footer is whole: complete now
    assert [f.path for f in discovery.check_pending().new] == ["growing.pod5"]
    assert discovery.pending_count == 0


def test_a_file_without_a_whole_footer_waits_for_the_settle_rule(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    write_pod5(tmp_path / "full.pod5", 3, 300, seed=1)
    data = bytearray((tmp_path / "full.pod5").read_bytes())
    data[-40:-32] = b"\xff" * 8  # footer length garbled; the signature still at both ends
    (root / "odd.pod5").write_bytes(bytes(data))
    clock = Clock()
    discovery = Discovery(root, lambda _: set(), settle_s=1.0, clock=clock)
    assert discovery.scan().new == [] and discovery.pending_count == 1
    clock.t += 0.5
    assert discovery.check_pending().new == []
    clock.t += 1.0  # unchanged for the settle time, signature at both ends: complete
    assert [f.path for f in discovery.check_pending().new] == ["odd.pod5"]


def test_a_fresh_burst_is_taken_at_once_without_opening_files_with_pod5(
    tmp_path: Path, monkeypatch
) -> None:
    import pod5

    opened: list[object] = []
    monkeypatch.setattr(pod5, "Reader", lambda *a, **k: opened.append(a))
    root = tmp_path / "in"
    write_pod5(tmp_path / "one.pod5", 2, 200, seed=1)
    (root / "burst").mkdir(parents=True)
    for i in range(50):  # hard links: one inode, written a moment ago
        os.link(tmp_path / "one.pod5", root / "burst" / f"f{i:02d}.pod5")
    clock = Clock()  # "now" is the files' own write time: less than a second old
    found = Discovery(root, lambda _: set(), settle_s=30.0, clock=clock).scan()
    assert sorted(f.path for f in found.new) == [f"burst/f{i:02d}.pod5" for i in range(50)]
    assert all(f.reads is None for f in found.new) and opened == []


def test_a_file_renamed_into_input_is_complete_at_once(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    clock = Clock()
    discovery = Discovery(root, lambda _: set(), settle_s=30.0, clock=clock)
    assert discovery.scan().new == []
    write_pod5(root / ".incoming.pod5.tmp", 2, 200, seed=3)  # as rsync names it
    assert discovery.scan().new == []  # hidden: not a candidate
    os.rename(root / ".incoming.pod5.tmp", root / "run.pod5")
    discovery.hint("run.pod5")  # inotify's "moved" event
    assert [f.path for f in discovery.check_pending().new] == ["run.pod5"]


def test_a_backlog_is_queued_and_run_ends_are_seen(tmp_path: Path) -> None:
    root = tmp_path / "in"
    run = "exp/s/20261128_0101_1A_FAX1_abcd"
    write_pod5(root / run / "pod5" / "a.pod5", 2, 200, seed=1)
    (root / run / "final_summary_FAX1_abcd.txt").write_text("done")
    clock = Clock()
    clock.t += 3600
    result = Discovery(root, lambda _: set(), clock=clock).scan()
    assert [f.path for f in result.new] == [f"{run}/pod5/a.pod5"] and result.new[0].reads is None
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
    assert [len(batch) for batch in handed] == [2, 2]  # handed over as found, not at the end
    assert sorted([p for batch in handed for p in batch] + [f.path for f in result.new]) == [
        f"f{i}.pod5" for i in range(5)
    ]
