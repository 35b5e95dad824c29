"""15. Hostile input: a bounded mutation fuzzer of the wire-format decoder (the gateway's
WebSocket frames and tokens: :mod:`herald.faults.hostile_gateway`).

Valid frames (envelopes with every flag, batch frames, nested and broken ones) are mutated
(bit flips, truncation, inserted and repeated bytes, overwritten length fields) and fed to
``herald._core.wire.decode`` and to the stream-entry decoder. The decoder's promise: it never
raises and never hangs; what it cannot decode comes back as a message with ``decode_error``.
A watchdog thread reports a call that takes longer than ``hang_after`` as a hang. The seed makes
a run reproducible; ``tests/test_fuzz_wire.py`` runs the Hypothesis version in CI.
"""

from __future__ import annotations

import asyncio
import random
import struct
import threading
import time
import traceback
from typing import Any

from herald._core.streams import decode_entry
from herald._core.wire import Encoder, batch, decode

from ._harness import Scale, summary


def seeds() -> list[bytes]:
    """Valid frames to start from."""
    enc = Encoder("json", b"\x01" * 8, clock=lambda: 1_700_000_000_000_000_000)
    mp = Encoder("msgpack", b"\x02" * 8)
    frames = [
        enc.envelope({"a": [1, 2, {"b": None}]}),
        enc.envelope("text"),
        enc.envelope(b"\x00\xff raw"),
        enc.envelope({"x": 1}, {"traceparent": "00-abc-01", "k": "v"}),
        enc.envelope([1.5, True], offset=41, epoch=7),
        enc.envelope({"y": "z"}, {"h": "1"}, offset=2**63, epoch=2**64 - 1),
        mp.envelope({"m": [1, 2, 3]}),
        b"plain foreign payload",
    ]
    frames.append(batch(frames[:4]))
    frames.append(batch([enc.envelope(i) for i in range(50)]))
    frames.append(batch([frames[-1]]))  # a batch inside a batch: invalid, must not recurse
    return frames


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:  # flip bits
            i = min(pos, len(buf) - 1)
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # truncate
            del buf[pos:]
        elif op == 2:  # insert random bytes
            buf[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == 3 and buf:  # repeat a slice
            j = rng.randrange(len(buf))
            buf[pos:pos] = buf[j : j + rng.randint(1, 64)] * rng.randint(1, 8)
        elif op == 4:  # a 32-bit length or count field overwritten
            value = rng.choice([0, 1, 2**31, 2**32 - 1, rng.randrange(2**32)])
            buf[pos : pos + 4] = struct.pack(">I", value)
        elif op == 5:  # a 64-bit field overwritten
            buf[pos : pos + 8] = struct.pack(">Q", rng.randrange(2**64))
        else:  # deep nesting in the payload
            buf[pos:pos] = rng.choice([b"[", b"{", b"\x91", b"\xdc\xff\xff"]) * rng.randint(1, 5000)
    return bytes(buf)


def fuzz(seconds: float, seed: int = 0) -> dict[str, Any]:
    """Decode mutated frames for ``seconds``; counts of executions and crashes, the slowest call."""
    rng = random.Random(seed)
    corpus = seeds()
    kept = len(corpus)  # the seeds stay; mutants beyond them are replaced oldest first
    state: dict[str, Any] = {"executions": 0, "crashes": 0, "slowest_ms": 0.0, "examples": []}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        raw = mutate(rng, rng.choice(corpus))
        started = time.perf_counter()
        try:
            msgs = decode("t", raw)
            assert msgs, "decode returned no message"
            for m in msgs:
                _ = (m.data, m.headers, m.id, m.offset)
            decode_entry("t", [b"m", raw, b"k", raw[:8]])
        except Exception:
            state["crashes"] += 1
            if len(state["examples"]) < 5:
                state["examples"].append(
                    {"input": raw[:200].hex(), "error": traceback.format_exc(limit=3)}
                )
        took = (time.perf_counter() - started) * 1000
        state["slowest_ms"] = max(state["slowest_ms"], round(took, 3))
        state["executions"] += 1
        if state["executions"] % 50 == 0 and rng.random() < 0.2:
            corpus.append(raw)  # mutants of mutants
            if len(corpus) > 500:
                corpus.pop(kept)
    return state


async def hostile_input(scale: Scale, hang_after: float = 1.0) -> dict[str, Any]:
    """The fuzzer on a thread, watched for hangs."""
    seconds = scale.pick(5.0, 120.0)
    result: dict[str, Any] = {}

    def work() -> None:
        result.update(fuzz(seconds))

    worker = threading.Thread(target=work, name="herald-fuzz", daemon=True)
    worker.start()
    await asyncio.to_thread(worker.join, seconds + 30 * hang_after)
    hangs = 1 if worker.is_alive() else 0
    if hangs:
        result.setdefault("executions", 0)
        result.setdefault("crashes", 0)
    slow = result.get("slowest_ms", 0.0) > hang_after * 1000
    checks = {
        "decoder: crashes == 0": result.get("crashes", 0) == 0,
        "decoder: hangs == 0": hangs == 0 and not slow,
    }
    report = {"scenario": "hostile-input", "seconds": seconds, "hangs": hangs + int(slow), **result}
    try:
        from .hostile_gateway import fuzz_gateway
    except ImportError as exc:  # the gateway's extras are not installed
        report["gateway"] = f"not fuzzed: {exc}"
    else:
        gw = await fuzz_gateway(scale.pick(3.0, 60.0))
        report["gateway"] = gw
        checks["gateway: internal errors == 0"] = gw["internal_errors"] == 0
        checks["gateway: hangs == 0"] = gw["hangs"] == 0
        checks["gateway: bad tokens accepted == 0"] = gw["bad_tokens_accepted"] == 0
    return summary(report, checks)
