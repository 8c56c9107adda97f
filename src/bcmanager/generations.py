"""Model generations: the same run basecalled again with another model.

A generation is a model and the options that change reads (modified bases, a barcode
kit, a reference to align to). The ledger tracks every file once per generation; the first generation is the
live one (basecalled as the run is written), later ones are backfill, in the order they
were added: a backfill batch is handed out only while no earlier generation has files
queued. Each generation's reads go to a tree of their own under OUTPUT.

Without any `--generation` an OUTPUT has one implicit generation, `default`, whose
model is whatever the engines run and whose tree is OUTPUT itself (as before
generations existed). Pure core: no HTTP, no clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bcmanager.errors import ConfigError

DEFAULT_NAME = "default"
TREE_DIR = "generations"  # named generations' trees: OUTPUT/generations/<name>/
SPEC_FILE = "generation.json"  # in a tree's root: which model made these reads
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
WORD_PATTERN = r"[!-~]+"  # models, kits, modifications: printable ASCII, no spaces
MODEL_MAX = 512
REFERENCE_MAX = 4096  # a path on the GPU nodes
OPTION_KEYS = ("kit-name", "modified-bases", "reference")


@dataclass(frozen=True)
class Generation:
    """One model (and its read-changing options) that every file is basecalled with once."""

    name: str
    model: str | None = None  # None: the engines' own model (the implicit generation)
    kit_name: str | None = None
    modified_bases: tuple[str, ...] = field(default_factory=tuple)
    id: int = 0  # priority: 0 is the live generation, then backfill in the order added
    reference: str | None = None  # align to it (a path on the GPU nodes); None: the engine's

    @property
    def is_live(self) -> bool:
        return self.id == 0

    @property
    def output_root(self) -> str:
        """Where this generation's tree starts, relative to OUTPUT ("" is OUTPUT itself)."""
        return "" if self.model is None else f"{TREE_DIR}/{self.name}"

    def options(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.kit_name:
            out["kit_name"] = self.kit_name
        if self.modified_bases:
            out["modified_bases"] = list(self.modified_bases)
        if self.reference:
            out["reference"] = self.reference
        return out

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "model": self.model,
            "options": self.options(),
            "live": self.is_live,
            "output": self.output_root or ".",
        }

    @classmethod
    def from_dict(cls, data: dict) -> Generation:
        options = data.get("options") or {}
        return cls(
            name=str(data["name"]),
            model=data.get("model"),
            kit_name=options.get("kit_name"),
            modified_bases=tuple(options.get("modified_bases", ())),
            id=int(data.get("id", 0)),
            reference=options.get("reference"),
        )

    def same_recipe(self, other: Generation) -> bool:
        """Whether two generations make the same reads (name and id aside)."""
        return (self.model, self.kit_name, self.modified_bases, self.reference) == (
            other.model,
            other.kit_name,
            other.modified_bases,
            other.reference,
        )

    def describe(self) -> str:
        extras = [f"kit {self.kit_name}"] if self.kit_name else []
        if self.modified_bases:
            extras.append("mods " + "+".join(self.modified_bases))
        if self.reference:
            extras.append(f"aligned to {self.reference}")
        model = self.model or "the engines' own model"
        return f"{self.name}: {model}" + (f" ({', '.join(extras)})" if extras else "")


def implicit() -> Generation:
    """The one generation of an OUTPUT that was never given any."""
    return Generation(DEFAULT_NAME)


def make(
    name: str,
    model: str,
    kit_name: str | None = None,
    modified_bases: tuple[str, ...] | list[str] = (),
    reference: str | None = None,
) -> Generation:
    """A named generation, checked: ConfigError says what is wrong."""
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        raise ConfigError(
            f"generation name {name!r}: use 1-64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    if name == DEFAULT_NAME:
        raise ConfigError(f"generation name {DEFAULT_NAME!r} is reserved for the implicit one")
    _check_word("model", model, MODEL_MAX)
    if kit_name is not None:
        _check_word("kit-name", kit_name, 64)
    mods = tuple(modified_bases)
    for mod in mods:
        _check_word("modified-bases", mod, 64)
    if reference is not None:
        _check_word("reference", reference, REFERENCE_MAX)
    return Generation(name, model, kit_name or None, mods, reference=reference or None)


def parse_spec(spec: str) -> Generation:
    """`NAME=MODEL[:OPTIONS]`, OPTIONS as `key=value,...` with keys kit-name,
    modified-bases (several modifications joined by '+') and reference (a FASTA or
    minimap2 index on the GPU nodes, no ',' in its path), e.g.
    `sup=sup@v5.0.0:modified-bases=5mCG_5hmCG+6mA,kit-name=SQK-NBD114-24`."""
    name, eq, rest = spec.partition("=")
    if not eq or not rest:
        raise ConfigError(f"--generation {spec!r}: expected NAME=MODEL[:OPTIONS]")
    model, _, option_text = rest.partition(":")
    options: dict[str, str] = {}
    for item in filter(None, option_text.split(",")):
        key, eq, value = item.partition("=")
        if key not in OPTION_KEYS or not eq or not value:
            raise ConfigError(
                f"--generation {spec!r}: option {item!r} is not one of"
                f" {', '.join(k + '=VALUE' for k in OPTION_KEYS)}"
            )
        options[key] = value
    mods = tuple(options["modified-bases"].split("+")) if "modified-bases" in options else ()
    return make(
        name.strip(), model.strip(), options.get("kit-name"), mods, options.get("reference")
    )


def _check_word(what: str, value: object, limit: int) -> None:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ConfigError(f"{what} must be a non-empty string of at most {limit} characters")
    if not re.fullmatch(WORD_PATTERN, value):
        raise ConfigError(f"{what} {value!r}: printable ASCII only, no spaces")
