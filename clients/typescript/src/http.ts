/** The gateway's HTTP API: publish and history, with `fetch`. */

import { messageFromFrame, payloadBytes } from "./codec.js";
import { type GatewayError, gatewayError, HeraldError, RateLimitedError } from "./errors.js";
import { type EventsOptions, eventStream, type StreamEvent } from "./sse.js";
import type { Frame, HistoryPage, HttpPublishAck } from "./types.js";

/** A token, or a function that returns a fresh one (called for every request and connect). */
export type TokenSource = string | (() => string | Promise<string>);

export interface HttpOptions {
  /** The gateway's base URL, e.g. `http://127.0.0.1:8080`. */
  url: string;
  /** A JWT, when the gateway has auth on. */
  token?: TokenSource;
  /** `fetch` to use (default: the platform's). */
  fetch?: typeof fetch;
}

export interface HttpPublishOptions {
  /** Message headers (sent as `X-Herald-Header-<name>`). */
  headers?: Record<string, string>;
  /** Idempotency key on durable topics. */
  msgId?: string;
  /** Ordering key on durable topics. */
  key?: string;
  /** W3C trace context, copied into the message's headers. */
  traceparent?: string;
  tracestate?: string;
}

export interface HistoryOptions {
  /** The offset (recoverable) or entry id (durable) to read after. */
  after?: number | string;
  /** At most this many messages (the gateway caps it at its `history_limit`). */
  limit?: number;
}

export async function resolveToken(token: TokenSource | undefined): Promise<string | undefined> {
  if (token === undefined) return undefined;
  return typeof token === "function" ? await token() : token;
}

/** HTTP calls to one gateway. Errors are thrown as typed {@link GatewayError}s. */
export class HttpApi {
  readonly url: string;
  #token: TokenSource | undefined;
  #fetch: typeof fetch;

  constructor(options: HttpOptions) {
    this.url = options.url.replace(/\/+$/, "");
    this.#token = options.token;
    const f = options.fetch ?? globalThis.fetch;
    if (typeof f !== "function") throw new HeraldError("no fetch: pass the `fetch` option");
    this.#fetch = f.bind(globalThis);
  }

  /** Use `token` from now on. */
  setToken(token: TokenSource | undefined): void {
    this.#token = token;
  }

  /**
   * `POST /topics/{topic}`: publish `data` (a JSON value; a string is sent as text, a
   * `Uint8Array`, `ArrayBuffer` or other typed array as bytes) and wait for the server.
   */
  async publish(topic: string, data: unknown, options: HttpPublishOptions = {}): Promise<HttpPublishAck> {
    const headers: Record<string, string> = {};
    let body: BodyInit;
    if (data instanceof Uint8Array || data instanceof ArrayBuffer || ArrayBuffer.isView(data)) {
      headers["content-type"] = "application/octet-stream";
      body = payloadBytes(data) as Uint8Array<ArrayBuffer>;
    } else if (typeof data === "string") {
      headers["content-type"] = "text/plain; charset=utf-8";
      body = data;
    } else {
      headers["content-type"] = "application/json";
      body = JSON.stringify(data);
    }
    for (const [name, value] of Object.entries(options.headers ?? {})) {
      headers[`x-herald-header-${name}`] = value;
    }
    if (options.traceparent !== undefined) headers["traceparent"] = options.traceparent;
    if (options.tracestate !== undefined) headers["tracestate"] = options.tracestate;
    const query = new URLSearchParams();
    if (options.msgId !== undefined) query.set("msg_id", options.msgId);
    if (options.key !== undefined) query.set("key", options.key);
    const qs = query.size ? `?${query}` : "";
    return (await this.request("POST", `/topics/${encodeURIComponent(topic)}${qs}`, headers, body)) as HttpPublishAck;
  }

  /** `GET /topics/{topic}/messages`: stored messages of a recoverable or durable topic. */
  async history(topic: string, options: HistoryOptions = {}): Promise<HistoryPage> {
    const query = new URLSearchParams();
    if (options.after !== undefined) query.set("after", String(options.after));
    if (options.limit !== undefined) query.set("limit", String(options.limit));
    const qs = query.size ? `?${query}` : "";
    const page = (await this.request("GET", `/topics/${encodeURIComponent(topic)}/messages${qs}`)) as {
      topic: string;
      messages: Frame[];
      next: number | string | null;
    };
    return { topic: page.topic, next: page.next, messages: page.messages.map((m) => messageFromFrame(m)) };
  }

  /**
   * `GET /topics/{topic}/events`: the topic's messages over server-sent events, the fallback
   * where a WebSocket cannot be used. Reconnects by itself, resuming a recoverable topic
   * after the last offset seen.
   *
   * ```ts
   * for await (const event of client.http.events("prices", { since: 41 })) {
   *   if (event.type === "message") console.log(event.message.offset, event.message.data);
   * }
   * ```
   */
  events(topic: string, options: EventsOptions = {}): AsyncGenerator<StreamEvent, void, undefined> {
    return eventStream((path, headers, signal) => this.#open("GET", path, headers, undefined, signal), topic, options);
  }

  async #open(
    method: string,
    path: string,
    headers: Record<string, string>,
    body?: BodyInit,
    signal?: AbortSignal,
  ): Promise<Response> {
    const token = await resolveToken(this.#token);
    const all: Record<string, string> = { ...headers };
    if (token) all["authorization"] = `Bearer ${token}`;
    const init: RequestInit = { method, headers: all };
    if (body !== undefined) init.body = body;
    if (signal !== undefined) init.signal = signal;
    const response = await this.#fetch(`${this.url}${path}`, init);
    if (!response.ok) throw await errorOf(response);
    return response;
  }

  /**
   * Any call of the HTTP API (`GET /topics`, `/stats`, ...): the parsed JSON answer, or a
   * typed error made of the gateway's `{"error", "message"}`.
   */
  async request(
    method: string,
    path: string,
    headers: Record<string, string> = {},
    body?: BodyInit,
  ): Promise<unknown> {
    const response = await this.#open(method, path, { accept: "application/json", ...headers }, body);
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = undefined;
    }
    if (parsed === undefined) throw new HeraldError(`${method} ${path}: the answer is not JSON`);
    return parsed;
  }
}

/** The typed error of a failed response, made of the gateway's `{"error", "message"}`. */
async function errorOf(response: Response): Promise<GatewayError> {
  const text = await response.text();
  let err: { error?: unknown; message?: unknown } | undefined;
  try {
    err = JSON.parse(text) as typeof err;
  } catch {
    err = undefined;
  }
  const code = typeof err?.error === "string" ? err.error : `http_${response.status}`;
  const message = typeof err?.message === "string" ? err.message : text || response.statusText;
  const error = gatewayError(code, message, response.status);
  const retryAfter = Number(response.headers.get("retry-after") ?? Number.NaN);
  if (error instanceof RateLimitedError && Number.isFinite(retryAfter)) error.retryAfter = retryAfter;
  return error;
}
