// Helpers for the tests: settings from the environment (tests/test_typescript_client.py sets
// them), JWTs, waiting for events, and a TCP proxy whose connections a test can cut.
import { createHmac } from "node:crypto";
import net from "node:net";

export function env(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run these tests through tests/test_typescript_client.py`);
  }
  return value;
}

/** An HS256 JWT for the auth gateway, with `herald` grants, expiring in `ttl` seconds. */
export function token(grants, ttl = 300) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
  const claims = {
    sub: "ts-client",
    aud: env("HERALD_JWT_AUDIENCE"),
    iss: env("HERALD_JWT_ISSUER"),
    exp: Math.floor(Date.now() / 1000) + ttl,
    herald: grants,
  };
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  const sig = createHmac("sha256", env("HERALD_JWT_KEY")).update(body).digest("base64url");
  return `${body}.${sig}`;
}

/** The next `event` of `emitter` (its arguments' first), or a rejection after `timeout` ms. */
export function next(emitter, event, timeout = 5000, accept = () => true) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${event} event in ${timeout} ms`));
    }, timeout);
    const off = emitter.on(event, (value) => {
      if (!accept(value)) return;
      clearTimeout(timer);
      off();
      resolve(value);
    });
  });
}

/** The first `n` messages a subscription delivers from now on. */
export function take(sub, n, timeout = 5000) {
  return new Promise((resolve, reject) => {
    const got = [];
    const timer = setTimeout(() => {
      off();
      reject(new Error(`${got.length} of ${n} messages in ${timeout} ms: ${JSON.stringify(got.map((m) => m.data))}`));
    }, timeout);
    const off = sub.on("message", (msg) => {
      got.push(msg);
      if (got.length === n) {
        clearTimeout(timer);
        off();
        resolve(got);
      }
    });
  });
}

/** A TCP proxy to the gateway: `cut()` breaks every connection through it, as a network
 * failure would (no WebSocket close frame). */
export async function proxy(target) {
  let upstreamUrl = new URL(target);
  const sockets = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(upstreamUrl.port), upstreamUrl.hostname);
    sockets.add(client);
    sockets.add(upstream);
    const done = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const s of [client, upstream]) {
      s.on("error", done);
      s.on("close", done);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    connections: () => sockets.size / 2,
    cut() {
      for (const s of sockets) s.destroy();
    },
    /** Send new connections to another gateway. */
    retarget(url) {
      upstreamUrl = new URL(url);
    },
    /** Stop forwarding on the open connections without closing them (a half-open link). */
    freeze() {
      for (const s of sockets) {
        s.unpipe();
        s.pause();
      }
    },
    close() {
      this.cut();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
