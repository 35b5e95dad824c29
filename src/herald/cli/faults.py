"""``herald faults run``: the fault scenarios with message accounting (``docs/guarantees.md``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import click


@click.group(short_help="Fault scenarios that count every message.")
def faults() -> None:
    """Fault scenarios that count every message (see docs/guarantees.md)."""


@faults.command("run")
@click.option(
    "--scenario",
    "-s",
    "names",
    multiple=True,
    help="Scenario name or number (repeatable; default: every runnable one).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
@click.option(
    "--scale",
    type=click.Choice(["smoke", "full"]),
    default="smoke",
    show_default=True,
    help="smoke: seconds per scenario; full: the figures of docs/guarantees.md.",
)
def run_faults(names: Sequence[str], as_json: bool, scale: str) -> None:
    """Run fault scenarios against throwaway local servers; exit 1 if a check fails.

    Example: herald faults run --scenario server-kill --scenario 4 --json
    """
    from herald.faults.runner import find, format_table, run

    try:
        for name in names:
            find(name)
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="--scenario") from None
    reports = run(list(names) or None, scale)
    if as_json:
        click.echo(json.dumps(reports, indent=2, default=str))
    else:
        click.echo(format_table(reports))
    sys.exit(0 if all(r.get("passed", True) for r in reports) else 1)


@faults.command("list")
def list_faults() -> None:
    """List the scenarios and whether they can run here."""
    from herald.faults.runner import SCENARIOS

    for s in SCENARIOS:
        state = "" if s.run else f"  (not runnable yet: needs {s.missing})"
        click.echo(f"{s.number:>2} {s.name:<18} {s.promise}{state}")
