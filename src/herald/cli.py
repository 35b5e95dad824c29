"""The ``herald`` command line."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console

import herald

from ._cli_durable import dead, replay, topics
from ._server import EmbeddedServer, clear_state, default_data_dir, discover, write_state

_URL = click.option(
    "--url",
    envvar="HERALD_URL",
    default=None,
    help="Redis/Valkey URL (default: $HERALD_URL, else the server `herald serve` runs).",
)


def _fail(message: str) -> None:
    raise click.ClickException(message)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(herald.__version__, prog_name="herald")
def main() -> None:
    """Herald: fast, loss-aware pub/sub on Redis and Valkey."""


main.add_command(topics)
main.add_command(dead)
main.add_command(replay)


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the embedded Valkey keeps its AOF files (default: $HERALD_HOME or "
    "~/.local/share/herald).",
)
@click.option("--port", type=int, default=None, help="Port of the embedded Valkey (default: free).")
def serve(data_dir: Path | None, port: int | None) -> None:
    """Run the embedded Valkey with AOF persistence until Ctrl-C.

    Other herald commands and herald.Client() without a URL find it through the data directory.
    """
    data_dir = data_dir or default_data_dir()
    if running := discover(data_dir):
        _fail(f"a Herald server is already running at {running} (data directory {data_dir})")
    console = Console()
    server = EmbeddedServer(data_dir, port=port, persist=True, owned=True)
    try:
        server.start()
    except herald.HeraldError as exc:
        _fail(str(exc))
    assert server.process is not None
    write_state(data_dir, server.url, server.process.pid)
    console.print(f"[bold green]Herald[/] Valkey running at [bold]{server.url}[/]")
    console.print(f"data directory: {data_dir} (AOF, fsync every second)")
    console.print("try:  herald sub 'demo.*'    and in another shell:  herald pub demo.hello hi")
    console.print("Ctrl-C to stop")
    stop = False

    def _stop(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    # Explicit handlers: a shell may start a background job with SIGINT ignored.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop and server.process is not None and server.process.poll() is None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        crashed = server.process is not None and server.process.poll() is not None
        server.stop()
        clear_state(data_dir)
    if crashed:
        _fail(f"valkey-server exited unexpectedly; see {server.log_file}")
    console.print("stopped")


def _parse_headers(values: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--header")
        headers[key] = value
    return headers


@main.command()
@click.argument("topic")
@click.argument("data", required=False)
@click.option("--json", "as_json", is_flag=True, help="Parse DATA as JSON (default: text).")
@click.option("--header", "-H", multiple=True, help="Message header KEY=VALUE (repeatable).")
@click.option("--count", "-n", type=click.IntRange(min=1), default=1, help="Publish N times.")
@click.option("--confirm", is_flag=True, help="Wait for the server and print receiver counts.")
@_URL
def pub(
    topic: str,
    data: str | None,
    as_json: bool,
    header: Sequence[str],
    count: int,
    confirm: bool,
    url: str | None,
) -> None:
    """Publish DATA (or each line of standard input) to TOPIC."""
    headers = _parse_headers(header)
    lines = [data] if data is not None else [line.rstrip("\n") for line in sys.stdin]
    payloads: list[Any] = []
    for line in lines:
        if as_json:
            try:
                payloads.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise click.BadParameter(f"not valid JSON: {exc}", param_hint="DATA") from exc
        else:
            payloads.append(line)
    try:
        with herald.Client(url, start_embedded=False) as hub:
            receivers = 0
            for _ in range(count):
                for payload in payloads:
                    ack = hub.publish(topic, payload, headers=headers or None, confirm=confirm)
                    receivers += ack.receivers if ack else 0
            hub.flush()
    except herald.HeraldError as exc:
        _fail(str(exc))
    total = count * len(payloads)
    suffix = f", {receivers} deliveries" if confirm else ""
    click.echo(f"published {total} message(s) to {topic}{suffix}", err=True)


def _jsonable(data: Any) -> Any:
    if isinstance(data, bytes):
        try:
            return data.decode()
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(data).decode()}
    return data


@main.command()
@click.argument("patterns", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--count", "-n", type=click.IntRange(min=1), default=None, help="Exit after N.")
@click.option("--timeout", "-t", type=float, default=None, help="Exit after S seconds.")
@_URL
def sub(
    patterns: Sequence[str],
    as_json: bool,
    count: int | None,
    timeout: float | None,
    url: str | None,
) -> None:
    """Print messages of topics and glob patterns as they arrive.

    Exits with status 1 if --timeout passes before --count messages arrived.
    """
    console = Console(highlight=False)
    errors = Console(highlight=False, stderr=True)

    def on_gap(gap: herald.Gap) -> None:
        if as_json:
            record = {"gap": {"since": gap.since, "until": gap.until, "reason": gap.reason}}
            print(json.dumps(record), file=sys.stderr)
        else:
            errors.print(
                f"[yellow]connection lost for {gap.until - gap.since:.2f}s: "
                f"messages may have been missed ({gap.reason})[/]"
            )

    async def run() -> int:
        received = 0
        async with (
            herald.AsyncClient(url, start_embedded=False) as hub,
            hub.subscribe(*patterns, on_gap=on_gap) as subscription,
        ):
            if not as_json:
                errors.print(f"[dim]subscribed to {', '.join(patterns)}[/]")
            deadline = None if timeout is None else time.monotonic() + timeout
            while count is None or received < count:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return 1 if count is not None else 0
                try:
                    msg = await subscription.next(remaining)
                except herald.Timeout:
                    continue
                received += 1
                _print_message(console, msg, as_json)
        return 0

    try:
        code = asyncio.run(run())
    except herald.HeraldError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


def _print_message(console: Console, msg: herald.Message, as_json: bool) -> None:
    if as_json:
        record = {
            "topic": msg.topic,
            "data": _jsonable(msg.data),
            "id": msg.id,
            "pattern": msg.pattern,
            "headers": msg.headers,
            "timestamp": msg.timestamp,
        }
        if msg.decode_error is not None:
            record["decode_error"] = str(msg.decode_error)
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()
        return
    stamp = time.strftime("%H:%M:%S", time.localtime(msg.timestamp or time.time()))
    data = msg.data if isinstance(msg.data, str) else json.dumps(_jsonable(msg.data))
    extra = f" [dim]{msg.headers}[/]" if msg.headers else ""
    console.print(f"[dim]{stamp}[/] [bold cyan]{msg.topic}[/] {data}{extra}", markup=True)


@main.group()
def bench() -> None:
    """Benchmarks of Herald next to its peers, in one run on this machine."""


@bench.command("live")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--runs", type=click.IntRange(min=1), default=3, help="Runs per row (median).")
@click.option("--duration", type=float, default=3.0, help="Seconds per run.")
@click.option("--quick", is_flag=True, help="One short run per row.")
def bench_live(as_json: bool, runs: int, duration: float, quick: bool) -> None:
    """Live pub/sub: Herald vs redis-py (sync, asyncio) vs a raw hiredis client."""
    from ._bench.live import format_table, run_live

    if quick:
        runs, duration = 1, 1.0
    result = run_live(runs=runs, duration=duration)
    click.echo(json.dumps(result, indent=2) if as_json else format_table(result))


@bench.command("durable")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--runs", type=click.IntRange(min=1), default=3, help="Runs per row (median).")
@click.option("--duration", type=float, default=3.0, help="Seconds per run.")
@click.option("--quick", is_flag=True, help="One short run per row.")
def bench_durable(as_json: bool, runs: int, duration: float, quick: bool) -> None:
    """Durable topics: Herald's publish and consumers vs redis-py vs FastStream."""
    from ._bench.durable import format_table, run_durable

    if quick:
        runs, duration = 1, 1.0
    result = run_durable(runs=runs, duration=duration)
    click.echo(json.dumps(result, indent=2) if as_json else format_table(result))


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
