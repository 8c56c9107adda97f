"""The original BC-pipelines engine, unmodified, basecalls a run through bcmanager."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import assert_exactly_once, assert_run_complete, make_run

# The original code (MIT) sits beside the checkout in ../shared; $BCM_REFERENCE overrides.
REFERENCE = Path(
    os.environ.get("BCM_REFERENCE")
    or Path(__file__).resolve().parents[3] / "shared" / "reference" / "bc-pipelines"
)
LEGACY_PORT = 40765  # the original engine is hard-wired to it


def _port_free() -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{LEGACY_PORT}/", timeout=0.5)
    except httpx.TransportError:
        return True
    return False


def _standin_supervisor(tmp_path: Path) -> Path:
    """The supervisor script the engine runs: INPUT OUTPUT MODEL, real pod5 in, FASTQ out."""
    script = tmp_path / "supervisor.sh"
    repo = Path(__file__).resolve().parents[2]
    script.write_text(
        f'#!/bin/sh\ncd "{repo}" && exec "{sys.executable}" -m tests.fakes.standin_supervisor "$@"\n'
    )
    script.chmod(0o755)
    return script


@pytest.mark.skipif(
    not REFERENCE.is_dir(),
    reason="no BC-pipelines reference copy beside this checkout (set BCM_REFERENCE)",
)
@pytest.mark.parametrize("layout", ["legacy", "minknow"])
def test_original_engines_started_with_the_manager_basecall_everything(
    run_dirs, start_manager, tmp_path, layout: str
) -> None:
    assert _port_free(), f"port {LEGACY_PORT} is taken; the original engine can use no other"
    inp, out = run_dirs
    run_folder = "exp/sample/20261128_1200_1A_FAX1_abcd1234"
    run = make_run(inp / run_folder / "pod5", 7)
    run = {f"{run_folder}/pod5/{name}": ids for name, ids in run.items()}
    config = {
        "General": {"batch_size": "3"},
        "Basecalling": {
            "model": "dna_r10.4.1_e8.2_400bps_hac.cfg",
            "input_dir": str(inp),
            "output_dir": str(out),
            "supervisor_script_path": str(_standin_supervisor(tmp_path)),
        },
        "Resources": {
            "index_host": "0",
            "nodes_list": ["legacy001", "legacy002"],
            "nodes_ip": ["127.0.0.1", "127.0.0.1"],
            "batch_size_list": ["4", "4"],
        },
    }
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    # Started together, as a cluster launch script does: no wait for the manager's scan.
    # The original engine exits at its first empty answer, so the manager must hold its
    # claims until the run is queued, not answer "nothing to do".
    layout_args = [] if layout == "legacy" else ["--output-layout", layout]
    m = start_manager(
        inp,
        out,
        "--legacy-config",
        str(config_path),
        "--lease",
        "4",
        *layout_args,
        port=LEGACY_PORT,
        wait=False,
    )
    engines = [
        subprocess.Popen(
            [sys.executable, "BCProcessors.py", str(config_path), str(node)],
            cwd=REFERENCE / "BC_software",
            stdout=open(tmp_path / f"engine{node}.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        for node in (0, 1)
    ]
    m.wait_ready()
    try:
        deadline = time.monotonic() + 90
        while not m.status()["finished"]:
            for node, engine in enumerate(engines):
                assert engine.poll() is None, (tmp_path / f"engine{node}.log").read_text()
            assert time.monotonic() < deadline, "the original engines did not finish the run"
            time.sleep(0.2)
    finally:
        for engine in engines:  # each would otherwise sleep a minute before asking again
            engine.kill()
            engine.wait()
    assert_exactly_once(run, out)
    status = m.status()
    assert status["jobs"]["done"] == 2 and status["jobs"]["failed"] == 0
    assert {e["engine"] for e in status["engines"]} == {"legacy001", "legacy002"}
    assert sorted(d for d in os.listdir(out) if d.startswith("LOGOUTPUT_"))
    if layout == "legacy":  # the original names, exactly
        assert sorted(os.listdir(out / "pass"))[0].startswith("job_id_")
    else:  # the original engines' FASTQ lands in the run's folder
        fastq = sorted(os.listdir(out / run_folder / "fastq_pass"))
        assert len(fastq) == 7 and all(name.startswith("job_id_") for name in fastq)
        assert not (out / "pass").exists()
    assert_run_complete(inp, out)  # every file read as users' tools read it; `bcm verify`
