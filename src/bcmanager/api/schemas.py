"""Request bodies (v1) and answer models, as the OpenAPI schema declares them.

The bodies are strict: they refuse unknown fields, `false` is no number and "3" no
integer. `answers()` declares each route's 200 model (legacy routes) and its errors.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict

from bcmanager.config import MAX_ENGINES
from bcmanager.generations import NAME_PATTERN as GENERATION_NAME
from bcmanager.generations import WORD_PATTERN
from bcmanager.layout import ENGINE_ID_MAX, ENGINE_ID_PATTERN
from bcmanager.reports import Timing

ENGINE_ID = ENGINE_ID_PATTERN
ENGINE_ID_LENGTH = {"min_length": 1, "max_length": ENGINE_ID_MAX}


# -- v1 request bodies ------------------------------------------------------------------


def _json_integer(value: object) -> object:
    """An integer as JSON Schema has it: 3 and 3.0, but not `true` or "3"."""
    if isinstance(value, bool | str):
        raise ValueError("must be an integer")
    return value


class _Body(BaseModel):
    # strict: `false` is no number and "3" no integer, as the schema says
    model_config = ConfigDict(extra="forbid", strict=True)


class ClaimRequest(_Body):
    engine_id: Annotated[
        str, Field(pattern=ENGINE_ID, **ENGINE_ID_LENGTH, description="engine name")
    ]
    max_files: Annotated[
        Annotated[int, Field(ge=0), Strict(False), BeforeValidator(_json_integer)] | None,
        Field(description="0 or absent: the default"),
    ] = None
    wait_s: Annotated[float, Field(ge=0, le=60, description="long-poll up to this long")] = 0.0
    until_empty: Annotated[
        bool,
        Field(
            description="answer at once, without a job, when no more work is expected"
            " (nothing queued, settling, being scanned or unconfirmed): for engines that exit then"
        ),
    ] = False
    models: Annotated[
        Literal["own", "any"],
        Field(
            description="own: the engine runs its own model and gets the live generation's"
            " files only; any: it runs the model the job names (`generation`), so every"
            " generation's files, the earliest generation first"
        ),
    ] = "own"
    slices: Annotated[
        bool,
        Field(
            description="the engine can basecall a slice of a file: only the reads a list"
            " names (a job's `read_ids`, a file of read ids, one per line), as Dorado's"
            " --read-ids; without it the engine is handed whole files only"
        ),
    ] = False


class GenerationRequest(_Body):
    """A backfill generation: every known file is queued for it."""

    name: Annotated[str, Field(pattern=f"^{GENERATION_NAME}$", description="its tree's folder")]
    model: Annotated[
        str, Field(pattern=f"^{WORD_PATTERN}$", max_length=512, description="a Dorado model")
    ]
    kit_name: Annotated[str | None, Field(pattern=f"^{WORD_PATTERN}$", max_length=64)] = None
    modified_bases: Annotated[
        list[Annotated[str, Field(pattern=f"^{WORD_PATTERN}$", max_length=64)]],
        Field(max_length=16),
    ] = []
    reference: Annotated[
        str | None,
        Field(
            pattern=f"^{WORD_PATTERN}$",
            max_length=4096,
            description="a FASTA or minimap2 index on the GPU nodes to align to",
        ),
    ] = None


class FleetRequest(_Body):
    """The fleet this run is to have (`bcm manager --expect-engines`, from a controller)."""

    expected_engines: Annotated[
        Annotated[int, Field(ge=1, le=MAX_ENGINES), Strict(False), BeforeValidator(_json_integer)]
        | None,
        Field(
            description="engines the run is to have (the GPU jobs submitted): until that many"
            " have called, engines are still arriving; null: inferred from their calls"
        ),
    ]


class TokenRequest(_Body):
    token: Annotated[str, Field(min_length=1, max_length=128)]


Count = Annotated[int, Field(ge=0, le=10**15), Strict(False), BeforeValidator(_json_integer)]
HistCell = Annotated[list[Count], Field(min_length=3, max_length=3)]


class YieldReport(_Body):
    """The engine's count of a job's reads of one run and barcode (`output.yields`)."""

    run: Annotated[str, Field(min_length=1, max_length=1000)]
    barcode: Annotated[str, Field(min_length=1, max_length=64)]
    reads: Count
    bases: Count
    pass_reads: Count
    pass_bases: Count
    qscore_sum: Annotated[float, Field(ge=0, le=1e15), Strict(False)]
    hist: Annotated[
        list[HistCell], Field(max_length=1000, description="[length bin, reads, bases] each")
    ] = []


Seconds = Annotated[float, Field(ge=0, le=1e7), Strict(False)]


class ReadsReport(_Body):
    """Reads filed so far of those the batch holds (where the engine files its
    basecaller's stream as it comes; more than `total` where reads were split)."""

    done: Count
    total: Annotated[int, Field(ge=1, le=10**15), Strict(False), BeforeValidator(_json_integer)]
    at_s: Annotated[
        Seconds | None,
        Field(
            description="basecalling seconds when the `done`th read was filed: output comes in"
            " blocks, so the count grows in steps, not with every heartbeat"
        ),
    ] = None


class TimingReport(_Body):
    """How long the engine's basecaller took to start (model loaded, GPU ready), then to
    basecall the batch, and the bytes it wrote: what the manager sizes the engine's next
    batches from. In a heartbeat: the batch so far."""

    startup_s: Seconds
    basecall_s: Seconds
    output_bytes: Annotated[Count | None, Field(description="the basecaller's output")] = None
    filing_s: Annotated[
        Seconds | None,
        Field(description="filing the output into the layout, after basecalling (DONE)"),
    ] = None
    reads: Annotated[
        ReadsReport | None,
        Field(description="of the batch's reads, how many are filed so far (heartbeats)"),
    ] = None

    def as_timing(self) -> Timing:
        counted = self.reads
        return Timing(
            self.startup_s,
            self.basecall_s,
            self.output_bytes,
            self.filing_s,
            counted.done if counted else None,
            counted.total if counted else None,
            counted.at_s if counted else None,
        )


class HeartbeatRequest(TokenRequest):
    progress: TimingReport | None = None
    basecalled: Annotated[
        bool,
        Field(
            description="the basecaller has finished the batch (exit 0) and `progress` is its"
            " whole account; the engine files the output and claims its next batch meanwhile"
        ),
    ] = False


class CompleteRequest(TokenRequest):
    outcome: Literal["done", "failed", "released"]
    reason: Annotated[str | None, Field(max_length=2000)] = None
    timing: TimingReport | None = None
    yields: Annotated[
        list[YieldReport] | None,
        Field(max_length=1000, description="reads per run and barcode (done only)"),
    ] = None


# -- answers, as the OpenAPI schema declares them ---------------------------------------


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(_Answer):
    where: str
    problem: str


class ErrorAnswer(_Answer):
    """Every 4xx (and the 500 that should never happen): a message naming the problem."""

    error: str
    problems: list[Problem] | None = None  # 422: each invalid value
    late: bool | None = None  # 409 LeaseLost: the engine must drop the batch


class LegacyAssignment(_Answer):
    report_back_period: int
    jobid: str
    job_input_dir: str
    job_output_dir: str
    bc_engine_id: str
    batch_size: int
    batch: list[str]
    report_back_interval: int


class LegacyLate(_Answer):
    late: bool


class LegacyOk(_Answer):
    ok: bool


class LegacyHeartbeat(_Answer):
    status: Literal["true", "false"]
    inactivity_interval: float


ERROR_TEXT = {
    400: "a body that is not JSON, or a value out of bounds",
    401: "the token is missing or wrong (or the legacy routes are off)",
    404: "unknown job",
    409: "the lease is lost or the token does not match: drop the batch",
    411: "a request body without Content-Length",
    413: "request body too large",
    422: "a malformed or out-of-range value",
    503: "the ledger cannot be written (e.g. its disk is full): nothing changed, retry",
}


def answers(ok: type[BaseModel] | None = None, *errors: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: its 200 model (legacy routes) and its error codes."""
    out: dict[int | str, dict[str, Any]] = {}
    if ok is not None:
        out[200] = {"model": ok, "description": "the original manager's exact JSON"}
    for code in (*errors, 411, 413, 503):
        out[code] = {"model": ErrorAnswer, "description": ERROR_TEXT[code]}
    return out
