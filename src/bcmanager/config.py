"""Manager settings: defaults, a `bcm.toml` file, the original BC-pipelines JSON, CLI flags.

Later sources win: defaults < legacy JSON < TOML < command-line flags.
"""

from __future__ import annotations

import json
import tempfile
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from bcmanager.errors import ConfigError
from bcmanager.generations import Generation, make

MAX_ENGINES = 100_000  # a fleet this large is a typo, not a cluster

DEFAULT_PORT = 40765
OUTPUT_LAYOUTS = ("minknow", "legacy")


@dataclass(frozen=True)
class Settings:
    input: Path
    output: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    db: Path | None = None
    lease_s: float = 90.0
    batch_size: int = 10
    max_batch: int = 10_000
    max_attempts: int = 3
    rescan_s: float = 10.0
    settle_s: float = 1.0  # a file unchanged this long (or closed by its writer) is complete
    watch: bool = True  # inotify via watchdog, beside the periodic rescan
    target_batch_s: float = 60.0  # adaptive batches aim at this much work per claim
    idle_shutdown_s: float = 100.0
    legacy_wait_s: float = 60.0  # a legacy /assignwork is held this long while work is expected
    token: str | None = None
    legacy_auth: str = "open"  # open | token | off
    output_layout: str | None = None  # minknow | legacy; None: what OUTPUT has (new: minknow)
    generations: tuple[Generation, ...] = ()  # live first, then backfill; () the implicit one
    live_window_s: float = 300.0  # arrivals this recent keep a live reserve out of backfill
    min_free_mib: float = 100.0  # OUTPUT with less free pauses hand-outs (0: never)
    slice_above_mib: float = 2048.0  # a larger file goes out in slices (0: never)
    speed_book: Path | None = None  # engines' speeds kept for the next start; None: by the ledger
    expect_engines: int | None = None  # the fleet this run is to have; None: inferred from joins

    def __post_init__(self) -> None:
        checks = [
            (self.lease_s > 0, "lease must be positive"),
            (self.batch_size > 0, "batch size must be positive"),
            (0 < self.batch_size <= self.max_batch, "batch size must be within max_batch"),
            (self.max_attempts >= 1, "max_attempts must be at least 1"),
            (self.rescan_s > 0, "rescan interval must be positive"),
            (self.settle_s >= 0, "settle time must not be negative"),
            (self.target_batch_s > 0, "target batch time must be positive"),
            (0 <= self.legacy_wait_s <= 3600, "legacy wait must be within 0-3600 s"),
            (0 < self.port < 65536, "port must be within 1-65535"),
            (0 <= self.live_window_s <= 86400, "live window must be within 0-86400 s"),
            (0 <= self.min_free_mib <= 1e9, "minimum free space must be within 0-1e9 MiB"),
            (0 <= self.slice_above_mib <= 1e9, "slice size must be within 0-1e9 MiB"),
            (self.legacy_auth in ("open", "token", "off"), "legacy_auth is open, token or off"),
            (
                self.expect_engines is None or 1 <= self.expect_engines <= MAX_ENGINES,
                f"expected engines must be within 1-{MAX_ENGINES:,}",
            ),
            (
                self.output_layout in (None, *OUTPUT_LAYOUTS),
                f"output layout is one of {', '.join(OUTPUT_LAYOUTS)}",
            ),
            (
                self.legacy_auth != "token" or self.token is not None,
                "legacy_auth token needs a token (--token-file or BCM_TOKEN)",
            ),
            (
                len({g.name for g in self.generations}) == len(self.generations),
                "each generation needs a name of its own",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def ledger_path(self) -> Path:
        return self.db or self.output / ".bcmanager" / "ledger.sqlite3"

    @property
    def speed_book_path(self) -> Path:
        return self.speed_book or self.ledger_path.parent / "speeds.json"


_FIELDS = {f.name for f in fields(Settings)}
_PATHS = {"input", "output", "db", "speed_book"}


def load_toml(path: Path) -> dict[str, Any]:
    """Read `bcm.toml`: top-level keys or a `[manager]` table, named as the Settings fields,
    and `[[generation]]` tables (name, model, kit_name, modified_bases, reference)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    tables = data.pop("generation", None)
    data = dict(data.get("manager", data))
    unknown = set(data) - _FIELDS - {"generations"}
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
    data.pop("generations", None)
    if tables is not None:
        data["generations"] = generations_from_toml(tables, path)
    return data


def generations_from_toml(tables: object, path: Path) -> tuple[Generation, ...]:
    """`[[generation]]` tables, in order: the first is the live generation."""
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{path}: generation must be a list of tables ([[generation]])")
    out = []
    for i, table in enumerate(tables, 1):
        unknown = set(table) - {"name", "model", "kit_name", "modified_bases", "reference"}
        if unknown or "name" not in table or "model" not in table:
            raise ConfigError(
                f"{path}: generation {i} needs name and model (and may have kit_name,"
                f" modified_bases, reference); unknown: {', '.join(sorted(unknown)) or 'none'}"
            )
        mods = table.get("modified_bases", [])
        if isinstance(mods, str):
            mods = [mods]
        if not isinstance(mods, list):
            raise ConfigError(f"{path}: generation {i}: modified_bases is a list of names")
        out.append(
            make(
                table["name"],
                table["model"],
                table.get("kit_name"),
                mods,
                table.get("reference"),
            )
        )
    return tuple(out)


def load_legacy(path: Path, node_index: int) -> dict[str, Any]:
    """Read the original BC-pipelines JSON (General/Basecalling/Resources sections)."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        basecalling = config["Basecalling"]
        resources = config["Resources"]
        nodes = resources["nodes_list"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read legacy config {path}: {exc}") from exc
    if not 0 <= node_index < len(nodes):
        raise ConfigError(f"node index {node_index} is outside nodes_list (0-{len(nodes) - 1})")
    out: dict[str, Any] = {"output_layout": "legacy"}  # the original system's output names
    if basecalling.get("input_dir"):
        out["input"] = basecalling["input_dir"]
    if basecalling.get("output_dir"):
        out["output"] = basecalling["output_dir"]
    batch = config.get("General", {}).get("batch_size")
    if batch not in (None, ""):
        try:
            out["batch_size"] = int(batch)
        except ValueError as exc:
            raise ConfigError(f"legacy config: General.batch_size {batch!r} is no number") from exc
    return out


def build_settings(
    overrides: dict[str, Any],
    toml_path: Path | None = None,
    legacy_path: Path | None = None,
    node_index: int = 0,
) -> Settings:
    """Merge all sources; INPUT and OUTPUT must end up set and must exist / be creatable."""
    merged: dict[str, Any] = {}
    if legacy_path is not None:
        merged.update(load_legacy(legacy_path, node_index))
    if toml_path is not None:
        merged.update(load_toml(toml_path))
    merged.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("input", "output"):
        if not merged.get(key):
            raise ConfigError(f"no {key} directory given (--{key}, bcm.toml or --legacy-config)")
    for key in _PATHS & set(merged):
        merged[key] = Path(merged[key]).expanduser()
    try:
        settings = Settings(**merged)
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc
    return check_directories(settings)


def check_directories(settings: Settings) -> Settings:
    inp, out = settings.input.resolve(), settings.output.resolve()
    if not inp.is_dir():
        raise ConfigError(f"input directory {settings.input} does not exist")
    if inp == out:
        raise ConfigError("input and output must be different directories")
    if out.is_relative_to(inp):
        raise ConfigError("the output directory must not lie inside the input directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create output directory {settings.output}: {exc}") from exc
    try:  # a read-only OUTPUT fails here with one line, not in the middle of startup
        tempfile.TemporaryFile(dir=out).close()
    except OSError as exc:
        raise ConfigError(f"output directory {settings.output} is not writable: {exc}") from exc
    return replace(settings, input=inp, output=out)
