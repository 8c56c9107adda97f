"""The cluster tests' Slurm: `tests.slurm`'s, started once per session when needed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.slurm import SlurmCluster, SlurmMissing, start_slurm, stop_slurm


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmCluster]:
    """A Slurm that answers: the one already running, or a private single-node one."""
    try:
        cluster = start_slurm()
    except SlurmMissing as exc:
        pytest.fail(str(exc))
    try:
        yield cluster
    finally:
        stop_slurm(cluster)
