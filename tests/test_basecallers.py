"""Basecaller backends: the commands they build, and those commands really run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pysam
import pytest

from bcmanager.basecallers import make_basecaller
from bcmanager.basecallers.abc import Invocation
from bcmanager.basecallers.command import CommandBasecaller
from bcmanager.basecallers.dorado import DoradoBasecaller
from bcmanager.basecallers.script import ScriptBasecaller
from bcmanager.basecallers.simulated import SimulatedBasecaller, download_model
from bcmanager.errors import ConfigError
from bcmanager.layout import POD5_SIGNATURE, link_name
from bcmanager.pod5io import count_reads, write_pod5
from bcmanager.records import detect_format, parse_tags
from tests.helpers import run_invocation

FAKES = Path(__file__).parent / "fakes"


@pytest.fixture
def job(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """A job as the manager prepares it: a folder of symlinks to pod5 files, an empty output."""
    store = tmp_path / "run"
    ids = write_pod5(store / "pod5" / "a_0.pod5", 30, samples=500, seed=1)
    ids += write_pod5(store / "pod5" / "a_1.pod5", 20, samples=500, seed=2)
    input_dir = tmp_path / "ASSIGNED_1_e1"
    input_dir.mkdir()
    for name in ("a_0.pod5", "a_1.pod5"):
        os.symlink(store / "pod5" / name, input_dir / link_name(f"pod5/{name}"))
    output_dir = tmp_path / "TMPOUTPUT_1_e1"
    output_dir.mkdir()
    return input_dir, output_dir, ids


@pytest.fixture
def fake_dorado(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The stand-in dorado first on PATH, run by this interpreter (which has pod5)."""
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("BCM_PYTHON", sys.executable)
    return FAKES / "dorado"


run = run_invocation


def fastq_records(folder: Path) -> list[tuple[str, str, str, str]]:
    records = []
    for path in sorted(folder.glob("*.fastq")):
        lines = path.read_text().splitlines()
        assert len(lines) % 4 == 0, path
        for i in range(0, len(lines), 4):
            records.append((lines[i], lines[i + 1], lines[i + 2], lines[i + 3]))
    return records


def read_id(header: str) -> str:
    assert header.startswith("@")
    return header[1:].split()[0]


# -- simulated --------------------------------------------------------------------------


def test_simulated_argv_runs_this_module_with_its_speed(tmp_path: Path) -> None:
    inv = SimulatedBasecaller(2.5e6).invocation(tmp_path / "in", tmp_path / "out")
    assert inv.argv[:3] == [sys.executable, "-m", "bcmanager.basecallers.simulated"]
    assert inv.argv[3:5] == [str(tmp_path / "in"), str(tmp_path / "out")]
    assert float(inv.argv[inv.argv.index("--samples-per-s") + 1]) == 2.5e6
    assert inv.stdout_path == tmp_path / "out" / "basecalls" / "basecalls.bam"  # as Dorado's
    legacy = SimulatedBasecaller(2.5e6, style="legacy").invocation(tmp_path / "i", tmp_path / "o")
    assert legacy.stdout_path is None  # it writes its own files


def test_simulated_writes_one_record_per_read_per_pod5(job: tuple[Path, Path, list[str]]) -> None:
    input_dir, output_dir, ids = job
    result = run(SimulatedBasecaller(0, style="legacy").invocation(input_dir, output_dir))
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in (output_dir / "pass").iterdir())
    assert names == ["pod5__a_0.fastq", "pod5__a_1.fastq"]
    assert [p.name for p in output_dir.iterdir()] == ["pass"]  # no temporary left behind
    records = fastq_records(output_dir / "pass")
    assert Counter(read_id(h) for h, *_ in records) == Counter(ids)
    for header, seq, plus, qual in records:
        assert plus == "+"
        assert len(seq) == len(qual) >= 1
        assert set(seq) <= set("ACGT")
        assert all(34 <= ord(c) <= 73 for c in qual)  # phred 1..40
        samples = int(header.split("ns:i:")[1].split()[0])
        assert len(seq) == max(1, samples // 10)


def test_simulated_output_is_deterministic(
    job: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    input_dir, output_dir, _ = job
    again = tmp_path / "again"
    again.mkdir()
    for style, folder in (("legacy", "pass"), ("dorado", "basecalls")):
        basecaller = SimulatedBasecaller(0, style=style, emit_fastq=style == "dorado")
        assert run(basecaller.invocation(input_dir, output_dir)).returncode == 0
        assert run(basecaller.invocation(input_dir, again)).returncode == 0
        written = sorted((output_dir / folder).iterdir())
        assert written
        for path in written:
            assert path.read_bytes() == (again / folder / path.name).read_bytes()


def test_simulated_fails_on_an_unreadable_pod5(
    job: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    input_dir, output_dir, _ = job
    bad = tmp_path / "bad.pod5"
    bad.write_bytes(POD5_SIGNATURE + os.urandom(500) + POD5_SIGNATURE)
    os.symlink(bad, input_dir / "zz_bad.pod5")
    result = run(SimulatedBasecaller(0, style="legacy").invocation(input_dir, output_dir))
    assert result.returncode != 0
    assert "zz_bad.pod5" in result.stderr
    pass_dir = output_dir / "pass"
    assert not pass_dir.exists() or not list(pass_dir.iterdir())  # no FASTQ under a final name
    assert not [p for p in output_dir.iterdir() if p.name != "pass"]  # temporaries removed
    inv = SimulatedBasecaller(0).invocation(input_dir, tmp_path / "dorado-style")
    result = run(inv)
    assert result.returncode != 0  # Dorado style: the engine reports the batch failed
    assert "zz_bad.pod5" in result.stderr


def test_simulated_takes_at_least_samples_over_speed(job: tuple[Path, Path, list[str]]) -> None:
    input_dir, output_dir, _ = job
    samples = sum(count_reads(p)[1] for p in input_dir.iterdir())
    wanted_s = 1.5
    started = time.monotonic()
    result = run(SimulatedBasecaller(samples / wanted_s).invocation(input_dir, output_dir))
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started >= wanted_s * 0.95


# -- dorado -------------------------------------------------------------------------------


def test_dorado_argv_and_stdout(fake_dorado: Path, tmp_path: Path) -> None:
    basecaller = DoradoBasecaller(
        "hac@v5.0.0",
        device="cuda:0,1",
        batchsize=512,
        kit_name="SQK-NBD114-24",
        modified_bases=["5mCG_5hmCG", "6mA"],
        models_directory=tmp_path / "models",
        extra_args=["--trim", "all"],
    )
    inv = basecaller.invocation(tmp_path / "in", tmp_path / "out")
    assert inv.argv == [
        str(fake_dorado),
        "basecaller",
        "hac@v5.0.0",
        str(tmp_path / "in"),
        "--kit-name",
        "SQK-NBD114-24",
        "--modified-bases",
        "5mCG_5hmCG",
        "6mA",
        "--models-directory",
        str(tmp_path / "models"),
        "--device",
        "cuda:0,1",
        "--batchsize",
        "512",
        "--trim",
        "all",
    ]
    assert "--min-qscore" not in inv.argv  # dorado would drop those reads; the engine splits
    assert inv.stdout_path == tmp_path / "out" / "basecalls" / "basecalls.bam"
    assert inv.stdout_path.parent.is_dir()  # the engine can open it
    assert basecaller.native_output and basecaller.barcoding
    fastq = DoradoBasecaller("sup", emit_fastq=True).invocation(tmp_path / "in", tmp_path / "o2")
    assert fastq.argv[-3:] == ["--emit-fastq", "--device", "cuda:all"]  # no --batchsize
    assert fastq.stdout_path == tmp_path / "o2" / "basecalls" / "basecalls.fastq"
    with pytest.raises(ConfigError, match="modified-base"):
        DoradoBasecaller("sup", emit_fastq=True, modified_bases=["6mA"])


def test_dorado_adapter_against_the_stand_in(
    fake_dorado: Path, job: tuple[Path, Path, list[str]]
) -> None:
    input_dir, output_dir, ids = job
    inv = DoradoBasecaller("hac", batchsize=0).invocation(input_dir, output_dir)
    result = run(inv)
    assert result.returncode == 0, result.stderr
    assert inv.stdout_path is not None and detect_format(inv.stdout_path) == "bam"
    _, reads = bam_reads(inv.stdout_path)
    assert set(parents_of(reads)) == set(ids)


def test_the_dorado_model_is_fetched_once_when_the_engine_starts(
    fake_dorado: Path, job: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    input_dir, output_dir, _ = job
    models = tmp_path / "models"
    basecaller = DoradoBasecaller("hac", models_directory=models)
    offline = run(basecaller.invocation(input_dir, output_dir))
    assert offline.returncode == 1 and "no internet" in offline.stderr  # not fetched per batch
    basecaller.prepare()
    assert run(basecaller.invocation(input_dir, output_dir)).returncode == 0


def test_stand_in_dorado_rejects_what_dorado_would(
    fake_dorado: Path, job: tuple[Path, Path, list[str]]
) -> None:
    input_dir, output_dir, _ = job
    bogus = DoradoBasecaller("hac", extra_args=["--no-such-flag"]).invocation(input_dir, output_dir)
    assert run(bogus).returncode == 2
    argv = [str(fake_dorado), "basecaller", "hac", str(input_dir), "--emit-fastq"]
    modbase_fastq = subprocess.run(
        [*argv, "--modified-bases", "6mA"],
        capture_output=True,
        text=True,
    )
    assert modbase_fastq.returncode != 0  # FASTQ cannot keep modified-base calls


def test_dorado_must_exist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="dorado"):
        DoradoBasecaller("hac")
    with pytest.raises(ConfigError, match="not found"):
        DoradoBasecaller("hac", dorado=str(tmp_path / "nowhere" / "dorado"))


# -- script -------------------------------------------------------------------------------


def test_script_gets_input_output_model(job: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    input_dir, output_dir, _ = job
    script = tmp_path / "supervisor.sh"
    script.write_text(
        '#!/bin/sh\nmkdir -p "$2/pass"\nprintf "%s\\n" "$1" "$2" "$3" > "$2/pass/args"\n'
    )
    script.chmod(0o755)
    inv = ScriptBasecaller(script, "dna_r10.4.1_e8.2_400bps_hac.cfg").invocation(
        input_dir, output_dir
    )
    assert inv.argv == [
        str(script),
        str(input_dir),
        str(output_dir),
        "dna_r10.4.1_e8.2_400bps_hac.cfg",
    ]
    assert run(inv).returncode == 0
    assert (output_dir / "pass" / "args").read_text().splitlines() == inv.argv[1:]


def test_script_must_exist_and_be_executable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        ScriptBasecaller(tmp_path / "missing.sh", "m")
    plain = tmp_path / "plain.sh"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    with pytest.raises(ConfigError, match="not executable"):
        ScriptBasecaller(plain, "m")


# -- command template -----------------------------------------------------------------------


def test_command_template_substitutes_whole_words(tmp_path: Path) -> None:
    input_dir = tmp_path / "my input"
    output_dir = tmp_path / "out dir"
    output_dir.mkdir()
    template = f"{sys.executable} -c 'import sys; print(sys.argv[1:])' {{input}} --out={{output}} {{model}} {{pass}} '{{{{x}}}}'"
    inv = CommandBasecaller(template, model="fast model").invocation(input_dir, output_dir)
    assert inv.argv == [
        sys.executable,
        "-c",
        "import sys; print(sys.argv[1:])",
        str(input_dir),
        f"--out={output_dir}",
        "fast model",
        str(output_dir / "pass"),
        "{x}",
    ]
    result = run(inv)
    assert result.returncode == 0
    assert result.stdout.strip() == repr(inv.argv[3:])  # spaces survived as single arguments


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("tool {input} {outptu}", r"unknown placeholder \{outptu\}"),
        ("tool {input} {}", r"unknown placeholder \{\}"),
        ("tool {input} {output!r}", "no format"),
        ("tool 'unclosed {input}", "quotation"),
        ("tool {input", "brace"),
        ("   ", "empty"),
    ],
)
def test_command_template_errors(
    template: str, message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match=message):
        CommandBasecaller(template)


def test_command_program_must_exist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="not found"):
        CommandBasecaller("mytool {input} {output}")


# -- make_basecaller -------------------------------------------------------------------------


def test_make_basecaller_picks_each_kind(fake_dorado: Path, tmp_path: Path) -> None:
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    assert isinstance(make_basecaller("dorado", model="hac"), DoradoBasecaller)
    assert isinstance(make_basecaller("script", script=script, model="m"), ScriptBasecaller)
    assert isinstance(
        make_basecaller("command", command=f"{sys.executable} {{input}} {{output}}"),
        CommandBasecaller,
    )
    simulated = make_basecaller("simulated", samples_per_s=1e6)
    assert isinstance(simulated, SimulatedBasecaller)
    assert simulated.samples_per_s == 1e6


@pytest.mark.parametrize(
    ("kind", "option"),
    [("dorado", "--model"), ("script", "--script"), ("command", "--command"), ("gpu", "unknown")],
)
def test_make_basecaller_names_the_missing_option(kind: str, option: str) -> None:
    with pytest.raises(ConfigError, match=option):
        make_basecaller(kind)


# -- Dorado-like output of the stand-ins (style "dorado") ------------------------------------


def bam_reads(path: Path) -> tuple[dict, list[pysam.AlignedSegment]]:
    with pysam.AlignmentFile(str(path), check_sq=False) as bam:
        return bam.header.to_dict(), list(bam)


def parents_of(reads: list[pysam.AlignedSegment]) -> Counter[str]:
    return Counter(r.get_tag("pi") if r.has_tag("pi") else r.query_name for r in reads)


def test_simulated_dorado_style_writes_bam_with_dorados_tags(
    job: tuple[Path, Path, list[str]],
) -> None:
    input_dir, output_dir, ids = job
    basecaller = SimulatedBasecaller(0, style="dorado", model="hac", kit_name="SQK-NBD114-24")
    result = run(basecaller.invocation(input_dir, output_dir))
    assert result.returncode == 0, result.stderr
    # one stream of every pod5's reads, as Dorado prints on stdout
    assert [p.name for p in (output_dir / "basecalls").iterdir()] == ["basecalls.bam"]
    header, reads = bam_reads(output_dir / "basecalls" / "basecalls.bam")
    assert header["HD"]["VN"] == "1.6"
    assert header["PG"][0]["ID"] == "basecaller" and header["PG"][0]["PN"] == "dorado"
    plain = [rg for rg in header["RG"] if "SM" not in rg]
    assert len(plain) == 2  # a read group per run
    for rg in plain:
        assert rg["ID"] in (
            "run1_dna_r10.4.1_e8.2_400bps_hac@v5.2.0",
            "run2_dna_r10.4.1_e8.2_400bps_hac@v5.2.0",
        )
        assert "basecall_model=dna_r10.4.1_e8.2_400bps_hac@v5.2.0" in rg["DS"]
        assert f"runid={rg['ID'].split('_')[0]}" in rg["DS"]
        assert rg["PL"] == "ONT" and rg["PU"].startswith("FA") and rg["LB"] == "sim"
    pod5_names = {"pod5__a_0.pod5", "pod5__a_1.pod5"}
    for read in reads:
        assert read.is_unmapped
        for tag in (
            "qs",
            "ch",
            "st",
            "du",
            "ns",
            "ts",
            "mx",
            "rn",
            "fn",
            "sm",
            "sd",
            "sv",
            "RG",
        ):
            assert read.has_tag(tag), tag
        assert read.get_tag("fn") in pod5_names
        assert read.get_tag("sv") in ("pa", "quantile")
        assert read.get_tag("RG") in {g["ID"] for g in header["RG"]}
        assert 0 <= read.get_tag("ts") < read.get_tag("ns")
    assert {r.get_tag("fn") for r in reads} == pod5_names
    parents = parents_of(reads)
    assert set(parents) == set(ids)
    split = [r for r in reads if r.has_tag("pi")]
    assert split and all(parents[r.get_tag("pi")] == 2 for r in split)
    assert len({r.query_name for r in reads}) == len(reads)
    qscores = [r.get_tag("qs") for r in reads]
    assert min(qscores) < 9 < max(qscores)
    barcodes = Counter(r.get_tag("BC") if r.has_tag("BC") else None for r in reads)
    assert {"SQK-NBD114-24_barcode01", "SQK-NBD114-24_barcode02", None} <= set(barcodes)


def test_simulated_dorado_style_is_deterministic(
    job: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    input_dir, output_dir, _ = job
    again = tmp_path / "again"
    basecaller = SimulatedBasecaller(0, style="dorado", kit_name="SQK-NBD114-24")
    assert run(basecaller.invocation(input_dir, output_dir)).returncode == 0
    assert run(basecaller.invocation(input_dir, again)).returncode == 0
    for path in (output_dir / "basecalls").iterdir():
        first_header, first = bam_reads(path)
        second_header, second = bam_reads(again / "basecalls" / path.name)
        assert first_header["RG"] == second_header["RG"]  # (@PG's CL names the folders)
        assert [r.to_string() for r in first] == [r.to_string() for r in second]


def test_simulated_modified_bases_give_mm_ml(job: tuple[Path, Path, list[str]]) -> None:
    input_dir, output_dir, _ = job
    basecaller = SimulatedBasecaller(0, style="dorado", modified_bases=["5mCG_5hmCG"])
    assert run(basecaller.invocation(input_dir, output_dir)).returncode == 0
    header, reads = bam_reads(output_dir / "basecalls" / "basecalls.bam")
    assert (
        "modbase_models=dna_r10.4.1_e8.2_400bps_hac@v5.2.0_5mCG_5hmCG@v2" in header["RG"][0]["DS"]
    )
    for read in reads:
        assert read.get_tag("MN") == len(read.query_sequence)
        mods = read.modified_bases  # pysam parses MM/ML
        assert set(mods) == {("C", 0, "h"), ("C", 0, "m")}
        assert len(mods[("C", 0, "m")]) == read.query_sequence.count("C")


def test_simulated_min_qscore_drops_reads_as_dorado_does(job: tuple[Path, Path, list[str]]) -> None:
    input_dir, output_dir, _ = job
    basecaller = SimulatedBasecaller(0, style="dorado", min_qscore=9)
    assert run(basecaller.invocation(input_dir, output_dir)).returncode == 0
    reads = [r for p in (output_dir / "basecalls").iterdir() for r in bam_reads(p)[1]]
    assert reads and all(r.get_tag("qs") >= 9 for r in reads)


def test_simulated_emit_fastq_has_tags_in_the_header(job: tuple[Path, Path, list[str]]) -> None:
    input_dir, output_dir, ids = job
    basecaller = SimulatedBasecaller(0, style="dorado", emit_fastq=True)
    assert run(basecaller.invocation(input_dir, output_dir)).returncode == 0
    parents = set()
    for path in (output_dir / "basecalls").iterdir():
        assert path.suffix == ".fastq"
        with pysam.FastxFile(str(path)) as fastq:
            for entry in fastq:
                tags = parse_tags(entry.comment)
                assert {"qs", "ch", "st", "du", "ns", "fn", "RG", "DS"} <= set(tags)
                assert isinstance(tags["qs"], float) and isinstance(tags["ch"], int)
                parents.add(tags.get("pi", entry.name))
    assert parents == set(ids)


def test_simulated_refuses_what_dorado_refuses(
    job: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    input_dir, output_dir, _ = job
    with pytest.raises(ConfigError, match="emit-fastq"):
        SimulatedBasecaller(0, style="dorado", emit_fastq=True, modified_bases=["6mA"])
    with pytest.raises(ConfigError, match="not a supported modification"):
        SimulatedBasecaller(0, style="dorado", modified_bases=["9xZ"])
    legacy = SimulatedBasecaller(0, style="legacy").invocation(input_dir, output_dir)
    with_kit = Invocation([*legacy.argv, "--kit-name", "K"], env=legacy.env)
    assert run(with_kit).returncode == 2  # Dorado flags need the dorado style
    models = tmp_path / "models"
    missing = SimulatedBasecaller(0, style="dorado", models_directory=models)
    result = run(missing.invocation(input_dir, output_dir))
    assert result.returncode == 1 and "no internet" in result.stderr
    download_model(models, "hac")
    assert run(missing.invocation(input_dir, output_dir)).returncode == 0


def test_stand_in_dorado_style_writes_bam_through_the_adapter(
    fake_dorado: Path, job: tuple[Path, Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    input_dir, output_dir, ids = job
    monkeypatch.setenv("BCM_DORADO_STANDIN_STYLE", "dorado")
    basecaller = DoradoBasecaller("sup", extra_args=["--kit-name", "SQK-RBK114-24"])
    inv = basecaller.invocation(input_dir, output_dir)
    inv = Invocation([a for a in inv.argv if a != "--emit-fastq"], inv.stdout_path, inv.env)
    result = run(inv)
    assert result.returncode == 0, result.stderr
    assert inv.stdout_path is not None and detect_format(inv.stdout_path) == "bam"
    header, reads = bam_reads(inv.stdout_path)
    assert header["PG"][0]["CL"].startswith("dorado basecaller sup ")
    assert len([rg for rg in header["RG"] if "SM" not in rg]) == 2  # one per run
    assert {rg["SM"] for rg in header["RG"] if "SM" in rg} == {f"barcode0{i}" for i in range(1, 5)}
    assert set(parents_of(reads)) == set(ids)
    assert any(r.has_tag("pi") for r in reads) and any(r.has_tag("BC") for r in reads)
    assert any(not r.has_tag("BC") for r in reads)  # unclassified reads carry no BC
    for read in reads:
        if read.has_tag("BC"):
            assert read.get_tag("RG").endswith("_" + read.get_tag("BC"))


def test_stand_in_dorado_style_emit_fastq_and_min_qscore(
    fake_dorado: Path, job: tuple[Path, Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    input_dir, output_dir, _ = job
    monkeypatch.setenv("BCM_DORADO_STANDIN_STYLE", "dorado")
    inv = DoradoBasecaller("hac", emit_fastq=True, extra_args=["--min-qscore", "10"]).invocation(
        input_dir, output_dir
    )
    assert run(inv).returncode == 0
    assert inv.stdout_path is not None and detect_format(inv.stdout_path) == "fastq"
    with pysam.FastxFile(str(inv.stdout_path)) as fastq:
        qscores = [parse_tags(e.comment)["qs"] for e in fastq]
    assert qscores and min(qscores) >= 10


def test_stand_in_dorado_download_then_models_directory(
    fake_dorado: Path,
    job: tuple[Path, Path, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    input_dir, _, _ = job
    monkeypatch.setenv("BCM_DORADO_STANDIN_STYLE", "dorado")
    models = tmp_path / "models"
    call = [
        str(fake_dorado),
        "basecaller",
        "hac",
        str(input_dir),
        "--models-directory",
        str(models),
    ]
    offline = subprocess.run(call, capture_output=True, timeout=60)
    assert offline.returncode == 1 and b"no internet" in offline.stderr
    download = [str(fake_dorado), "download", "--model", "hac", "--models-directory", str(models)]
    assert subprocess.run(download, capture_output=True, timeout=60).returncode == 0
    assert (models / "dna_r10.4.1_e8.2_400bps_hac@v5.2.0").is_dir()
    assert subprocess.run(call, capture_output=True, timeout=60).returncode == 0


def test_stand_in_dorado_legacy_style_knows_only_the_old_command_line(
    fake_dorado: Path, job: tuple[Path, Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    input_dir, _, _ = job
    monkeypatch.setenv("BCM_DORADO_STANDIN_STYLE", "legacy")
    kit = subprocess.run(
        [str(fake_dorado), "basecaller", "hac", str(input_dir), "--emit-fastq", "--kit-name", "K"],
        capture_output=True,
        timeout=60,
    )
    assert kit.returncode == 2  # the legacy style knows only bcmanager 0.1's command line


# -- slices: only the reads a list names (Dorado's --read-ids; issue 26) -----------------


def bam_read_ids(path: Path) -> list[str]:
    """The reads of a BAM, each once (split reads' pieces count for their parent)."""
    with pysam.AlignmentFile(str(path), "rb", check_sq=False) as bam:
        return sorted({r.get_tag("pi") if r.has_tag("pi") else r.query_name for r in bam})


def write_list(path: Path, ids: list[str]) -> Path:
    path.write_text("\n".join(ids) + "\n\n", encoding="utf-8")  # a blank line is skipped
    return path


def test_the_simulated_basecaller_basecalls_only_the_listed_reads(
    job: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    input_dir, output_dir, ids = job
    wanted = [ids[3], ids[40], ids[7]]  # from both files, out of order
    foreign = "00000000-0000-4000-8000-000000000000"  # in neither file: no read, no error
    listed = write_list(tmp_path / "slice.txt", [*wanted, foreign, ids[3].upper()])
    basecaller = SimulatedBasecaller(0, style="dorado")
    assert basecaller.slices and not SimulatedBasecaller(0, style="legacy").slices
    inv = basecaller.invocation(input_dir, output_dir, listed)
    assert inv.argv[-2:] == ["--read-ids", str(listed)]
    done = run(inv)
    assert done.returncode == 0, done.stderr
    assert bam_read_ids(inv.stdout_path) == sorted(wanted)
    assert "Simplex reads basecalled: 3" in done.stderr


def test_the_stand_in_dorado_honours_read_ids(
    fake_dorado: Path, job: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    input_dir, output_dir, ids = job
    listed = write_list(tmp_path / "slice.txt", ids[25:35])  # across the two files
    basecaller = DoradoBasecaller("hac", dorado=str(fake_dorado), device="cpu")
    assert basecaller.slices
    inv = basecaller.invocation(input_dir, output_dir, listed)
    assert inv.argv[inv.argv.index("--read-ids") + 1] == str(listed)
    done = run(inv)
    assert done.returncode == 0, done.stderr
    assert bam_read_ids(inv.stdout_path) == sorted(ids[25:35])
    assert "--read-ids" not in basecaller.invocation(input_dir, output_dir).argv


def test_a_read_list_that_is_not_one_fails_the_batch_with_its_line(
    job: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    input_dir, output_dir, ids = job
    listed = write_list(tmp_path / "slice.txt", [ids[0], "not-a-read-id"])
    done = run(SimulatedBasecaller(0, style="dorado").invocation(input_dir, output_dir, listed))
    assert done.returncode == 1
    assert "line 2: not a read id" in done.stderr
    missing = tmp_path / "gone.txt"
    done = run(SimulatedBasecaller(0, style="dorado").invocation(input_dir, output_dir, missing))
    assert done.returncode == 1 and "--read-ids" in done.stderr


def test_backends_that_cannot_take_a_read_list_refuse_one(tmp_path: Path) -> None:
    script = tmp_path / "bc.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    listed = tmp_path / "slice.txt"
    for backend in (
        ScriptBasecaller(script, "hac"),
        SimulatedBasecaller(0, style="legacy"),
        CommandBasecaller("/bin/true {input} {output}"),
    ):
        assert not backend.slices
        backend.invocation(tmp_path / "in", tmp_path / "out")  # whole files: fine
        with pytest.raises(ConfigError, match="cannot basecall a slice"):
            backend.invocation(tmp_path / "in", tmp_path / "out", listed)


def test_a_command_template_that_names_read_ids_takes_slices(tmp_path: Path) -> None:
    backend = CommandBasecaller("/bin/echo {input} {output} --read-ids={read_ids}")
    assert backend.slices
    out = tmp_path / "out"
    listed = tmp_path / "slice.txt"
    assert backend.invocation(tmp_path / "in", out, listed).argv[-1] == f"--read-ids={listed}"
    assert backend.invocation(tmp_path / "in", out).argv[-1] == "--read-ids="  # whole files
