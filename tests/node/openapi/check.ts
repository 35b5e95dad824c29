// A small client of the Herald gateway written against the TypeScript types that
// openapi-typescript generates from the gateway's /openapi.json (api.ts), type-checked with
// tsc --noEmit, then run with node against the real gateway: every answer it reads must have
// the fields and types the document promised. tests/test_gateway_openapi_client.py drives it;
// target.ts (written by the test) names the gateway and the topics.
import type { components, paths } from "./api.js";
import { BASE, DURABLE, LIVE, RECOVERABLE } from "./target.js";

type Published = components["schemas"]["Published"];
type ApiError = components["schemas"]["Error"];
type Message = components["schemas"]["Message"];
type TopicDetail = components["schemas"]["TopicDetail"];
type Stats = components["schemas"]["Stats"];
type TopicList = paths["/topics"]["get"]["responses"][200]["content"]["application/json"];
type Page = paths["/topics/{topic}/messages"]["get"]["responses"][200]["content"]["application/json"];
type Dead = paths["/topics/{topic}/dead"]["get"]["responses"][200]["content"]["application/json"];
type Replayed =
  paths["/topics/{topic}/dead/replay"]["post"]["responses"][200]["content"]["application/json"];
type Ready = paths["/readyz"]["get"]["responses"][200]["content"]["application/json"];
type Health = paths["/healthz"]["get"]["responses"][200]["content"]["application/json"];
type PublishQuery = NonNullable<paths["/topics/{topic}"]["post"]["parameters"]["query"]>;

function check(ok: boolean, what: string, value?: unknown): asserts ok {
  if (!ok) throw new Error(`${what}: ${JSON.stringify(value)}`);
}

async function call<T>(method: string, path: string, body?: BodyInit, type?: string): Promise<[number, T]> {
  const init: RequestInit = { method };
  if (body !== undefined) init.body = body;
  if (type !== undefined) init.headers = { "content-type": type };
  const response = await fetch(BASE + path, init);
  check(
    (response.headers.get("content-type") ?? "").startsWith("application/json"),
    `${method} ${path} answers JSON`,
    response.headers.get("content-type"),
  );
  return [response.status, (await response.json()) as T];
}

const topicPath = (topic: string) => `/topics/${encodeURIComponent(topic)}`;

function payload(m: Message): unknown {
  // Exactly one of the three payload fields.
  const given = [m.data !== undefined || "data" in m, m.text !== undefined, m.data_b64 !== undefined];
  check(given.filter(Boolean).length === 1, "one payload field", m);
  return "data" in m ? m.data : (m.text ?? m.data_b64);
}

// Publish a JSON value, text and bytes to a recoverable topic, then read them back.
const query: PublishQuery = {};
check(Object.keys(query).length === 0, "query");
for (const [body, type] of [
  [JSON.stringify({ n: 1 }), "application/json"],
  ["hello", "text/plain"],
  [new Uint8Array([0xff, 0x00]), "application/octet-stream"],
] as const) {
  const [status, ack] = await call<Published>("POST", topicPath(RECOVERABLE), body, type);
  check(status === 200, "publish", ack);
  check(ack.topic === RECOVERABLE && typeof ack.receivers === "number", "ack", ack);
  check(typeof ack.offset === "number", "recoverable offset", ack);
}
const [, page] = await call<Page>("GET", `${topicPath(RECOVERABLE)}/messages?limit=10`);
check(page.messages.length === 3, "three stored", page);
const [json, text, bytes] = page.messages;
check(json !== undefined && text !== undefined && bytes !== undefined, "messages", page);
check(JSON.stringify(payload(json)) === '{"n":1}' && json.data !== undefined, "JSON value", json);
check(payload(text) === "hello" && text.text === "hello", "text", text);
check(bytes.data_b64 === "/wA=", "bytes", bytes);
for (const m of page.messages) {
  check(m.type === "message" && m.topic === RECOVERABLE, "message", m);
  check(typeof m.offset === "number" && typeof m.ts === "number" && typeof m.id === "string", "fields", m);
}
check(typeof page.next === "number", "next", page);

// A durable topic: the ack's offset is an entry id; detail, dead letters, replay.
const [, durableAck] = await call<Published>("POST", topicPath(DURABLE), JSON.stringify([1]), "application/json");
check(typeof durableAck.offset === "string", "durable offset", durableAck);
const [, detail] = await call<TopicDetail>("GET", topicPath(DURABLE));
check(detail.kind === "durable" && typeof detail.length === "number", "detail", detail);
check(Array.isArray(detail.groups) && typeof detail.policy.durable === "boolean", "groups", detail);
const [, dead] = await call<Dead>("GET", `${topicPath(DURABLE)}/dead`);
check(Array.isArray(dead.dead_letters), "dead", dead);
const [, replayed] = await call<Replayed>("POST", `${topicPath(DURABLE)}/dead/replay`);
check(typeof replayed.replayed === "object", "replayed", replayed);

// Topics, stats, health.
const [, list] = await call<TopicList>("GET", "/topics");
for (const t of list.topics) {
  check(["live", "recoverable", "durable"].includes(t.kind), "kind", t);
  check(typeof t.subscribers === "number" && typeof t.rate === "number", "summary", t);
}
check(list.topics.some((t) => t.topic === DURABLE), "listed", list);
check(typeof list.patterns === "number", "patterns", list);
const [, stats] = await call<Stats>("GET", "/stats");
check(typeof stats.gateway["published"] === "number", "stats", stats.gateway);
const first = stats.rates.series[0];
check(first !== undefined && typeof first[0] === "number", "series", stats.rates);
const [, ready] = await call<Ready>("GET", "/readyz");
check(ready.status === "ready" && typeof ready.round_trip_ms === "number", "ready", ready);
const [, health] = await call<Health>("GET", "/healthz");
check(health.status === "ok", "health", health);

// Errors: JSON with a code, unknown routes too.
for (const [method, path, status, code] of [
  ["GET", `${topicPath(LIVE)}/messages`, 404, "no_history"],
  ["GET", `${topicPath(LIVE)}/events?since=3`, 409, "not_applicable"],
  ["POST", "/topics/a*b", 400, "invalid_topic"],
  ["GET", "/no/such/route", 404, "not_found"],
  ["DELETE", "/stats", 405, "method_not_allowed"],
] as const) {
  const [got, error] = await call<ApiError>(method, path);
  check(got === status && error.error === code && typeof error.message === "string", path, error);
}

// /metrics: text.
const metrics = await fetch(BASE + "/metrics");
check(metrics.status === 200 && (await metrics.text()).includes("herald_gateway_published_total"), "metrics");
console.log("ok");
