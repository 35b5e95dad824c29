"""Herald next to redis-py, FastStream, broadcaster, nats-py, aio-pika and a raw client, one run.

python bench/compare.py                  # full run (3 runs x 2 s per row), Markdown tables
python bench/compare.py --quick          # 1 run x 0.5 s per row, no 100-subscriber fan-out
python bench/compare.py --json           # the whole result (every run) as JSON
python bench/compare.py --plot docs/img  # also write PNG charts into that folder
python bench/compare.py --only live fanout
python bench/compare.py --output compare.json   # the table, and the JSON in a file
python bench/compare.py --compiled       # Herald's rows also on the compiled core (make compiled)
"""

from __future__ import annotations

import argparse
import json
import sys

from herald_bench.compare import format_table, run_compare, write_charts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--quick", action="store_true", help="1 short run per row")
    parser.add_argument("--runs", type=int, help="runs per row (median)")
    parser.add_argument("--duration", type=float, help="seconds per run")
    parser.add_argument("--only", nargs="*", help="workloads: live fanout durable request latency")
    parser.add_argument("--plot", metavar="DIR", help="write PNG charts into DIR")
    parser.add_argument("--output", help="also write the JSON result to this file")
    parser.add_argument(
        "--compiled",
        action="store_true",
        help="also run Herald's rows on the compiled core in build/compiled (make compiled)",
    )
    args = parser.parse_args()
    result = run_compare(
        quick=args.quick,
        runs=args.runs,
        duration=args.duration,
        only=args.only,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        compiled=args.compiled,
    )
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
    if args.plot:
        for path in write_charts(result, args.plot):
            print(f"wrote {path}", file=sys.stderr)
    print(json.dumps(result, indent=2) if args.json else format_table(result))


if __name__ == "__main__":
    main()
