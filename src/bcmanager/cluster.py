"""Engines as Slurm jobs, and the idle controller that gives their nodes back.

Three layers, each usable alone:

- `render_script` writes the sbatch script of one engine job (one node, one
  `bcm engine` whose id is `slurm-<jobid>-<host>`); `Slurm` wraps `sbatch`,
  `squeue` and `scancel` with clear errors.
- `decide` is the controller's whole policy as a pure function of `now`, the
  manager's `/v1/status`, Slurm's queue and what the controller remembered from
  its last look (`Memory`): it returns which jobs to cancel and how many to
  submit, so it is tested without Slurm and without a clock.
- `Controller` applies those decisions, one `step` at a time, keeping the job
  record and the memory in a small JSON file (`JobsFile`) so that `--once` runs
  from cron see the same history as a long-running loop.

The rules: a job whose engine has had no batch for `idle_after_s` while nothing
is queued is cancelled (never one whose engine holds a batch: its id is among
the manager's `running_jobs`); while files are queued and the backlog would take
longer than `target_drain_s` to drain at the measured rate, more jobs are
submitted, up to `max_engines`. A cancelled engine gets SIGTERM and hands any
batch it just claimed back; if it dies harder, the lease expiry requeues it.

The backlog is counted per model generation (the manager's `generations`). Jobs
the live generation's backlog needs come first and are plain engine jobs; those
wanted only on top of them, for the queued files of backfill generations, are
*backfill* jobs, which the controller may send to another partition or QOS
(`Controller.backfill_script`). Engines that run their own model only (not dorado
or simulated) never get backfill work, so then only the live backlog counts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import pwd
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import httpx

from bcmanager.errors import BcmError, ConfigError

log = logging.getLogger("bcmanager.cluster")

DEFAULT_JOBS_FILE = Path("bcm-slurm-jobs.json")
ENGINE_PREFIX = "slurm-"
SLURM_TIMEOUT_S = 60.0
# Slurm states in which a job still holds (or waits for) a node.
ACTIVE_STATES = frozenset(
    {"PENDING", "CONFIGURING", "RUNNING", "RESIZING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD"}
)
_DIRECTIVE_VALUE = re.compile(r"^[^\s'\"\\]+$")


class SlurmError(BcmError):
    """Slurm is missing, or one of its commands refused."""

    status_code = 503


class ManagerUnreachable(BcmError):
    """The manager's status could not be read."""

    status_code = 503


# -- the sbatch script ----------------------------------------------------------------


@dataclass(frozen=True)
class JobSpec:
    """What each engine job asks Slurm for."""

    partition: str | None = None
    qos: str | None = None
    gres: str | None = None
    time: str | None = None
    account: str | None = None
    job_name: str = "bcm-engine"
    log_dir: Path | None = None
    extra: tuple[str, ...] = ()  # further sbatch options, e.g. "--constraint=a100"

    def directives(self) -> list[str]:
        """The `#SBATCH` lines (values without spaces or quotes, as sbatch reads them)."""
        pairs = [
            ("job-name", self.job_name),
            ("partition", self.partition),
            ("qos", self.qos),
            ("account", self.account),
            ("time", self.time),
            ("gres", self.gres),
        ]
        lines = ["--nodes=1", "--ntasks=1"]
        lines += [f"--{key}={value}" for key, value in pairs if value]
        if self.log_dir is not None:
            lines.append(f"--output={self.log_dir.absolute() / '%x-%j.log'}")
        lines += list(self.extra)
        for line in lines:
            _, _, value = line.partition("=")
            if not line.startswith("-") or (value and not _DIRECTIVE_VALUE.match(value)):
                raise ConfigError(f"sbatch option {line!r}: no spaces or quotes, please")
        return [f"#SBATCH {line}" for line in lines]

    def for_backfill(self, partition: str | None, qos: str | None) -> JobSpec:
        """The same job on the backfill partition and QOS, where given."""
        return replace(self, partition=partition or self.partition, qos=qos or self.qos)


def engine_command(
    manager_url: str, engine_args: Sequence[str], python: str | None = None
) -> list[str]:
    """`bcm engine` run by this very interpreter (a venv's python imports bcmanager as is)."""
    exe = os.path.abspath(python or sys.executable)  # not resolve(): a venv's python is a link
    return [exe, "-m", "bcmanager.cli", "engine", "--manager", manager_url, *engine_args]


def render_script(
    manager_url: str,
    engine_args: Sequence[str],
    spec: JobSpec,
    python: str | None = None,
) -> str:
    """A bash sbatch script: one engine named `slurm-$SLURM_JOB_ID-<short host>`."""
    command = " ".join(shlex.quote(a) for a in engine_command(manager_url, engine_args, python))
    return "\n".join(
        [
            "#!/bin/bash",
            *spec.directives(),
            "# Written by `bcm slurm submit-engines`: one bcmanager engine on this node.",
            "set -euo pipefail",
            'host=$(hostname -s | tr -c "A-Za-z0-9._\\n-" "-")',
            'engine_id="slurm-${SLURM_JOB_ID}-${host:0:40}"',
            'echo "bcm engine ${engine_id} on $(hostname) (job ${SLURM_JOB_ID})"',
            f'exec {command} --engine-id "$engine_id"',
            "",
        ]
    )


def engine_prefix(job_id: str) -> str:
    return f"{ENGINE_PREFIX}{job_id}-"


def job_of_engine(engine: str, job_ids: Sequence[str]) -> str | None:
    """The Slurm job id an engine id belongs to, if it is one of `job_ids`."""
    for job_id in job_ids:
        if engine.startswith(engine_prefix(job_id)):
            return job_id
    return None


# -- Slurm's commands -----------------------------------------------------------------


@dataclass(frozen=True)
class SlurmJob:
    job_id: str
    state: str  # squeue's %T: PENDING, RUNNING, COMPLETING, ...
    name: str = ""
    nodes: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


class Slurm:
    """`sbatch`, `squeue`, `scancel` as subprocesses (they read $SLURM_CONF as usual)."""

    def __init__(self, timeout_s: float = SLURM_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s

    def _run(self, argv: list[str], stdin: str | None = None) -> str:
        log.debug("running %s", shlex.join(argv))
        try:
            done = subprocess.run(
                argv,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                check=False,
            )
        except FileNotFoundError as exc:
            raise SlurmError(
                f"{argv[0]} not found: is Slurm installed and on PATH on this machine?"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise SlurmError(f"{argv[0]} gave no answer in {self.timeout_s:.0f} s") from exc
        if done.returncode != 0:
            why = (done.stderr or done.stdout).strip() or f"exit code {done.returncode}"
            raise SlurmError(f"{argv[0]} refused: {why}")
        return done.stdout

    def submit(self, script: str) -> str:
        """Submit a script (on stdin); returns the job id."""
        out = self._run(["sbatch", "--parsable"], stdin=script).strip()
        job_id = out.splitlines()[-1].split(";")[0].strip() if out else ""
        if not job_id.isdigit():
            raise SlurmError(f"sbatch answered {out!r}, not a job id")
        return job_id

    def queue(self) -> list[SlurmJob]:
        """This user's jobs that Slurm still lists."""
        user = pwd.getpwuid(os.getuid()).pw_name
        out = self._run(["squeue", "--noheader", "--user", user, "--format=%i|%T|%j|%N"])
        return parse_squeue(out)

    def cancel(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            self._run(["scancel", *job_ids])


def parse_squeue(text: str) -> list[SlurmJob]:
    jobs = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 2 and parts[0]:
            jobs.append(SlurmJob(parts[0], parts[1], *parts[2:4]))
    return jobs


# -- the controller's policy (pure) ---------------------------------------------------


@dataclass(frozen=True)
class Policy:
    idle_after_s: float = 300.0  # cancel an engine without a batch this long, queue empty
    max_engines: int = 0  # submit up to this many engine jobs (0: never submit)
    target_drain_s: float = 1800.0  # submit while the backlog would take longer than this
    rate_window_s: float = 600.0  # files/s measured over this much history
    stale_engine_s: float = 120.0  # an engine not heard from this long is not counted
    any_model: bool = True  # our engines run any generation's model (dorado, simulated)


@dataclass
class Memory:
    """What the controller keeps between looks (saved in the jobs file)."""

    idle_since: dict[str, float] = field(default_factory=dict)  # slurm job id -> t
    jobs_done: dict[str, int] = field(default_factory=dict)  # engine -> its jobs_done
    samples: list[list[float]] = field(default_factory=list)  # [t, files done, busy engines]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Memory:
        return cls(
            idle_since={str(k): float(v) for k, v in data.get("idle_since", {}).items()},
            jobs_done={str(k): int(v) for k, v in data.get("jobs_done", {}).items()},
            samples=[[float(x) for x in s] for s in data.get("samples", []) if len(s) == 3],
        )


@dataclass(frozen=True)
class Decision:
    cancel: list[str] = field(default_factory=list)
    submit: int = 0  # jobs to submit in all
    reasons: list[str] = field(default_factory=list)
    rate_per_engine: float | None = None  # files/s
    drain_s: float | None = None
    backfill: int = 0  # of `submit`, those wanted only for backfill generations' files

    @property
    def live(self) -> int:
        """Of `submit`, the jobs the live generation's backlog wants (plain engine jobs)."""
        return self.submit - self.backfill


@dataclass(frozen=True)
class Backlog:
    """Files still to basecall for one generation (or several): queued, and in flight."""

    name: str
    queued: int = 0
    assigned: int = 0

    @property
    def files(self) -> int:
        return self.queued + self.assigned

    def __add__(self, other: Backlog) -> Backlog:
        name = ", ".join(b.name for b in (self, other) if b.files and b.name)
        return Backlog(name, self.queued + other.queued, self.assigned + other.assigned)


def backlogs(status: Mapping[str, Any]) -> dict[int, Backlog]:
    """Each generation's backlog by id (0 is the live one); a status without
    `generations` (a manager from before them) has the live one only, with all files."""
    gens = status.get("generations") or []
    if not gens:
        return {0: Backlog("default", _count(status, "queued"), _count(status, "assigned"))}
    return {int(g.get("id", 0)): _backlog_of(g) for g in gens}


def _backlog_of(gen: Mapping[str, Any]) -> Backlog:
    files = gen.get("files") or {}
    return Backlog(
        str(gen.get("name", "")),
        int(files.get("queued", 0) or 0),
        int(files.get("assigned", 0) or 0),
    )


def live_and_backfill(status: Mapping[str, Any], policy: Policy) -> tuple[Backlog, Backlog]:
    """The live generation's backlog, and the backfill generations' together (nothing when
    our engines run their own model only: the manager hands them live work alone)."""
    found = backlogs(status)
    live = found.get(0, Backlog("live"))
    rest = [b for gen_id, b in sorted(found.items()) if gen_id > 0] if policy.any_model else []
    return live, sum(rest, Backlog(""))


def busy_engines(status: Mapping[str, Any]) -> set[str]:
    """Engines holding a batch: those named in the manager's `running_jobs`."""
    return {str(j["engine"]) for j in status.get("running_jobs", [])}


def _engines_by_job(status: Mapping[str, Any], job_ids: Sequence[str]) -> dict[str, list[str]]:
    names = {str(e["engine"]) for e in status.get("engines", [])}
    names |= {str(j["engine"]) for j in status.get("running_jobs", [])}
    found: dict[str, list[str]] = {j: [] for j in job_ids}
    for name in sorted(names):
        job_id = job_of_engine(name, job_ids)
        if job_id is not None:
            found[job_id].append(name)
    return found


def track_idle(
    now: float,
    status: Mapping[str, Any],
    job_ids: Sequence[str],
    memory: Memory,
) -> tuple[dict[str, float], dict[str, int]]:
    """When each job's engine was last seen busy (or first seen at all)."""
    busy = busy_engines(status)
    done = {str(e["engine"]): int(e.get("jobs_done", 0)) for e in status.get("engines", [])}
    engines = _engines_by_job(status, job_ids)
    idle_since: dict[str, float] = {}
    for job_id in job_ids:
        names = engines[job_id]
        worked = any(n in busy or done.get(n, 0) != memory.jobs_done.get(n, 0) for n in names)
        idle_since[job_id] = now if worked else memory.idle_since.get(job_id, now)
    return idle_since, {n: done[n] for names in engines.values() for n in names if n in done}


def idle_jobs(
    now: float,
    status: Mapping[str, Any],
    job_ids: Sequence[str],
    idle_since: Mapping[str, float],
    policy: Policy,
) -> list[str]:
    """Jobs to cancel: nothing queued that our engines could run, engine idle long
    enough, never one holding a batch."""
    live, backfill = live_and_backfill(status, policy)
    if live.queued + backfill.queued > 0:
        return []
    busy = busy_engines(status)
    engines = _engines_by_job(status, job_ids)
    return [
        job_id
        for job_id in job_ids
        if now - idle_since[job_id] >= policy.idle_after_s
        and not any(n in busy for n in engines[job_id])
    ]


def add_sample(
    now: float, status: Mapping[str, Any], samples: list[list[float]], busy: int, window_s: float
) -> list[list[float]]:
    """The (t, files done, busy engines) history within the window, newest last."""
    done = float(_count(status, "done"))
    kept = [s for s in samples if 0 < now - s[0] <= window_s]
    if kept and kept[-1][1] > done:
        kept = []  # the done count went down: another run (or ledger); start over
    return [*kept, [now, done, float(busy)]]


def per_engine_rate(samples: Sequence[Sequence[float]]) -> float | None:
    """Files per second per busy engine over the samples, None until something finished."""
    if len(samples) < 2:
        return None
    (t0, d0, _), (t1, d1, _) = samples[0], samples[-1]
    if t1 <= t0 or d1 <= d0:
        return None
    busy = sum(s[2] for s in samples) / len(samples)
    return (d1 - d0) / (t1 - t0) / max(busy, 1.0)


def _count(status: Mapping[str, Any], state: str) -> int:
    return int(status.get("files", {}).get(state, 0) or 0)


def other_engines(status: Mapping[str, Any], job_ids: Sequence[str], policy: Policy) -> int:
    """Engines working for the manager that are not our jobs (and were heard from lately)."""
    return sum(
        1
        for e in status.get("engines", [])
        if job_of_engine(str(e["engine"]), job_ids) is None
        and float(e.get("last_seen_s", 0.0)) <= policy.stale_engine_s
    )


class Wanted(NamedTuple):
    """More jobs for the live backlog, more on top of those for backfill, and the drain
    time of the backlog counted with the engines there are now."""

    live: int = 0
    backfill: int = 0
    drain_s: float | None = None


def drain_time(files: int, engines: int, rate: float | None) -> float | None:
    """Seconds `engines` take for `files` at `rate` files/s each (None: no rate yet)."""
    if rate is None:
        return None
    return files / (rate * engines) if engines else math.inf


def more_engines(
    files: int, queued: int, ours: int, others: int, rate: float | None, policy: Policy
) -> int:
    """Jobs to add so that `files` drain within the target, up to `max_engines` of ours."""
    if queued == 0 or policy.max_engines - ours <= 0:
        return 0
    if rate is None:  # nothing measured yet: start one engine if there is none at all
        return 1 if ours + others == 0 else 0
    drain = drain_time(files, ours + others, rate)
    if drain is not None and drain <= policy.target_drain_s:
        return 0
    wanted = math.ceil(files / (rate * policy.target_drain_s)) - others
    return max(0, min(wanted, policy.max_engines) - ours)


def engines_to_submit(
    status: Mapping[str, Any],
    ours: int,
    others: int,
    rate: float | None,
    policy: Policy,
) -> Wanted:
    """How many more jobs: first for the live backlog alone; then, counting those, for
    the whole backlog while backfill files are queued."""
    live, backfill = live_and_backfill(status, policy)
    n_live = more_engines(live.files, live.queued, ours, others, rate, policy)
    whole = live + backfill
    n_backfill = more_engines(whole.files, backfill.queued, ours + n_live, others, rate, policy)
    drain = drain_time(whole.files, ours + others, rate) if whole.queued else None
    return Wanted(n_live, n_backfill, drain)


def _why(drain: float | None, policy: Policy) -> str:
    if drain is None:
        return "no engine and nothing measured yet"
    if math.isinf(drain):
        return "no engine"
    return f"drain {drain:.0f} s > {policy.target_drain_s:.0f} s"


def submit_reasons(
    status: Mapping[str, Any],
    wanted: Wanted,
    engines: int,
    rate: float | None,
    policy: Policy,
) -> list[str]:
    """One line per backlog that got jobs: which generations, how much, why."""
    live, backfill = live_and_backfill(status, policy)
    lines = []
    if wanted.live:
        why = _why(drain_time(live.files, engines, rate), policy)
        lines.append(
            f"live backlog ({live.name}): {live.queued} file(s) queued, {live.files} to"
            f" basecall, {why}: {wanted.live} more engine(s)"
        )
    if wanted.backfill:
        whole = live + backfill
        why = _why(drain_time(whole.files, engines + wanted.live, rate), policy)
        lines.append(
            f"backfill backlog ({backfill.name}): {backfill.queued} file(s) queued, with the"
            f" live backlog {whole.files} to basecall, {why}: {wanted.backfill} more"
            " backfill engine(s)"
        )
    return lines


def decide(
    now: float,
    status: Mapping[str, Any],
    queue: Sequence[SlurmJob],
    recorded: Sequence[str],
    memory: Memory,
    policy: Policy,
    ended: Sequence[str] = (),
) -> tuple[Decision, Memory]:
    """The controller's whole policy: what to cancel and how many to submit, given a look.

    `recorded`: our live job ids; `ended`: ours that were cancelled or have gone (their
    engines may linger in the manager's list a while, and count for nobody).
    """
    ours = [j.job_id for j in queue if j.active and j.job_id in set(recorded)]
    idle_since, jobs_done = track_idle(now, status, ours, memory)
    cancel = idle_jobs(now, status, ours, idle_since, policy)
    busy = len(busy_engines(status))
    samples = add_sample(now, status, memory.samples, busy, policy.rate_window_s)
    rate = per_engine_rate(samples)
    others = other_engines(status, [*ours, *ended], policy)
    kept = len(ours) - len(cancel)
    wanted = engines_to_submit(status, kept, others, rate, policy)
    nothing = "nothing queued" if policy.any_model else "nothing of the live generation queued"
    reasons = [f"job {j}: no batch for {now - idle_since[j]:.0f} s and {nothing}" for j in cancel]
    reasons += submit_reasons(status, wanted, kept + others, rate, policy)
    decision = Decision(
        cancel, wanted.live + wanted.backfill, reasons, rate, wanted.drain_s, wanted.backfill
    )
    return decision, Memory(idle_since, jobs_done, samples)


# -- the record of submitted jobs -----------------------------------------------------


class JobsFile:
    """`bcm-slurm-jobs.json`: the job ids we submitted, and the controller's memory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """Read, let the caller change, write back atomically; one writer at a time."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self.read()
            yield data
            self._write(data)

    def read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"jobs file {self.path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"jobs file {self.path}: not a JSON object")
        data.setdefault("version", 1)
        data.setdefault("jobs", {})
        data.setdefault("controller", {})
        return data

    def _write(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)

    def active_ids(self) -> list[str]:
        return active_ids(self.read())


def active_ids(data: Mapping[str, Any]) -> list[str]:
    return sorted(
        (j for j, info in data["jobs"].items() if info.get("state") == "submitted"), key=int
    )


def record_submitted(
    data: dict[str, Any],
    job_id: str,
    manager_url: str,
    now: float,
    by: str,
    backlog: str | None = None,
) -> None:
    """Note a submitted job; `backlog`: which one the controller started it for."""
    data["jobs"][job_id] = {
        "state": "submitted",
        "submitted": now,
        "manager": manager_url,
        "by": by,
    }
    if backlog is not None:
        data["jobs"][job_id]["backlog"] = backlog


def mark(data: dict[str, Any], job_ids: Sequence[str], state: str, now: float) -> None:
    for job_id in job_ids:
        if job_id in data["jobs"]:
            data["jobs"][job_id].update(state=state, ended=now)


# -- submitting and controlling -------------------------------------------------------


def submit_engines(
    slurm: Slurm,
    jobs: JobsFile,
    script: str,
    count: int,
    manager_url: str,
    by: str = "submit-engines",
    clock: Callable[[], float] = time.time,
) -> list[str]:
    """Submit `count` engine jobs and record each id as soon as Slurm gives it."""
    submitted: list[str] = []
    with jobs.locked() as data:
        for _ in range(count):
            job_id = slurm.submit(script)
            record_submitted(data, job_id, manager_url, clock(), by)
            submitted.append(job_id)
            log.info("submitted engine job %s", job_id)
    return submitted


def describe_backlogs(status: Mapping[str, Any]) -> str:
    """Each generation's backlog in a few words, for the log."""
    return ", ".join(
        f"{b.name} {b.queued} queued + {b.assigned} assigned"
        for _, b in sorted(backlogs(status).items())
    )


def fetch_status(manager_url: str, timeout_s: float = 10.0) -> dict[str, Any]:
    url = manager_url.rstrip("/") + "/v1/status"
    try:
        answer = httpx.get(url, timeout=timeout_s)
        answer.raise_for_status()
        status = answer.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ManagerUnreachable(f"cannot read {url}: {exc}") from exc
    if not isinstance(status, dict) or "files" not in status:
        raise ManagerUnreachable(f"{url} did not answer with a bcmanager status")
    return status


def tell_fleet(
    manager_url: str, engines: int | None, token: str | None = None, timeout_s: float = 10.0
) -> None:
    """Tell the manager how many engines the run is to have (`PUT /v1/fleet`), so that it
    knows engines still waiting for a node are coming; ManagerUnreachable if it cannot."""
    url = manager_url.rstrip("/") + "/v1/fleet"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        answer = httpx.put(
            url, json={"expected_engines": engines}, headers=headers, timeout=timeout_s
        )
        answer.raise_for_status()
    except httpx.HTTPError as exc:
        raise ManagerUnreachable(f"cannot tell {url} the fleet's size: {exc}") from exc


@dataclass
class Controller:
    """Looks at the manager and Slurm, decides, cancels and submits; one `step` at a time.

    With a `fleet_teller`, each step then tells the manager how many engine jobs it holds
    (pending or running): the engines the run is to have, those still waiting for a node
    included (`PUT /v1/fleet`)."""

    manager_url: str
    policy: Policy
    jobs: JobsFile
    script: str
    slurm: Slurm = field(default_factory=Slurm)
    clock: Callable[[], float] = time.time
    status_reader: Callable[[str], dict[str, Any]] = fetch_status
    backfill_script: str | None = None  # for backfill jobs (their partition, QOS); None: script
    backfill_label: str = ""  # where backfill jobs go, for the log: "partition low, QOS scavenger"
    fleet_teller: Callable[[str, int | None], None] | None = None  # e.g. tell_fleet
    _told: int | None = field(default=None, init=False)  # what the manager was told last
    _untold: bool = field(default=False, init=False)  # the last telling failed (warned)

    def step(self) -> Decision:
        status = self.status_reader(self.manager_url)
        queue = self.slurm.queue()
        with self.jobs.locked() as data:
            now = self.clock()
            listed = {j.job_id for j in queue if j.active}
            mark(data, [j for j in active_ids(data) if j not in listed], "gone", now)
            memory = Memory.from_dict(data["controller"])
            live = active_ids(data)
            ended = [j for j in data["jobs"] if j not in set(live)]
            decision, memory = decide(now, status, queue, live, memory, self.policy, ended)
            log.debug(
                "backlog %s; %d engine job(s), rate %s files/s per engine",
                describe_backlogs(status),
                len(live),
                decision.rate_per_engine,
            )
            data["controller"] = asdict(memory)
            self._apply(decision, data)
            engines = len(active_ids(data)) or None
        self._tell_fleet(engines)
        return decision

    def _tell_fleet(self, engines: int | None) -> None:
        """Tell the manager the fleet's size; a manager that cannot be told (an older one,
        a moment unreachable) is told again at the next step, warned about once."""
        if self.fleet_teller is None:
            return
        try:
            self.fleet_teller(self.manager_url, engines)
        except ManagerUnreachable as exc:
            if not self._untold:
                log.warning("%s; the manager infers arriving engines itself", exc)
            self._untold = True
            return
        if engines != self._told or self._untold:
            log.info("told the manager to expect %s engine(s)", engines or "an unknown number of")
        self._told, self._untold = engines, False

    def _apply(self, decision: Decision, data: dict[str, Any]) -> None:
        for reason in decision.reasons:
            log.info("%s", reason)
        if decision.cancel:
            try:
                self.slurm.cancel(decision.cancel)
                mark(data, decision.cancel, "cancelled", self.clock())
                for job_id in decision.cancel:
                    data["controller"]["idle_since"].pop(job_id, None)
                log.info("cancelled idle engine job(s) %s", ", ".join(decision.cancel))
            except SlurmError as exc:
                log.error("%s", exc)
        self._submit(decision.live, "live", data)
        self._submit(decision.backfill, "backfill", data)

    def _submit(self, count: int, backlog: str, data: dict[str, Any]) -> None:
        """`count` jobs for the live or the backfill backlog; stops at Slurm's first refusal."""
        backfill = backlog == "backfill"
        script = (self.backfill_script if backfill else None) or self.script
        where = f" ({self.backfill_label})" if backfill and self.backfill_label else ""
        for _ in range(count):
            try:
                job_id = self.slurm.submit(script)
            except SlurmError as exc:
                log.error("%s", exc)
                return
            record_submitted(data, job_id, self.manager_url, self.clock(), "controller", backlog)
            log.info("submitted engine job %s for the %s backlog%s", job_id, backlog, where)

    def run(self, interval_s: float, stop: threading.Event) -> None:
        """Step every `interval_s` until `stop` is set; an unreachable manager is logged."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.step()
            except ManagerUnreachable as exc:
                log.warning("%s; trying again in %.0f s", exc, interval_s)
            except (SlurmError, ConfigError) as exc:
                log.error("%s; trying again in %.0f s", exc, interval_s)
            stop.wait(max(0.0, interval_s - (time.monotonic() - started)))


__all__ = [
    "DEFAULT_JOBS_FILE",
    "Backlog",
    "Controller",
    "Decision",
    "JobSpec",
    "JobsFile",
    "ManagerUnreachable",
    "Memory",
    "Policy",
    "Slurm",
    "SlurmError",
    "SlurmJob",
    "Wanted",
    "backlogs",
    "decide",
    "render_script",
    "submit_engines",
    "tell_fleet",
]
