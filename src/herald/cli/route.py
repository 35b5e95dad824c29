"""The ``herald route`` command: a content-based router (``herald.Router``) from the command
line, its rules given as options or in a TOML file; registered by ``cli.py``."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

import herald
from herald import Router
from herald.cli.common import COUNT, FILE, TIMEOUT, URL, print_json

_ARROW = "=>"
#: The outcomes ``--json`` reports, in this order (RouterStats but its per-rule ``rules``).
_COUNTS = ("received", "routed", "published", "unrouted", "failed")


def parse_rule(text: str) -> tuple[str | None, list[str]]:
    """``"total > 100 => orders.big, audit"`` -> (condition, targets); no condition: every
    message (``"=> prices.{sector}"``)."""
    when, sep, to = text.rpartition(_ARROW)
    targets = [t.strip() for t in to.split(",") if t.strip()]
    if not sep or not targets:
        raise click.BadParameter(
            f"{text!r} is not 'CONDITION => TARGET[, TARGET...]'", param_hint="--rule"
        )
    return when.strip() or None, targets


def _load(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint="--rules") from None
    unknown = set(doc) - {"source", "group", "default", "start", "rule"}
    if unknown:
        raise click.BadParameter(
            f"{path}: unknown keys {', '.join(sorted(unknown))} (source, group, default, start, "
            "[[rule]])",
            param_hint="--rules",
        )
    return doc


def _add_file_rules(router: Router, path: Path, rules: Any) -> None:
    if not isinstance(rules, list):
        raise click.BadParameter(f"{path}: 'rule' is a [[rule]] array", param_hint="--rules")
    for i, rule in enumerate(rules, 1):
        if not isinstance(rule, dict) or "to" not in rule or set(rule) - {"name", "when", "to"}:
            raise click.BadParameter(
                f"{path}: rule {i} needs 'to' and may have 'when' and 'name', nothing else",
                param_hint="--rules",
            )
        when = rule.get("when", [])
        when = [when] if isinstance(when, str) else when
        try:
            router.route(*when, to=rule["to"], name=rule.get("name"))
        except (herald.ConfigurationError, TypeError) as exc:
            raise click.BadParameter(f"{path}: rule {i}: {exc}", param_hint="--rules") from None


@click.command(short_help="Route a topic's messages to topics chosen by their content.")
@click.argument("source", required=False)
@click.option(
    "--rule",
    "-r",
    "rules",
    multiple=True,
    metavar="'COND => TOPIC'",
    help="A rule: 'total > 100 => orders.big', several targets comma-separated, no condition "
    "for every message ('=> prices.{sector}'). Tried in order; the first match routes.",
)
@click.option("--default", "default", help="Where messages no rule matches go.")
@click.option(
    "--drop-unmatched",
    is_flag=True,
    help="Drop (ack) messages no rule matches instead of dead-lettering them (durable).",
)
@click.option(
    "--rules",
    "rules_file",
    type=FILE,
    help="A TOML file of rules (source, group, default, start, [[rule]] with when/to/name); "
    "--rule options are added after its rules.",
)
@click.option(
    "--group",
    "-g",
    help="Consume SOURCE (a durable topic) in this consumer group: nothing is lost across "
    "restarts. Without it the router subscribes live (SOURCE may be a pattern).",
)
@click.option(
    "--consumer",
    default=None,
    help="This router's name in the group (default: the host's name). Restarted with the same "
    "name, it routes at once what it had taken but not acked; others wait --ack-wait.",
)
@click.option(
    "--ack-wait",
    type=click.FloatRange(min=0.001),
    default=30.0,
    show_default=True,
    help="Seconds before another router takes over a message one took and did not ack.",
)
@click.option("--start", default=None, help="Where a new group starts: new (default), all, an id.")
@click.option(
    "--foreign",
    type=click.Choice(["json", "text", "bytes"]),
    default="json",
    show_default=True,
    help="How to read payloads published without Herald's envelope (redis-py, redis-cli).",
)
@COUNT
@TIMEOUT
@click.option("--json", "as_json", is_flag=True, help="Print the counters as JSON at exit.")
@URL
def route(
    source: str | None,
    rules: Sequence[str],
    default: str | None,
    drop_unmatched: bool,
    rules_file: Path | None,
    group: str | None,
    consumer: str | None,
    ack_wait: float,
    start: str | None,
    foreign: str,
    count: int | None,
    timeout: float | None,
    as_json: bool,
    url: str | None,
) -> None:
    """Republish each message of SOURCE on the topic(s) chosen by the first rule it matches.

    A condition is FIELD OP VALUE (OP: == != > >= < <= in, not in, contains, ~ for a glob),
    joined by 'and'; FIELD is a dotted path into the payload, or $topic, $type, $header.NAME.
    Targets may be templates filled from the payload: 'prices.{sector}'. Runs until Ctrl-C
    (or --count, --timeout), then prints how many messages each rule routed.

    \b
    herald route orders --group router -r 'total > 100 => orders.big' --default orders.rest
    herald route --rules routes.toml
    """
    doc = _load(rules_file) if rules_file is not None else {}
    source = source or doc.get("source")
    if not isinstance(source, str) or not source:
        raise click.BadParameter("give SOURCE, or 'source' in the --rules file")
    group = group or doc.get("group")
    default = default or doc.get("default")
    start = start or doc.get("start") or "new"
    if drop_unmatched and default is not None:
        raise click.BadParameter("give --default or --drop-unmatched, not both")
    options: dict[str, Any] = {
        "group": group,
        "consumer": consumer or socket.gethostname(),
        "ack_wait": ack_wait,
        "start": start,
        "foreign": foreign,
    }
    code = asyncio.run(
        _run(
            url,
            source,
            options,
            lambda router: _declare(router, rules_file, doc, rules, default, drop_unmatched),
            count,
            timeout,
            as_json,
        )
    )
    sys.exit(code)


def _declare(
    router: Router,
    path: Path | None,
    doc: dict[str, Any],
    rules: Sequence[str],
    default: str | None,
    drop: bool,
) -> None:
    if path is not None and "rule" in doc:
        _add_file_rules(router, path, doc["rule"])
    for text in rules:
        when, targets = parse_rule(text)
        try:
            router.route(*([when] if when else []), to=targets, name=text.strip())
        except herald.ConfigurationError as exc:
            raise click.BadParameter(str(exc), param_hint="--rule") from None
    try:
        if default is not None:
            router.default(default)
        elif drop:
            router.default(None)
    except herald.ConfigurationError as exc:
        raise click.BadParameter(str(exc), param_hint="--default") from None
    if not router.rules and default is None:
        raise click.BadParameter("give at least one --rule or a --default")


async def _run(
    url: str | None,
    source: str,
    options: dict[str, Any],
    declare: Any,
    count: int | None,
    timeout: float | None,
    as_json: bool,
) -> int:
    hub = herald.AsyncClient(url, start_embedded=False)
    router = Router(hub, source, **options)
    group = options["group"]
    declare(router)  # usage errors before connecting
    try:
        await hub.connect()
        await router.start()
    except herald.HeraldError as exc:
        await hub.close()
        raise click.ClickException(str(exc)) from None
    async with hub:
        mode = f"group {group}" if group else "live"
        click.echo(f"routing {source} ({mode}), {len(router.rules)} rule(s)", err=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        deadline = None if timeout is None else loop.time() + timeout
        while not stop.is_set():
            if count is not None and router.stats.received >= count:
                break
            if deadline is not None and loop.time() >= deadline:
                break
            try:
                await asyncio.wait_for(stop.wait(), 0.05)
            except TimeoutError:
                pass
        await router.stop()
    _report(router, as_json)
    return 0


def _report(router: Router, as_json: bool) -> None:
    stats = router.stats
    if as_json:
        counts = {name: getattr(stats, name) for name in _COUNTS}
        print_json(
            {"source": router.source, "group": router.group, "counters": router.counters, **counts}
        )
        return
    width = max(len(name) for name in router.counters)
    for name, n in router.counters.items():
        click.echo(f"{name:<{width}}  {n}")
    click.echo(f"received {stats.received}, published {stats.published}, failed {stats.failed}")
