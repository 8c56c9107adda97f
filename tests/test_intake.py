"""Intake (`bcmanager.intake`): how often INPUT is scanned again."""

from __future__ import annotations

from bcmanager.intake import rescan_pause


def test_rescans_back_off_when_a_scan_itself_is_slow() -> None:
    assert rescan_pause(10.0, 0.01) == 10.0
    assert rescan_pause(10.0, 2.0) == 60.0  # a 2 s scan of a huge folder: at most ~3% of the time
