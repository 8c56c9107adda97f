"""The Slurm side without Slurm: the controller's decisions with a driven clock, the script."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from bcmanager.cli import main
from bcmanager.cli.slurm import runs_any_model
from bcmanager.cluster import (
    Controller,
    JobsFile,
    JobSpec,
    ManagerUnreachable,
    Memory,
    Policy,
    Slurm,
    SlurmError,
    SlurmJob,
    Wanted,
    backlogs,
    decide,
    engines_to_submit,
    parse_squeue,
    per_engine_rate,
    render_script,
)
from bcmanager.errors import ConfigError
from tests.helpers import free_port

ENGINE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def status(
    queued: int = 0,
    assigned: int = 0,
    done: int = 0,
    running: tuple[str, ...] = (),
    engines: dict[str, int] | None = None,
    last_seen_s: float = 1.0,
) -> dict:
    """A /v1/status as the manager answers it; `engines` maps engine -> jobs_done."""
    return {
        "files": {"queued": queued, "assigned": assigned, "done": done, "quarantined": 0},
        "running_jobs": [{"job_id": i + 1, "engine": e} for i, e in enumerate(running)],
        "engines": [
            {"engine": e, "last_seen_s": last_seen_s, "job_id": None, "jobs_done": n}
            for e, n in (engines or {}).items()
        ],
    }


def running(*ids: str) -> list[SlurmJob]:
    return [SlurmJob(i, "RUNNING") for i in ids]


class Looks:
    """Drives `decide` look after look, carrying its memory as the controller does."""

    def __init__(self, policy: Policy, recorded: tuple[str, ...] = ("11", "12")) -> None:
        self.policy, self.recorded, self.memory = policy, list(recorded), Memory()

    def at(self, now: float, st: dict, queue: list[SlurmJob] | None = None):
        queue = running(*self.recorded) if queue is None else queue
        decision, self.memory = decide(now, st, queue, self.recorded, self.memory, self.policy)
        return decision


IDLE = Policy(idle_after_s=300)
TWO = {"slurm-11-node1": 0, "slurm-12-node2": 0}


# -- cancelling -------------------------------------------------------------------------


def test_idle_engines_are_cancelled_only_after_the_threshold_with_an_empty_queue() -> None:
    looks = Looks(IDLE)
    assert looks.at(0, status(done=5, engines=TWO)).cancel == []
    assert looks.at(299, status(done=5, engines=TWO)).cancel == []
    decision = looks.at(300, status(done=5, engines=TWO))
    assert decision.cancel == ["11", "12"]
    assert "no batch for 300 s" in decision.reasons[0]


def test_an_engine_in_the_middle_of_a_batch_is_never_cancelled() -> None:
    looks = Looks(Policy(idle_after_s=0))
    st = status(assigned=2, done=5, running=("slurm-11-node1",), engines=TWO)
    assert looks.at(0, st).cancel == ["12"]
    assert looks.at(10_000, st).cancel == ["12"]


def test_nothing_is_cancelled_while_files_are_queued() -> None:
    looks = Looks(IDLE)
    looks.at(0, status(queued=3, engines=TWO))
    assert looks.at(10_000, status(queued=3, engines=TWO)).cancel == []


def test_a_batch_restarts_the_idle_clock() -> None:
    looks = Looks(IDLE)
    looks.at(0, status(engines=TWO))
    looks.at(100, status(assigned=1, running=("slurm-11-node1",), engines=TWO))
    assert looks.at(300, status(engines=TWO)).cancel == ["12"]
    assert looks.at(399, status(engines=TWO)).cancel == ["12"]
    assert looks.at(400, status(engines=TWO)).cancel == ["11", "12"]


def test_a_batch_done_between_two_looks_counts_as_work() -> None:
    looks = Looks(IDLE)
    looks.at(0, status(engines=TWO))
    busy_between = {"slurm-11-node1": 1, "slurm-12-node2": 0}  # jobs_done went up
    assert looks.at(250, status(engines=busy_between)).cancel == []
    assert looks.at(300, status(engines=busy_between)).cancel == ["12"]
    assert looks.at(550, status(engines=busy_between)).cancel == ["11", "12"]


def test_a_job_whose_engine_never_showed_up_is_idle_from_the_first_look() -> None:
    looks = Looks(IDLE)
    pending = [SlurmJob("11", "PENDING"), SlurmJob("12", "RUNNING")]
    looks.at(0, status(), pending)
    assert looks.at(300, status(), pending).cancel == ["11", "12"]


def test_only_recorded_live_jobs_are_considered() -> None:
    looks = Looks(Policy(idle_after_s=0), recorded=("11",))
    queue = [SlurmJob("11", "COMPLETING"), SlurmJob("99", "RUNNING")]
    st = status(engines={"slurm-11-n": 0, "slurm-99-n": 0})
    assert looks.at(0, st, queue).cancel == []
    assert looks.at(0, st, [SlurmJob("11", "RUNNING"), *queue[1:]]).cancel == ["11"]


def test_an_engine_id_prefix_is_not_confused_with_a_longer_job_id() -> None:
    looks = Looks(Policy(idle_after_s=0), recorded=("1", "12"))
    st = status(assigned=1, running=("slurm-12-node",), engines={"slurm-12-node": 0})
    assert looks.at(0, st).cancel == ["1"]


# -- submitting -------------------------------------------------------------------------

GROW = Policy(max_engines=6, target_drain_s=1800)


def test_with_nothing_measured_one_engine_is_started_only_if_there_is_none() -> None:
    assert engines_to_submit(status(queued=50), 0, 0, None, GROW) == Wanted(1, 0, None)
    assert engines_to_submit(status(queued=50), 1, 0, None, GROW) == Wanted(0, 0, None)
    assert engines_to_submit(status(queued=50), 0, 1, None, GROW) == Wanted(0, 0, None)


def test_more_engines_are_submitted_while_the_backlog_drains_too_slowly() -> None:
    looks = Looks(GROW)
    two_busy = ("slurm-11-node1", "slurm-12-node2")
    first = looks.at(0, status(queued=7000, assigned=200, done=0, running=two_busy, engines=TWO))
    assert first.submit == 0  # one look: no rate yet, and engines exist
    # 120 files in 60 s by 2 busy engines: 1 file/s each; 7200 left would take 3600 s
    second = looks.at(60, status(queued=7000, assigned=200, done=120, running=two_busy))
    assert second.rate_per_engine == pytest.approx(1.0)
    assert second.drain_s == pytest.approx(3600)
    assert second.submit == 2  # 7200 / (1 file/s * 1800 s) = 4 engines in all
    assert "2 more engine(s)" in second.reasons[-1]


def test_submissions_stop_at_the_maximum_and_when_the_drain_is_short() -> None:
    assert engines_to_submit(status(queued=100_000), 2, 0, 1.0, GROW)[0] == 4
    assert engines_to_submit(status(queued=100_000), 6, 0, 1.0, GROW)[0] == 0
    assert engines_to_submit(status(queued=1000), 2, 0, 1.0, GROW) == Wanted(0, 0, 500)
    assert engines_to_submit(status(queued=100_000), 0, 0, 1.0, Policy())[0] == 0  # max 0


def test_engines_outside_slurm_count_towards_the_drain() -> None:
    assert engines_to_submit(status(queued=7200), 0, 2, 1.0, GROW)[0] == 2
    st = status(queued=10, engines={"laptop": 0, "slurm-11-n": 0, "old": 0})
    st["engines"][2]["last_seen_s"] = 10_000
    looks = Looks(Policy(max_engines=4), recorded=("11",))
    assert looks.at(0, st).submit == 0  # laptop and 11 exist; nothing measured yet


def test_engines_of_cancelled_jobs_count_for_nobody() -> None:
    st = status(queued=10, done=10, engines={"slurm-11-n": 3})  # 11 was just cancelled
    decision, _ = decide(0, st, [], [], Memory(), Policy(max_engines=2), ended=["11"])
    assert decision.submit == 1
    decision, _ = decide(0, st, [], [], Memory(), Policy(max_engines=2))
    assert decision.submit == 0  # an unknown engine seen lately counts as working


def test_no_submission_when_nothing_is_queued_even_with_files_in_flight() -> None:
    assert engines_to_submit(status(assigned=500), 0, 0, 0.01, GROW) == Wanted(0, 0, None)


def test_the_rate_window_forgets_old_looks_and_a_new_run() -> None:
    looks = Looks(Policy(rate_window_s=100), recorded=())
    looks.at(0, status(done=0))
    looks.at(50, status(done=100))
    looks.at(120, status(done=240))
    assert [s[0] for s in looks.memory.samples] == [50, 120]
    assert per_engine_rate(looks.memory.samples) == pytest.approx(2.0)
    looks.at(130, status(done=3))  # a restarted manager on another run
    assert looks.memory.samples == [[130, 3, 0]]
    assert per_engine_rate(looks.memory.samples) is None


# -- generations: the live backlog first, backfill on top ------------------------------


def gen_status(
    live: tuple[int, int] = (0, 0),
    done: int = 0,
    engines: dict[str, int] | None = None,
    **backfill: tuple[int, int],
) -> dict:
    """A status with generations: `live` and each backfill one as (queued, assigned)."""
    counts = {"fast": live, **backfill}
    st = status(
        queued=sum(q for q, _ in counts.values()),
        assigned=sum(a for _, a in counts.values()),
        done=done,
        engines=engines,
    )
    st["generations"] = [
        {
            "id": i,
            "name": name,
            "model": name,
            "options": {},
            "live": i == 0,
            "output": ".",
            "files": {"queued": q, "assigned": a, "done": 0, "quarantined": 0},
        }
        for i, (name, (q, a)) in enumerate(counts.items())
    ]
    return st


def test_the_backlog_is_counted_per_generation() -> None:
    found = backlogs(gen_status(live=(3, 1), sup=(40, 2), v6=(0, 0)))
    assert [(g, b.name, b.queued, b.assigned) for g, b in found.items()] == [
        (0, "fast", 3, 1),
        (1, "sup", 40, 2),
        (2, "v6", 0, 0),
    ]
    # a manager from before generations: all its files are the live generation's
    assert [(b.queued, b.assigned) for b in backlogs(status(queued=5, assigned=2)).values()] == [
        (5, 2)
    ]


def test_engines_for_backfill_come_only_on_top_of_those_the_live_backlog_needs() -> None:
    # 1 file/s per engine, 1800 s target: the live 1800 files want 1 engine, all 5400 want 3
    st = gen_status(live=(1800, 0), sup=(3000, 600))
    assert engines_to_submit(st, 0, 0, 1.0, GROW) == Wanted(1, 2, math.inf)
    assert engines_to_submit(st, 1, 0, 1.0, GROW) == Wanted(0, 2, 5400)
    assert engines_to_submit(st, 0, 3, 1.0, GROW) == Wanted(0, 0, 1800)
    # the live backlog alone fills the maximum: nothing is left for backfill
    assert engines_to_submit(gen_status(live=(20_000, 0), sup=(9, 0)), 0, 0, 1.0, GROW) == (
        Wanted(6, 0, math.inf)
    )


def test_backfill_alone_gets_an_engine_and_files_in_flight_count_with_it() -> None:
    st = gen_status(live=(0, 0), sup=(50, 0))
    assert engines_to_submit(st, 0, 0, None, GROW) == Wanted(0, 1, None)
    # the live files in flight are drained by the same engines before they turn to sup
    st = gen_status(live=(0, 3600), sup=(3600, 0))
    assert engines_to_submit(st, 2, 0, 1.0, GROW) == Wanted(0, 2, 3600)


def test_engines_that_run_their_own_model_only_ignore_the_backfill_backlog() -> None:
    own = Policy(max_engines=6, idle_after_s=300, any_model=False)
    st = gen_status(live=(0, 0), sup=(5000, 0), engines=TWO)
    assert engines_to_submit(st, 0, 0, 1.0, own) == Wanted(0, 0, None)
    looks = Looks(own)
    looks.at(0, st)
    decision = looks.at(300, st)
    assert decision.cancel == ["11", "12"]  # sup's queued files are never theirs
    assert "nothing of the live generation queued" in decision.reasons[0]
    looks = Looks(IDLE)  # engines that run any model: sup's files are theirs to take
    looks.at(0, st)
    assert looks.at(10_000, st).cancel == []


def test_the_decision_says_which_backlog_each_engine_is_for() -> None:
    looks = Looks(GROW, recorded=("11",))
    one_busy = ("slurm-11-node1",)
    st = gen_status(live=(1800, 100), sup=(3500, 0), done=0)
    st["running_jobs"] = [{"job_id": 1, "engine": one_busy[0]}]
    looks.at(0, st)
    later = gen_status(live=(1800, 100), sup=(3500, 0), done=60)
    later["running_jobs"] = st["running_jobs"]
    decision = looks.at(60, later)  # 1 file/s; live 1900 want 2 engines, all 5400 want 3
    assert (decision.submit, decision.live, decision.backfill) == (2, 1, 1)
    live, backfill = decision.reasons
    assert live.startswith("live backlog (fast): 1800 file(s) queued, 1900 to basecall")
    assert live.endswith("1 more engine(s)")
    assert backfill.startswith("backfill backlog (sup): 3500 file(s) queued")
    assert backfill.endswith("1 more backfill engine(s)")


class FakeSlurm(Slurm):
    """Records the scripts it is given; job ids 101, 102, ..."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []

    def submit(self, script: str) -> str:
        self.scripts.append(script)
        return str(100 + len(self.scripts))

    def queue(self) -> list[SlurmJob]:
        return []


def gpu_controller(
    tmp_path: Path,
    slurm: Slurm,
    status_reader: Callable[[str], dict],
    max_engines: int,
    spec: JobSpec | None = None,
    **options: object,
) -> Controller:
    """A controller of a manager at http://m:1 submitting to the `gpu` partition (or
    `spec`), at time 0, with `options` (backfill script, fleet teller) as given."""
    return Controller(
        "http://m:1",
        Policy(max_engines=max_engines),
        JobsFile(tmp_path / "jobs.json"),
        render_script("http://m:1", [], spec or JobSpec(partition="gpu")),
        slurm=slurm,
        clock=lambda: 0.0,
        status_reader=status_reader,
        **options,
    )


def test_backfill_jobs_go_to_the_backfill_partition_and_qos(tmp_path: Path, caplog) -> None:
    spec = JobSpec(partition="gpu", gres="gpu:1")
    looks = iter([gen_status(live=(2000, 0)), gen_status(live=(0, 0), sup=(50, 0))])
    slurm = FakeSlurm()
    ctl = gpu_controller(
        tmp_path,
        slurm,
        lambda _url: next(looks),
        max_engines=4,
        spec=spec,
        backfill_script=render_script("http://m:1", [], spec.for_backfill("low", "scavenger")),
        backfill_label="partition low, QOS scavenger",
    )
    caplog.set_level("INFO", logger="bcmanager.cluster")
    assert ctl.step().live == 1
    assert ctl.step().backfill == 1  # the live engine's job is gone from squeue: 1 more
    live, backfill = slurm.scripts
    assert "#SBATCH --partition=gpu\n" in live and "--qos" not in live
    assert "#SBATCH --partition=low\n#SBATCH --qos=scavenger\n" in backfill
    assert "#SBATCH --gres=gpu:1\n" in backfill
    jobs = JobsFile(tmp_path / "jobs.json").read()["jobs"]
    assert (jobs["101"]["backlog"], jobs["102"]["backlog"]) == ("live", "backfill")
    assert "submitted engine job 101 for the live backlog" in caplog.text
    assert (
        "submitted engine job 102 for the backfill backlog (partition low, QOS scavenger)"
        in caplog.text
    )


def test_without_backfill_options_backfill_jobs_are_like_any_other(tmp_path: Path) -> None:
    slurm = FakeSlurm()
    ctl = gpu_controller(tmp_path, slurm, lambda _url: gen_status(sup=(50, 0)), max_engines=4)
    assert ctl.step().backfill == 1
    assert "#SBATCH --partition=gpu\n" in slurm.scripts[0]


# -- the sbatch script ------------------------------------------------------------------


def _script(tmp_path: Path, **spec: object) -> str:
    args = ["--basecaller", "command", "--command", "my tool {input} {output} 'q\"x' $HOME"]
    return render_script(
        "http://10.0.0.1:40765", args, JobSpec(log_dir=tmp_path, **spec), python="/bin/true"
    )


def test_the_script_is_valid_bash_with_its_directives(tmp_path: Path) -> None:
    script = _script(tmp_path, partition="gpu", gres="gpu:1", time="3-00:00:00", account="lab")
    path = tmp_path / "engine.sbatch"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)
    assert script.startswith("#!/bin/bash\n")
    for line in ("--partition=gpu", "--gres=gpu:1", "--time=3-00:00:00", "--account=lab"):
        assert f"#SBATCH {line}\n" in script
    assert f"#SBATCH --output={tmp_path}/%x-%j.log" in script
    assert "exec /bin/true -m bcmanager.cli engine --manager http://10.0.0.1:40765" in script


def test_the_script_runs_the_engine_with_its_arguments_intact(tmp_path: Path) -> None:
    show = tmp_path / "show-args"
    show.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    show.chmod(0o755)
    script = render_script(
        "http://m:1", ["--command", "my tool {input} 'q\"x' $HOME"], JobSpec(), python=str(show)
    )
    env = {**os.environ, "SLURM_JOB_ID": "4242"}
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    argv = out.stdout.splitlines()[1:]  # after the script's own "bcm engine ..." line
    assert argv[:6] == ["-m", "bcmanager.cli", "engine", "--manager", "http://m:1", "--command"]
    assert argv[6] == "my tool {input} 'q\"x' $HOME"
    engine_id = argv[argv.index("--engine-id") + 1]
    assert engine_id.startswith("slurm-4242-") and ENGINE_ID.match(engine_id)


def test_the_script_uses_this_python_unresolved_so_a_venv_still_imports_bcmanager() -> None:
    script = render_script("http://m:1", [], JobSpec())
    import sys

    assert f"exec {os.path.abspath(sys.executable)} -m bcmanager.cli engine" in script


def test_directive_values_with_spaces_are_refused() -> None:
    with pytest.raises(ConfigError, match="no spaces"):
        render_script("http://m:1", [], JobSpec(partition="gpu a100"))
    with pytest.raises(ConfigError):
        render_script("http://m:1", [], JobSpec(extra=("constraint=a100",)))


# -- Slurm's commands, the jobs file, the CLI -------------------------------------------


def test_squeue_lines_are_parsed() -> None:
    jobs = parse_squeue("12|RUNNING|bcm-engine|node1\n13|PENDING|bcm-engine|\n\n")
    assert jobs == [
        SlurmJob("12", "RUNNING", "bcm-engine", "node1"),
        SlurmJob("13", "PENDING", "bcm-engine", ""),
    ]
    assert jobs[1].active and not SlurmJob("14", "COMPLETING").active


def test_a_missing_slurm_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SlurmError, match="sbatch not found: is Slurm installed"):
        Slurm().submit("#!/bin/bash\n")
    with pytest.raises(SlurmError, match="squeue not found"):
        Slurm().queue()


def test_the_jobs_file_keeps_records_across_writers(tmp_path: Path) -> None:
    jobs = JobsFile(tmp_path / "sub" / "jobs.json")
    with jobs.locked() as data:
        data["jobs"]["7"] = {"state": "submitted"}
    with jobs.locked() as data:
        data["jobs"]["8"] = {"state": "cancelled"}
        data["jobs"]["9"] = {"state": "submitted"}
    assert jobs.active_ids() == ["7", "9"]
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(ConfigError, match="not a JSON object"):
        JobsFile(tmp_path / "bad.json").read()


def test_dry_run_prints_a_valid_script_and_submits_nothing(tmp_path: Path) -> None:
    jobs_file = tmp_path / "jobs.json"
    result = CliRunner().invoke(
        main,
        [
            "slurm",
            "submit-engines",
            "--manager",
            "http://10.0.0.1:40765",
            "--partition",
            "gpu",
            "--gres",
            "gpu:1",
            "--samples-per-s",
            "20000",
            "--batch-size",
            "4",
            "--jobs-file",
            str(jobs_file),
            "--dry-run",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "#SBATCH --gres=gpu:1" in result.output
    assert "--samples-per-s 20000.0 " in result.output and "--batch-size 4 " in result.output
    subprocess.run(["bash", "-n"], input=result.output, text=True, check=True)
    assert not jobs_file.exists()


def test_the_controller_says_when_the_manager_is_unreachable(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(
        main,
        ["slurm", "controller", "--manager", url, "--once", "--jobs-file", str(tmp_path / "j")],
    )
    assert result.exit_code != 0
    assert f"cannot read {url}/v1/status" in result.output


def test_backfill_options_need_engines_that_run_any_model(tmp_path: Path) -> None:
    args = ["slurm", "controller", "--manager", "http://m:1", "--once"]
    args += ["--jobs-file", str(tmp_path / "j"), "--backfill-partition", "low"]
    result = CliRunner().invoke(main, [*args, "--basecaller", "command", "--command", "x {input}"])
    assert result.exit_code == 2
    assert "these engines run their own model only" in result.output
    assert not (tmp_path / "j").exists()
    for engine in (["--basecaller", "script", "--script", "x"], ["--basecaller", "dorado-server"]):
        assert CliRunner().invoke(main, [*args, *engine]).exit_code == 2


@pytest.mark.parametrize(
    ("engine", "any_model"),
    [
        ({"basecaller": "simulated"}, True),
        ({"basecaller": "dorado"}, True),
        ({"basecaller": "command", "command_template": "t {input} {output} -m {model}"}, True),
        ({"basecaller": "command", "command_template": "t {input} {output} {{model}}"}, False),
        ({"basecaller": "command", "command_template": "t {input"}, False),
        ({"basecaller": "script"}, False),
        ({"basecaller": "dorado-server"}, False),
    ],
)
def test_the_controller_knows_which_engines_take_backfill_work(engine, any_model) -> None:
    assert runs_any_model(engine) is any_model


def fake_slurm_commands(folder: Path) -> Path:
    """`sbatch` that keeps each script (and its argv) it is given and answers a job id,
    `squeue` that lists nothing: on PATH, the controller talks to them as to Slurm."""
    folder.mkdir()
    (folder / "sbatch").write_text(
        "#!/bin/sh\n"
        f"n=$(ls {folder}/*.sbatch 2>/dev/null | wc -l); n=$((n + 501))\n"
        f'cat > {folder}/$n.sbatch; echo "$@" > {folder}/$n.argv; echo $n\n'
    )
    (folder / "squeue").write_text("#!/bin/sh\n")
    for name in ("sbatch", "squeue"):
        (folder / name).chmod(0o755)
    return folder


def test_the_controller_submits_a_backfill_job_with_its_partition_and_qos(
    tmp_path: Path, monkeypatch
) -> None:
    bin_dir = fake_slurm_commands(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    answer = gen_status(live=(0, 0), sup=(40, 0))

    def manager(url: str, **_: object) -> httpx.Response:
        return httpx.Response(200, json=answer, request=httpx.Request("GET", url))

    monkeypatch.setattr(httpx, "get", manager)
    args = ["slurm", "controller", "--manager", "http://m:1", "--once", "--max-engines", "2"]
    args += ["--jobs-file", str(tmp_path / "jobs.json"), "--partition", "gpu", "--qos", "normal"]
    result = CliRunner().invoke(
        main, [*args, "--backfill-partition", "low", "--backfill-qos", "scavenger"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("cancel: none; submit: 1 (0 live, 1 backfill)\n")
    assert "backfill backlog (sup): 40 file(s) queued" in result.stdout
    script = (bin_dir / "501.sbatch").read_text()
    assert (bin_dir / "501.argv").read_text().split() == ["--parsable"]
    assert "#SBATCH --partition=low\n#SBATCH --qos=scavenger\n" in script
    assert "gpu" not in script and "normal" not in script
    assert json.loads((tmp_path / "jobs.json").read_text())["jobs"]["501"]["backlog"] == "backfill"


def test_live_jobs_keep_the_plain_partition_and_qos(tmp_path: Path, monkeypatch) -> None:
    bin_dir = fake_slurm_commands(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    answer = gen_status(live=(10, 0), sup=(40, 0))
    monkeypatch.setattr(
        httpx,
        "get",
        lambda url, **_: httpx.Response(200, json=answer, request=httpx.Request("GET", url)),
    )
    args = ["slurm", "controller", "--manager", "http://m:1", "--once", "--max-engines", "2"]
    args += ["--jobs-file", str(tmp_path / "jobs.json"), "--partition", "gpu", "--qos", "normal"]
    result = CliRunner().invoke(main, [*args, "--backfill-partition", "low"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("cancel: none; submit: 1 (1 live, 0 backfill)\n")
    assert "live backlog (fast): 10 file(s) queued" in result.stdout
    script = (bin_dir / "501.sbatch").read_text()
    assert "#SBATCH --partition=gpu\n#SBATCH --qos=normal\n" in script


class PendingSlurm(FakeSlurm):
    """Lists every job it was given as pending (no node free yet), until cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.cancelled: set[str] = set()

    def queue(self) -> list[SlurmJob]:
        ids = (str(101 + k) for k in range(len(self.scripts)))
        return [SlurmJob(j, "PENDING") for j in ids if j not in self.cancelled]

    def cancel(self, job_ids: list[str]) -> None:
        self.cancelled.update(job_ids)


def test_the_controller_tells_the_manager_its_engine_jobs_pending_ones_included(
    tmp_path: Path, caplog
) -> None:
    """Each step tells the manager how many engine jobs there are (the engines the run is
    to have, those still waiting for a node among them); a manager that cannot be told is
    warned about once, and the controller goes on with Slurm."""
    told: list[int | None] = []
    refuse = False

    def teller(url: str, engines: int | None) -> None:
        if refuse:
            raise ManagerUnreachable(f"cannot tell {url}/v1/fleet the fleet's size: 404")
        told.append(engines)

    slurm = PendingSlurm()
    ctl = gpu_controller(
        tmp_path, slurm, lambda _url: gen_status(live=(5000, 0)), max_engines=3, fleet_teller=teller
    )
    caplog.set_level("INFO", logger="bcmanager.cluster")
    assert ctl.step().live >= 1
    assert told == [len(slurm.scripts)]  # every job submitted, all pending
    refuse = True
    ctl.step()
    ctl.step()
    assert caplog.text.count("the manager infers arriving engines itself") == 1
    refuse = False
    ctl.step()
    assert told[-1] == len(slurm.scripts) > 0
    assert f"told the manager to expect {len(slurm.scripts)} engine(s)" in caplog.text
