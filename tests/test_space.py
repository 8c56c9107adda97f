"""OutputSpace: a full OUTPUT pauses hand-outs and is blamed for the failures it causes."""

from __future__ import annotations

from pathlib import Path

import pytest

from bcmanager.space import GRACE_S, MIB, OutputSpace


class Disk:
    """A disk whose free space the test sets."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.looked = 0

    def __call__(self, root: Path) -> int:
        self.looked += 1
        return self.free


def test_a_disk_under_the_minimum_is_short_until_it_has_room_again(tmp_path) -> None:
    disk = Disk(500 * MIB)
    space = OutputSpace(tmp_path, 100 * MIB, probe=disk)
    assert not space.short and space.view().free_bytes is None  # not looked at yet
    assert space.sample(10.0) is False and not space.short
    disk.free = 99 * MIB
    assert space.sample(11.0) is True and space.short
    assert space.view().as_dict() == {
        "free_bytes": 99 * MIB,
        "min_free_bytes": 100 * MIB,
        "short": True,
        "short_since": 11.0,
    }
    assert space.sample(12.0) is False and space.view().short_since == 11.0  # still short
    disk.free = 100 * MIB
    assert space.sample(13.0) is True and not space.short


def test_failures_are_blamed_on_the_disk_while_short_and_a_grace_after(tmp_path) -> None:
    disk = Disk(0)
    space = OutputSpace(tmp_path, MIB, probe=disk)
    assert not space.excuses("basecaller exit code 1", 0.0)  # never seen short
    space.sample(100.0)
    disk.free = 10 * MIB
    space.sample(101.0)
    assert not space.short
    # the failed batch freed its partial output before reporting: the disk looks fine
    assert space.excuses("basecaller exit code 1", 100.0 + GRACE_S)
    assert not space.excuses("basecaller exit code 1", 100.0 + GRACE_S + 1)


@pytest.mark.parametrize(
    "reason",
    [
        "filing the output failed: [Errno 28] No space left on device: 'x.bam'",
        "not merged: database or disk is full",
        "OSError: ENOSPC",
        "write failed: Disk quota exceeded",
    ],
)
def test_a_reason_that_names_a_full_disk_is_the_disks_fault(tmp_path, reason: str) -> None:
    space = OutputSpace(tmp_path, MIB, probe=Disk(10 * MIB))
    assert space.excuses(reason, 0.0)
    assert not space.excuses("basecaller exit code 3", 0.0)


def test_a_minimum_of_zero_never_looks_at_the_disk(tmp_path) -> None:
    disk = Disk(0)
    space = OutputSpace(tmp_path, 0, probe=disk)
    assert space.sample(1.0) is False and not space.short and disk.looked == 0


def test_a_disk_that_cannot_be_read_changes_nothing(tmp_path) -> None:
    def broken(root: Path) -> int:
        raise OSError(5, "Input/output error")

    space = OutputSpace(tmp_path, MIB, probe=broken)
    assert space.sample(1.0) is False and not space.short


def test_the_real_probe_reads_this_disk(tmp_path) -> None:
    space = OutputSpace(tmp_path, 1)
    space.sample(1.0)
    assert space.view().free_bytes is not None and space.view().free_bytes > 0
