// Pure parts of the client: no gateway needed.
import assert from "node:assert/strict";
import net from "node:net";
import { test } from "node:test";

import {
  backoffDelay,
  BadRequestError,
  GatewayError,
  gatewayError,
  ConnectionClosedError,
  HeraldClient,
  HeraldError,
  HttpApi,
  NotApplicableError,
  NotFoundError,
  RateLimitedError,
  ReservedNameError,
  TooLargeError,
} from "../dist/index.js";
import { base64ToBytes, bytesToBase64, isPattern, messageFromFrame, payloadFields } from "../dist/codec.js";

test("backoff grows by its factor up to the maximum, with jitter in the upper half", () => {
  const options = { initialDelay: 100, maxDelay: 1000, factor: 2 };
  assert.deepEqual(
    [0, 1, 2, 3, 4, 10].map((a) => backoffDelay(a, options, () => 1)),
    [100, 200, 400, 800, 1000, 1000],
  );
  assert.equal(backoffDelay(2, options, () => 0), 200);
});

test("error codes and HTTP statuses map to typed errors", () => {
  const e = gatewayError("reserved_header", "no", undefined, 7);
  assert.ok(e instanceof ReservedNameError && e instanceof GatewayError && e instanceof HeraldError);
  assert.deepEqual([e.code, e.message, e.status, e.requestId], ["reserved_header", "no", undefined, 7]);
  assert.ok(gatewayError("rate_limited", "") instanceof RateLimitedError);
  assert.ok(gatewayError("bad_json", "", 400) instanceof BadRequestError);
  assert.ok(gatewayError("not_found", "", 404) instanceof NotFoundError);
  assert.ok(gatewayError("method_not_allowed", "", 405) instanceof NotFoundError);
  assert.ok(gatewayError("no_history", "", 404) instanceof NotApplicableError);
  assert.ok(gatewayError("not_applicable", "", 409) instanceof NotApplicableError);
  // An unknown code falls back on the HTTP status, then on GatewayError.
  assert.ok(gatewayError("payload_too_big", "", 413) instanceof TooLargeError);
  const unknown = gatewayError("something_new", "?");
  assert.equal(unknown.constructor, GatewayError);
  assert.equal(unknown.code, "something_new");
});

test("payloads and frames: base64 bytes, patterns, message fields", () => {
  const bytes = new Uint8Array(70_000).map((_, i) => i % 256);
  assert.deepEqual(base64ToBytes(bytesToBase64(bytes)), bytes);
  assert.equal(bytesToBase64(new Uint8Array([0, 1, 2])), "AAEC");
  assert.deepEqual([isPattern("a.*"), isPattern("a.b"), isPattern("a?"), isPattern("[ab]")], [true, false, true, true]);
  const msg = messageFromFrame({ type: "message", topic: "t", data_b64: "AAEC", offset: 3, epoch: 9, ts: 1.5, id: "x" });
  assert.deepEqual(msg, {
    topic: "t", subscription: "t", kind: "bytes", data: new Uint8Array([0, 1, 2]), headers: {}, id: "x", ts: 1.5, offset: 3, epoch: 9,
  });
  // The payload is in exactly one of data (JSON), text, data_b64 (bytes, UTF-8 or not).
  const of = (fields) => messageFromFrame({ type: "message", topic: "t", ...fields });
  assert.deepEqual([of({ text: "hi" }).kind, of({ text: "hi" }).data], ["text", "hi"]);
  assert.deepEqual([of({ data: "hi" }).kind, of({ data: "hi" }).data], ["json", "hi"]);
  assert.deepEqual([of({ data: { a: 1 } }).kind, of({ data: { a: 1 } }).data], ["json", { a: 1 }]);
  assert.deepEqual([of({ data: null }).kind, of({ data: null }).data], ["json", null]);
  assert.deepEqual([of({ data_b64: "aGk=" }).kind, of({ data_b64: "aGk=" }).data], ["bytes", new Uint8Array([104, 105])]);
  assert.deepEqual([of({ text: "" }).kind, of({ text: "" }).data], ["text", ""]);
  assert.deepEqual(payloadFields("hi"), { text: "hi" });
  assert.deepEqual(payloadFields({ a: 1 }), { data: { a: 1 } });
  assert.deepEqual(payloadFields(null), { data: null });
  assert.deepEqual(payloadFields(new Uint8Array([0, 1, 2])), { data_b64: "AAEC" });
  assert.deepEqual(payloadFields(new Uint8Array([0, 1, 2]).buffer), { data_b64: "AAEC" });
});

test("an HTTP error's JSON body, status and Retry-After make the typed error", async () => {
  const answers = [
    new Response(JSON.stringify({ error: "rate_limited", message: "slow down" }), {
      status: 429,
      headers: { "retry-after": "2", "content-type": "application/json" },
    }),
    new Response("<html>bad gateway</html>", { status: 502 }),
  ];
  const seen = [];
  const api = new HttpApi({
    url: "http://gateway.test/",
    token: () => "jwt",
    fetch: async (url, init) => {
      seen.push([url, init.method, init.headers]);
      return answers.shift();
    },
  });
  await assert.rejects(api.publish("a b", { x: 1 }, { headers: { k: "v" }, msgId: "m1" }), (err) => {
    assert.ok(err instanceof RateLimitedError);
    assert.deepEqual([err.code, err.message, err.status, err.retryAfter], ["rate_limited", "slow down", 429, 2]);
    return true;
  });
  assert.equal(seen[0][0], "http://gateway.test/topics/a%20b?msg_id=m1");
  assert.equal(seen[0][1], "POST");
  assert.equal(seen[0][2].authorization, "Bearer jwt");
  assert.equal(seen[0][2]["x-herald-header-k"], "v");
  assert.equal(seen[0][2]["content-type"], "application/json");
  await assert.rejects(api.history("t"), (err) => {
    assert.equal(err.constructor, GatewayError);
    assert.deepEqual([err.code, err.status, err.message], ["http_502", 502, "<html>bad gateway</html>"]);
    return true;
  });
});

test("a handshake that never completes fails connect() after requestTimeout", async () => {
  const sockets = [];
  const silent = net.createServer((socket) => sockets.push(socket)); // accepts, never answers
  await new Promise((resolve) => silent.listen(0, "127.0.0.1", resolve));
  try {
    const c = new HeraldClient({ url: `http://127.0.0.1:${silent.address().port}`, requestTimeout: 300 });
    const started = Date.now();
    await assert.rejects(c.connect(), (err) => {
      assert.ok(err instanceof ConnectionClosedError);
      assert.equal(err.reason, "connect timed out");
      return true;
    });
    assert.ok(Date.now() - started < 3000);
    c.close();
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => silent.close(resolve));
  }
});
