"""Helpers shared by the benchmark scripts in `bench/`.

Machine description, the `docs/benchmarks.md` section writer, starting and
watching server processes (bcmanager and the original BC-pipelines manager),
reading their CPU time and peak memory from `/proc`, and farms of hard-linked
real pod5 files.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks.md"
REFERENCE = Path(
    os.environ.get("BCM_REFERENCE") or REPO.parent / "shared" / "reference" / "bc-pipelines"
)
ORIGINAL_SOFTWARE = REFERENCE / "BC_software"
ORIGINAL_TEMPLATE = REFERENCE / "configurations" / "config_template.json"
PORT = 40765
HOST = "127.0.0.1"
T = TypeVar("T")
CLK_TCK = os.sysconf("SC_CLK_TCK")
# ext4 allows at most 65,000 names per inode; stay below it and copy the source.
LINKS_PER_SOURCE = 60_000
BACKLOG_AGE_S = 3600.0

DOC_INTRO = """# Benchmarks

Numbers in this file are written by the scripts in `bench/`; each script replaces only
its own section (between its `<!-- bench:NAME -->` markers). Every section names the
machine, the date and the exact command, so a run can be repeated and compared.
Speed is never asserted in tests (design brief, section 6); these figures are the record.
"""


# -- machine and docs -------------------------------------------------------------------


@dataclass(frozen=True)
class Machine:
    cpu: str
    cores: int
    ram_gib: float
    kernel: str
    python: str

    def markdown(self) -> str:
        return (
            f"- machine: {self.cpu}, {self.cores} cores, {self.ram_gib:.1f} GiB RAM,"
            f" Linux {self.kernel}, Python {self.python}"
        )


def machine() -> Machine:
    """CPU model, cores and RAM of this machine, from /proc."""
    cpu = "unknown CPU"
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_kib = 0
    with open("/proc/meminfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                ram_kib = int(line.split()[1])
                break
    return Machine(
        cpu=cpu,
        cores=os.cpu_count() or 1,
        ram_gib=ram_kib / 2**20,
        kernel=os.uname().release,
        python=sys.version.split()[0],
    )


def run_async(coro: Coroutine[object, object, T]) -> T:
    """asyncio.run on uvloop when it is installed (it is: bcmanager depends on it)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)


def load_average() -> float:
    """The 1-minute load average (how busy the machine is besides us)."""
    with open("/proc/loadavg", encoding="ascii") as fh:
        return float(fh.read().split()[0])


LOAD_AT_START = load_average()


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def command_line() -> str:
    """The command that ran this script, as one would type it from the repository root."""
    script = os.path.relpath(sys.argv[0], REPO)
    return shlex.join(["python", script, *sys.argv[1:]])


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return out.stdout.strip()


@dataclass
class Code:
    """Which bcmanager source the benchmark runs: the working tree, or a commit exported."""

    src: Path | None = None  # PYTHONPATH for the manager; None = the installed working tree
    describe: str = ""


CODE = Code()


def working_tree() -> str:
    """The working tree as a section names it: its commit, and whether src/ differs."""
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--", "src")
    return f"working tree at {commit}" + (" with uncommitted changes in src/" if dirty else "")


def use_code_at(rev: str | None, workdir: Path) -> Code:
    """Run bcmanager from `rev` (exported with git archive) instead of the working tree.

    Others may be editing the tree while a benchmark runs; a commit stays put."""
    if rev is None:
        CODE.src = None
        CODE.describe = working_tree()
        return CODE
    commit = _git("rev-parse", "--short", rev)
    if not commit:
        raise SystemExit(f"unknown revision {rev!r}")
    dest = workdir / f"code-{commit}"
    remove_tree(dest)
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", commit, "src"], cwd=REPO, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    CODE.src = dest / "src"
    CODE.describe = f"commit {commit} (exported with `--code-at {rev}`)"
    return CODE


def stop_on_sigterm() -> None:
    """SIGTERM (and SIGINT, even when started under nohup) unwind the script, so its
    `finally` blocks kill the managers it started and remove its scratch folders."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a table to the terminal (rich when it is installed)."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a dependency
        print(title)
        print(markdown_table(headers, rows))
        return
    table = Table(title=title)
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(str(c) for c in row))
    Console(width=200).print(table)


def replace_section(text: str, name: str, body: str) -> str:
    """`text` with the section `<!-- bench:NAME -->...<!-- /bench:NAME -->` set to `body`."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    return text.rstrip("\n") + "\n\n" + block + "\n"


def update_doc(name: str, body: str, doc: Path = DOC) -> None:
    """Write one script's section into docs/benchmarks.md (created with an intro if missing)."""
    text = doc.read_text(encoding="utf-8") if doc.exists() else DOC_INTRO
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(replace_section(text, name, body), encoding="utf-8")


def section_header(title: str) -> str:
    """The lines every section starts with: machine, date, command, and the load caveat."""
    m = machine()
    return "\n".join(
        [
            f"## {title}",
            "",
            m.markdown(),
            f"- date: {utc_now()}",
            f"- command: `{command_line()}`",
            f"- bcmanager code: {CODE.describe or working_tree()}",
            f"- note: the load generator (or poller) shares the machine's {m.cores} cores with"
            " the server, and other work (other sessions' test suites) ran on the machine at"
            f" the same time: 1-minute load average {LOAD_AT_START:.1f} when this run started,"
            f" {load_average():.1f} when it ended. Read ratios rather than absolute figures.",
        ]
    )


# -- pod5 farms ---------------------------------------------------------------------------


def write_source_pod5(path: Path, age_s: float = BACKLOG_AGE_S) -> Path:
    """One small, real pod5 file (2 reads) written with the pod5 library.

    Its mtime is set `age_s` back, so the files linked to it are a backlog (written
    long before the manager saw them), as after a restart; bcmanager opens files
    younger than a minute with the pod5 library to count their reads, which is
    not what a start over a large backlog does."""
    from bcmanager.pod5io import write_pod5

    write_pod5(path, n_reads=2, samples=1000, seed=7)
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def pod5_name(i: int) -> str:
    return f"bench_{i:07d}.pod5"


class _LinkSource:
    """Hands out a file to hard-link: `source`, then copies of it as link counts fill up."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.current = source
        self.links = os.stat(source).st_nlink
        self.copies = 0

    def next_copy(self) -> None:
        self.copies += 1
        src = self.source
        self.current = src.with_name(f"{src.stem}.copy{self.copies}{src.suffix}")
        if not self.current.exists():
            shutil.copy2(src, self.current)  # keeps the mtime
        self.links = os.stat(self.current).st_nlink

    def link(self, target: Path) -> None:
        while True:
            if self.links >= LINKS_PER_SOURCE:
                self.next_copy()
            try:
                os.link(self.current, target)
            except OSError as exc:
                if exc.errno != errno.EMLINK:
                    raise
                self.links = LINKS_PER_SOURCE
                continue
            self.links += 1
            return


def make_farm(folder: Path, n: int, source: Path, start: int = 0) -> list[str]:
    """`n` hard links of `source` in `folder` (fresh copies of it where links run out).

    Returns the names created, in order."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [pod5_name(i) for i in range(start, start + n)]
    links = _LinkSource(source)
    for name in names:
        links.link(folder / name)
    return names


def farm_inodes(source: Path) -> list[Path]:
    """`source` and the copies `make_farm` made of it: every inode a farm's links share."""
    copies = sorted(source.parent.glob(f"{source.stem}.copy*{source.suffix}"))
    return [source, *copies]


def set_farm_mtime(source: Path, when: float) -> None:
    """Set the mtime of every file of a farm at once (one `os.utime` per shared inode)."""
    for path in farm_inodes(source):
        os.utime(path, (when, when))


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def free_disk_gib(path: Path) -> float:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / 2**30


# -- processes ----------------------------------------------------------------------------


@dataclass
class Server:
    """A started manager process and where its output goes."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    started: float  # time.monotonic() just before spawn

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL (the crash the restart benchmark wants, and a sure stop otherwise)."""
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def port_free(port: int = PORT) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def wait_port_free(port: int = PORT, timeout: float = 900.0) -> None:
    """Wait until nothing listens on `port` (another session may be using it briefly)."""
    deadline = time.monotonic() + timeout
    while not port_free(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} is still in use after {timeout:.0f} s")
        time.sleep(0.2)


def bcm_executable() -> Path:
    return Path(sys.executable).parent / "bcm"


def start_bcmanager(
    input_dir: Path,
    output_dir: Path,
    log: Path,
    port: int = PORT,
    lease_s: float = 600,
    batch_size: int = 1,
    extra: Sequence[str] = (),
) -> Server:
    """`bcm manager` on `port`, stdout and stderr to `log`."""
    wait_port_free(port)
    cmd = [
        str(bcm_executable()),
        "manager",
        "--input",
        str(input_dir),
        "--output",
        str(output_dir),
        "--port",
        str(port),
        "--lease",
        str(lease_s),
        "--batch-size",
        str(batch_size),
        *extra,
    ]
    env = {"PYTHONPATH": str(CODE.src)} if CODE.src is not None else {}
    return _spawn("bcmanager", cmd, log, cwd=REPO, env=env)


def original_config(input_dir: Path, output_dir: Path, path: Path) -> Path:
    """A BC-pipelines JSON config (from the template) pointing at INPUT and OUTPUT."""
    config = json.loads(ORIGINAL_TEMPLATE.read_text(encoding="utf-8"))
    config["Basecalling"]["input_dir"] = str(input_dir)
    config["Basecalling"]["output_dir"] = str(output_dir)
    path.write_text(json.dumps(config, indent=1), encoding="utf-8")
    return path


def start_original(input_dir: Path, output_dir: Path, log: Path) -> Server:
    """The original Flask manager (`BCManagement.py CONFIG 0`), always port 40765."""
    wait_port_free(PORT)
    for sub in ("pass", "fail"):
        (output_dir / sub).mkdir(parents=True, exist_ok=True)
    config = original_config(input_dir, output_dir, log.with_suffix(".config.json"))
    cmd = [sys.executable, "BCManagement.py", str(config), "0"]
    return _spawn("original", cmd, log, cwd=ORIGINAL_SOFTWARE)


def _spawn(
    name: str, cmd: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None
) -> Server:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    with open(log, "wb") as out:
        started = time.monotonic()
        proc = subprocess.Popen(
            cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    return Server(name, proc, log, started)


class ServerError(RuntimeError):
    """The server answered 5xx: a bug in the code under test, not a slow start."""


def http_get_json(path: str, port: int = PORT, timeout: float = 5.0) -> dict | None:
    """GET http://127.0.0.1:PORT/PATH as JSON; None when nothing answers (yet)."""
    url = f"http://{HOST}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            raise ServerError(f"GET {path}: HTTP {exc.code}: {exc.read()[:300]!r}") from exc
        return None
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
        return None


def wait_until(
    check: Callable[[], object],
    server: Server,
    timeout: float,
    interval: float = 0.05,
    what: str = "ready",
) -> float:
    """Call `check()` until truthy; returns seconds since the server was spawned."""
    deadline = time.monotonic() + timeout
    while True:
        if not server.alive():
            raise ServerDied(f"{server.name} exited early:\n{server.log_tail()}")
        if check():
            return time.monotonic() - server.started
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} not {what} after {timeout:.0f} s")
        time.sleep(interval)


class ServerDied(RuntimeError):
    """The server process exited while we waited for it."""


def lost_port_race(server: Server) -> bool:
    """The server died because someone else bound the port between our check and its bind."""
    return not server.alive() and "address already in use" in server.log_tail(50).lower()


def start_when_port_free(
    start: Callable[[], Server], ready: Callable[[Server], float], tries: int = 5
) -> tuple[Server, float]:
    """`start()` then `ready(server)`; start again if another process took the port first.

    Other sessions' tests use port 40765 too; `start()` waits for it to be free."""
    for attempt in range(tries):
        server = start()
        try:
            return server, ready(server)
        except ServerDied:
            if attempt + 1 < tries and lost_port_race(server):
                print(f"  port {PORT} was taken meanwhile; trying again", flush=True)
                continue
            raise
        except BaseException:
            server.kill()
            raise
    raise AssertionError("unreachable")


# -- /proc readings -------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    # after "pid (comm)": state is field 3, utime 14, stime 15 -> index 11 and 12 here
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mib(pid: int) -> float:
    """Peak resident set size (VmHWM) of a process, in MiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def fmt(value: float, digits: int = 1) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:,.{digits}f}"


def ratio(ours: float, theirs: float) -> float:
    return ours / theirs if theirs else float("nan")


# -- whole runs: engines, backlogs, the event log (bench/e2e.py, bench/live.py) -----------


def free_port() -> int:
    """A TCP port nothing listens on now, never the legacy 40765 (others' tests use it)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
        if port != PORT:
            return port


def code_env() -> dict[str, str]:
    """The environment that makes a child process run the bcmanager code under test."""
    return {"PYTHONPATH": str(CODE.src)} if CODE.src is not None else {}


def spawn(name: str, cmd: Sequence[str], log: Path, cwd: Path = REPO) -> Server:
    """Any process, stdout and stderr to `log`, running the bcmanager code under test."""
    return _spawn(name, list(cmd), log, cwd=cwd, env=code_env())


def start_bcm_engine(engine_id: str, port: int, log: Path, options: Sequence[str] = ()) -> Server:
    """`bcm engine` against the manager on `port`, logging JSON lines (with ms timestamps)."""
    cmd = [
        str(bcm_executable()),
        "engine",
        "--manager",
        f"http://{HOST}:{port}",
        "--engine-id",
        engine_id,
        "--log-format",
        "json",
        *options,
    ]
    return spawn(engine_id, cmd, log)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children first found, then theirs), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def kill_tree(server: Server) -> None:
    """SIGKILL a process and everything it started (an engine's basecaller runs in its own
    session, so killing the engine alone would leave it behind)."""
    below = descendants(server.pid) if server.alive() else []
    server.kill()
    for pid in below:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def write_pod5_sources(
    folder: Path, n: int, reads: int, samples: int, age_s: float = BACKLOG_AGE_S
) -> list[tuple[Path, int]]:
    """`n` distinct real pod5 files of `reads` reads of about `samples` samples each.

    Returns each file with its total samples. Their mtime is `age_s` back, so the
    manager takes them as a backlog (no pod5 open when queued)."""
    from bcmanager.pod5io import count_reads, write_pod5

    folder.mkdir(parents=True, exist_ok=True)
    then = time.time() - age_s
    out = []
    for i in range(n):
        path = folder / f"source_{i:03d}.pod5"
        write_pod5(path, n_reads=reads, samples=samples, seed=1000 + i)
        os.utime(path, (then, then))
        out.append((path, count_reads(path)[1]))
    return out


def link_backlog(folder: Path, sources: Sequence[tuple[Path, int]], n: int) -> int:
    """`n` hard links in `folder`, round robin over `sources`; returns their total samples."""
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for i in range(n):
        path, samples = sources[i % len(sources)]
        os.link(path, folder / pod5_name(i))
        total += samples
    return total


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) with linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


class EventLog:
    """The manager's event log (GET /v1/events), read incrementally."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.events: list[dict] = []

    def poll(self) -> list[dict]:
        """Fetch every event not seen yet; returns the new ones."""
        new: list[dict] = []
        while True:
            after = self.events[-1]["id"] if self.events else 0
            page = http_get_json(f"/v1/events?after={after}&limit=1000", self.port, timeout=10)
            batch = page["events"] if page else []
            self.events += batch
            new += batch
            if len(batch) < 1000:
                return new

    def files_done(self) -> int:
        return sum(e["count"] for e in self.events if e["entity"] == "files" and e["to"] == "done")

    def job_times(self, *to_states: str) -> dict[int, float]:
        """When each job first entered one of `to_states` ('assigned' = created; 'merging'
        or 'done' = DONE reported: a merge that runs at once ends the job in one step)."""
        times: dict[int, float] = {}
        for e in self.events:
            if e["entity"] == "job" and e["to"] in to_states:
                times.setdefault(e["job_id"], e["at"])
        return times

    def job_engines(self) -> dict[int, str]:
        return {
            e["job_id"]: e["detail"]
            for e in self.events
            if e["entity"] == "job" and e["from"] is None
        }


_ENGINE_JOB = re.compile(r"^job (\d+): \d+ file\(s\)$")


def engine_job_starts(log: Path) -> dict[int, float]:
    """When a `bcm engine` (logging JSON) started each job: just before its basecaller."""
    starts: dict[int, float] = {}
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        match = _ENGINE_JOB.match(str(entry.get("msg", "")))
        if match:
            starts[int(match.group(1))] = float(entry["ts"])
    return starts


def wait_bcm_ready(server: Server, timeout: float = 60.0) -> float:
    return wait_until(
        lambda: http_get_json("/healthz", server_port(server)), server, timeout, what="up"
    )


def server_port(server: Server) -> int:
    """The --port a bcmanager Server was started with."""
    args = server.proc.args
    assert isinstance(args, list)
    return int(args[args.index("--port") + 1])


def wait_engines_seen(port: int, engines: Sequence[str], servers: Sequence[Server]) -> None:
    """Until the manager has heard from every engine (each is then waiting in a claim)."""
    deadline = time.monotonic() + 120
    want = set(engines)
    while True:
        for s in servers:
            if not s.alive():
                raise ServerDied(f"{s.name} exited early:\n{s.log_tail()}")
        status = http_get_json("/v1/status", port, timeout=10) or {}
        if want <= {e["engine"] for e in status.get("engines", [])}:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"engines {sorted(want)} not all seen after 120 s")
        time.sleep(0.2)


def pgrep(pattern: str) -> list[int]:
    """Process ids whose command line matches `pattern` (a regular expression), not ours."""
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split() if p.strip() and int(p) != os.getpid()]


def wait_for_quiet(pattern: str, every_s: float = 30.0) -> None:
    """Wait while other benchmarks matching `pattern` run (they would share the cores)."""
    while pids := pgrep(pattern):
        print(f"  waiting for {pattern} to finish (pids {pids}) ...", flush=True)
        time.sleep(every_s)


@dataclass
class JobTimes:
    """One finished job of a bcmanager run, as its engine and the manager saw it."""

    job_id: int
    engine: str
    files: int
    start: float  # the engine starts the basecaller (its `job N` log line)
    done: float  # the manager takes the DONE report (`assigned -> done`, or `-> merging`)
    basecaller_end: float | None = None  # mtime of the job's basecaller.log
    created: float | None = None  # the manager answers the claim (creates the job)


def bcm_jobs(events: EventLog, logs: Sequence[Path], output: Path) -> list[JobTimes]:
    """Every finished job of a run, from the manager's event log and the engines' logs."""
    starts: dict[int, float] = {}
    for log in logs:
        starts.update(engine_job_starts(log))
    engines, done = events.job_engines(), events.job_times("merging", "done")
    created = events.job_times("assigned")
    sizes = {
        e["job_id"]: e["count"]
        for e in events.events
        if e["entity"] == "files" and e["from"] == "queued" and e["to"] == "assigned"
    }
    jobs = []
    for job_id, reported in done.items():
        engine = engines[job_id]
        blog = output / f"LOGOUTPUT_{job_id}_{engine}" / "basecaller.log"
        end = blog.stat().st_mtime if blog.exists() else None
        jobs.append(
            JobTimes(
                job_id,
                engine,
                sizes.get(job_id, 1),  # a slice's job moves no file: part of one
                starts[job_id],
                reported,
                end,
                created[job_id],
            )
        )
    return jobs


def wait_while_alive(
    done: Callable[[], bool],
    servers: Sequence[Server],
    timeout: float,
    late: Callable[[], str],
    interval: float = 0.25,
) -> None:
    """Call `done()` until true; fail early if a process died, or with `late()` after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        for s in servers:
            if not s.alive():
                raise ServerDied(f"{s.name} exited early:\n{s.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(late())
        time.sleep(interval)


def wait_files_done(
    events: EventLog, n: int, servers: Sequence[Server], timeout: float = 900.0
) -> None:
    """Poll the event log until `n` files are DONE; fail early if a process died."""

    def done() -> bool:
        events.poll()
        return events.files_done() >= n

    wait_while_alive(
        done, servers, timeout, lambda: f"only {events.files_done()} of {n} files done"
    )


def check_all_done(output: Path, n: int, port: int, fastq: bool = True) -> None:
    """Every file DONE in the ledger and, with `fastq`, reads in OUTPUT: one FASTQ each
    in OUTPUT/pass (the legacy layout), or read files in MinKNOW's tree."""
    status = http_get_json("/v1/status", port, timeout=30) or {}
    files = status.get("files", {})
    legacy = output / "pass"
    if legacy.is_dir():
        found = len([p for p in legacy.iterdir() if p.name.endswith(".fastq")])
        enough = found == n
    else:
        from bcmanager.verify import output_read_files

        found = len(output_read_files(output))
        enough = found > 0
    if files.get("done") != n or (fastq and not enough):
        raise RuntimeError(f"expected {n} files done: ledger says {files}, {found} read files")


@dataclass
class BacklogRun:
    makespan_s: float  # from t0 to the last merge
    total_samples: int
    jobs: list[JobTimes]
    t0: float  # the rename into INPUT, or with arrivals all files queued (time.time())
    # when each engine was spawned, seconds after t0 (engines dict order): negative when
    # the engines started before t0 and waited in claims, else its actual arrival
    engine_starts_s: dict[str, float] = field(default_factory=dict)


def wait_files_queued(port: int, n: int, manager: Server, timeout: float = 120.0) -> None:
    """Until the manager has queued all `n` files of a backlog (v1 status files.queued)."""
    seen: list[object] = [None]

    def queued() -> bool:
        seen[0] = ((http_get_json("/v1/status", port, timeout=10) or {}).get("files") or {}).get(
            "queued"
        )
        return seen[0] == n

    wait_while_alive(
        queued,
        [manager],
        timeout,
        lambda: f"the manager queued {seen[0]} of {n} files in {timeout:g} s (no engines yet)",
        interval=0.05,
    )


def run_backlog(
    work: Path,
    sources: Sequence[tuple[Path, int]],
    n_files: int,
    engines: dict[str, list[str]],
    manager_extra: Sequence[str] = (),
    batch_size: int = 10,
    before_stop: Callable[[int], None] | None = None,
    lease_s: float = 90,
    arrivals: Sequence[float] | None = None,
) -> BacklogRun:
    """A whole run over a backlog of `n_files` hard links of `sources`.

    `bcm engine` processes (name -> options) start first and wait in long-poll claims;
    then the backlog folder is renamed into INPUT and the clock starts; it stops at the
    last merge in the manager's event log. Every file is checked DONE with its FASTQ.
    `before_stop(port)`, when given, runs while the manager still answers.

    With `arrivals` (seconds after t0, one per engine in `engines` order), engines arrive
    one by one as GPU nodes come free: the backlog is renamed into INPUT first, the clock
    starts once the manager has queued all `n_files`, and each engine is spawned at
    t0 + its arrival (in order of arrival). `engine_starts_s` holds when each engine was
    actually spawned, seconds after t0."""
    if arrivals is not None and len(arrivals) != len(engines):
        raise ValueError(f"{len(arrivals)} arrivals for {len(engines)} engines")
    remove_tree(work)
    (work / "input").mkdir(parents=True)
    staged = work / "staging" / "run1"
    total = link_backlog(staged, sources, n_files)
    port = free_port()
    manager = start_bcmanager(
        work / "input",
        work / "output",
        work / "logs" / "manager.log",
        port=port,
        lease_s=lease_s,
        batch_size=batch_size,
        extra=manager_extra,
    )
    started: list[Server] = [manager]
    try:
        wait_bcm_ready(manager)
        logs = [work / "logs" / f"engine-{name}.log" for name in engines]
        spawned: dict[str, float] = {}
        if arrivals is None:
            for (name, options), log in zip(engines.items(), logs, strict=True):
                spawned[name] = time.time()
                started.append(start_bcm_engine(name, port, log, options))
            wait_engines_seen(port, list(engines), started)
            events = EventLog(port)
            events.poll()
            t0 = time.time()
            os.rename(staged, work / "input" / staged.name)
        else:
            events = EventLog(port)
            events.poll()
            os.rename(staged, work / "input" / staged.name)
            wait_files_queued(port, n_files, manager)
            t0 = time.time()
            plan = sorted(
                zip(arrivals, engines.items(), logs, strict=True), key=lambda item: item[0]
            )
            for at, (name, options), log in plan:
                while (wait := t0 + at - time.time()) > 0:
                    for s in started:
                        if not s.alive():
                            raise ServerDied(f"{s.name} exited early:\n{s.log_tail()}")
                    time.sleep(min(wait, 0.25))
                spawned[name] = time.time()
                started.append(start_bcm_engine(name, port, log, options))
        wait_files_done(events, n_files, started)
        check_all_done(work / "output", n_files, port)
        jobs = bcm_jobs(events, logs, work / "output")
        finished = max(events.job_times("done").values())
        if before_stop is not None:
            before_stop(port)
    finally:
        for s in reversed(started):
            kill_tree(s)
    starts = {name: spawned[name] - t0 for name in engines}
    return BacklogRun(finished - t0, total, jobs, t0, starts)
