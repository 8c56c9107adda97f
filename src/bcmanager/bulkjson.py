"""Large JSON answers (`/v1/status` of thousands of engines) encoded a slice at a time.

`json.dumps` of a 5,000-engine status is one C call of ~30 ms that holds the interpreter
lock throughout: encoded in a worker thread, it still stops the event loop, and every
claim and heartbeat arriving meanwhile, for that long. Encoded in slices of a few
hundred list items, the lock is handed over between slices, so the loop waits a few
milliseconds at most. The bytes are those Starlette's `JSONResponse` writes.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse

SLICE = 200  # list items per json.dumps call: about a millisecond of encoding


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def dumps_in_slices(value: Any, slice_items: int = SLICE) -> str:
    """`value` as compact JSON, equal to one `json.dumps`, each long list encoded
    `slice_items` at a time (in dicts with string keys, at any depth)."""
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        inner = ",".join(f"{_dumps(k)}:{dumps_in_slices(v, slice_items)}" for k, v in value.items())
        return "{" + inner + "}"
    if isinstance(value, list) and len(value) > slice_items:
        slices = (
            _dumps(value[i : i + slice_items])[1:-1] for i in range(0, len(value), slice_items)
        )
        return "[" + ",".join(slices) + "]"
    return _dumps(value)


class BulkJSONResponse(JSONResponse):
    """A `JSONResponse` encoded by `dumps_in_slices`; build it in a worker thread."""

    def render(self, content: Any) -> bytes:
        return dumps_in_slices(content).encode("utf-8")
