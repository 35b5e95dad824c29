"""``python -m herald.cli``: the ``herald`` command."""

import os

from herald.cli import main

os.environ.setdefault("PYTHONUNBUFFERED", "1")
main()
