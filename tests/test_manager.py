"""The manager service in-process, with a clock the test drives."""

import os
from pathlib import Path

import pytest

from bcmanager import scheduler
from bcmanager.config import Settings, check_directories
from bcmanager.errors import ConfigError, LeaseLost, NotFound
from bcmanager.manager import Manager, Outcome
from bcmanager.scheduler import Assignment
from bcmanager.states import FileState, JobState
from tests.helpers import assert_exactly_once, basecall_dir, make_run


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


def open_manager(inp: Path, out: Path, clock: Clock, **kw: object) -> Manager:
    settings = check_directories(
        Settings(input=inp, output=out, lease_s=30, batch_size=2, settle_s=0, **kw)
    )
    m = Manager(settings, clock=clock)
    m.open(scan_now=True)
    return m


@pytest.fixture
def clock() -> Clock:
    return Clock()


def work(m: Manager, engine: str = "e1", outcome: Outcome = Outcome.DONE) -> int:
    a = m.claim(engine, None, api="v1")
    assert a is not None
    basecall_dir(m.layout.assigned_dir(a.job.id, engine), m.layout.tmp_output_dir(a.job.id, engine))
    m.complete(a.job.id, outcome, a.job.token)
    return a.job.id


def test_a_run_basecalled_through_the_manager_has_every_read_once(run_dirs, clock) -> None:
    inp, out = run_dirs
    run = make_run(inp, 5)
    m = open_manager(inp, out, clock)
    while m.db.file_counts()[FileState.QUEUED]:
        work(m)
    assert_exactly_once(run, out)
    status = m.status()
    assert status["finished"] and status["files"]["done"] == 5
    assert sorted(os.listdir(inp)) == sorted(run)  # no ASSIGNED_ folders left behind


def test_a_repeated_completion_is_answered_the_same_and_changes_nothing(run_dirs, clock) -> None:
    inp, out = run_dirs
    make_run(inp, 2)
    m = open_manager(inp, out, clock)
    job_id = work(m)
    events = len(m.db.events(0, 1000))
    again = m.complete(job_id, Outcome.DONE, token=None)
    assert again.repeated and again.job.state is JobState.DONE
    assert len(m.db.events(0, 1000)) == events
    with pytest.raises(NotFound):
        m.complete(999, Outcome.DONE, token=None)


def test_failures_retry_then_quarantine_and_the_run_still_finishes(run_dirs, clock) -> None:
    inp, out = run_dirs
    make_run(inp, 1)
    m = open_manager(inp, out, clock, max_attempts=2)
    first = work(m, outcome=Outcome.FAILED)
    assert (inp / f"FAILED_{first}_e1").is_dir() and (out / f"FAILEDOUTPUT_{first}_e1").is_dir()
    assert m.db.get_file("f0000.pod5").attempts == 1
    work(m, outcome=Outcome.FAILED)
    assert m.db.get_file("f0000.pod5").state is FileState.QUARANTINED
    listed = (out / "QUARANTINE" / "quarantined.tsv").read_text()
    assert listed.startswith("f0000.pod5\tfailed 2 attempts")
    assert m.status()["finished"] is True
    assert m.claim("e1", None, api="v1") is None


def test_an_expired_lease_requeues_and_the_late_output_is_set_aside(run_dirs, clock) -> None:
    inp, out = run_dirs
    run = make_run(inp, 2)
    m = open_manager(inp, out, clock)
    slow = m.claim("slow", None, api="v1")
    clock.t += 20
    m.keepalive(slow.job.id, slow.job.token)
    clock.t += 31
    m.tick()
    assert not m.layout.assigned_dir(slow.job.id, "slow").exists()
    with pytest.raises(LeaseLost):
        m.keepalive(slow.job.id, slow.job.token)
    while m.db.file_counts()[FileState.QUEUED]:  # the requeued files go to another engine
        work(m, "fast")
    late_pass = m.layout.tmp_output_dir(slow.job.id, "slow") / "pass"
    late_pass.mkdir()
    with open(late_pass / "late.fastq", "w") as fh:  # the same reads, basecalled late
        for f in slow.files:
            fh.writelines(f"@{rid}\nA\n+\n!\n" for rid in run[f.path])
    late = m.complete(slow.job.id, Outcome.DONE, slow.job.token)
    assert late.late and late.job.state is JobState.LATE
    assert (out / "QUARANTINE" / f"LATE_{slow.job.id}_slow" / "pass" / "late.fastq").exists()
    assert_exactly_once(run, out)


def _interrupt_merge(m: Manager, a: Assignment, journal: bool, run_folder: str = "run1") -> dict:
    """What complete() does up to a crash mid-merge: (with `journal`, journal it in the
    ledger, as a merge that waits is,) write the manifest, move one output. The plan."""
    basecall_dir(m.layout.assigned_dir(a.job.id, "e1"), m.layout.tmp_output_dir(a.job.id, "e1"))
    inputs = [{"path": f.path, "size": f.size, "reads": None} for f in a.files]
    plan = m.layout.plan_merge(a.job.id, "e1", inputs, m.output, lambda: run_folder)
    if journal:
        scheduler.begin_merge(m.db, a.job, plan, m.clock())
    plan = m.layout.write_manifest(plan)
    src, dst = plan["outputs"][0]
    (m.layout.output / dst).parent.mkdir(parents=True, exist_ok=True)
    os.rename(m.layout.tmp_output_dir(a.job.id, "e1") / src, m.layout.output / dst)
    return plan


@pytest.mark.parametrize("journal", ["ledger", "manifest"])
def test_a_merge_interrupted_by_a_crash_is_finished_at_the_next_start(
    run_dirs, clock, journal: str
) -> None:
    """Journaled in the ledger (a merge that waited) or in its manifest alone (a merge run
    at once: the ledger still says assigned), the next start finishes it; the engine's
    DONE sent again is answered as a repeat."""
    inp, out = run_dirs
    run = make_run(inp, 2)
    m = open_manager(inp, out, clock)
    a = m.claim("e1", None, api="v1")
    _interrupt_merge(m, a, journal=journal == "ledger")
    m.db.close()
    restarted = open_manager(inp, out, clock)
    assert restarted.db.get_job(a.job.id).state is JobState.DONE
    assert_exactly_once(run, out)
    assert restarted.complete(a.job.id, Outcome.DONE, a.job.token).repeated


def test_a_merge_run_at_once_ends_its_job_in_one_step(run_dirs, clock) -> None:
    """Its manifest is its journal: the ledger sees the job go from assigned to done."""
    inp, out = run_dirs
    make_run(inp, 2)
    m = open_manager(inp, out, clock)
    a = m.claim("e1", None, api="v1")
    basecall_dir(m.layout.assigned_dir(a.job.id, "e1"), m.layout.tmp_output_dir(a.job.id, "e1"))
    m.complete(a.job.id, Outcome.DONE, a.job.token)
    moves = [
        (e.from_state, e.to_state)
        for e in m.db.events(limit=1000)
        if e.entity == "job" and e.job_id == a.job.id
    ]
    assert moves == [(None, "assigned"), ("assigned", "done")]


def test_a_done_repeated_after_a_crash_mid_merge_follows_the_manifest(run_dirs, clock) -> None:
    """The engine sends DONE again over a merge a crash interrupted (before any restart
    finished it): a new plan would list only the outputs not moved yet; the manifest on
    disk wins, so the moved one stays recorded and every read is merged once."""
    inp, out = run_dirs
    run = make_run(inp, 2)
    m = open_manager(inp, out, clock)
    a = m.claim("e1", None, api="v1")
    plan = _interrupt_merge(m, a, journal=False, run_folder=m.merger.run_folder(a.job.id, a.files))
    m.complete(a.job.id, Outcome.DONE, a.job.token)
    assert m.db.get_job(a.job.id).state is JobState.DONE
    kept = m.layout.read_manifest(m.layout.log_output_dir(a.job.id, "e1"))
    assert kept is not None and kept["outputs"] == plan["outputs"]
    assert_exactly_once(run, out)


def test_a_lost_ledger_is_rebuilt_from_the_layout(run_dirs, clock) -> None:
    inp, out = run_dirs
    run = make_run(inp, 7)
    m = open_manager(inp, out, clock, max_attempts=1)
    done_job = work(m)  # f0, f1 done
    failed = m.claim("e1", 1, api="v1")  # f2 fails alone: quarantined (max 1)
    m.complete(failed.job.id, Outcome.FAILED, failed.job.token)
    running = m.claim("e2", 2, api="legacy")  # f3, f4 running on e2 (as asked: legacy)
    m.close()
    os.remove(m.settings.ledger_path)
    clock.t += 5
    rebuilt = open_manager(inp, out, clock, max_attempts=1)
    db = rebuilt.db
    assert db.get_file("f0000.pod5").state is FileState.DONE
    assert db.get_job(done_job).state is JobState.DONE
    assert db.get_file("f0002.pod5").state is FileState.QUARANTINED
    assert db.get_job(running.job.id).state is JobState.ASSIGNED
    assert [f.path for f in db.files_of_job(running.job.id)] == ["f0003.pod5", "f0004.pod5"]
    nxt = rebuilt.claim("e3", None, api="v1")
    assert nxt.job.id > running.job.id and [f.path for f in nxt.files] == [
        "f0005.pod5",
        "f0006.pod5",
    ]
    # the engine that held the running job finishes it (legacy calls carry no token)
    basecall_dir(inp / f"ASSIGNED_{running.job.id}_e2", out / f"TMPOUTPUT_{running.job.id}_e2")
    rebuilt.complete(running.job.id, Outcome.DONE, token=None)
    basecall_dir(inp / f"ASSIGNED_{nxt.job.id}_e3", out / f"TMPOUTPUT_{nxt.job.id}_e3")
    rebuilt.complete(nxt.job.id, Outcome.DONE, nxt.job.token)
    assert_exactly_once(run, out, skip={"f0002.pod5"})


def test_a_ledger_of_another_run_is_refused(run_dirs, clock, tmp_path) -> None:
    inp, out = run_dirs
    m = open_manager(inp, out, clock, db=tmp_path / "shared.sqlite3")
    m.close()
    other_in = tmp_path / "other"
    other_in.mkdir()
    with pytest.raises(ConfigError, match="belongs to input"):
        open_manager(other_in, out, clock, db=tmp_path / "shared.sqlite3")


def test_a_restart_gives_running_jobs_a_fresh_lease(run_dirs, clock) -> None:
    inp, out = run_dirs
    make_run(inp, 2)
    m = open_manager(inp, out, clock)
    a = m.claim("e1", None, api="v1")
    m.close()
    clock.t += 29  # the manager was down for most of the lease
    restarted = open_manager(inp, out, clock)
    clock.t += 20
    restarted.tick()
    assert restarted.db.get_job(a.job.id).state is JobState.ASSIGNED
    assert restarted.keepalive(a.job.id, a.job.token).state is JobState.ASSIGNED


def test_a_ledger_that_lags_the_disk_after_a_power_loss_adopts_the_merges(run_dirs, clock) -> None:
    import shutil

    inp, out = run_dirs
    run = make_run(inp, 3)
    m = open_manager(inp, out, clock)
    first = m.claim("e1", 2, api="v1")
    basecall_dir(
        m.layout.assigned_dir(first.job.id, "e1"), m.layout.tmp_output_dir(first.job.id, "e1")
    )
    m.close()
    ledger = m.settings.ledger_path
    shutil.copy(ledger, ledger.with_suffix(".before"))  # what survives the power cut
    m = open_manager(inp, out, clock)
    m.complete(first.job.id, Outcome.DONE, first.job.token)
    b = m.claim("e2", 1, api="v1")  # a job the old ledger never heard of
    basecall_dir(m.layout.assigned_dir(b.job.id, "e2"), m.layout.tmp_output_dir(b.job.id, "e2"))
    m.complete(b.job.id, Outcome.DONE, b.job.token)
    second = b.job.id
    m.close()
    shutil.copy(ledger.with_suffix(".before"), ledger)
    restarted = open_manager(inp, out, clock)
    assert restarted.db.get_job(first.job.id).state is JobState.DONE
    assert restarted.db.get_job(second).state is JobState.DONE
    assert restarted.db.file_counts()[FileState.DONE] == 3
    assert restarted.claim("e3", None, api="v1") is None  # nothing is basecalled twice
    assert restarted.db.max_job_id() == second  # the next job id is above all on disk
    assert_exactly_once(run, out)


def test_an_output_keeps_its_layout_and_refuses_the_other(run_dirs, clock) -> None:
    inp, out = run_dirs
    make_run(inp, 1)
    m = open_manager(inp, out, clock)
    assert m.output.name == "minknow"  # the default for a new OUTPUT
    assert not (out / "pass").exists()  # no legacy folders in a MinKNOW tree
    m.close()
    with pytest.raises(ConfigError, match="holds the minknow layout"):
        open_manager(inp, out, clock, output_layout="legacy")
    again = open_manager(inp, out, clock, output_layout="minknow")
    assert again.output.name == "minknow"
    again.close()


def test_an_output_of_the_original_system_stays_legacy(run_dirs, clock) -> None:
    inp, out = run_dirs
    (out / "pass").mkdir(parents=True)
    (out / "pass" / "job_id_1_x.fastq").write_text("@r\nA\n+\n!\n")
    m = open_manager(inp, out, clock)
    assert m.output.name == "legacy"
    m.close()
    with pytest.raises(ConfigError, match="holds the legacy layout"):
        open_manager(inp, out, clock, output_layout="minknow")


def test_a_batch_holds_files_of_one_run_only(run_dirs, clock) -> None:
    inp, out = run_dirs
    for i in range(3):  # two flow cells' files, found interleaved
        make_run(inp / "exp/s/run_A/pod5", 1, prefix=f"a{i}", seed=10 + i)
        make_run(inp / "exp/s/run_B/pod5", 1, prefix=f"b{i}", seed=20 + i)
    m = open_manager(inp, out, clock)
    runs = []
    while (a := m.claim("e1", 100, api="legacy")) is not None:
        runs.append({f.path.split("/")[2] for f in a.files})
    assert sorted(map(sorted, runs)) == [["run_A"], ["run_B"]]


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("x.bam", lambda good: good + b"stale bytes of another writer"),
        ("x.bam", lambda good: good[: len(good) // 2]),
        ("x.fastq.gz", lambda good: b""),
    ],
)
def test_a_broken_output_is_not_merged_and_the_batch_fails(run_dirs, clock, name, damage) -> None:
    """Cheap checks before any rename: a BAM without its EOF block (cut short, or with
    stale bytes after it) or a gzip that is not one fails the batch; nothing reaches
    OUTPUT and the folder is kept for inspection."""
    import gzip

    import pysam

    inp, out = run_dirs
    make_run(inp, 1)
    m = open_manager(inp, out, clock, max_attempts=3)
    a = m.claim("e1", None, api="v1")
    reads = m.layout.tmp_output_dir(a.job.id, "e1") / "run/bam_pass"
    reads.mkdir(parents=True)
    whole = reads / f".whole-{name}"
    if name.endswith(".bam"):
        header = {"HD": {"VN": "1.6"}}
        with pysam.AlignmentFile(str(whole), "wb", header=header) as bam:
            seg = pysam.AlignedSegment(bam.header)
            seg.query_name, seg.query_sequence, seg.flag = "r1", "ACGT", 4
            bam.write(seg)
    else:
        with gzip.open(whole, "wb") as fh:
            fh.write(b"@r1\nACGT\n+\n!!!!\n")
    (reads / name).write_bytes(damage(whole.read_bytes()))
    whole.unlink()
    m.complete(a.job.id, Outcome.DONE, a.job.token)
    job = m.db.get_job(a.job.id)
    assert job.state is JobState.FAILED
    assert "not merged" in (job.reason or "") and name in (job.reason or "")
    assert not (out / "run").exists()
    kept = out / f"FAILEDOUTPUT_{a.job.id}_e1" / "run/bam_pass" / name
    assert kept.is_file()
    assert m.db.get_file("f0000.pod5").state is FileState.QUEUED  # retried


def test_files_of_a_claim_the_engine_never_heard_keep_until_empty_engines_waiting(
    run_dirs, clock
) -> None:
    """Issue 28: the manager died after committing a claim and before its answer left
    (failpoint `claim.after-commit`). After the restart the engine basecalled the other
    files and was told nothing more would come, while the lost claim's files were still
    leased to it: it went home, and they came back with no engine left. A job is now
    expected to come back until its engine has confirmed it (a heartbeat or a report)."""
    inp, out = run_dirs
    run = make_run(inp, 4)
    first = open_manager(inp, out, clock)
    lost = first.claim("e1", None, api="v1")  # committed; the answer never reached e1
    assert lost is not None
    first.close()
    m = open_manager(inp, out, clock)
    while m.queued():  # e1 claims and basecalls the other two files
        work(m)
    assert m.work_expected(), "an until-empty engine would go home with two files leased"
    clock.t += 31  # the lost claim's lease runs out; its files come back
    m.tick()
    assert m.queued() == 2 and m.work_expected()
    while m.queued():
        work(m)
    assert not m.work_expected()
    assert_exactly_once(run, out)


def test_a_job_its_engine_confirmed_does_not_keep_others_waiting(run_dirs, clock) -> None:
    """An engine confirms a job with its first heartbeat, sent as soon as it has the job:
    until-empty engines then go home at the end of a run without waiting on it."""
    inp, out = run_dirs
    make_run(inp, 2)
    m = open_manager(inp, out, clock)
    a = m.claim("e1", None, api="v1")
    assert m.work_expected()  # unconfirmed: its answer may not have reached e1
    m.keepalive(a.job.id, a.job.token)
    assert not m.work_expected()


def test_an_original_engines_merge_never_opens_a_pod5_with_the_pod5_library(
    run_dirs, clock, monkeypatch
) -> None:
    """Issue 23: the run folder of a flat INPUT's file comes from its run table alone
    (`pod5footer.run_ids`), not from `pod5.Reader` under the manager's lock."""
    import pod5

    inp, out = run_dirs
    make_run(inp, 2)
    m = open_manager(inp, out, clock)
    opened: list[object] = []
    real = pod5.Reader

    def counted(*args: object, **kw: object) -> object:
        opened.append(args)
        return real(*args, **kw)

    while m.db.file_counts()[FileState.QUEUED]:
        a = m.claim("orig", 1, api="legacy")
        job_in = m.layout.assigned_dir(a.job.id, "orig")
        basecall_dir(job_in, m.layout.tmp_output_dir(a.job.id, "orig"))
        with monkeypatch.context() as patched:  # the merge alone, not the stand-in basecall
            patched.setattr(pod5, "Reader", counted)
            m.complete(a.job.id, Outcome.DONE, None)
    assert opened == []
    landed = sorted(p.relative_to(out).as_posix() for p in out.glob("*/fastq_pass/*.fastq"))
    folders = [p.split("/")[0] for p in landed]
    assert [f.split("_")[0] for f in folders] == ["FA00001", "FA00002"], landed
    assert folders[0].startswith("FA00001_run1-") and folders[1].startswith("FA00002_run2-")


def test_a_run_folder_removed_by_hand_between_merges_is_made_again(run_dirs, clock) -> None:
    """Merges remember the output folders they made (no mkdir at every merge); one that a
    user removed meanwhile is made again, and the next batch still merges."""
    import shutil

    inp, out = run_dirs
    make_run(inp, 4)
    m = open_manager(inp, out, clock)
    work(m)
    first = sorted(p for p in out.glob("**/*_pass/*") if p.is_file())
    assert first
    folder = first[0].parent
    shutil.rmtree(folder)
    second = work(m)
    assert m.db.get_job(second).state is JobState.DONE
    landed = sorted(p.name for p in folder.iterdir())
    assert landed and not {p.name for p in first} & set(landed), landed


@pytest.mark.parametrize(
    ("outcome", "state"),
    [
        (Outcome.DONE, JobState.DONE),
        (Outcome.FAILED, JobState.FAILED),
        (Outcome.RELEASED, JobState.RELEASED),
    ],
)
def test_a_report_answers_the_state_it_left_the_job_in(
    run_dirs, clock, outcome: Outcome, state: JobState
) -> None:
    """The answer an engine gets (v1: `state`) is the ledger's, without reading it again."""
    inp, out = run_dirs
    make_run(inp, 2)
    m = open_manager(inp, out, clock)
    a = m.claim("e1", None, api="v1")
    basecall_dir(m.layout.assigned_dir(a.job.id, "e1"), m.layout.tmp_output_dir(a.job.id, "e1"))
    done = m.complete(a.job.id, outcome, a.job.token)
    assert done.job.state is state is m.db.get_job(a.job.id).state
    again = m.complete(a.job.id, outcome, a.job.token)
    assert again.repeated and again.job.state is state


def test_a_lease_that_runs_out_during_a_merge_finishes_the_merge(run_dirs, clock) -> None:
    """A merge journaled in its manifest alone (its ledger journal failed too: a full disk
    under both) whose engine gave up: some outputs are in OUTPUT already, so when its lease
    runs out the merge is finished, not its files queued again for a second basecall."""
    inp, out = run_dirs
    run = make_run(inp, 2)
    m = open_manager(inp, out, clock)  # a lease of 30 s
    a = m.claim("e1", None, api="v1")
    _interrupt_merge(m, a, journal=False)
    clock.t += 31
    m.tick()
    assert m.db.get_job(a.job.id).state is JobState.DONE
    assert m.db.file_counts()[FileState.QUEUED] == 0
    assert_exactly_once(run, out)


def test_a_failure_reported_after_a_merge_began_finishes_the_merge(run_dirs, clock) -> None:
    """An engine that reported DONE (the merge began: its manifest is written, an output
    moved) and then FAILED: the files are not queued again, the merge is finished."""
    inp, out = run_dirs
    run = make_run(inp, 2)
    m = open_manager(inp, out, clock)
    a = m.claim("e1", None, api="v1")
    _interrupt_merge(m, a, journal=False)
    done = m.complete(a.job.id, Outcome.FAILED, a.job.token, reason="gave up")
    assert done.job.state is JobState.DONE is m.db.get_job(a.job.id).state
    assert_exactly_once(run, out)
