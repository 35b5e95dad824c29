"""Recoverable topics next to live ones, and the time to recover missed messages.

python bench/recoverable.py             # full run (3 runs x 3 s per row), Markdown table
python bench/recoverable.py --json      # the full result as JSON
python bench/recoverable.py --quick     # 1 run x 1 s per row
"""

from __future__ import annotations

import argparse
import json

from herald_bench.recoverable import format_table, run_recoverable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--runs", type=int, default=3, help="runs per row (median)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--rate", type=int, default=20_000, help="latency rows' rate")
    parser.add_argument("--missed", type=int, default=10_000, help="messages to recover")
    parser.add_argument("--quick", action="store_true", help="1 run of 1 s per row")
    args = parser.parse_args()
    runs, duration = (1, 1.0) if args.quick else (args.runs, args.duration)
    result = run_recoverable(runs=runs, duration=duration, rate=args.rate, missed=args.missed)
    print(json.dumps(result, indent=2) if args.json else format_table(result))


if __name__ == "__main__":
    main()
