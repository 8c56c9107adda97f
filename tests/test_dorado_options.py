"""Aligned output and sample sheets: `--reference`, `--mm2-opts`, `--sample-sheet` and
`--dorado-args` on `dorado basecaller`'s command line, what is refused and where."""

from __future__ import annotations

import gzip
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bcmanager.basecallers import make_basecaller
from bcmanager.basecallers.dorado import (
    BREAKS_THE_ENGINE,
    SET_BY_BCMANAGER,
    DoradoBasecaller,
    check_dorado_args,
    check_reference,
)
from bcmanager.config import load_toml
from bcmanager.engine import Engine, EngineConfig
from bcmanager.errors import ConfigError
from bcmanager.generations import make, parse_spec
from tests.helpers import make_run

FAKE_DORADO = str(Path(__file__).parent / "fakes" / "dorado")
KIT = "SQK-NBD114-24"
DORADO_ENGINE = ["--basecaller", "dorado", "--dorado", FAKE_DORADO, "--model", "hac"]
SHEET = f"""flow_cell_id,experiment_id,kit,barcode,alias,type
PAO25751,exp1,{KIT},barcode01,patient_a,test_sample
PAO25751,exp1,{KIT},barcode02,patient_b,test_sample
"""


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A reference (FASTA), a newer one (gzipped), a minimap2 index and a sample sheet."""
    out = {
        "fasta": tmp_path / "ref" / "GRCh38.fa",
        "newer": tmp_path / "ref" / "T2T.fa.gz",
        "mmi": tmp_path / "ref" / "GRCh38.mmi",
        "sheet": tmp_path / "sheet.csv",
    }
    out["fasta"].parent.mkdir()
    out["fasta"].write_text(">chr1\nACGTACGT\n")
    out["newer"].write_bytes(gzip.compress(b">chr1\nACGTACGTAA\n"))
    out["mmi"].write_bytes(b"MMI\x02" + bytes(60))
    out["sheet"].write_text(SHEET)
    return out


def dorado(**options: object) -> DoradoBasecaller:
    basecaller = make_basecaller("dorado", model="hac", dorado=FAKE_DORADO, **options)
    assert isinstance(basecaller, DoradoBasecaller)
    return basecaller


def argv(basecaller: DoradoBasecaller, tmp_path: Path) -> list[str]:
    return basecaller.invocation(tmp_path / "in", tmp_path / "out").argv


def test_reference_mm2_opts_sample_sheet_and_dorado_args_reach_dorado(
    tmp_path: Path, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(files["fasta"].parent)  # relative paths are made absolute
    basecaller = dorado(
        kit_name=KIT,
        reference="GRCh38.fa",
        mm2_opts="-k 15 -w 10",
        sample_sheet=files["sheet"],
        extra_args=["--trim", "adapters", "--modified-bases-threshold=0.8", "-v"],
    )
    assert argv(basecaller, tmp_path) == [
        FAKE_DORADO,
        "basecaller",
        "hac",
        str(tmp_path / "in"),
        "--kit-name",
        KIT,
        "--sample-sheet",
        str(files["sheet"]),
        "--reference",
        str(files["fasta"]),
        "--mm2-opts",
        "-k 15 -w 10",  # one argument, as Dorado takes it
        "--device",
        "cuda:all",
        "--trim",
        "adapters",
        "--modified-bases-threshold=0.8",
        "-v",
    ]
    assert "aligned to" in basecaller.describe() and "sample sheet" in basecaller.describe()
    index = argv(dorado(reference=files["mmi"], mm2_opts="-x map-ont"), tmp_path)
    assert index[index.index("--reference") + 1] == str(files["mmi"])
    # minimap2's options mean nothing without a reference: not passed
    assert "--mm2-opts" not in argv(dorado(mm2_opts="-k 15"), tmp_path)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "no such file"),
        (b"", "is empty"),
        (b"@read1\nACGT\n+\n!!!!\n", "is FASTQ"),
        (b"chr1 ACGT\n", "is not a FASTA"),
        (b"\x1f\x8b\x08\x00broken", "broken gzip"),
        (gzip.compress(b"@r\nAC\n+\n!!\n"), "is FASTQ"),
    ],
    ids=["missing", "empty", "fastq", "text", "broken-gzip", "gzipped-fastq"],
)
def test_a_reference_that_is_no_fasta_is_refused(
    tmp_path: Path, content: bytes | None, says: str
) -> None:
    path = tmp_path / "ref.fa"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        dorado(reference=path)
    assert says in str(caught.value) and str(path) in str(caught.value)
    with pytest.raises(ConfigError, match="is a folder"):
        check_reference(tmp_path)
    fake_index = tmp_path / "x.mmi"
    fake_index.write_bytes(b"not an index")
    with pytest.raises(ConfigError, match="not a minimap2 index"):
        check_reference(fake_index)


def test_fastq_output_cannot_keep_alignments(tmp_path: Path, files: dict[str, Path]) -> None:
    """As Dorado: `--emit-fastq cannot be used with --reference`."""
    with pytest.raises(ConfigError, match="--emit-fastq cannot be used with --reference"):
        dorado(emit_fastq=True, reference=files["fasta"])
    with pytest.raises(ConfigError, match="--emit-fastq cannot be used with --reference"):
        make_basecaller("simulated", emit_fastq=True, reference=files["fasta"])
    fastq = dorado(emit_fastq=True)
    with pytest.raises(ConfigError, match="FASTQ cannot keep alignments"):
        fastq.with_reference(files["fasta"])


def test_a_sample_sheet_is_checked_with_the_kit(tmp_path: Path, files: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="--sample-sheet needs --kit-name"):
        dorado(sample_sheet=files["sheet"])
    with pytest.raises(ConfigError, match="is not the --kit-name 'SQK-RBK114-24'"):
        dorado(sample_sheet=files["sheet"], kit_name="SQK-RBK114-24")
    bad = tmp_path / "bad.csv"
    bad.write_text(SHEET.replace("patient_b", "patient b"))
    with pytest.raises(ConfigError, match=rf"sample sheet {bad}, line 3: alias 'patient b'"):
        dorado(sample_sheet=bad, kit_name=KIT)
    for kind in ("simulated",):  # its stand-in checks the same at the engine's start
        with pytest.raises(ConfigError, match="--sample-sheet needs --kit-name"):
            make_basecaller(kind, sample_sheet=files["sheet"])
        with pytest.raises(ConfigError, match="line 3: alias 'patient b'"):
            make_basecaller(kind, sample_sheet=bad, kit_name=KIT)


REFUSED = sorted({**SET_BY_BCMANAGER, **BREAKS_THE_ENGINE})


@pytest.mark.parametrize("option", REFUSED)
@pytest.mark.parametrize("form", ["separate", "joined"])
def test_dorado_args_may_not_set_what_bcmanager_sets(option: str, form: str) -> None:
    value = "x" if option != "--emit-fastq" else ""
    if form == "separate":
        args = [option, value] if value else [option]
    else:
        args = [f"{option}={value}" if option.startswith("--") else f"{option}{value}"]
    args = ["--trim", "adapters", *args]
    with pytest.raises(ConfigError) as caught:
        make_basecaller("dorado", model="hac", dorado=FAKE_DORADO, extra_args=args)
    message = str(caught.value)
    assert f"--dorado-args must not set {option}" in message
    if option in SET_BY_BCMANAGER:  # names what to use instead
        assert f"use bcm engine {SET_BY_BCMANAGER[option]}" in message
    else:
        assert BREAKS_THE_ENGINE[option] in message


def test_the_refusals_name_the_engines_own_options() -> None:
    assert SET_BY_BCMANAGER["--batchsize"] == SET_BY_BCMANAGER["-b"] == "--dorado-batchsize"
    assert SET_BY_BCMANAGER["-x"] == "--device"
    for option in ("--kit-name", "--emit-fastq", "--reference", "--sample-sheet", "--mm2-opts"):
        assert SET_BY_BCMANAGER[option] == option
    with pytest.raises(ConfigError, match="use bcm engine --dorado-batchsize"):
        check_dorado_args(["-b256"])


def test_dorado_args_may_not_name_a_model_or_input() -> None:
    for args in (
        ["sup"],
        ["-v", "/data/pod5"],
        ["--no-trim", "extra"],
        ["--", "hac"],
        ["-c5000", "hac"],
        ["--chunksize=5000", "hac"],
    ):
        with pytest.raises(ConfigError, match="is no option's value"):
            check_dorado_args(args)
    fine = ["--overlap", "-1", "-vv", "--chunksize", "10000", "--barcode-both-ends", "--"]
    assert check_dorado_args(fine) == fine


def test_dorado_only_options_are_refused_by_other_backends(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    script = tmp_path / "basecall.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    for option, value in (
        ("reference", files["fasta"]),
        ("mm2_opts", "-k 15"),
        ("sample_sheet", files["sheet"]),
        ("extra_args", ["--trim", "none"]),
    ):
        with pytest.raises(ConfigError, match="the script basecaller does not take --"):
            make_basecaller("script", script=script, **{option: value})
    with pytest.raises(ConfigError, match="does not take --dorado-args"):
        make_basecaller("simulated", extra_args=["--trim", "none"])


def test_a_generation_names_its_own_reference(tmp_path: Path, files: dict[str, Path]) -> None:
    gen = parse_spec(f"t2t=sup@v5.0.0:kit-name={KIT},reference={files['newer']}")
    assert gen.reference == str(files["newer"]) and gen.kit_name == KIT
    assert gen.options()["reference"] == str(files["newer"])
    assert type(gen).from_dict(gen.to_dict()) == gen
    same_but_old = make("t2t", "sup@v5.0.0", KIT, (), str(files["fasta"]))
    assert not gen.same_recipe(same_but_old)  # one tree never mixes two assemblies
    with pytest.raises(ConfigError, match="reference"):
        parse_spec("t2t=sup:reference=/a path/with space.fa")

    own = dorado(kit_name=KIT, reference=files["fasta"], sample_sheet=files["sheet"])
    engine = Engine(EngineConfig("http://127.0.0.1:9", "e1"), own)
    job = {"job_id": 1, "files": [], "generation": gen.to_dict()}
    aligned = engine.basecaller_for(job)
    call = argv(aligned, tmp_path)  # type: ignore[arg-type]
    assert call[call.index("--reference") + 1] == str(files["newer"])
    assert call[1:3] == ["basecaller", "sup@v5.0.0"]
    assert "--sample-sheet" in call  # the generation's kit is the sheet's
    assert engine.basecaller_for(job) is aligned  # prepared once
    # a generation without a reference keeps the engine's own
    plain = engine.basecaller_for({**job, "generation": make("sup", "sup@v5.0.0").to_dict()})
    call = argv(plain, tmp_path)  # type: ignore[arg-type]
    assert call[call.index("--reference") + 1] == str(files["fasta"])
    assert "--sample-sheet" not in call  # no kit: no barcodes to name
    other_kit = make("rbk", "sup@v5.0.0", "SQK-RBK114-24").to_dict()
    with pytest.raises(ConfigError, match="is not the --kit-name 'SQK-RBK114-24'"):
        engine.basecaller_for({**job, "generation": other_kit})
    missing = make("gone", "sup@v5.0.0", reference=str(tmp_path / "nowhere.fa")).to_dict()
    with pytest.raises(ConfigError, match="no such file"):
        engine.basecaller_for({**job, "generation": missing})


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (
            ["--basecaller", "simulated", "--kit-name", KIT, "--sample-sheet", "{bad}"],
            "sample sheet {bad}, line 2: barcode 'bc01' is not a barcode name",
        ),
        (
            [*DORADO_ENGINE, "--kit-name", "SQK-RBK114-24", "--sample-sheet", "{good}"],
            "line 2: kit 'SQK-NBD114-24' is not the --kit-name 'SQK-RBK114-24'",
        ),
        (
            ["--basecaller", "simulated", "--sample-sheet", "{good}"],
            "--sample-sheet needs --kit-name",
        ),
        (
            [*DORADO_ENGINE, "--dorado-args", f"--trim none --kit-name={KIT}"],
            "--dorado-args must not set --kit-name ('--kit-name=SQK-NBD114-24'): bcmanager"
            " sets it; use bcm engine --kit-name",
        ),
    ],
    ids=["bad-sheet", "other-kit", "sheet-without-kit", "dorado-args"],
)
def test_the_engine_refuses_at_its_start_before_any_claim(
    run_dirs, start_manager, start_engine, tmp_path: Path, flags: list[str], says: str
) -> None:
    inp, out = run_dirs
    make_run(inp, 1, reads=2)
    good = tmp_path / "good.csv"
    good.write_text(SHEET)
    bad = tmp_path / "bad.csv"
    bad.write_text(SHEET.replace(",barcode01,", ",bc01,"))
    paths = {"bad": str(bad), "good": str(good)}
    m = start_manager(inp, out)
    deadline = time.monotonic() + 30
    while m.status()["files_total"] != 1:
        assert time.monotonic() < deadline, "the scan"
        time.sleep(0.05)
    engine = start_engine(m.url, "e1", *[f.format(**paths) for f in flags])
    assert engine.wait(timeout=60) != 0
    log = engine.log.read_text()
    assert says.format(**paths) in log, log
    assert "Traceback" not in log
    status = m.status()
    assert status["engines"] == [] and status["files"]["queued"] == 1, status
    assert status["running_jobs"] == []


def test_a_generations_reference_reaches_the_manager_and_its_engines(
    run_dirs, start_manager, tmp_path: Path
) -> None:
    """`bcm generations add NAME=MODEL:reference=PATH` -> the ledger -> the claim answer's
    generation options (what `Engine.basecaller_for` reads); `bcm.toml` takes it too."""
    inp, out = run_dirs
    m = start_manager(inp, out, "--generation", "fast=fast@v5.0.0")
    spec = f"t2t=sup@v5.0.0:reference={tmp_path / 'T2T.fa'},kit-name={KIT}"
    added = subprocess.run(
        [sys.executable, "-m", "bcmanager.cli", "generations", "add", "--manager", m.url, spec],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert added.returncode == 0, added.stderr
    gens = {g["name"]: g for g in m.get("/v1/generations").json()["generations"]}
    assert gens["t2t"]["options"] == {"kit_name": KIT, "reference": str(tmp_path / "T2T.fa")}
    assert "reference" not in gens["fast"]["options"]
    other = m.post(
        "/v1/generations",
        json={"name": "t2t", "model": "sup@v5.0.0", "kit_name": KIT, "reference": "/old.fa"},
    )
    assert other.status_code == 409  # the same name with another reference
    spaced = m.post("/v1/generations", json={"name": "x", "model": "sup", "reference": "/a b"})
    assert spaced.status_code == 422

    toml = tmp_path / "bcm.toml"
    toml.write_text(
        '[[generation]]\nname = "sup"\nmodel = "sup@v5.0.0"\nreference = "/refs/T2T.mmi"\n'
    )
    (gen,) = load_toml(toml)["generations"]
    assert gen.reference == "/refs/T2T.mmi"
