"""Publishing to a durable topic with an ordering key: ``publish(..., key="customer-42")``.

The key is stored in the entry's field ``k`` (next to the frame in ``m``), so it costs nothing
in the wire format and reaches consumers (``msg.key``), dead letters and replays with the entry.
One script per publish, as for idempotent publishes: the dedup check, XADD with the key, and
the live PUBLISH of the same frame.
"""

from __future__ import annotations

from herald._core.resp import Arg
from herald._core.streams import TRIM, DurableTopic, Script, dedup_key
from herald._errors import ConfigurationError

from .publish import Scripts

PUBLISH_KEYED = Script(
    "publish_keyed",
    r"""
-- KEYS: stream [, dedup key]; ARGV: channel, dedup window ms, ordering key, frame
local dedup = KEYS[2]
if dedup then
  local first = redis.call('GET', dedup)
  if first then return {first, 1, 0} end
end
local id = redis.call('XADD', KEYS[1], '*', 'm', ARGV[4], 'k', ARGV[3])
if dedup then redis.call('SET', dedup, id, 'PX', ARGV[2]) end
return {id, 0, redis.call('PUBLISH', ARGV[1], ARGV[4])}
""",
)


def validate_key(key: object) -> str:
    if not isinstance(key, str) or not key or len(key) > 1024:
        raise ConfigurationError("key must be a non-empty str of at most 1024 characters")
    return key


async def publish_keyed(
    scripts: Scripts,
    spec: DurableTopic,
    frame: bytes,
    key: str,
    msg_id: str | None,
    confirm: bool,
    timeout: float | None,
) -> tuple[str, bool, int] | None:
    """Store (with ``key``) and publish one message; as ``_durable.publish``."""
    if msg_id is not None and spec.dedup_ms > 0:
        keys: tuple[Arg, ...] = (spec.stream_raw, dedup_key(spec.topic, msg_id))
    else:
        keys = (spec.stream_raw,)
    args = (spec.topic, spec.dedup_ms, key, frame)
    if spec.trim_due():
        scripts.send(TRIM, (spec.stream_raw,), spec.trim_args)
    if not confirm:
        if scripts.link.blocked:
            await scripts.link.wait_writable(timeout)
        scripts.send(PUBLISH_KEYED, keys, args)
        return None
    offset, duplicate, receivers = await scripts.call(PUBLISH_KEYED, keys, args)
    return offset.decode(), bool(duplicate), int(receivers)
