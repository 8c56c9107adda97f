"""The basecaller interface: how an engine turns a job's input folder into reads.

A backend only says *what to run*: an argument vector (and, for tools that print
FASTQ to stdout, the file that stdout goes to). The engine runs it as a subprocess,
so every backend can be stopped the same way (a late lease, SIGTERM) and reports
DONE or FAILED by its exit code, exactly as the original BC-pipelines supervisor
convention does. Backends live one per module beside this file.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bcmanager.errors import ConfigError

# Dorado's last log lines say how many reads it left out on purpose (every basecalled
# sequence under 5 bases, and any under --min-qscore; dorado #585, #937).
_DORADO_FILTERED = re.compile(r"Simplex reads filtered:\s*(\d+)")


@dataclass(frozen=True)
class Invocation:
    """One basecaller run for one job."""

    argv: list[str]
    stdout_path: Path | None = None  # FASTQ written to stdout goes here; else to the log
    env: dict[str, str] = field(default_factory=dict)  # added to the engine's environment


class Basecaller(ABC):
    """Builds the command that basecalls every pod5 in `input_dir` into `output_dir`.

    Output convention, one of two:

    - `native_output = False` (the original convention, what the manager merges as it
      is): FASTQ files directly under `output_dir/pass/` (and optionally `fail/`).
    - `native_output = True` (Dorado and its stand-ins): Dorado's records, BAM or FASTQ
      with read tags, anywhere under `output_dir/basecalls/`; the engine files them into
      the manager's output layout (`bcmanager.output.filing`) before reporting DONE.
    """

    name: str = "basecaller"
    native_output: bool = False
    model: str = ""  # what the reads' pass threshold defaults from (fast, hac, sup)
    barcoding: bool = False  # classifies barcodes (a --kit-name was given)
    switches_models: bool = False  # can run the model a job names (model generations)
    # can basecall a slice: only the reads a list names (Dorado's --read-ids), reading
    # only their signal; an engine whose backend cannot is handed whole files only
    slices: bool = False

    def prepare(self) -> None:  # noqa: B027 - most backends need nothing
        """Once, when the engine starts (e.g. make sure the model is on this node, start a
        basecall server). Raises ConfigError when the backend cannot work here."""

    def close(self) -> None:  # noqa: B027 - most backends need nothing
        """Once, when the engine stops (e.g. stop the basecall server it started)."""

    def with_recipe(
        self, model: str, kit_name: str | None, modified_bases: Sequence[str]
    ) -> Basecaller:
        """This backend running another model with these read-changing options (a
        generation's recipe, complete: no kit means no barcoding); only where
        `switches_models`. The engine calls `prepare()` on it before its first batch."""
        raise ConfigError(f"the {self.name} basecaller runs its own model only")

    def with_reference(self, reference: str | os.PathLike[str]) -> Basecaller:
        """This backend aligning to `reference` instead of its own (a generation that
        names one, e.g. a newer assembly); called on what `with_recipe` gave."""
        raise ConfigError(f"the {self.name} basecaller cannot align reads to a reference")

    @abstractmethod
    def invocation(
        self, input_dir: Path, output_dir: Path, read_ids: Path | None = None
    ) -> Invocation:
        """The command for one job; `output_dir` exists and is empty. `read_ids`: a file of
        read ids, one per line, the only reads to basecall (a slice of the job's file);
        given only where `slices`."""

    def whole_files_only(self, read_ids: Path | None) -> None:
        """For backends that cannot take a read list: refuse one (the engine never sends
        one to them, as it claims no slices)."""
        if read_ids is not None:
            raise ConfigError(f"the {self.name} basecaller cannot basecall a slice of a file")

    def describe(self) -> str:
        """One line for the engine's start-up log."""
        return self.name

    def filtered_reads(self, log_text: str) -> int:
        """How many reads the basecaller says (in its log of one batch) it left out on
        purpose; they may be missing from its output (`bcmanager.output.check`). Ours
        leave none out."""
        return 0


def dorado_filtered_count(log_text: str) -> int:
    """The reads a Dorado log (or its stand-ins') says were filtered; 0 if it says none."""
    found = _DORADO_FILTERED.findall(log_text)
    return sum(int(n) for n in found)
