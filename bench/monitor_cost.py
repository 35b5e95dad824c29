"""What watching costs the server: a publisher's confirmed rate alone, with ``herald monitor``
running, and with ``herald monitor --tap`` (MONITOR) running.

    python bench/monitor_cost.py [--seconds 3] [--runs 3]

One process publishes 100-byte JSON dicts with ``confirm=True`` (one round trip each, so the
rate follows the server's per-command cost) to a fresh embedded Valkey with one subscriber;
the best of ``--runs`` runs per row, in messages/s. The monitor runs as its own process, as a
user runs it, with a 0.2 s interval.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

import herald

ROWS = {
    "alone": None,
    "herald monitor (view)": ["monitor", "--interval", "0.2"],
    "herald monitor --tap": ["monitor", "--tap"],
}


async def rate(url: str, seconds: float) -> float:
    payload = {"sym": "ACME", "px": 1.2345, "n": 1, "pad": "x" * 52}
    async with herald.AsyncClient(url) as hub, hub.subscribe("bench", max_pending=10**7):
        await hub.publish("bench", payload, confirm=True)
        n = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(100):
                await hub.publish("bench", payload, confirm=True)
            n += 100
        return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with herald.EmbeddedServer(persist=False) as server:
        results: dict[str, float] = {}
        for label, command in ROWS.items():
            watcher = None
            if command is not None:
                watcher = subprocess.Popen(
                    [sys.executable, "-m", "herald.cli", *command, "--url", server.url],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(2)  # started and connected
            try:
                results[label] = max(
                    asyncio.run(rate(server.url, args.seconds)) for _ in range(args.runs)
                )
            finally:
                if watcher is not None:
                    watcher.terminate()
                    watcher.wait(10)
    base = results["alone"]
    print("| publisher beside | confirmed msg/s | vs alone |\n|---|---:|---:|")
    for label, value in results.items():
        print(f"| {label} | {value:,.0f} | {value / base:.0%} |")


if __name__ == "__main__":
    main()
