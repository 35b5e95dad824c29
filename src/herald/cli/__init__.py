"""The ``herald`` command line."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn

import click
from rich.console import Console
from rich.markup import escape

import herald
import herald._io
from herald._core.topics import check_headers
from herald._server import (
    EmbeddedServer,
    clear_state,
    default_data_dir,
    discover,
    new_password,
    write_state,
)
from herald.cli.route import route

from .common import (
    COUNT,
    FILE,
    JSON_LINES,
    TIMEOUT,
    UNSHARDED,
    URL,
    data_field,
    print_json,
    shown,
    take,
)
from .consume import consume
from .durable import dead, history, replay, topics
from .faults import faults
from .monitor import monitor


def _fail(message: str) -> NoReturn:
    raise click.ClickException(message)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    herald.__version__,
    prog_name="herald",
    # whether the core runs compiled (installed with HERALD_MYPYC=1, docs/installation.md)
    message="%(prog)s, version %(version)s, core "
    + ("compiled (mypyc)" if herald._io.compiled() else "pure Python"),
)
def main() -> None:
    """Herald: fast, loss-aware pub/sub on Redis and Valkey."""


main.add_command(topics)
main.add_command(dead)
main.add_command(replay)
main.add_command(history)
main.add_command(faults)
main.add_command(route)
main.add_command(monitor)
main.add_command(consume)


def _load_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    """``--config FILE``: a TOML file whose keys are ``serve``'s long options (``auth-issuer``
    or ``auth_issuer``); options given on the command line win."""
    if value is None:
        return
    import tomllib

    try:
        data = tomllib.loads(value.read_text())
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"cannot read {value}: {exc}", param_hint="--config") from exc
    table = data.get("serve", data)
    if not isinstance(table, dict):
        raise click.BadParameter("[serve] must be a table", param_hint="--config")
    known: dict[str, click.Parameter] = {}
    for p in ctx.command.params:
        if p.name and p.name != "config":
            known[p.name] = p
            for opt in p.opts:
                known[opt.lstrip("-").replace("-", "_")] = p
    defaults: dict[str, Any] = {}
    for key, item in table.items():
        found = known.get(str(key).replace("-", "_"))
        if found is None or found.name is None:
            raise click.BadParameter(f"unknown setting {key!r} in {value}", param_hint="--config")
        if found.multiple and isinstance(item, str):
            item = [item]  # allowed-host = "x" as well as ["x", "y"]
        defaults[found.name] = item
    ctx.default_map = {**(ctx.default_map or {}), **defaults}


@main.command()
@click.option(
    "--config",
    type=FILE,
    callback=_load_config,
    is_eager=True,
    expose_value=False,
    help="A TOML file of these options ([serve] table, or top level), e.g. "
    'auth-key-file = "/etc/herald/jwt.key"; command-line options win.',
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the embedded Valkey keeps its AOF files (default: $HERALD_HOME, else "
    "$XDG_DATA_HOME/herald, else ~/.local/share/herald).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Gateway address. Any other than loopback needs auth (--auth-*) or --insecure.",
)
@click.option(
    "--port",
    type=int,
    default=8080,
    show_default=True,
    envvar="HERALD_GATEWAY_PORT",
    help="Gateway port (0: a free one; $HERALD_GATEWAY_PORT).",
)
@click.option(
    "--valkey-port", type=int, default=None, help="Port of the embedded Valkey (default: free)."
)
@click.option(
    "--url",
    default=None,
    help="Serve the gateway for this Redis/Valkey instead of starting the embedded one.",
)
@click.option("--no-gateway", is_flag=True, help="Run the embedded Valkey alone.")
@click.option(
    "--unix-socket",
    is_flag=True,
    help="The embedded Valkey also listens on <data-dir>/valkey.sock (mode 0700); other "
    "herald commands then use it.",
)
@click.option(
    "--auth-key-file",
    type=FILE,
    default=None,
    help="Turn JWT auth on: the HMAC secret (at least 32 bytes for HS256) or the PEM public "
    "key that signs tokens.",
)
@click.option(
    "--auth-jwks-file",
    type=FILE,
    default=None,
    help="Turn JWT auth on: a JWKS file (JSON); the token's kid picks the key.",
)
@click.option("--auth-issuer", default=None, help="The required iss of tokens.")
@click.option("--auth-audience", default="herald", show_default=True, help="The required aud.")
@click.option(
    "--auth-algorithm",
    "auth_algorithms",
    multiple=True,
    help="Accepted algorithm, pinned (repeat for more; default HS256).",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="A name clients reach the gateway by (Host header), besides loopback names, --host "
    "and IP addresses; '.example.com' for a domain and its subdomains, '*' for any (repeat).",
)
@click.option(
    "--allowed-origin",
    "allowed_origins",
    multiple=True,
    help="A browser origin allowed besides the gateway's own, e.g. https://app.example (repeat).",
)
@click.option(
    "--metrics",
    type=click.Choice(["auth", "public", "off"]),
    default="auth",
    show_default=True,
    help="/metrics: as /stats (admin token or --metrics-token-file when auth is on), to "
    "anyone, or not at all.",
)
@click.option(
    "--metrics-token-file",
    type=FILE,
    default=None,
    help="A file holding a static bearer token that may read /metrics (for Prometheus).",
)
@click.option(
    "--max-connections",
    type=int,
    default=1000,
    show_default=True,
    help="Open gateway connections at most (HTTP and WebSocket).",
)
@click.option(
    "--loop",
    type=click.Choice(["auto", "asyncio", "uvloop"]),
    default="asyncio",
    show_default=True,
    envvar="HERALD_GATEWAY_LOOP",
    help="The gateway's event loop: auto is uvloop when installed, else asyncio's "
    "($HERALD_GATEWAY_LOOP).",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Allow a non-loopback --host without auth: anyone who can reach it may publish, "
    "read and replay everything.",
)
@click.option(
    "--fsync",
    type=click.Choice(["everysec", "always"]),
    default="everysec",
    show_default=True,
    help="AOF fsync policy of the embedded Valkey: everysec can lose about the last two "
    "seconds of acknowledged writes in a crash (publish(fsync=True) excepted); always "
    "writes every one to disk before its reply, more slowly.",
)
@click.option(
    "--tracing",
    is_flag=True,
    help="OpenTelemetry spans for the gateway's publishes, joined to the caller's traceparent "
    "(needs herald-pubsub[otel] and a tracer provider, e.g. opentelemetry-instrument).",
)
def serve(
    data_dir: Path | None,
    host: str,
    port: int,
    valkey_port: int | None,
    url: str | None,
    no_gateway: bool,
    unix_socket: bool,
    auth_key_file: Path | None,
    auth_jwks_file: Path | None,
    auth_issuer: str | None,
    auth_audience: str,
    auth_algorithms: Sequence[str],
    allowed_hosts: Sequence[str],
    allowed_origins: Sequence[str],
    metrics: str,
    metrics_token_file: Path | None,
    max_connections: int,
    loop: str,
    insecure: bool,
    fsync: str,
    tracing: bool,
) -> None:
    """Run Herald: the embedded Valkey (AOF persistence) and the gateway with its dashboard
    on http://127.0.0.1:8080, until Ctrl-C.

    Other herald commands and herald.Client() without a URL find the embedded server through
    the data directory. With --url only the gateway runs, for that server.
    """
    try:
        from herald.gateway.serve import gateway_config, loop_factory, run_gateway
    except ImportError as exc:
        _fail(f"herald serve needs the gateway: pip install 'herald-pubsub[serve]' ({exc})")

    # Ctrl-C and SIGTERM are caught from the first moment: one that arrives while the server
    # starts stops it as soon as it runs (a runner that started this process in the background
    # may have left SIGINT ignored, and the default handler would not be there either).
    stopping = threading.Event()
    _catch_stop_signals(stopping)

    console = Console()
    config = None
    if not no_gateway:
        try:
            config = gateway_config(
                host=host,
                auth_key_file=auth_key_file,
                auth_jwks_file=auth_jwks_file,
                auth_issuer=auth_issuer,
                auth_audience=auth_audience,
                auth_algorithms=tuple(auth_algorithms),
                allowed_hosts=tuple(allowed_hosts),
                allowed_origins=tuple(allowed_origins),
                metrics=metrics,
                metrics_token_file=metrics_token_file,
                max_connections=max_connections,
                insecure=insecure,
                tracing=tracing,
            )
            loop_factory(loop)  # uvloop not installed: said before anything starts
        except ValueError as exc:
            _fail(str(exc))
        if insecure and config is not None and config.auth is None:
            console.print(
                f"[bold red]warning:[/] --insecure: the gateway on {host} has no auth; anyone "
                "who can reach it may publish, read history and replay dead letters"
            )
    if not no_gateway and port and not _port_free(host, port):
        _fail(f"port {port} on {host} is in use: pass --port (0 for a free one)")
    if url is not None:
        if no_gateway:
            _fail("--url with --no-gateway leaves nothing to run")
        embedded_only = {
            "--data-dir": data_dir is not None,
            "--valkey-port": valkey_port is not None,
            "--unix-socket": unix_socket,
            "--fsync": fsync != "everysec",
        }
        if given := [name for name, used in embedded_only.items() if used]:
            _fail(f"{', '.join(given)} apply to the embedded server, not to --url's")
        run_gateway(url, host, port, console, lambda: True, config, stopping=stopping, loop=loop)
        return
    data_dir = data_dir or default_data_dir()
    try:
        running = discover(data_dir)
    except herald.HeraldError as exc:
        _fail(str(exc))
    if running:
        _fail(f"a Herald server is already running (data directory {data_dir})")
    # Other local users must not reach the data: a password that only herald.json (0600, in
    # a 0700 directory) holds.
    server = EmbeddedServer(
        data_dir,
        port=valkey_port,
        persist=True,
        owned=True,
        password=new_password(),
        unix_socket=data_dir / "valkey.sock" if unix_socket else None,
        fsync=fsync,
    )
    try:
        server.start()
        write_state(data_dir, server.state())
    except herald.HeraldError as exc:
        server.stop()
        _fail(str(exc))
    console.print(f"[bold green]Herald[/] Valkey running at [bold]{server.display_url}[/]")
    if server.unix_socket is not None:
        console.print(f"unix socket: {server.unix_socket} (mode 0700)")
    every = "every write" if fsync == "always" else "every second"
    console.print(
        f"data directory: {data_dir} (mode 0700; AOF, fsync {every}); "
        f"password in {data_dir / 'herald.json'} (mode 0600)"
    )

    def alive() -> bool:
        return server.process is not None and server.process.poll() is None

    try:
        if no_gateway:
            _wait_for_signal(console, alive, stopping)
        else:
            run_gateway(
                server.url, host, port, console, alive, config, stopping=stopping, loop=loop
            )
    finally:
        # The gateway's event loop gave the signals back to their defaults when it closed: a
        # second Ctrl-C must not cut the server's shutdown short.
        _catch_stop_signals(stopping)
        crashed = not alive()
        server.stop()
        clear_state(data_dir)
    if crashed:
        _fail(f"valkey-server exited unexpectedly; see {server.log_file}")
    console.print("stopped")


def _catch_stop_signals(stopping: threading.Event) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stopping.set())


def _wait_for_signal(console: Console, alive: Any, stopping: threading.Event) -> None:
    console.print("try:  herald sub 'demo.*'    and in another shell:  herald pub demo.hello hi")
    console.print("Ctrl-C to stop")
    while not stopping.wait(0.2) and alive():
        pass


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _parse_headers(values: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--header")
        headers[key] = value
    try:
        check_headers(headers)  # before connecting: the client refuses the same
    except herald.ReservedName as exc:
        raise click.BadParameter(str(exc), param_hint="--header") from None
    return headers


@main.command()
@click.argument("topic")
@click.argument("data", required=False)
@click.option("--json", "as_json", is_flag=True, help="Parse DATA as JSON (default: text).")
@click.option("--header", "-H", multiple=True, help="Message header KEY=VALUE (repeatable).")
@click.option(
    "--type",
    "message_type",
    default=None,
    help="The message type (msg.type), e.g. OrderCreated: union handlers dispatch on it.",
)
@click.option("--count", "-n", type=click.IntRange(min=1), default=1, help="Publish N times.")
@click.option("--confirm", is_flag=True, help="Wait for the server and print receiver counts.")
@click.option(
    "--msg-id",
    default=None,
    help="Durable topics: an idempotency key; the same one within the topic's dedup window "
    "is stored once (one message only).",
)
@click.option(
    "--key", default=None, help="Durable topics: the ordering key (consumers ordered by key)."
)
@click.option(
    "--plain",
    is_flag=True,
    help="Send the payload alone, without Herald's envelope (for redis-cli, redis-py readers).",
)
@UNSHARDED
@URL
def pub(
    topic: str,
    data: str | None,
    as_json: bool,
    header: Sequence[str],
    message_type: str | None,
    count: int,
    confirm: bool,
    msg_id: str | None,
    key: str | None,
    plain: bool,
    unsharded: bool,
    url: str | None,
) -> None:
    """Publish DATA (or each line of standard input) to TOPIC."""
    if plain and header:
        raise click.BadParameter("a message without envelope has no headers", param_hint="--plain")
    if plain and message_type is not None:
        raise click.BadParameter("a message without envelope has no type", param_hint="--plain")
    headers = _parse_headers(header)
    lines = [data] if data is not None else [line.rstrip("\n") for line in sys.stdin]
    payloads: list[Any] = []
    for line in lines:
        if as_json:
            try:
                payloads.append(json.loads(line, parse_constant=_not_json))
            except ValueError as exc:  # JSONDecodeError, or NaN/Infinity (Python's extension)
                raise click.BadParameter(f"not valid JSON: {exc}", param_hint="DATA") from exc
        else:
            payloads.append(line)
    if msg_id is not None and count * len(payloads) != 1:
        raise click.BadParameter(
            "an idempotency key names one message: publish one (no --count, one line)",
            param_hint="--msg-id",
        )
    stored: list[str] = []
    try:
        with herald.Client(url, start_embedded=False, sharded=not unsharded) as hub:
            receivers = 0
            for _ in range(count):
                for payload in payloads:
                    ack = hub.publish(
                        topic,
                        payload,
                        headers=headers or None,
                        # With an idempotency or ordering key, a durable topic's own
                        # default: confirmed, so that the stored offset can be shown.
                        confirm=confirm or (None if msg_id or key else False),
                        msg_id=msg_id,
                        key=key,
                        envelope=False if plain else None,
                        type=message_type,
                    )
                    receivers += ack.receivers if ack else 0
                    if ack is not None and ack.offset is not None:
                        duplicate = " (duplicate: stored before)" if ack.duplicate else ""
                        stored.append(f"{ack.offset}{duplicate}")
            hub.flush()
    except herald.HeraldError as exc:
        _fail(str(exc))
    total = count * len(payloads)
    suffix = f", {receivers} deliveries" if confirm else ""
    click.echo(f"published {total} message(s) to {topic}{suffix}", err=True)
    if msg_id is not None or key is not None:
        for offset in stored:
            click.echo(f"  offset {offset}", err=True)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


@main.command()
@click.argument("patterns", nargs=-1, required=True)
@JSON_LINES
@COUNT
@TIMEOUT
@click.option(
    "--since",
    type=click.IntRange(min=0),
    default=None,
    help="Recoverable topic: start after this offset (one topic).",
)
@click.option(
    "--last",
    type=click.IntRange(min=1),
    default=None,
    help="Recoverable topics: start with the last N kept messages.",
)
@click.option(
    "--foreign",
    type=click.Choice(["bytes", "text", "json"]),
    default="bytes",
    help="Decode payloads published without Herald's envelope (redis-cli, redis-py) as this.",
)
@URL
def sub(
    patterns: Sequence[str],
    as_json: bool,
    count: int | None,
    timeout: float | None,
    since: int | None,
    last: int | None,
    foreign: Literal["bytes", "text", "json"],
    url: str | None,
) -> None:
    """Print messages of topics and glob patterns as they arrive.

    Exits with status 1 if --timeout passes before --count messages arrived.
    """
    console = Console(highlight=False)
    errors = Console(highlight=False, stderr=True)

    def notice(key: str, fields: dict[str, Any], text: str) -> None:
        """A gap or lost history: a JSON line on stderr with --json, else a line of text."""
        if as_json:
            print(json.dumps({key: fields}), file=sys.stderr)
        else:
            errors.print(text)

    def on_gap(gap: herald.Gap) -> None:
        fields = {"since": gap.since, "until": gap.until, "detected": gap.detected}
        notice(
            "gap",
            {**fields, "reason": gap.reason},
            f"[yellow]connection lost: messages published in a window of "
            f"{gap.until - gap.since:.2f}s may have been missed ({gap.reason})[/]",
        )

    def on_history_lost(lost: herald.HistoryLost) -> None:
        fields = {
            "topic": lost.topic,
            "last_offset": lost.last_offset,
            "first_available": lost.first_available,
            "reason": lost.reason,
        }
        notice("history_lost", fields, f"[red]{escape(str(lost))}[/]")

    async def show(msg: herald.Message) -> None:
        _print_message(console, msg, as_json)

    async def run() -> int:
        async with (
            herald.AsyncClient(url, start_embedded=False) as hub,
            hub.subscribe(
                *patterns,
                on_gap=on_gap,
                since=since,
                last=last,
                on_history_lost=on_history_lost,
                foreign=foreign,
            ) as subscription,
        ):
            if not as_json:
                errors.print(f"[dim]subscribed to {', '.join(patterns)}[/]")
            return await take(subscription, count, timeout, show)

    try:
        code = asyncio.run(run())
    except herald.HeraldError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


def _print_message(console: Console, msg: herald.Message, as_json: bool) -> None:
    if as_json:
        key, value = data_field(msg.data)
        record = {
            "topic": msg.topic,
            key: value,
            "id": msg.id,
            "pattern": msg.pattern,
            "headers": msg.headers,
            "timestamp": msg.timestamp,
        }
        if msg.type is not None:
            record["type"] = msg.type
        if msg.offset is not None:
            record["offset"] = msg.offset
        if msg.decode_error is not None:
            record["decode_error"] = str(msg.decode_error)
        print_json(record)
        return
    stamp = time.strftime("%H:%M:%S", time.localtime(msg.timestamp or time.time()))
    key, value = data_field(msg.data)
    data = f"(base64) {value}" if key == "data_b64" else value
    data = data if isinstance(data, str) else json.dumps(data)
    # What a publisher sent is shown, never interpreted: no markup, no escape sequences.
    extra = f" [dim]{shown(str(msg.headers))}[/]" if msg.headers else ""
    console.print(
        f"[dim]{stamp}[/] [bold cyan]{shown(msg.topic)}[/] {shown(data)}{extra}", markup=True
    )
