"""Recoverable topics next to live ones; see ``herald bench recoverable --help``."""

from __future__ import annotations

import sys

from herald.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "recoverable", *sys.argv[1:]]))
