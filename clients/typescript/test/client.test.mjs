// The client against a real gateway on a real Valkey (started by tests/test_typescript_client.py).
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";

import {
  ConnectionClosedError,
  ForbiddenError,
  GatewayError,
  HeraldClient,
  InvalidTopicError,
  NotApplicableError,
  NotFoundError,
  ReservedNameError,
  UnauthorizedError,
} from "../dist/index.js";
import { env, next, proxy, take, token } from "./helpers.mjs";

const URL = env("HERALD_GATEWAY_URL");
const AUTH_URL = env("HERALD_AUTH_GATEWAY_URL");
const OTHER_URL = env("HERALD_OTHER_GATEWAY_URL"); // a second open gateway on the same Valkey
const PREFIX = env("HERALD_TOPIC_PREFIX");
const RECOVERABLE = env("HERALD_RECOVERABLE_TOPICS").split(",");
const SHORT_HISTORY = env("HERALD_SHORT_HISTORY_TOPIC");
const AUTH_RECOVERABLE = env("HERALD_AUTH_RECOVERABLE_TOPIC");
const AUTH_RECOVERABLE_2 = env("HERALD_AUTH_RECOVERABLE_TOPIC_2");
const FAST = { initialDelay: 20, maxDelay: 200 };

const clients = [];
function client(options = {}) {
  const c = new HeraldClient({ url: URL, reconnect: FAST, ...options });
  clients.push(c);
  return c;
}
// Each test closes its clients: the gateway may cap connections per client address.
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

test("publish over WebSocket and HTTP reaches a subscriber, in order", async () => {
  const c = client();
  await c.connect();
  const topic = `${PREFIX}.roundtrip`;
  const sub = await c.subscribe(topic);
  const got = take(sub, 5);
  const ack = await c.publish(topic, { n: 1 }, { headers: { traceparent: "t" } });
  assert.equal(ack.receivers, 1);
  await c.publish(topic, "two", { confirm: false });
  const httpAck = await c.http.publish(topic, { n: 3 }, { headers: { k: "v" } });
  assert.deepEqual(httpAck, { topic, receivers: 1 });
  await c.http.publish(topic, new Uint8Array([0xff, 0x00, 0x01]));
  await c.publish(topic, new TextEncoder().encode("utf-8 bytes")); // bytes, even valid UTF-8
  const messages = await got;
  assert.deepEqual(
    messages.map((m) => m.data),
    [{ n: 1 }, "two", { n: 3 }, new Uint8Array([0xff, 0x00, 0x01]), new TextEncoder().encode("utf-8 bytes")],
  );
  // Which field the payload came in: text is told apart from a JSON value, bytes from both.
  assert.deepEqual(messages.map((m) => m.kind), ["json", "text", "json", "bytes", "bytes"]);
  assert.deepEqual(messages[0].headers, { traceparent: "t" });
  assert.deepEqual(messages[2].headers, { k: "v" });
  assert.equal(messages[0].topic, topic);
  assert.equal(messages[0].subscription, topic);
  assert.equal(typeof messages[0].id, "string");
  assert.equal(typeof messages[0].ts, "number");
  await sub.unsubscribe();
  assert.equal(sub.active, false);
  assert.equal(c.subscriptions.size, 0);
  assert.ok((await c.ping()) >= 0);
});

test("a pattern subscription gets every matching topic, and says which pattern", async () => {
  const c = client();
  await c.connect();
  const pattern = `${PREFIX}.pat.*`;
  const seen = [];
  const sub = await c.subscribe(pattern, (msg) => seen.push(msg));
  const got = take(sub, 2);
  await c.publish(`${PREFIX}.pat.a`, 1);
  await c.publish(`${PREFIX}.nomatch`, 2);
  await c.http.publish(`${PREFIX}.pat.b`, 3);
  const messages = await got;
  assert.deepEqual(
    messages.map((m) => [m.topic, m.subscription, m.data]),
    [
      [`${PREFIX}.pat.a`, pattern, 1],
      [`${PREFIX}.pat.b`, pattern, 3],
    ],
  );
  assert.equal(seen.length, 2); // the handler saw the same
  // async iteration, ended by break (which unsubscribes)
  const iterated = [];
  const sub2 = await c.subscribe(`${PREFIX}.iter.*`);
  const loop = (async () => {
    for await (const msg of sub2) {
      iterated.push(msg.data);
      if (iterated.length === 3) break;
    }
  })();
  for (const i of [1, 2, 3]) await c.publish(`${PREFIX}.iter.x`, i);
  await loop;
  assert.deepEqual(iterated, [1, 2, 3]);
  assert.equal(sub2.active, false);
});

test("resume from an offset (since, last) on a recoverable topic, and history_lost", async () => {
  const c = client();
  await c.connect();
  const topic = RECOVERABLE[0];
  const offsets = [];
  for (let i = 1; i <= 5; i++) offsets.push((await c.http.publish(topic, i)).offset);
  for (let i = 1; i < 5; i++) assert.equal(offsets[i], offsets[i - 1] + 1);
  const page = await c.http.history(topic, { after: offsets[2] });
  assert.deepEqual(page.messages.map((m) => m.data), [4, 5]);
  assert.deepEqual(page.messages.map((m) => m.kind), ["json", "json"]);

  const got = take(await c.subscribe(topic, { since: offsets[1] }), 3);
  const messages = await got;
  assert.deepEqual(messages.map((m) => m.offset), offsets.slice(2));
  assert.deepEqual(messages.map((m) => m.data), [3, 4, 5]);
  assert.equal(typeof messages[0].epoch, "number");

  const other = client();
  await other.connect();
  const lastTwo = await take(await other.subscribe(topic, { last: 2 }), 2);
  assert.deepEqual(lastTwo.map((m) => m.data), [4, 5]);

  // The short history keeps 3: resuming from the first offset cannot be complete.
  for (let i = 1; i <= 10; i++) await c.http.publish(SHORT_HISTORY, i);
  const lostEvent = next(c, "history_lost");
  const sub = await c.subscribe(SHORT_HISTORY, { since: 1 });
  const lost = await lostEvent;
  assert.equal(lost.topic, SHORT_HISTORY);
  assert.equal(lost.subscription, SHORT_HISTORY);
  assert.equal(lost.last_offset, 1);
  assert.equal(typeof lost.reason, "string");
  // What history is left (8, 9, 10) comes, then live messages: the subscription goes on.
  const all = [];
  sub.on("message", (m) => all.push(m));
  await c.publish(SHORT_HISTORY, "live");
  while (all.at(-1)?.data !== "live") await next(sub, "message");
  const seen = all.map((m) => m.offset);
  assert.deepEqual(seen, [...seen].sort((a, b) => a - b));
  assert.ok(seen.at(-1) === 11, JSON.stringify(seen));
});

test("after a broken connection the client reconnects and resumes: offsets contiguous", async () => {
  const topic = RECOVERABLE[1];
  const second = RECOVERABLE[0]; // resumed with the first, in one request: since per topic
  const net = await proxy(URL);
  const sent = [];
  class Recording extends WebSocket {
    send(data) {
      sent.push(JSON.parse(data));
      super.send(data);
    }
  }
  try {
    const c = client({ url: net.url, WebSocket: Recording });
    const direct = client(); // publishes around the proxy
    await c.connect();
    const received = [];
    const sub = await c.subscribe(topic); // a plain subscription: resumed by itself
    sub.on("message", (m) => received.push(m));
    const gaps = [];
    sub.on("gap", (g) => gaps.push(g));
    const other = await c.subscribe(second);
    const otherReceived = [];
    other.on("message", (m) => otherReceived.push(m));
    other.on("gap", (g) => gaps.push(g));
    for (let i = 1; i <= 5; i++) await direct.http.publish(topic, i);
    await direct.http.publish(second, "before");
    while (received.length < 5) await next(sub, "message");
    while (otherReceived.length < 1) await next(other, "message");

    const disconnected = next(c, "disconnect");
    const reopened = next(c, "open", 5000, (e) => e.reconnect);
    net.cut();
    const closed = await disconnected;
    assert.equal(closed.code, 1006);
    for (let i = 6; i <= 10; i++) await direct.http.publish(topic, i); // while it is away
    await direct.http.publish(second, "away");
    await reopened;
    const resumed = sent.filter((f) => f.op === "subscribe" && typeof f.since === "object");
    assert.deepEqual(resumed.map((f) => f.since), [
      { [topic]: received[4].offset, [second]: otherReceived[0].offset },
    ]);
    for (let i = 11; i <= 15; i++) await c.publish(topic, i);
    while (received.length < 15) await next(sub, "message");
    await new Promise((r) => setTimeout(r, 100)); // nothing more (no duplicate) comes
    const first = received[0].offset;
    assert.deepEqual(
      received.map((m) => m.offset),
      Array.from({ length: 15 }, (_, i) => first + i),
    );
    assert.deepEqual(received.map((m) => m.data), Array.from({ length: 15 }, (_, i) => i + 1));
    assert.deepEqual(gaps, []); // resumed: nothing was missed
    assert.equal(sub.lastOffset(), first + 14);
    while (otherReceived.length < 2) await next(other, "message");
    assert.deepEqual(otherReceived.map((m) => [m.kind, m.data]), [["text", "before"], ["text", "away"]]);
    assert.equal(otherReceived[1].offset, otherReceived[0].offset + 1);
  } finally {
    await net.close();
  }
});

test("a gateway going away: the client resumes through another one, offsets contiguous", async () => {
  const topic = RECOVERABLE[3];
  const net = await proxy(URL);
  try {
    const c = client({ url: net.url });
    const direct = client({ url: OTHER_URL });
    await c.connect();
    const sub = await c.subscribe(topic, { last: 1 });
    const received = [];
    sub.on("message", (m) => received.push(m));
    for (let i = 1; i <= 3; i++) await direct.http.publish(topic, i);
    while (received.length < 3) await next(sub, "message");
    const reopened = next(c, "open", 5000, (e) => e.reconnect);
    net.retarget(OTHER_URL); // the load balancer's other gateway
    net.cut();
    for (let i = 4; i <= 6; i++) await direct.http.publish(topic, i);
    await reopened;
    for (let i = 7; i <= 9; i++) await direct.http.publish(topic, i);
    while (received.length < 9) await next(sub, "message");
    await new Promise((r) => setTimeout(r, 100)); // nothing more (no duplicate) comes
    const first = received[0].offset;
    assert.deepEqual(received.map((m) => m.offset), Array.from({ length: 9 }, (_, i) => first + i));
    assert.deepEqual(received.map((m) => m.data), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  } finally {
    await net.close();
  }
});

test("a link that stops answering is detected by ping and replaced", async () => {
  const net = await proxy(URL);
  try {
    const c = client({ url: net.url, pingInterval: 100, requestTimeout: 300 });
    const direct = client();
    await c.connect();
    const sub = await c.subscribe(`${PREFIX}.frozen`);
    const disconnected = next(c, "disconnect", 5000);
    const reopened = next(c, "open", 5000, (e) => e.reconnect);
    net.freeze(); // no FIN, no RST: only the missing pong tells
    assert.deepEqual(await disconnected, { code: 1006, reason: "no answer to a ping" });
    await reopened;
    const got = take(sub, 1);
    await direct.http.publish(`${PREFIX}.frozen`, "again");
    assert.equal((await got)[0].data, "again");
  } finally {
    await net.close();
  }
});

test("server-sent events: resume with since, then after a cut with Last-Event-ID", async () => {
  const topic = RECOVERABLE[2];
  const net = await proxy(URL);
  const abort = new AbortController();
  try {
    const c = client({ url: net.url });
    const direct = client(); // publishes around the proxy
    const offsets = [];
    for (let i = 1; i <= 3; i++) offsets.push((await direct.http.publish(topic, i)).offset);
    const received = [];
    const stream = c.http.events(topic, { since: offsets[0], signal: abort.signal, reconnect: FAST });
    for await (const event of stream) {
      assert.equal(event.type, "message", JSON.stringify(event));
      received.push(event.message);
      if (received.length === 2) {
        net.cut();
        for (let i = 4; i <= 5; i++) await direct.http.publish(topic, i);
      }
      if (received.length === 4) break;
    }
    assert.deepEqual(received.map((m) => m.data), [2, 3, 4, 5]);
    const first = received[0].offset;
    assert.deepEqual(received.map((m) => m.offset), [first, first + 1, first + 2, first + 3]);
    await assert.rejects(c.http.events("bad topic").next(), InvalidTopicError);

    // A live topic cannot be resumed: after the cut the stream says so with a gap.
    const live = `${PREFIX}.sse.live`;
    const events = [];
    const stream2 = c.http.events(live, { signal: abort.signal, reconnect: FAST });
    const reading = (async () => {
      for await (const event of stream2) {
        events.push(event);
        if (event.type === "gap") return;
      }
    })();
    while ((await direct.http.publish(live, "first")).receivers === 0) {
      await new Promise((r) => setTimeout(r, 20)); // until the stream is subscribed
    }
    while (events.length === 0) await new Promise((r) => setTimeout(r, 20));
    net.cut();
    await reading;
    assert.equal(events[0].type, "message");
    assert.equal(events.at(-1).type, "gap");
    assert.equal(events.at(-1).gap.subscription, live);
  } finally {
    abort.abort();
    await net.close();
  }
});

test("the gateway closing the socket (a frame over its limit, 1009): reconnect and resubscribe", async () => {
  const c = client();
  await c.connect();
  const pattern = `${PREFIX}.drop.*`;
  const sub = await c.subscribe(pattern);
  const gap = next(sub, "gap");
  const disconnected = next(c, "disconnect");
  const reconnecting = next(c, "reconnecting");
  const reopened = next(c, "open", 5000, (e) => e.reconnect);
  await assert.rejects(c.publish(`${PREFIX}.drop.x`, "x".repeat(70_000)), (err) => {
    assert.ok(err instanceof ConnectionClosedError, String(err));
    assert.equal(err.code, 1009);
    return true;
  });
  assert.equal((await disconnected).code, 1009);
  assert.equal((await reconnecting).attempt, 1);
  await reopened;
  const g = await gap; // a live pattern cannot be resumed: the client says so
  assert.equal(g.local, true);
  assert.equal(g.subscription, pattern);
  assert.equal(c.state, "open");
  const got = take(sub, 1);
  await c.http.publish(`${PREFIX}.drop.y`, "after");
  assert.equal((await got)[0].data, "after");
});

test("error frames and HTTP errors are typed errors; the connection stays", async () => {
  const c = client();
  await c.connect();
  const expect = async (promise, cls, code) =>
    assert.rejects(promise, (err) => {
      assert.ok(err instanceof cls, `${err} is not a ${cls.name}`);
      assert.ok(err instanceof GatewayError);
      assert.equal(err.code, code);
      assert.equal(typeof err.message, "string");
      return true;
    });
  await expect(c.publish("_herald.inbox.x", 1), ReservedNameError, "reserved_topic");
  await expect(
    c.publish(`${PREFIX}.err`, 1, { headers: { "herald-reply-to": "x" } }),
    ReservedNameError,
    "reserved_header",
  );
  await expect(c.subscribe("bad topic"), InvalidTopicError, "invalid_topic");
  assert.equal(c.subscriptions.size, 0); // a refused subscription is not kept
  await expect(c.subscribe(`${PREFIX}.p.*`, { since: 0 }), NotApplicableError, "not_applicable");
  // A live topic keeps no offsets: since and last are refused, and nothing is subscribed.
  await expect(c.subscribe(`${PREFIX}.live`, { since: 0 }), NotApplicableError, "not_applicable");
  await expect(c.subscribe(`${PREFIX}.live`, { last: 1 }), NotApplicableError, "not_applicable");
  await assert.rejects(c.http.events(`${PREFIX}.live`, { since: 0 }).next(), (err) => {
    assert.ok(err instanceof NotApplicableError);
    assert.equal(err.status, 409);
    return true;
  });
  assert.equal(c.subscriptions.size, 0);
  await expect(c.publish("bad topic*", 1), InvalidTopicError, "invalid_topic");
  await expect(c.http.history(`${PREFIX}.live`), NotApplicableError, "no_history");
  await assert.rejects(c.http.publish("_herald.inbox.x", 1), (err) => {
    assert.ok(err instanceof ReservedNameError);
    assert.equal(err.status, 403);
    return true;
  });
  // Unknown routes and methods answer JSON too.
  await assert.rejects(c.http.request("GET", "/no/such/route"), (err) => {
    assert.ok(err instanceof NotFoundError, String(err));
    assert.deepEqual([err.code, err.status], ["not_found", 404]);
    return true;
  });
  await assert.rejects(c.http.request("DELETE", "/healthz"), (err) => {
    assert.ok(err instanceof NotFoundError, String(err));
    assert.deepEqual([err.code, err.status], ["method_not_allowed", 405]);
    return true;
  });
  assert.ok((await c.ping()) >= 0);
  assert.equal(c.state, "open");
});

test("auth: a token's grants, refusals as typed errors, and reconnecting with a fresh token", async () => {
  const grants = { publish: [`${PREFIX}.auth.*`], subscribe: [`${PREFIX}.auth.*`] };
  const refused = client({ url: AUTH_URL });
  await assert.rejects(refused.connect(), ConnectionClosedError);
  await assert.rejects(refused.http.publish(`${PREFIX}.auth.a`, 1), (err) => {
    assert.ok(err instanceof UnauthorizedError);
    assert.equal(err.status, 401);
    return true;
  });

  const c = client({ url: AUTH_URL, token: token(grants) });
  await c.connect();
  // since/last need the history grant too; SSE carries the token as a header.
  await assert.rejects(c.subscribe(`${PREFIX}.auth.h`, { since: 0 }), ForbiddenError);
  await assert.rejects(c.http.events(`${PREFIX}.other`).next(), ForbiddenError);
  const abort = new AbortController();
  const sse = c.http.events(`${PREFIX}.auth.sse`, { signal: abort.signal });
  const first = sse.next();
  while ((await c.http.publish(`${PREFIX}.auth.sse`, "sse")).receivers === 0) {
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal((await first).value.message.data, "sse");
  abort.abort();
  const sub = await c.subscribe(`${PREFIX}.auth.*`);
  const got = take(sub, 2);
  await c.publish(`${PREFIX}.auth.a`, "ws");
  await c.http.publish(`${PREFIX}.auth.b`, "http");
  assert.deepEqual((await got).map((m) => m.data), ["ws", "http"]);
  await assert.rejects(c.subscribe(`${PREFIX}.other`), ForbiddenError);
  await assert.rejects(c.publish(`${PREFIX}.other`, 1), ForbiddenError);
  await assert.rejects(c.http.publish(`${PREFIX}.other`, 1), (err) => {
    assert.ok(err instanceof ForbiddenError);
    assert.equal(err.status, 403);
    return true;
  });

  // Without the history grant a recoverable topic cannot be resumed: after a cut the client
  // follows it live again, with a gap, instead of losing the subscription. Two such topics are
  // resumed in one request, refused whole (forbidden), then each on its own, then live.
  const net = await proxy(AUTH_URL);
  try {
    const p = client({ url: net.url, token: token(grants) });
    await p.connect();
    const recs = [await p.subscribe(AUTH_RECOVERABLE), await p.subscribe(AUTH_RECOVERABLE_2)];
    const got1 = recs.map((rec) => take(rec, 1));
    await c.http.publish(AUTH_RECOVERABLE, 1);
    await c.http.publish(AUTH_RECOVERABLE_2, 1);
    for (const got of got1) assert.equal(typeof (await got)[0].offset, "number");
    const gaps = recs.map((rec) => next(rec, "gap"));
    const reopened = next(p, "open", 5000, (e) => e.reconnect);
    net.cut();
    await reopened;
    for (const gap of gaps) assert.equal((await gap).local, true);
    const got2 = recs.map((rec) => take(rec, 1));
    await c.http.publish(AUTH_RECOVERABLE, 2);
    await c.http.publish(AUTH_RECOVERABLE_2, 2);
    for (const [i, got] of got2.entries()) {
      assert.equal(recs[i].active, true);
      assert.equal((await got)[0].data, 2);
    }
  } finally {
    await net.close();
  }

  // A new token that grants less: the gateway drops what it no longer grants.
  const narrow = await c.subscribe(`${PREFIX}.auth.a`);
  const ended = next(sub, "end");
  const errored = next(c, "error");
  await c.authenticate(token({ subscribe: [`${PREFIX}.auth.a`], publish: [] }));
  // authenticated comes first, then unsubscribed: authenticate() resolves after both.
  assert.equal(sub.active, false);
  assert.ok((await ended) instanceof ForbiddenError);
  assert.ok((await errored) instanceof ForbiddenError);
  assert.equal(sub.active, false);
  assert.equal(narrow.active, true);
  assert.deepEqual([...c.subscriptions.keys()], [`${PREFIX}.auth.a`]);
  await assert.rejects(c.publish(`${PREFIX}.auth.a`, 1), ForbiddenError);

  // Tokens that expire in 2 to 3 s: the gateway closes with 1008 "token expired". With a token
  // function the client reconnects with a fresh one; with a fixed token it stops.
  let calls = 0;
  const renewing = client({
    url: AUTH_URL,
    token: () => (calls++ === 0 ? token(grants, 3) : token(grants)),
  });
  const fixed = client({ url: AUTH_URL, token: token(grants, 3) });
  await Promise.all([renewing.connect(), fixed.connect()]);
  const renewed = await renewing.subscribe(`${PREFIX}.auth.*`);
  const expired = next(renewing, "disconnect", 5000);
  const reopened = next(renewing, "open", 5000, (e) => e.reconnect);
  const gaveUp = next(fixed, "close", 5000);
  assert.deepEqual(await expired, { code: 1008, reason: "token expired" });
  await reopened;
  assert.ok(calls >= 2);
  const after = take(renewed, 1);
  await renewing.publish(`${PREFIX}.auth.c`, "renewed");
  assert.equal((await after)[0].data, "renewed");
  const { error } = await gaveUp;
  assert.ok(error instanceof UnauthorizedError, String(error));
  assert.equal(fixed.state, "closed");
});
