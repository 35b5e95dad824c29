"""Gateway benchmark: WebSocket fan-out of one topic to many clients.

python bench/gateway.py                  # short: 100 clients x 200 msg/s x 5 s
python bench/gateway.py --full           # 1,000 clients x 1,000 msg/s x 30 s
python bench/gateway.py --clients 500 --rate 500 --duration 10 --json
python bench/gateway.py --clients 10000 --rate 10 --duration 30   # 10,000 connections
python bench/gateway.py --full --loop uvloop                      # the gateway on uvloop
"""

from __future__ import annotations

import argparse
import json

from herald_bench.gateway import format_table, run_gateway_bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--full", action="store_true", help="1000 clients x 1000 msg/s x 30 s")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rate", type=int, default=200, help="messages per second")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of publishing")
    parser.add_argument(
        "--client-processes",
        type=int,
        default=None,
        help="processes for the counting clients (default: one per 5,000)",
    )
    parser.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default=None,
        help="the gateway's event loop, as herald serve --loop (default: herald serve's)",
    )
    args = parser.parse_args()
    if args.full:
        args.clients, args.rate, args.duration = 1000, 1000, 30.0
    result = run_gateway_bench(
        args.clients,
        args.rate,
        args.duration,
        client_processes=args.client_processes,
        gateway_loop=args.loop,
    )
    print(json.dumps(result, indent=2) if args.json else format_table(result))


if __name__ == "__main__":
    main()
