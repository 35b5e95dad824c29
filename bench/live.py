"""Live pub/sub benchmark: Herald next to redis-py and a raw hiredis client, in one run.

python bench/live.py             # full run (3 runs x 3 s per row), Markdown tables
python bench/live.py --json      # the full result as JSON
python bench/live.py --quick     # 1 run x 1 s per row
python bench/live.py --only herald raw --rates   # some rows, no latency rows
python bench/live.py --output live.json          # the table, and the JSON in a file
"""

from __future__ import annotations

import argparse
import json

from herald_bench.live import format_table, run_live


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--runs", type=int, default=3, help="runs per row (median)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--quick", action="store_true", help="1 run of 1 s per row")
    parser.add_argument("--payload-size", type=int, default=100, help="payload bytes")
    parser.add_argument(
        "--rates", type=int, nargs="*", default=[5_000, 20_000], help="latency rows' rates"
    )
    parser.add_argument("--only", nargs="*", help="row names or prefixes to run")
    parser.add_argument("--output", help="also write the JSON result to this file")
    parser.add_argument(
        "--max-other-load",
        type=float,
        help="repeat a run (at most twice) when other programs kept more CPUs than this busy",
    )
    args = parser.parse_args()
    if args.quick:
        args.runs, args.duration = 1, 1.0
    result = run_live(
        runs=args.runs,
        duration=args.duration,
        payload_size=args.payload_size,
        rates=tuple(args.rates),
        only=args.only,
        max_other_load=args.max_other_load,
    )
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2) if args.json else format_table(result))


if __name__ == "__main__":
    main()
