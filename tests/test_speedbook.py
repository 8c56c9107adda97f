"""Engine speeds kept for the next start (bcmanager.speedbook): a restarted manager sizes
a known engine's first batch from what it did before, and a damaged book never stops it."""

import json
import logging
import math
from dataclasses import replace
from pathlib import Path

import pytest

from bcmanager import scheduler
from bcmanager.config import Settings, check_directories
from bcmanager.generations import Generation, implicit
from bcmanager.manager import Manager, Outcome
from bcmanager.reports import Timing
from bcmanager.roster import Roster
from bcmanager.scheduler import Fleet, Policy, Speed
from bcmanager.speedbook import KEEP_S, SpeedBook, model_key
from tests.helpers import basecall_dir, make_run

FAST = Speed(startup_s=2.0, bytes_per_s=5e6, filing_s_per_byte=1e-9)


def test_a_book_written_is_read_back_with_each_engines_speed_by_model(tmp_path: Path) -> None:
    path = tmp_path / "speeds.json"
    book = SpeedBook(path)
    book.note("node1-gpu0", "hac", FAST, now=100.0)
    book.note("node1-gpu0", "sup", Speed(3.0, 1e6), now=100.0)
    book.note("node2-gpu0", "hac", Speed(), now=100.0)  # never measured: not kept
    book.write(book.snapshot(100.0))
    again = SpeedBook.load(path, now=200.0)
    assert again.recall("node1-gpu0") == {"hac": FAST, "sup": Speed(3.0, 1e6)}
    assert again.recall("node2-gpu0") == {}
    assert not list(tmp_path.glob("*.tmp"))


def test_a_book_is_written_when_it_changed_and_at_most_every_so_often(tmp_path: Path) -> None:
    book = SpeedBook(tmp_path / "speeds.json")
    assert book.snapshot(0.0) is None  # nothing to write
    book.note("e1", "", FAST, now=0.0)
    assert book.snapshot(0.0) is not None
    book.note("e1", "", Speed(1.0, 4e6), now=1.0)
    assert book.snapshot(1.0) is None  # written a second ago, and e1 was in it
    book.note("e2", "", FAST, now=2.0)
    assert book.snapshot(2.0) is not None  # an engine measured for the first time: at once
    book.note("e1", "", Speed(1.0, 3e6), now=3.0)
    assert book.snapshot(3.0, force=True) is not None  # at shutdown
    assert book.snapshot(100.0) is None  # nothing new since
    book.note("e1", "", Speed(1.0, 2e6), now=101.0)
    assert book.snapshot(101.0) is not None  # changed, and the last write is old


@pytest.mark.parametrize(
    "content",
    [
        "",
        "{not json",
        "[]",
        json.dumps({"version": 99, "engines": {}}),
        json.dumps({"version": 1, "engines": []}),
        json.dumps({"version": 1, "engines": {"e1": {"": {"startup_s": 1}}}}),
        json.dumps({"version": 1, "engines": {"e1": "fast"}}),
    ],
)
def test_a_damaged_book_is_started_afresh(tmp_path: Path, content: str) -> None:
    path = tmp_path / "speeds.json"
    path.write_text(content, encoding="utf-8")
    assert SpeedBook.load(path, now=0.0).entries == {}


def test_entries_that_are_no_speed_or_too_old_are_dropped(tmp_path: Path) -> None:
    good = {"startup_s": 1.0, "bytes_per_s": 2e6, "filing_s_per_byte": 0.0, "updated": 10.0}
    entries = {
        "ok": good,
        "negative": {**good, "bytes_per_s": -1.0},
        "zero": {**good, "bytes_per_s": 0.0},
        "nan": {**good, "startup_s": math.nan},
        "text": {**good, "startup_s": "slow"},
    }
    path = tmp_path / "speeds.json"
    path.write_text(json.dumps({"version": 1, "engines": {"e1": entries}}), encoding="utf-8")
    assert set(SpeedBook.load(path, now=10.0).recall("e1")) == {"ok"}
    assert SpeedBook.load(path, now=10.0 + KEEP_S + 1).entries == {}


def test_the_model_key_names_what_changes_the_work_not_the_barcodes() -> None:
    hac = Generation("hac", model="hac@v5")
    assert model_key(hac) == model_key(Generation("other-name", model="hac@v5", kit_name="K"))
    assert model_key(hac) != model_key(Generation("m", model="hac@v5", modified_bases=("5mC",)))
    assert model_key(implicit()) == ""


def test_a_remembered_engine_is_known_from_its_first_sight_and_new_batches_outweigh_it() -> None:
    heard = []
    roster = Roster(
        horizon_s=60.0,
        remembered=lambda engine: {0: FAST} if engine == "known" else {},
        learnt=lambda seen, gen: heard.append((seen.engine, gen, seen.speed.bytes_per_s)),
    )
    known, new = roster.seen("known", 0.0), roster.seen("new", 0.0)
    assert known.speed.bytes_per_s == FAST.bytes_per_s and known.speed.startup_s == 2.0
    assert new.speed.bytes_per_s is None
    # known: it reports at a third of its lease, not as often as an engine being measured
    assert roster.heartbeat_s("known", 0, 90.0) == 30.0
    assert roster.heartbeat_s("new", 0, 90.0) == 2.0
    # a minute's batch at half the remembered rate: the new measure outweighs the old 2:1
    known.record_batch(60 * 2.5e6, 62.0, Timing(startup_s=2.0, basecall_s=60.0))
    assert known.speed.bytes_per_s == pytest.approx((15 * 5e6 + 60 * 2.5e6) / 75)


def _manager(inp: Path, out: Path, now: list[float], **kw: object) -> Manager:
    settings = check_directories(
        Settings(input=inp, output=out, lease_s=300, batch_size=2, settle_s=0, **kw)
    )
    m = Manager(settings, clock=lambda: now[0])
    m.open(scan_now=True)
    return m


def test_a_restarted_manager_sizes_a_known_engines_first_batch_from_its_book(
    run_dirs, tmp_path: Path, caplog
) -> None:
    inp, out = run_dirs
    make_run(inp, 40)
    now = [1000.0]
    m = _manager(inp, out, now)
    a = m.claim("gpu0", None, api="v1")
    assert a is not None and len(a.files) == 2  # never measured: the default batch
    basecall_dir(m.layout.assigned_dir(a.job.id, "gpu0"), m.layout.tmp_output_dir(a.job.id, "gpu0"))
    now[0] += 11.0
    m.complete(a.job.id, Outcome.DONE, a.job.token, timing=Timing(1.0, 10.0))
    rate = m.roster["gpu0"].speed.bytes_per_s
    assert rate
    m.close()  # writes the book
    book = json.loads((out / ".bcmanager" / "speeds.json").read_text(encoding="utf-8"))
    assert book["engines"]["gpu0"][""]["bytes_per_s"] == pytest.approx(rate)

    now[0] += 5.0
    with caplog.at_level(logging.INFO, logger="bcmanager.manager"):
        again = _manager(inp, out, now)
    assert "1 engine(s) known" in caplog.text
    assert again.roster.get("gpu0") is None
    b = again.claim("gpu0", None, api="v1")
    assert b is not None
    assert again.roster["gpu0"].speed.bytes_per_s == pytest.approx(rate)
    # sized for its measured speed at once (10 s of basecalling per 2 files: many files to
    # a 60 s target batch), not the never-measured engine's default two
    assert len(b.files) > 2
    stranger = again.claim("gpu1", None, api="v1")
    assert stranger is not None and stranger.job.id != b.job.id
    assert again.roster["gpu1"].speed.bytes_per_s is None
    again.close()


def test_a_shared_book_names_the_file_and_a_damaged_one_does_not_stop_the_manager(
    run_dirs, tmp_path: Path, caplog
) -> None:
    inp, out = run_dirs
    make_run(inp, 2)
    shared = tmp_path / "cluster" / "speeds.json"
    shared.parent.mkdir()
    shared.write_text("{damaged", encoding="utf-8")
    now = [1000.0]
    m = _manager(inp, out, now, speed_book=shared)
    assert "cannot be read" in caplog.text
    a = m.claim("gpu0", None, api="v1")
    assert a is not None
    basecall_dir(m.layout.assigned_dir(a.job.id, "gpu0"), m.layout.tmp_output_dir(a.job.id, "gpu0"))
    now[0] += 11.0
    m.complete(a.job.id, Outcome.DONE, a.job.token, timing=Timing(1.0, 10.0))
    m.close()
    assert "gpu0" in json.loads(shared.read_text(encoding="utf-8"))["engines"]
    assert not (out / ".bcmanager" / "speeds.json").exists()


def test_a_remembered_speed_sizes_half_a_last_part_until_a_batch_measures_it() -> None:
    """A speed from the book may be a few percent off (another driver, a busier node): the
    engine's equal-finish part is cut in two, and the second half is sized from what its
    first measured, so no estimate from an earlier run holds the tail."""
    roster = Roster(horizon_s=60.0, remembered=lambda engine: {0: FAST})
    known = roster.seen("known", 0.0)
    assert known.speed.recalled
    policy = Policy(target_batch_s=600.0)
    fleet = Fleet.of({"known": known.speed, "other": Speed(2.0, 5e6)}, at=0.0)
    first = scheduler.batch_limit(None, known.speed, fleet, 100, 300e6, policy, "known")
    measured = replace(known.speed, recalled=False)
    whole = scheduler.batch_limit(None, measured, fleet, 100, 300e6, policy, "known")
    assert first.tail and whole.tail and first.bytes == pytest.approx(whole.bytes / 2)
    known.record_batch(60 * 5e6, 62.0, Timing(startup_s=2.0, basecall_s=60.0))
    assert not known.speed.recalled


def test_engines_known_from_the_book_count_at_their_speed_as_soon_as_they_are_seen() -> None:
    """Engines started together call within a second, before the fleet is summed again: a
    known one counts at its remembered speed at once, not as the next claimer's. Counted
    as the fast first claimer, they made its part a third of its share (a warm run of 8
    engines: 38 s of work where 60 were due)."""
    book = {f"gpu{k}": Speed(1.0, rate) for k, rate in enumerate([1e6, 1e6, 1.5e6, 3e6])}
    roster = Roster(horizon_s=60.0, remembered=lambda engine: {0: book[engine]})
    fast = roster.seen("gpu3", 0.0)
    roster.fleet(0.0)  # summed with the first engine alone
    for name in ("gpu0", "gpu1", "gpu2"):
        roster.seen(name, 0.1)
    policy = Policy(target_batch_s=600.0)
    patched = roster.fleet(0.2)  # within FLEET_REFRESH_S: the cache, patched
    fresh = Fleet.of({name: roster[name].speed for name in book}, at=0.2)
    assert len(patched) == len(fresh) == 4
    got = scheduler.batch_limit(None, fast.speed, patched, 400, 650e6, policy, "gpu3", 0.2)
    due = scheduler.batch_limit(None, fast.speed, fresh, 400, 650e6, policy, "gpu3", 0.2)
    assert got.bytes == pytest.approx(due.bytes, rel=0.01)
