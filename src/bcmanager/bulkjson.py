"""Large JSON answers (`/v1/status` of thousands of engines) encoded a slice at a time.

`json.dumps` of a 5,000-engine status is one C call of ~30 ms: on the event loop, or in
a worker thread holding the interpreter lock, it stops every claim and heartbeat for that
long. Encoded in slices of a few hundred list items, a step each (`bcmanager.stepwise`),
the loop serves requests between slices. The bytes are those Starlette's `JSONResponse`
writes.
"""

from __future__ import annotations

import json
from typing import Any

from bcmanager.stepwise import Steps

SLICE = 200  # list items per json.dumps call: about a millisecond of encoding


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def dumps_steps(value: Any, slice_items: int = SLICE) -> Steps[str]:
    """`value` as compact JSON, equal to one `json.dumps`, each long list encoded
    `slice_items` at a time, a step each (in dicts with string keys, at any depth)."""
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        parts = []
        for key, item in value.items():
            parts.append(f"{_dumps(key)}:{(yield from dumps_steps(item, slice_items))}")
        return "{" + ",".join(parts) + "}"
    if isinstance(value, list) and len(value) > slice_items:
        slices = []
        for i in range(0, len(value), slice_items):
            slices.append(_dumps(value[i : i + slice_items])[1:-1])
            yield None
        return "[" + ",".join(slices) + "]"
    return _dumps(value)
