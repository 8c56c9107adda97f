"""Stand-in for the original supervisor script (`SCRIPT INPUT_DIR OUTPUT_DIR MODEL`)."""

import sys
from pathlib import Path

from tests.helpers import basecall_dir

if __name__ == "__main__":
    basecall_dir(Path(sys.argv[1]), Path(sys.argv[2]))
