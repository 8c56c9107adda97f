"""Large answers encoded a slice at a time are the bytes one json.dumps writes."""

from __future__ import annotations

import json
import math

import pytest

from bcmanager.bulkjson import SLICE, dumps_steps
from bcmanager.stepwise import run


def dumps_in_slices(value: object, slice_items: int = SLICE) -> str:
    return run(dumps_steps(value, slice_items))


def _starlette_bytes(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _status_like(engines: int) -> dict[str, object]:
    return {
        "state": "basecalling",
        "files": {"queued": 12, "done": 3},
        "engines": [
            {
                "engine": f"gpu-{i:05d}",
                "job_id": i if i % 3 else None,
                "bytes_per_s": i * 1.5,
                "progress": {"age_s": 0.25, "note": "é → ü"} if i % 2 else None,
                "hist": list(range(i % 5)),
            }
            for i in range(engines)
        ],
        "running_jobs": [{"job_id": i, "files": [f"a/{i}.pod5"] * 3} for i in range(engines)],
        "empty": [],
        "by_generation": {0: "live", 1: "sup"},  # int keys: encoded whole, as json.dumps does
    }


@pytest.mark.parametrize("slice_items", [1, 7, 200, 10_000])
@pytest.mark.parametrize("engines", [0, 1, 199, 200, 201, 1_234])
def test_the_bytes_are_those_of_one_dumps(engines: int, slice_items: int) -> None:
    value = _status_like(engines)
    assert dumps_in_slices(value, slice_items) == _starlette_bytes(value)


def test_lists_of_lists_and_scalars_too() -> None:
    value = [[i, str(i), [None, True, 0.5]] for i in range(1_000)]
    assert dumps_in_slices(value, 3) == _starlette_bytes(value)
    assert dumps_in_slices("x") == '"x"'


def test_not_a_number_is_refused_as_starlette_refuses_it() -> None:
    with pytest.raises(ValueError):
        dumps_in_slices({"engines": [{"rate": 1.0}] * 300 + [{"rate": math.nan}]})


def test_a_long_list_is_encoded_a_step_per_slice() -> None:
    steps = dumps_steps({"engines": list(range(1_000)), "short": [1, 2]}, 200)
    pauses = 0
    while True:
        try:
            assert next(steps) is None
            pauses += 1
        except StopIteration as done:
            body = done.value
            break
    assert pauses == 5
    assert json.loads(body) == {"engines": list(range(1_000)), "short": [1, 2]}
