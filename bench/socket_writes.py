"""The floor of a gateway fan-out round: one small write to each of N loopback TCP sockets.

python bench/socket_writes.py                    # 10,000 sockets, asyncio's loop
python bench/socket_writes.py --uvloop --sockets 1000

A server holds N accepted connections; a reader process (uvloop) holds their other ends and
reads everything. Each round writes one 102-byte WebSocket frame to every connection with
``transport.write``, as the gateway's frame writer does, and prints the round's wall time and
the CPU time of this process per write: what the system call costs, before any Herald code
(on loopback it includes the receiving socket's TCP input, run in the sender's context).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import resource
import time


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _reader(port: int, n: int) -> None:
    import uvloop

    _raise_fd_limit()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(n):
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        await asyncio.sleep(3600)

    uvloop.run(main())


async def _rounds(n: int, rounds: int) -> None:
    transports: list[asyncio.WriteTransport] = []

    class Accepted(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transports.append(transport)  # type: ignore[arg-type]

    loop = asyncio.get_running_loop()
    server = await loop.create_server(Accepted, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    reader = mp.get_context("spawn").Process(target=_reader, args=(port, n), daemon=True)
    reader.start()
    try:
        while len(transports) < n:  # noqa: ASYNC110 - simplest for a benchmark
            await asyncio.sleep(0.05)
        frame = b"\x81\x64" + b"x" * 100
        for _ in range(rounds):
            cpu, wall = time.process_time(), time.perf_counter()
            for transport in transports:
                transport.write(frame)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(
                f"{n} writes: wall {wall * 1e3:.1f} ms, CPU {cpu * 1e3:.1f} ms"
                f" = {cpu / n * 1e6:.2f} us CPU per write"
            )
            await asyncio.sleep(0.3)
    finally:
        reader.kill()
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--uvloop", action="store_true", help="the writer on uvloop")
    args = parser.parse_args()
    _raise_fd_limit()
    if args.uvloop:
        import uvloop

        uvloop.run(_rounds(args.sockets, args.rounds))
    else:
        asyncio.run(_rounds(args.sockets, args.rounds))


if __name__ == "__main__":
    main()
