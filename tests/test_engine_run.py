"""One basecaller run (`bcmanager.engine.run`): started, timed, stopped when told."""

import time

from bcmanager.basecallers import make_basecaller
from bcmanager.engine.run import BASECALLER_LOG, BasecallerRun
from tests.helpers import make_run


def test_a_run_is_stopped_when_told_and_one_that_cannot_start_says_so(tmp_path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    run = BasecallerRun(make_basecaller("command", command="sleep 60"), inp, out)
    assert run.progress(time.monotonic()) is None  # not started
    assert run.start()
    started = time.monotonic()
    assert run.wait(lambda: time.monotonic() - started > 0.3) == -15  # SIGTERM
    assert time.monotonic() - started < 5
    assert run.progress_at_exit() is None  # writes no output as it goes: not timed

    missing = make_basecaller("command", command="{input}/no-such-basecaller {output}")
    assert not BasecallerRun(missing, inp, out).start()
    assert "cannot start" in (out / BASECALLER_LOG).read_text()


def test_a_native_run_is_timed_from_its_first_output(tmp_path) -> None:
    """A backend that writes as it goes: its start-up ends at its first output, and at
    its exit the run says its start-up, basecalling time and bytes written."""
    inp, out = tmp_path / "in", tmp_path / "out"
    make_run(inp, 2, reads=4, samples=2000)
    basecaller = make_basecaller("simulated", samples_per_s=20_000, startup_s=0.3)
    run = BasecallerRun(basecaller, inp, out)
    assert run.start()
    assert run.wait(lambda: False) == 0
    final = run.progress_at_exit()
    assert final is not None, (out / BASECALLER_LOG).read_text()
    assert final["startup_s"] >= 0.3 and final["basecall_s"] > 0
    assert final["output_bytes"] == run.output_bytes() > 0
