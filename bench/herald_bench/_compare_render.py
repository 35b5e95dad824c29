"""Tables and charts of a comparison result (see compare.py)."""

from __future__ import annotations

from typing import Any

from ._compare_rows import PEERS
from .live import _num, _us

# -- rendering -----------------------------------------------------------------------------------

TITLES = {
    "live": "Live pub/sub, one publisher process -> one subscriber process",
    "fanout-10": "Fan-out: one publisher -> 10 subscribers (connections)",
    "fanout-100": "Fan-out: one publisher -> 100 subscribers (connections)",
    "durable-publish": "Durable publish (stored and acknowledged by the server)",
    "durable-consume": "Durable consume with ack, 4 consumer processes of one group",
    "request": "Request/reply round trips, one in flight",
}


def _title(workload: str) -> str:
    if workload.startswith("latency"):
        return f"Latency at {workload.split('-')[1]} msg/s (publish -> handler)"
    return TITLES[workload]


def _x(v: float | None) -> str:
    if v is None:
        return "-"
    # Two decimals below 2x: a close call (1.04x) must not read as a tie (1.0x).
    return f"{v:.0f}x" if v >= 100 else f"{v:.1f}x" if v >= 2 else f"{v:.2f}x"


def _note(r: dict[str, Any]) -> str:
    if "skipped" in r:
        return f"{r['label']}: **{r['skipped']}**"
    note = str(r["label"])
    if r.get("note"):
        note += f" (**{r['note']}**)"
    if r.get("errors"):
        note += f" (**failed: {r['errors'][0][:160]}**)"
    return note


def format_table(result: dict[str, Any]) -> str:
    """Markdown tables of a :func:`run_compare` result, with the environment and the goals."""
    env = result["environment"]
    par = result["parameters"]
    pk = env["packages"]
    servers = env.get("servers", {})
    lines = [
        f"Herald vs peers, one run: {env['server']} {env['server_version']} (no persistence), "
        f"nats-server {servers.get('nats-server', '-')}, RabbitMQ {servers.get('rabbitmq', '-')}; "
        f"Python {env['python']}, {env['cpu_count']} CPUs; {par['payload_size']} B payloads; "
        f"medians of {par['runs']} run(s) of {par['duration']:g} s; pinned: {result['pinned']}; "
        f"{result['wall_seconds']:.0f} s in all.",
        f"Packages: herald {pk.get('herald')}, redis-py {pk.get('redis')}, hiredis "
        f"{pk.get('hiredis')}, FastStream {pk.get('faststream')}, broadcaster "
        f"{pk.get('broadcaster')}, nats-py {pk.get('nats-py')}, aio-pika {pk.get('aio-pika')}.",
    ]
    for peer, reason in result["unavailable"].items():
        lines.append(f"**{PEERS[peer][0]} not run: {reason}**")
    for workload, rows in result["workloads"].items():
        lines += ["", f"**{_title(workload)}**", ""]
        if workload == "live":
            lines += [
                "| client | published/s | delivered/s | Herald x (delivered) | other load | what |",
                "|---|---:|---:|---:|---:|---|",
            ]
            for r in rows:
                lines.append(
                    f"| {r['row']} | {_num(r.get('published'))} | {_num(r.get('delivered'))} "
                    f"| {_x(r.get('herald_x'))} | {_cores(r)} | {_note(r)} |"
                )
        elif workload.startswith("fanout"):
            lines += [
                "| client | deliveries/s (all subscribers) | delivered of sent | published/s "
                "| Herald x | other load | what |",
                "|---|---:|---:|---:|---:|---:|---|",
            ]
            for r in rows:
                frac = r.get("fraction")
                lines.append(
                    f"| {r['row']} | {_num(r.get('delivered'))} "
                    f"| {'-' if frac is None else f'{frac:.0%}'} | {_num(r.get('published'))} "
                    f"| {_x(r.get('herald_x'))} | {_cores(r)} | {_note(r)} |"
                )
        elif workload.startswith("latency"):
            lines += [
                "| client | achieved/s | p50 | p99 | p99 vs Herald | other load | what |",
                "|---|---:|---:|---:|---:|---:|---|",
            ]
            for r in rows:
                lines.append(
                    f"| {r['row']} | {_num(r.get('achieved'))} | {_us(r.get('p50'))} "
                    f"| {_us(r.get('p99'))} | {_x(r.get('herald_x'))} | {_cores(r)} "
                    f"| {_note(r)} |"
                )
        elif workload == "request":
            lines += [
                "| client | round trips/s | p50 | p99 | Herald x | other load | what |",
                "|---|---:|---:|---:|---:|---:|---|",
            ]
            for r in rows:
                lines.append(
                    f"| {r['row']} | {_num(r.get('rate'))} | {_us(r.get('p50'))} "
                    f"| {_us(r.get('p99'))} | {_x(r.get('herald_x'))} | {_cores(r)} "
                    f"| {_note(r)} |"
                )
        else:
            lines += [
                "| client | msgs/s | Herald x | other load | what |",
                "|---|---:|---:|---:|---|",
            ]
            for r in rows:
                lines.append(
                    f"| {r['row']} | {_num(r.get('rate'))} | {_x(r.get('herald_x'))} "
                    f"| {_cores(r)} | {_note(r)} |"
                )
    if result["goals"]:
        lines += ["", "**Goals**", ""]
        for g in result["goals"]:
            fmt = _us if "latency" in g["check"] else _num
            verdict = "met" if g["met"] else "**not met**"
            lines.append(
                f"- {g['check']}: {verdict} (Herald {fmt(g['herald'])}, "
                f"{g['best_other']} {fmt(g['other'])})"
            )
    lines += [
        "",
        "Herald x = Herald's figure / the row's (throughput), or the row's p99 / Herald's "
        "(latency): above 1 means Herald is ahead. delivered/s = messages the handler got / "
        "(last - first arrival), in the subscriber's process. Fan-out: deliveries to all "
        "subscribers / (last - first arrival over both subscriber processes); 'delivered of "
        "sent' below 100% means subscribers stopped after the run's duration with messages "
        "still queued. other load = CPUs busy with anything but this row's processes and Valkey "
        "(nats-server and RabbitMQ count as other load). Payloads: Herald publishes a dict "
        "whose JSON is 100 B and hands the handler a decoded Message; the others move 100 "
        "bytes (FastStream: the same dict as JSON).",
    ]
    return "\n".join(lines)


def _cores(r: dict[str, Any]) -> str:
    v = r.get("other_cores")
    return "-" if v is None else f"{v:.2f}"


# -- charts --------------------------------------------------------------------------------------

CHARTS = {
    "compare-live.png": ("live", "Live pub/sub end to end (messages/s, log scale)"),
    "compare-fanout.png": ("fanout", "Fan-out deliveries/s to 10 and 100 subscribers (log)"),
    "compare-durable.png": ("durable", "Durable publish; consume with ack (msgs/s, log)"),
    "compare-request.png": ("request", "Request/reply round trips/s, one in flight"),
    "compare-latency.png": ("latency", "p99 latency at a fixed rate (lower is better)"),
}  # fmt: skip

COLORS = {
    "herald": "#d62728",
    "redis-py": "#1f77b4",
    "faststream": "#9467bd",
    "broadcaster": "#8c564b",
    "nats": "#2ca02c",
    "rabbitmq": "#ff7f0e",
    "raw": "#7f7f7f",
}


def write_charts(result: dict[str, Any], directory: str) -> list[str]:
    """Write PNG bar charts of ``result`` into ``directory``; returns the paths written."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    written = []
    for filename, (prefix, title) in CHARTS.items():
        groups = [(w, rows) for w, rows in result["workloads"].items() if w.startswith(prefix)]
        groups = [(w, [r for r in rows if r.get("value")]) for w, rows in groups]
        groups = [(w, rows) for w, rows in groups if rows]
        if not groups:
            continue
        height = sum(len(rows) for _, rows in groups) * 0.32 + len(groups) * 0.6 + 0.8
        fig, axes = plt.subplots(
            len(groups),
            1,
            figsize=(8, height),
            squeeze=False,
            gridspec_kw={"height_ratios": [len(rows) for _, rows in groups]},
        )
        for ax, (workload, rows) in zip(axes[:, 0], groups, strict=True):
            names = [r["row"] for r in rows][::-1]
            values = [r["value"] for r in rows][::-1]
            colors = [COLORS.get(r["peer"], "#333333") for r in rows][::-1]
            bars = ax.barh(names, values, color=colors)
            latency = workload.startswith("latency")
            if prefix not in ("request", "latency"):
                ax.set_xscale("log")
            for bar, r in zip(bars, rows[::-1], strict=True):
                text = (
                    f" p50 {_us(r.get('p50'))}, p99 {_us(r['value'])}"
                    if latency
                    else (" " + _num(r["value"]))
                )
                ax.text(
                    bar.get_width(),
                    bar.get_y() + bar.get_height() / 2,
                    text,
                    va="center",
                    fontsize=8,
                )
            if latency:
                ax.set_xlabel("p99 (us)", fontsize=7)
            ax.set_title(_title(workload), fontsize=9, loc="left")
            ax.tick_params(axis="y", labelsize=8)
            ax.tick_params(axis="x", labelsize=7)
            ax.margins(x=0.35 if latency else 0.15)
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        path = os.path.join(directory, filename)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
