"""Named crash points for the kill -9 tests.

`hit("merge.after-first-move")` kills the process with SIGKILL when the
environment variable BCM_FAILPOINT names that point, so a test can prove that
a crash at exactly that instant loses nothing. Unset, it costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

_ACTIVE = os.environ.get("BCM_FAILPOINT", "")


def hit(name: str) -> None:
    if _ACTIVE and name == _ACTIVE:
        os.kill(os.getpid(), signal.SIGKILL)
