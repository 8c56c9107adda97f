"""Model generations: each file basecalled once per model, the live generation first."""

import sqlite3
from pathlib import Path

import pytest

from bcmanager import scheduler
from bcmanager.backfill import WINDOW_S, LiveDemand
from bcmanager.config import Settings, build_settings, check_directories
from bcmanager.errors import ConfigError, Conflict
from bcmanager.generations import Generation, implicit, make, parse_spec
from bcmanager.ledger import Ledger, NewFile
from bcmanager.manager import Manager, Outcome
from bcmanager.states import FileState
from tests.helpers import assert_exactly_once, basecall_dir, make_run, output_read_ids


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


FAST = make("fast", "dna_r10.4.1_e8.2_400bps_fast@v5.0.0")
SUP = make("sup", "dna_r10.4.1_e8.2_400bps_sup@v5.0.0", modified_bases=("5mCG_5hmCG",))


def open_manager(inp: Path, out: Path, *gens: Generation, **kw: object) -> Manager:
    settings = check_directories(
        Settings(
            input=inp, output=out, lease_s=30, batch_size=2, settle_s=0, generations=gens, **kw
        )
    )
    m = Manager(settings, clock=Clock())
    m.open(scan_now=True)
    return m


def run_ended(m: Manager) -> None:
    """Let the clock pass the window in which live arrivals keep engines out of backfill."""
    m.clock.t += WINDOW_S + 1


def work(
    m: Manager, engine: str = "e1", any_model: bool = True, api: str = "v1", n: int | None = None
) -> int | None:
    """Claim, basecall with the FASTQ stand-in, report DONE; the job's generation id."""
    a = m.claim(engine, n, api=api, any_model=any_model)
    if a is None:
        return None
    basecall_dir(m.layout.assigned_dir(a.job.id, engine), m.layout.tmp_output_dir(a.job.id, engine))
    m.complete(a.job.id, Outcome.DONE, a.job.token)
    return a.job.gen


def work_all(m: Manager, engine: str = "e1", **kw: object) -> list[int]:
    """`work` until no batch is handed out; the generation of each batch, in order."""
    gens = []
    while (gen := work(m, engine, **kw)) is not None:
        gens.append(gen)
    return gens


# -- the recipe ------------------------------------------------------------------------


def test_a_generation_spec_names_its_model_and_the_options_that_change_reads() -> None:
    gen = parse_spec("sup=sup@v5.0.0:modified-bases=5mCG_5hmCG+6mA,kit-name=SQK-NBD114-24")
    assert (gen.name, gen.model, gen.kit_name) == ("sup", "sup@v5.0.0", "SQK-NBD114-24")
    assert gen.modified_bases == ("5mCG_5hmCG", "6mA")
    assert gen.output_root == "generations/sup"
    assert parse_spec("hac=/models/dna_r10.4.1_e8.2_400bps_hac@v5.0.0").kit_name is None


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "sup",
        "sup=",
        "=sup",
        "../x=sup",
        "a/b=sup",
        "default=sup",
        "sup=su p",
        "sup=sup:speed=2",
        "sup=sup:kit-name=",
        "x" * 65 + "=sup",
    ],
)
def test_a_bad_generation_spec_is_refused_with_a_message(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_spec(spec)


def test_generations_come_from_the_toml_config_in_order(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    toml = tmp_path / "bcm.toml"
    toml.write_text(
        f'input = "{tmp_path / "in"}"\noutput = "{tmp_path / "out"}"\n'
        '[[generation]]\nname = "fast"\nmodel = "fast"\n'
        '[[generation]]\nname = "sup"\nmodel = "sup"\nmodified_bases = ["6mA"]\n'
    )
    settings = build_settings({}, toml)
    assert [(g.name, g.model, g.modified_bases) for g in settings.generations] == [
        ("fast", "fast", ()),
        ("sup", "sup", ("6mA",)),
    ]
    toml.write_text(toml.read_text() + '[[generation]]\nname = "sup"\nmodel = "hac"\n')
    with pytest.raises(ConfigError, match="name of its own"):
        build_settings({}, toml)


# -- the ledger ------------------------------------------------------------------------


def test_the_ledger_queues_each_file_once_per_generation_and_hands_out_the_live_one_first(
    tmp_path: Path,
) -> None:
    db = Ledger(tmp_path / "l.sqlite3")
    db.add_generation(FAST, 0)
    db.add_generation(SUP, 0)
    assert db.add_files([NewFile(f"f{i}.pod5", 100 + i) for i in range(3)], 1) == 3
    assert db.file_counts(0)[FileState.QUEUED] == 3 and db.file_counts(1)[FileState.QUEUED] == 3
    assert db.queued_bytes() == 2 * (100 + 101 + 102)
    batch = db.queued_files(10)
    assert {f.gen for f in batch} == {0} and len(batch) == 3
    db.set_file_state([f.id for f in batch], FileState.QUEUED, FileState.ASSIGNED, 2)
    assert {f.gen for f in db.queued_files(10)} == {1}
    assert db.queued_files(10, gens=[0]) == []
    assert db.queued_count([0]) == 0 and db.queued_count() == 3
    assert db.queued_bytes() == 303
    reopened = Ledger(tmp_path / "l.sqlite3")
    assert reopened.counts_by_generation() == db.counts_by_generation()
    assert [g.name for g in reopened.generations()] == ["fast", "sup"]


def test_a_generation_added_later_queues_every_known_file_and_is_idempotent(
    tmp_path: Path,
) -> None:
    db = Ledger(tmp_path / "l.sqlite3")
    db.add_generation(implicit(), 0)
    db.add_files([NewFile(f"f{i}.pod5", 10) for i in range(4)], 1)
    ids = [f.id for f in db.queued_files(10)]
    db.set_file_state(ids, FileState.QUEUED, FileState.ASSIGNED, 2)
    db.set_file_state(ids, FileState.ASSIGNED, FileState.DONE, 3)
    sup = db.add_generation(SUP, 4)
    assert sup.id == 1
    assert db.file_counts(1)[FileState.QUEUED] == 4 and db.file_counts(0)[FileState.DONE] == 4
    events = len(db.events(0, 1000))
    assert db.add_generation(SUP, 5) == sup
    assert len(db.events(0, 1000)) == events and db.file_counts(1)[FileState.QUEUED] == 4
    with pytest.raises(Conflict, match="another recipe"):
        db.add_generation(make("sup", "hac"), 6)
    db.add_files([NewFile("late.pod5", 10)], 7)
    assert db.file_counts(0)[FileState.QUEUED] == 1 and db.file_counts(1)[FileState.QUEUED] == 5


def test_a_ledger_from_before_generations_is_migrated_with_its_files_in_the_live_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE files (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE,
            size INTEGER NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            job_id INTEGER, reads INTEGER, samples INTEGER, reason TEXT, run TEXT,
            mtime REAL, discovered_at REAL NOT NULL, done_at REAL);
        CREATE INDEX files_by_state ON files(state, id);
        CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, engine TEXT NOT NULL,
            state TEXT NOT NULL, token TEXT NOT NULL, api TEXT NOT NULL,
            lease_s REAL NOT NULL, lease_expires REAL NOT NULL, created REAL NOT NULL,
            updated REAL NOT NULL, ended REAL, n_files INTEGER NOT NULL, reason TEXT,
            merge_plan TEXT);
        CREATE TABLE yields (run TEXT NOT NULL, barcode TEXT NOT NULL, totals TEXT NOT NULL,
            PRIMARY KEY (run, barcode));
        INSERT INTO files(path, size, state, run, discovered_at) VALUES
            ('a.pod5', 5, 'done', '.', 1), ('b.pod5', 7, 'queued', '.', 1);
        INSERT INTO yields VALUES ('.', 'unclassified', '{"run": ".", "reads": 3}');
        """
    )
    old.commit()
    old.close()
    db = Ledger(path)
    assert db.get_meta("schema_version") == "2"
    assert db.file_counts(0)[FileState.DONE] == 1 and db.queued_bytes() == 7
    assert db.yield_totals() == [{"run": ".", "reads": 3, "gen": 0}]
    db.add_generation(implicit(), 2)
    db.add_generation(SUP, 2)
    assert db.file_counts(1)[FileState.QUEUED] == 2


# -- the manager -----------------------------------------------------------------------


def test_backfill_waits_for_the_live_generation_and_each_gets_every_read_once(
    run_dirs: tuple[Path, Path],
) -> None:
    inp, out = run_dirs
    run = make_run(inp, 5)
    m = open_manager(inp, out, FAST, SUP)
    order = work_all(m)
    assert set(order) == {0}  # a lone engine is the live reserve while files still arrive
    run_ended(m)
    order += work_all(m)
    assert order == sorted(order) and set(order) == {0, 1}  # no sup batch before fast ended
    assert_exactly_once(run, out / "generations" / "fast")
    assert_exactly_once(run, out / "generations" / "sup")
    assert not output_read_ids(out)  # nothing at the root: both are named generations
    gens = {g["name"]: g for g in m.status()["generations"]}
    assert gens["sup"]["files"]["done"] == 5 and gens["sup"]["model"] == SUP.model
    assert (out / "generations" / "sup" / "generation.json").is_file()


def test_an_engine_that_runs_its_own_model_only_gets_the_live_generation(
    run_dirs: tuple[Path, Path],
) -> None:
    inp, out = run_dirs
    run = make_run(inp, 4)
    m = open_manager(inp, out, FAST, SUP)
    work_all(m, "orig", any_model=False, api="legacy")
    assert m.db.file_counts(0)[FileState.DONE] == 4
    assert m.claim("orig", None, api="legacy") is None
    assert not m.work_expected(any_model=False) and m.work_expected(any_model=True)
    run_ended(m)
    work_all(m, "gpu")
    assert_exactly_once(run, out / "generations" / "sup")


def test_a_generation_added_after_the_run_leaves_earlier_output_where_it_is(
    run_dirs: tuple[Path, Path],
) -> None:
    inp, out = run_dirs
    run = make_run(inp, 3)
    m = open_manager(inp, out)
    work_all(m)
    before = sorted(p.relative_to(out) for p in out.rglob("*.fastq"))
    assert m.status()["generations"][0]["name"] == "default"
    gen, new = m.add_generation(SUP)
    assert new and gen.id == 1 and m.run_state() == "basecalling"
    assert m.add_generation(SUP) == (gen, False)
    with pytest.raises(Conflict):
        m.add_generation(make("sup", "hac"))
    run_ended(m)
    work_all(m)
    assert_exactly_once(run, out)  # the implicit generation's tree: OUTPUT without the new one
    assert_exactly_once(run, out / "generations" / "sup")
    after = [p for p in sorted(p.relative_to(out) for p in out.rglob("*.fastq"))]
    assert [p for p in after if p.parts[0] != "generations"] == before


def test_generations_survive_a_restart_and_a_lost_ledger(run_dirs: tuple[Path, Path]) -> None:
    inp, out = run_dirs
    run = make_run(inp, 4)
    m = open_manager(inp, out, FAST)
    work_all(m)
    m.add_generation(SUP)
    run_ended(m)
    assert work(m, n=2) == 1  # one sup batch of two files, then the manager stops
    m.close()
    m = open_manager(inp, out, FAST)  # SUP was added by the API: the ledger remembers it
    assert [g.name for g in m.generations.values()] == ["fast", "sup"]
    assert m.db.file_counts(1) == {**m.db.file_counts(1), FileState.DONE: 2}
    m.close()
    (out / ".bcmanager" / "ledger.sqlite3").unlink()
    m = open_manager(inp, out)
    assert [g.name for g in m.generations.values()] == ["fast", "sup"]  # from the trees
    assert m.db.file_counts(0)[FileState.DONE] == 4 and m.db.file_counts(1)[FileState.DONE] == 2
    run_ended(m)
    work_all(m)
    assert_exactly_once(run, out / "generations" / "sup")
    assert_exactly_once(run, out / "generations" / "fast")


def test_a_restart_with_another_recipe_for_a_known_name_is_refused(
    run_dirs: tuple[Path, Path],
) -> None:
    inp, out = run_dirs
    make_run(inp, 1)
    open_manager(inp, out, FAST).close()
    with pytest.raises(Conflict, match="another recipe"):
        open_manager(inp, out, make("fast", "hac"))


# -- the live reserve ------------------------------------------------------------------


def test_while_files_arrive_engines_stay_in_reserve_for_live_work(
    run_dirs: tuple[Path, Path],
) -> None:
    inp, out = run_dirs
    make_run(inp, 4)
    m = open_manager(inp, out, FAST, SUP)
    while work(m, "a", n=4) == 0:
        pass
    assert m.claim("a", None, api="v1", any_model=True) is None  # nobody else would be idle
    b = m.claim("b", None, api="v1", any_model=True)
    assert b is not None and b.job.gen == 1  # a stays idle: the reserve of one
    assert m.claim("a", None, api="v1", any_model=True) is None
    make_run(inp, 1, prefix="late")  # a live file arrives: the idle engine takes it at once
    m.scan()
    late = m.claim("a", None, api="v1", any_model=True)
    assert late is not None and late.job.gen == 0
    run_ended(m)  # nothing arrived for the window: the reserve is gone
    m.complete(late.job.id, Outcome.FAILED, late.job.token)  # back to the queue, and a is idle
    assert m.claim("c", None, api="v1", any_model=True).job.gen == 0  # live first, always
    assert m.claim("a", None, api="v1", any_model=True).job.gen == 1


def test_the_live_reserve_grows_with_the_arrival_rate_and_the_live_batch_time() -> None:
    demand = LiveDemand(window_s=100)
    assert demand.reserve(0) == 0
    demand.arrived(0, 10)
    assert demand.reserve(1) == 1  # no live batch measured yet: one spare
    demand.batch_done(60)  # 0.1 files/s x 60 s: 6 engines busy on average
    assert demand.reserve(1) == 1 + 6 + 8
    assert demand.reserve(101) == 0  # arrivals older than the window are forgotten


def test_a_command_template_naming_the_model_runs_each_generations_model(tmp_path: Path) -> None:
    from bcmanager.basecallers.command import CommandBasecaller

    own = CommandBasecaller("true {output} {model}", model="hac")
    assert own.switches_models
    sup = own.with_recipe("sup@v5.0.0", None, ())
    assert sup.invocation(tmp_path, tmp_path / "o").argv[-1] == "sup@v5.0.0"
    with pytest.raises(ConfigError, match="kit"):
        own.with_recipe("sup", "SQK-NBD114-24", ())
    fixed = CommandBasecaller("true {output}")
    assert not fixed.switches_models
    with pytest.raises(ConfigError):
        fixed.with_recipe("sup", None, ())


def test_an_engines_speed_is_learnt_per_generation(run_dirs: tuple[Path, Path]) -> None:
    from bcmanager.reports import Timing

    inp, out = run_dirs
    make_run(inp, 4)
    m = open_manager(inp, out, FAST, SUP, live_window_s=0)

    def batch(seconds: float) -> tuple[int, int]:
        a = m.claim("gpu", 4, api="v1", any_model=True)
        assert a is not None
        basecall_dir(
            m.layout.assigned_dir(a.job.id, "gpu"), m.layout.tmp_output_dir(a.job.id, "gpu")
        )
        m.clock.t += seconds
        m.complete(a.job.id, Outcome.DONE, a.job.token, timing=Timing(0.0, seconds))
        return a.job.gen, scheduler.signal_bytes(a.files)

    assert batch(1.0)[0] == 0
    live_rate = m.roster.engines["gpu"].speed.bytes_per_s
    gen, size = batch(10.0)  # sup: ten times slower on the same GPU
    assert gen == 1 and m.roster.engines["gpu"].speed.bytes_per_s == pytest.approx(size / 10.0)
    make_run(inp, 1, prefix="late")
    m.scan()
    m.claim("gpu", None, api="v1", any_model=True)  # the live file: the live model's speed
    assert m.roster.engines["gpu"].speed.bytes_per_s == live_rate
