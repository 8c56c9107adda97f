"""Real engines against a real manager: late leases, SIGTERM, manager restarts, filing.

Engines run as subprocesses, or in this process where a test holds a step (filing)."""

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import bcmanager.engine.filing as engine_filing
from bcmanager.basecallers import make_basecaller
from bcmanager.engine import BatchClock, Engine, EngineConfig, last_output_age
from tests.helpers import assert_exactly_once, make_run, wait_until


def running_jobs(m) -> list[dict]:
    return m.status()["running_jobs"]


def basecalling(out, engine_id: str) -> bool:
    """The engine holds a batch and has started its basecaller (the manager shows a job
    as soon as it is created, before the engine has read the answer to its claim)."""
    return any(out.glob(f"TMPOUTPUT_*_{engine_id}/basecaller.log"))


def test_engines_basecall_a_run_exactly_once_and_exit_when_empty(
    run_dirs, start_manager, start_engine
) -> None:
    inp, out = run_dirs
    run = make_run(inp, 8, reads=4)
    m = start_manager(inp, out, "--batch-size", "2")
    wait_until(lambda: m.status()["files_total"] == 8, what="the scan")
    engines = [start_engine(m.url, f"gpu{i}", "--until-empty") for i in (1, 2)]
    for e in engines:
        assert e.wait(timeout=60) == 0, e.log.read_text()
    assert_exactly_once(run, out)
    done_by = {e["engine"]: e["files_done"] for e in m.status()["engines"]}
    assert sum(done_by.values()) == 8


def test_a_basecaller_failure_is_reported_and_the_file_retried(
    run_dirs, start_manager, start_engine
) -> None:
    inp, out = run_dirs
    make_run(inp, 1)
    m = start_manager(inp, out, "--max-attempts", "2")
    wait_until(lambda: m.status()["files_total"] == 1, what="the scan")
    e = start_engine(
        m.url, "bad", "--basecaller", "command", "--command", "false {input}", "--until-empty"
    )
    assert e.wait(timeout=60) == 0
    status = m.status()
    assert status["jobs"]["failed"] == 2 and status["files"]["quarantined"] == 1
    assert "basecaller exit code 1" in status["quarantined"][0]["reason"]


def test_sigterm_hands_the_batch_back_at_once(run_dirs, start_manager, start_engine) -> None:
    inp, out = run_dirs
    make_run(inp, 2)
    m = start_manager(inp, out, "--lease", "60")
    wait_until(lambda: m.status()["files_total"] == 2, what="the scan")
    e = start_engine(m.url, "slow", "--basecaller", "command", "--command", "sleep 60")
    wait_until(lambda: basecalling(out, "slow"), what="the engine basecalling")
    t0 = time.monotonic()
    e.send_signal(signal.SIGTERM)
    assert e.wait(timeout=15) == 0
    assert time.monotonic() - t0 < 10
    status = m.status()
    assert (
        status["jobs"]["released"] == 1 and status["files"]["queued"] == 2
    )  # no lease to wait out


def test_an_engine_frozen_past_its_lease_drops_its_batch(
    run_dirs, start_manager, start_engine
) -> None:
    inp, out = run_dirs
    run = make_run(inp, 2, reads=5)
    m = start_manager(inp, out, "--lease", "1.5", "--batch-size", "2")
    wait_until(lambda: m.status()["files_total"] == 2, what="the scan")
    frozen = start_engine(m.url, "frozen", "--samples-per-s", "400")  # ~ several seconds a batch
    wait_until(lambda: basecalling(out, "frozen"), what="the engine basecalling")
    frozen.send_signal(signal.SIGSTOP)
    wait_until(lambda: m.status()["jobs"]["expired"] == 1, what="the lease to expire")
    rescuer = start_engine(m.url, "rescuer", "--until-empty")
    assert rescuer.wait(timeout=60) == 0
    frozen.send_signal(signal.SIGCONT)
    wait_until(lambda: m.status()["jobs"]["late"] == 1, timeout=30, what="the late report")
    wait_until(lambda: "lease lost" in frozen.log.read_text(), what="the engine told it is late")
    assert_exactly_once(run, out)


def test_an_engine_survives_a_manager_restart(run_dirs, start_manager, start_engine) -> None:
    inp, out = run_dirs
    run = make_run(inp, 6, reads=3)
    m = start_manager(inp, out, "--batch-size", "1")
    wait_until(lambda: m.status()["files_total"] == 6, what="the scan")
    e = start_engine(m.url, "steady", "--samples-per-s", "3000", "--batch-size", "1")
    wait_until(lambda: m.status()["files"]["done"] >= 1, what="a first batch")
    m.kill9()
    # the engine finds the manager gone (at its next call, once its batch is through)
    wait_until(lambda: "retrying" in e.log.read_text(), what="the engine retrying")
    restarted = start_manager(inp, out, "--batch-size", "1", port=m.port)
    wait_until(
        lambda: restarted.status()["files"]["done"] == 6, timeout=60, what="the run to finish"
    )
    assert e.poll() is None  # still working, as the original engine would not be
    assert_exactly_once(run, out)


def test_an_engine_reports_its_basecallers_start_up_and_gets_batches_sized_from_it(
    run_dirs, start_manager, start_engine
) -> None:
    inp, out = run_dirs
    run = make_run(inp, 12, reads=4, samples=2000)
    m = start_manager(inp, out, "--batch-size", "2", "--target-batch", "1")
    wait_until(lambda: m.status()["files_total"] == 12, what="the scan")
    e = start_engine(
        m.url, "gpu1", "--until-empty", "--startup-s", "0.6", "--samples-per-s", "40000"
    )
    assert e.wait(timeout=90) == 0, e.log.read_text()
    assert_exactly_once(run, out)
    (seen,) = m.status()["engines"]
    # the 0.6 s to the first output, and spawning and reporting: not claim to report
    assert 0.5 <= seen["startup_s"] <= 1.5
    assert seen["bytes_per_s"] > 0
    sizes = [j["n_files"] for j in jobs_of(m)]
    # the first batch (speed unknown) is a probe: the default batch at most, though the
    # engine is alone (others may still be arriving); once the 0.6 s start-up is known, a
    # batch is long enough that start-up is at most 1 % of it: far more than that
    assert sizes[0] == 2 and max(sizes[1:]) > 3, sizes


def jobs_of(m) -> list[dict]:
    events = m.get("/v1/events", limit=1000).json()["events"]
    ids = sorted({e["job_id"] for e in events if e["job_id"] and e["to"] == "assigned"})
    return [m.get(f"/v1/jobs/{i}").json() for i in ids]


def test_a_dorado_like_engine_writes_the_original_fastq_names_in_the_legacy_layout(
    run_dirs, start_manager, start_engine
) -> None:
    inp, out = run_dirs
    run = make_run(inp, 4, reads=6, samples=1500)
    m = start_manager(inp, out, "--output-layout", "legacy", "--batch-size", "2")
    e = start_engine(m.url, "gpu1", "--until-empty")
    assert e.wait(timeout=60) == 0, e.log.read_text()
    names = sorted(p.name for p in (out / "pass").iterdir())
    batches = sorted(j["job_id"] for j in jobs_of(m))
    assert names == [f"job_id_{n}_basecalls.fastq" for n in batches]  # one stream per batch
    assert not any(p.is_dir() for p in out.iterdir() if p.name.endswith(("_pass", "_fail")))
    assert_exactly_once(run, out)  # split reads count for their parent (pi in the header)


def test_an_engine_reports_its_progress_on_a_batch_in_its_heartbeats(
    run_dirs, start_manager, start_engine
) -> None:
    """Mid-batch the manager knows how far the engine is (its basecaller's start-up, how
    long it has basecalled, the output written so far, growing, and the reads filed of the
    batch's): what sizes other engines' batches before this one ends."""
    inp, out = run_dirs
    run = make_run(inp, 8, reads=10, samples=2000)
    m = start_manager(inp, out, "--batch-size", "8", "--lease", "1.5")  # heartbeats: 0.5 s
    wait_until(lambda: m.status()["files_total"] == 8, what="the scan")
    e = start_engine(
        m.url, "gpu1", "--until-empty", "--startup-s", "0.3", "--samples-per-s", "40000"
    )  # 160,000 samples: 4 s of basecalling in one batch
    said: list[dict] = []

    def output_grew() -> bool:
        """Heartbeats until two show written output, the later more (on a busy machine
        the first reads may come a heartbeat or two after the basecaller's start)."""
        (seen,) = m.status()["engines"] or [{"progress": None}]
        p = seen["progress"]
        if p is not None and (not said or p["basecall_s"] > said[-1]["basecall_s"]):
            said.append(p)
        sizes = [q["output_bytes"] for q in said if q["output_bytes"] > 0]
        counted = [q["reads_done"] for q in said if q["reads_done"]]
        return len(sizes) >= 2 and sizes[0] < sizes[-1] and len(counted) >= 1

    wait_until(output_grew, timeout=30, what="two heartbeats with growing output")
    assert all(0.2 <= p["startup_s"] <= 1.5 for p in said), said
    # the reads it has filed, of the 80 its 8 files hold (read from them by the engine)
    assert {p["reads_total"] for p in said if p["reads_done"]} == {80}, said
    counted = [p["reads_done"] for p in said if p["reads_done"]]
    assert counted == sorted(counted) and 0 < counted[-1] <= 80, said
    # and when the count was reached: it grows in steps (output comes in blocks), so the
    # manager measures the rate between counts, not up to each heartbeat
    reached = [(p["reads_at_s"], p["basecall_s"]) for p in said if p["reads_done"]]
    assert all(0 <= at <= basecall for at, basecall in reached), said
    assert [at for at, _ in reached] == sorted(at for at, _ in reached), said
    assert [p["basecall_s"] for p in said] == sorted(p["basecall_s"] for p in said), said
    assert e.wait(timeout=60) == 0, e.log.read_text()
    assert_exactly_once(run, out)
    assert [j["n_files"] for j in jobs_of(m)] == [8]


@contextmanager
def filing_held(
    m, monkeypatch, samples_per_s: float, until_empty: bool = False
) -> Iterator[Engine]:
    """An in-process engine (batches of one file) whose filing waits until the block ends,
    as splitting a large BAM takes a while; the filing itself is the real one. Yields once
    it is filing its first batch and has claimed its next; at the end lets filing go and
    waits for the engine to finish."""
    waiting, go_on = threading.Event(), threading.Event()

    def held(real_filing):
        def filing(*args, **kwargs):
            if not go_on.is_set():
                waiting.set()
                go_on.wait(timeout=60)
            return real_filing(*args, **kwargs)

        return filing

    for name in ("file_native_output", "finish_stream_filing"):  # whole files, or a stream's end
        monkeypatch.setattr(engine_filing, name, held(getattr(engine_filing, name)))
    config = EngineConfig(m.url, "gpu1", batch_size=1, until_empty=until_empty, wait_s=5)
    engine = Engine(config, make_basecaller("simulated", samples_per_s=samples_per_s))
    worker = threading.Thread(target=engine.run)
    worker.start()
    try:
        wait_until(waiting.is_set, what="the first batch's filing")
        wait_until(lambda: len(running_jobs(m)) == 2, what="the next batch claimed")
        yield engine
    finally:
        go_on.set()
        worker.join(timeout=60)
    assert not worker.is_alive()


def test_the_next_batch_is_basecalled_while_the_last_is_filed_and_its_lease_kept(
    run_dirs, start_manager, monkeypatch
) -> None:
    """Filing a batch (splitting its BAM into the layout) is CPU work on the GPU node: the
    engine claims and basecalls its next batch meanwhile, and keeps the filed batch's lease
    alive however long filing takes (here longer than the lease)."""
    inp, out = run_dirs
    run = make_run(inp, 2, reads=4, samples=2000)
    m = start_manager(inp, out, "--lease", "1.5")  # heartbeats every 0.5 s
    wait_until(lambda: m.status()["files_total"] == 2, what="the scan")
    # 0.4 s a batch; the second is claimed and basecalled while the first is being filed
    with filing_held(m, monkeypatch, samples_per_s=20_000, until_empty=True) as engine:
        (seen,) = m.status()["engines"]
        assert seen["bytes_per_s"] > 0  # learnt when the first was basecalled, not reported
        time.sleep(2.5)  # filing outlasts the 1.5 s lease: heartbeats keep it
        running = running_jobs(m)
        assert len(running) == 2 and m.status()["jobs"]["expired"] == 0, running
    assert [r.outcome for r in engine.results] == ["done", "done"], engine.results
    assert_exactly_once(run, out)
    jobs = jobs_of(m)
    assert [j["state"] for j in jobs] == ["done", "done"], jobs


def test_basecalling_ends_at_the_last_output_not_at_the_basecallers_exit(tmp_path) -> None:
    """What a basecaller does after its last read (closing files, freeing the GPU) is a
    fixed cost of every batch: counted as basecalling, a short first batch's rate would
    seem slower than the GPU is, and its later batches would be sized short."""
    out = tmp_path / "out"
    (out / "basecalls").mkdir(parents=True)
    log_path = out / "basecaller.log"
    log_path.write_text("still logging\n")  # the log is not output
    assert last_output_age(out, log_path) is None
    bam = out / "basecalls" / "a.bam"
    bam.write_bytes(b"x" * 100)
    written = time.time() - 2.0
    os.utime(bam, (written, written))
    assert 1.9 <= last_output_age(out, log_path) <= 3.0
    now = time.monotonic()
    clock = BatchClock(out, log_path, started=now - 10.0, ready=now - 8.0)
    end = clock.basecalling_end(now)
    assert now - 3.1 <= end <= now - 1.9  # 6 s of basecalling, not 8
    progress = clock.progress(end)
    assert 5.0 <= progress["basecall_s"] <= 6.1 and progress["output_bytes"] == 100


def test_a_stopped_engine_reports_the_batch_it_was_filing_before_it_exits(
    run_dirs, start_manager, monkeypatch
) -> None:
    """SIGTERM (stop) while a basecalled batch is being filed: that batch is still filed
    and reported DONE before the engine exits; the batch it was basecalling is handed back
    (or, if it had finished, delivered too). Nothing is left to a lease."""
    inp, out = run_dirs
    make_run(inp, 2, reads=4, samples=2000)
    m = start_manager(inp, out, "--lease", "30")
    wait_until(lambda: m.status()["files_total"] == 2, what="the scan")
    with filing_held(m, monkeypatch, samples_per_s=4_000) as engine:  # 2 s a batch
        engine.stop()
    outcomes = {r.job_id: r.outcome for r in engine.results}
    first, second = sorted(outcomes)
    assert outcomes[first] == "done" and outcomes[second] in ("released", "done"), outcomes
    status = m.status()
    assert status["jobs"]["expired"] == 0 and not status["running_jobs"], status["jobs"]
    done = 1 + (outcomes[second] == "done")
    assert status["files"]["done"] == done and status["files"]["queued"] == 2 - done


def test_a_batch_whose_stream_filing_fails_is_filed_from_its_file(
    run_dirs, start_manager, monkeypatch
) -> None:
    """Filing the basecaller's stream as it is written only saves time: when it fails
    (here: told to, at its end), the engine files the complete file the basecaller wrote,
    and the batch is done with every read once."""
    inp, out = run_dirs
    run = make_run(inp, 3, reads=5, samples=2000)
    m = start_manager(inp, out)
    wait_until(lambda: m.status()["files_total"] == 3, what="the scan")
    streams_tried = []

    def failing(filing, output_dir):
        streams_tried.append(filing.path)
        filing.abandon()
        raise OSError("no space left on the stream's way")

    monkeypatch.setattr(engine_filing, "finish_stream_filing", failing)
    engine = Engine(
        EngineConfig(m.url, "gpu1", until_empty=True, wait_s=5),
        make_basecaller("simulated", samples_per_s=0),
    )
    assert engine.run() == 0
    assert streams_tried and all(r.outcome == "done" for r in engine.results), engine.results
    assert_exactly_once(run, out)
    assert m.status()["files"]["done"] == 3
