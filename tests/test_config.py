import json
from pathlib import Path

import pytest

from bcmanager.config import build_settings
from bcmanager.errors import ConfigError


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "in").mkdir()
    return tmp_path / "in", tmp_path / "out"


def test_flags_override_toml_which_overrides_the_legacy_json(dirs, tmp_path) -> None:
    inp, out = dirs
    legacy = tmp_path / "config.json"
    legacy.write_text(json.dumps({
        "General": {"batch_size": "80"},
        "Basecalling": {"input_dir": str(inp), "output_dir": str(out)},
        "Resources": {"index_host": "0", "nodes_list": ["dgx1", "dgx2"]},
    }))  # fmt: skip
    toml = tmp_path / "bcm.toml"
    toml.write_text("[manager]\nlease_s = 30\nmax_attempts = 5\n")
    s = build_settings({"max_attempts": 2}, toml, legacy, node_index=1)
    assert (s.input, s.output, s.batch_size) == (inp.resolve(), out.resolve(), 80)
    assert (s.lease_s, s.max_attempts) == (30, 2)
    assert out.is_dir()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[manager]\nleese_s = 3\n", "unknown setting"),
        ("lease_s = \n", "cannot read"),
        ("lease_s = -1\n", "positive"),
        ("expect_engines = 0\n", "expected engines must be within 1-100,000"),
        ("expect_engines = 1000001\n", "expected engines must be within 1-100,000"),
    ],
)
def test_a_bad_toml_is_a_clear_error(dirs, tmp_path, text, message) -> None:
    inp, out = dirs
    (tmp_path / "bcm.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        build_settings({"input": inp, "output": out}, tmp_path / "bcm.toml")


def test_a_bad_legacy_config_is_a_clear_error(dirs, tmp_path) -> None:
    (tmp_path / "c.json").write_text('{"Basecalling": {}}')
    with pytest.raises(ConfigError, match="legacy config"):
        build_settings({}, legacy_path=tmp_path / "c.json")
    (tmp_path / "c.json").write_text('{"Basecalling": {}, "Resources": {"nodes_list": ["a"]}}')
    with pytest.raises(ConfigError, match="node index 3"):
        build_settings({}, legacy_path=tmp_path / "c.json", node_index=3)


def test_input_and_output_must_be_usable(dirs, tmp_path) -> None:
    inp, _ = dirs
    with pytest.raises(ConfigError, match="no input"):
        build_settings({"output": tmp_path / "o"})
    with pytest.raises(ConfigError, match="different"):
        build_settings({"input": inp, "output": inp})
    with pytest.raises(ConfigError, match="inside the input"):
        build_settings({"input": inp, "output": inp / "fastq"})
