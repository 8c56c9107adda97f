"""Any tool, from a command template such as `mytool {input} {output} --model {model}`.

The template is split like a shell would (`shlex`), then each placeholder is replaced
inside its own word, so a value is never split again: paths with spaces stay one
argument. No shell runs, so there is no quoting to get wrong and nothing to inject.
Placeholders: `{input}`, `{output}`, `{pass}` (OUTPUT/pass), `{fail}` (OUTPUT/fail),
`{model}`, `{read_ids}` (a file of the read ids to basecall, one per line, when the job
is a slice of a file; an empty word for a batch of whole files); `{{` and `}}` stand for
literal braces. A template that names `{read_ids}` may be handed slices.
"""

from __future__ import annotations

import logging
import shlex
import string
from collections.abc import Sequence
from pathlib import Path

from bcmanager.basecallers.abc import Basecaller, Invocation
from bcmanager.basecallers.script import require_executable
from bcmanager.errors import ConfigError

log = logging.getLogger("bcmanager.basecallers.command")

PLACEHOLDERS = ("input", "output", "pass", "fail", "model", "read_ids")


class CommandBasecaller(Basecaller):
    """The template is checked here: unknown placeholders and bad quoting are ConfigError."""

    name = "command"

    def __init__(self, template: str, model: str = "") -> None:
        try:
            words = shlex.split(template)
        except ValueError as exc:
            raise ConfigError(f"command template {template!r}: {exc}") from exc
        if not words:
            raise ConfigError("the command template is empty")
        for word in words:
            _check_word(word, template)
        if "{" not in words[0]:  # the program itself must exist on this node
            require_executable(words[0], "command-template program", hint="a full path")
        self.template = template
        self.words = words
        self.model = model
        if not any(f"{{{name}}}" in template for name in ("output", "pass", "fail")):
            # Legal (a tool may find its output folder elsewhere), but almost always a mistake.
            log.warning("command template %r names none of {output}, {pass}, {fail}", template)

    @property
    def switches_models(self) -> bool:  # type: ignore[override]
        """A template that names `{model}` runs whichever model a job's generation names."""
        return any(field == "model" for word in self.words for field in _fields(word))

    @property
    def slices(self) -> bool:  # type: ignore[override]
        """A template that names `{read_ids}` basecalls the reads a list names."""
        return any(field == "read_ids" for word in self.words for field in _fields(word))

    def with_recipe(
        self, model: str, kit_name: str | None, modified_bases: Sequence[str]
    ) -> CommandBasecaller:
        if not self.switches_models:
            raise ConfigError(f"command template {self.template!r} has no {{model}}")
        if kit_name or modified_bases:
            raise ConfigError("a command template has no placeholders for a kit or modified bases")
        return CommandBasecaller(self.template, model)

    def invocation(
        self, input_dir: Path, output_dir: Path, read_ids: Path | None = None
    ) -> Invocation:
        if read_ids is not None and not self.slices:
            self.whole_files_only(read_ids)
        values = {
            "input": str(input_dir),
            "output": str(output_dir),
            "pass": str(output_dir / "pass"),
            "fail": str(output_dir / "fail"),
            "model": self.model,
            "read_ids": "" if read_ids is None else str(read_ids),
        }
        (output_dir / "pass").mkdir(parents=True, exist_ok=True)
        return Invocation(argv=[word.format_map(values) for word in self.words])

    def describe(self) -> str:
        return f"command {self.template!r}"


def _check_word(word: str, template: str) -> None:
    try:
        fields = list(string.Formatter().parse(word))
    except ValueError as exc:
        raise ConfigError(
            f"command template {template!r}: {exc} (write {{{{ and }}}} for literal braces)"
        ) from exc
    for _literal, field, spec, conversion in fields:
        if field is None:
            continue
        if field not in PLACEHOLDERS:
            known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            shown = "{" + field + "}"
            raise ConfigError(
                f"command template {template!r}: unknown placeholder {shown}; use {known}"
            )
        if spec or conversion:
            raise ConfigError(
                f"command template {template!r}: placeholder {{{field}}} takes no format"
                " or conversion"
            )


def _fields(word: str) -> list[str]:
    return [field for _lit, field, _spec, _conv in string.Formatter().parse(word) if field]
