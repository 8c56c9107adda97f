"""A real single-node Slurm: the one running, or a private one started here.

If `sinfo` already answers, that Slurm is used as it is. Otherwise munge is started
(if it is not running) and a private slurmctld + slurmd are started from a
slurm.conf in a temporary folder (its own ports, state and spool), with SLURM_CONF
pointing the clients at it; `stop_slurm` stops everything started here, by pid.
Settings: ../shared/slurm-single-node.md (verified on this machine kind). Used by the
cluster tests (`tests/e2e/conftest.py`) and by the soak (`bench/soak.py`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import free_port

MUNGE_PID = Path("/run/munge/munged.pid")


@dataclass
class SlurmCluster:
    partition: str
    conf_dir: Path | None = None  # None: a Slurm that was running already
    pids: list[int] = field(default_factory=list)
    saved_conf: str | None = None  # SLURM_CONF before a private Slurm was started

    def job_ids(self) -> list[str]:
        out = _slurm(["squeue", "--noheader", "--format=%i"]).stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def states(self, job_ids: list[str]) -> dict[str, str]:
        """Slurm state of each of `job_ids` that squeue still lists as live."""
        out = _slurm(["squeue", "--noheader", "--format=%i|%T"]).stdout
        listed = dict(line.split("|", 1) for line in out.split() if "|" in line)
        return {j: listed[j] for j in job_ids if j in listed}

    def wait_gone(self, job_ids: list[str], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while left := self.states(job_ids):
            assert time.monotonic() < deadline, f"jobs still in squeue: {left}"
            time.sleep(0.5)


def _slurm(argv: list[str], timeout: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def _answers() -> bool:
    try:
        return _slurm(["sinfo", "--noheader"], timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _default_partition() -> str:
    out = _slurm(["sinfo", "--noheader", "--format=%P"]).stdout.split()
    marked = [p for p in out if p.endswith("*")]
    return (marked or out or ["debug*"])[0].rstrip("*")


def _munge_running() -> bool:
    if not shutil.which("munge"):
        return False
    encode = subprocess.run(["munge", "-n"], capture_output=True, timeout=10, check=False)
    if encode.returncode != 0:
        return False
    decode = subprocess.run(["unmunge"], input=encode.stdout, capture_output=True, timeout=10)
    return decode.returncode == 0


def _start_munge() -> int | None:
    """Start munged as the munge user unless it answers already; its pid if started."""
    if _munge_running():
        return None
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        creator = shutil.which("mungekey") or "/usr/sbin/create-munge-key"
        args = [creator, "--create"] if creator.endswith("mungekey") else [creator]
        subprocess.run(args, check=True, capture_output=True)
        shutil.chown(key, "munge", "munge")
    Path("/run/munge").mkdir(parents=True, exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True)
    _wait(lambda: _munge_running() and _read_pid(MUNGE_PID) is not None, 10, "munged")
    return _read_pid(MUNGE_PID)


def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up in {timeout:.0f} s")
        time.sleep(0.2)


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 2048


def _write_conf(folder: Path, host: str) -> Path:
    (folder / "state").mkdir()
    (folder / "spool").mkdir()
    settings = {
        "ClusterName": "bcmtest",
        "SlurmctldHost": f"{host}(127.0.0.1)",  # no name resolution needed
        "SlurmUser": "root",
        "SlurmctldPort": free_port(),
        "SlurmdPort": free_port(),
        "AuthType": "auth/munge",
        "ProctrackType": "proctrack/linuxproc",
        "TaskPlugin": "task/none",
        "SelectType": "select/cons_tres",
        "SelectTypeParameters": "CR_Core",
        "AccountingStorageType": "accounting_storage/none",
        "JobAcctGatherType": "jobacct_gather/none",
        "JobCompType": "jobcomp/none",
        "MpiDefault": "none",
        "SwitchType": "switch/none",
        "ReturnToService": 2,
        "KillWait": 5,
        "MailProg": "/bin/true",
        "StateSaveLocation": folder / "state",
        "SlurmdSpoolDir": folder / "spool",
        "SlurmctldPidFile": folder / "slurmctld.pid",
        "SlurmdPidFile": folder / "slurmd.pid",
        "SlurmctldLogFile": folder / "slurmctld.log",
        "SlurmdLogFile": folder / "slurmd.log",
    }
    lines = [f"{key}={value}" for key, value in settings.items()]
    lines += [
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} RealMemory={int(_memory_mb() * 0.9)}"
        " State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:8",
    ]
    conf = folder / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _start_private_slurm() -> SlurmCluster:
    folder = Path(tempfile.mkdtemp(prefix="bcm-slurm-", dir="/tmp"))
    host = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    conf = _write_conf(folder, host)
    os.environ["SLURM_CONF"] = str(conf)  # the clients here, and every job, read this one
    cluster = SlurmCluster("debug", folder)
    try:
        munged = _start_munge()
        if munged is not None:
            cluster.pids.append(munged)
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon], check=True, capture_output=True)
            pidfile = folder / f"{daemon}.pid"
            _wait(lambda: _read_pid(pidfile) is not None, 15, daemon)  # noqa: B023
            pid = _read_pid(pidfile)
            assert pid is not None and pid > 1
            cluster.pids.insert(0, pid)
        _wait(_node_ready, 30, "the Slurm node")
    except Exception as exc:
        logs = [f.read_text()[-2000:] for f in sorted(folder.glob("*.log"))]
        _stop(cluster)
        raise RuntimeError(f"could not start Slurm: {exc}\n" + "\n".join(logs)) from exc
    return cluster


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().split()
    except FileNotFoundError:
        return None
    return int(text[0]) if text and text[0].isdigit() else None


def _node_ready() -> bool:
    out = _slurm(["sinfo", "--noheader", "--format=%t"]).stdout.split()
    return bool(out) and all(s.rstrip("*") in ("idle", "mix", "alloc") for s in out)


def _stop(cluster: SlurmCluster) -> None:
    """Cancel what still runs on our Slurm, then stop our daemons (slurmd, slurmctld, munged)."""
    with contextlib.suppress(AssertionError, OSError, subprocess.SubprocessError):
        if left := cluster.job_ids():
            _slurm(["scancel", *left])
            cluster.wait_gone(left, timeout=30)
    for pid in cluster.pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    if cluster.conf_dir is not None:
        shutil.rmtree(cluster.conf_dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return True


class SlurmMissing(RuntimeError):
    """Slurm is not installed here."""


def start_slurm() -> SlurmCluster:
    """A Slurm that answers: the one already running, or a private single-node one
    (SLURM_CONF set in this process's environment; `stop_slurm` puts it back)."""
    if shutil.which("sbatch") is None:
        raise SlurmMissing(
            "Slurm is not installed (no sbatch on PATH): run scripts/system-deps.sh as root"
            " (it installs slurmctld, slurmd, slurm-client and munge)"
        )
    if _answers():
        return SlurmCluster(_default_partition())
    saved = os.environ.get("SLURM_CONF")
    cluster = _start_private_slurm()
    cluster.saved_conf = saved
    return cluster


def stop_slurm(cluster: SlurmCluster) -> None:
    """Stop what `start_slurm` started (nothing, for a Slurm that was running already)."""
    if cluster.conf_dir is None:
        return
    _stop(cluster)
    if cluster.saved_conf is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = cluster.saved_conf
