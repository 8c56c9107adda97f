"""The original BC-pipelines convention: `<script> <input_dir> <output_dir> <model>`.

The script (e.g. the original `supervisor.sh`) writes FASTQ under `output_dir/pass/`
(and `fail/`) and reports success by its exit code.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bcmanager.basecallers.abc import Basecaller, Invocation
from bcmanager.errors import ConfigError


def require_executable(program: str | os.PathLike[str], what: str, hint: str = "") -> str:
    """The absolute path of an executable, or ConfigError.

    Checked when the engine starts: a missing tool would otherwise fail every job it
    claims, and repeated failures quarantine good files.
    """
    name = os.fspath(program)
    if not name:
        raise ConfigError(f"no {what} given" + (f" (use {hint})" if hint else ""))
    expanded = os.path.expanduser(name)
    if os.sep in expanded or (os.altsep and os.altsep in expanded):
        path = os.path.abspath(expanded)
        if not os.path.isfile(path):
            raise ConfigError(f"{what} {name!r} not found")
        if not os.access(path, os.X_OK):
            raise ConfigError(f"{what} {name!r} is not executable (chmod +x?)")
        return path
    found = shutil.which(expanded)
    if found is None:
        if os.path.isfile(expanded):  # a bare name of a file in the current folder
            return require_executable(os.path.join(os.curdir, expanded), what, hint)
        raise ConfigError(
            f"{what} {name!r} not found on PATH" + (f"; give its path with {hint}" if hint else "")
        )
    return os.path.abspath(found)


class ScriptBasecaller(Basecaller):
    """Runs an external script with the supervisor convention's three arguments."""

    name = "script"

    def __init__(self, script: str | os.PathLike[str], model: str = "") -> None:
        self.script = require_executable(script, "basecaller script", hint="--script PATH")
        self.model = model

    def invocation(
        self, input_dir: Path, output_dir: Path, read_ids: Path | None = None
    ) -> Invocation:
        self.whole_files_only(read_ids)  # SCRIPT INPUT OUTPUT MODEL: no place for a list
        return Invocation(argv=[self.script, str(input_dir), str(output_dir), self.model])

    def describe(self) -> str:
        return f"script {self.script} (model {self.model or '-'})"
