"""Cluster benchmark: live and durable throughput on a 3-shard local cluster vs one node.

python bench/cluster.py            # 3 runs x 3 s per row, a Markdown table
python bench/cluster.py --json     # the result as JSON (same as `herald bench cluster --json`)
python bench/cluster.py --quick    # 1 run x 1 s per row
"""

from __future__ import annotations

import argparse
import json

from herald_bench.cluster import format_table, run_cluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--runs", type=int, default=3, help="runs per row (median)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes")
    parser.add_argument("--quick", action="store_true", help="1 run of 1 s per row")
    args = parser.parse_args()
    runs, duration = (1, 1.0) if args.quick else (args.runs, args.duration)
    result = run_cluster(runs=runs, duration=duration, publishers=args.publishers)
    print(json.dumps(result, indent=2) if args.json else format_table(result))


if __name__ == "__main__":
    main()
