/** The WebSocket client: subscriptions, publishing, resume and reconnect. */

import { type BackoffOptions, backoffDelay } from "./backoff.js";
import { messageFromFrame, payloadFields } from "./codec.js";
import { Emitter } from "./emitter.js";
import {
  ConnectionClosedError,
  ForbiddenError,
  gatewayError,
  HeraldError,
  NotApplicableError,
  RequestTimeoutError,
  UnauthorizedError,
} from "./errors.js";
import { HttpApi, resolveToken, type TokenSource } from "./http.js";
import { type SubscribeOptions, Subscription } from "./subscription.js";
import type { Frame, GapEvent, HistoryLostEvent, Message, PublishAck } from "./types.js";

/** What this client needs of a WebSocket: the browser's, Node 22's global, or the `ws` package's. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  // `any`: the platforms' event types differ; only `data`, `code` and `reason` are read.
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface ClientOptions {
  /** The gateway's base URL, e.g. `http://127.0.0.1:8080` (`ws://.../ws` is derived from it). */
  url: string;
  /** The WebSocket URL, when it is not `<url>/ws` with `http` replaced by `ws`. */
  wsUrl?: string;
  /** A JWT, or a function returning a fresh one (called before every connect). */
  token?: TokenSource;
  /** The WebSocket class (default: the global `WebSocket`; on Node 20 pass `ws`'s, or run
   * node with `--experimental-websocket`). */
  WebSocket?: WebSocketConstructor;
  /** `fetch` for the HTTP calls (default: the global one). */
  fetch?: typeof fetch;
  /** Reconnect delays, or `false` to stay disconnected when the connection drops. */
  reconnect?: BackoffOptions | false;
  /** Milliseconds to wait for the reply to a request, or for a connection to open
   * (default 10,000). */
  requestTimeout?: number;
  /** Milliseconds between pings that detect a dead connection (default 20,000; 0: none). */
  pingInterval?: number;
}

export interface PublishOptions {
  /** Message headers (`herald-` names are reserved and refused by the gateway). */
  headers?: Record<string, string>;
  /** Wait for the server and return the ack (default `true`); `false`: fire and forget. */
  confirm?: boolean;
}

export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

export type ClientEvents = {
  /** Connected (the first time, and after every reconnect, once the subscriptions are back). */
  open: [{ reconnect: boolean }];
  /** The connection dropped; `reconnecting` follows unless the client gives up. */
  disconnect: [{ code: number; reason: string }];
  /** Waiting `delay` ms before reconnect attempt `attempt` (1 for the first). */
  reconnecting: [{ attempt: number; delay: number }];
  /** Closed for good: `close()` was called, reconnecting is off, or it gave up (`error`). */
  close: [{ error?: Error }];
  /** Every message of every subscription. */
  message: [Message];
  gap: [GapEvent];
  history_lost: [HistoryLostEvent];
  /** An `error` frame that answers no request, a subscription refused after a reconnect, or
   * subscriptions the gateway dropped because a new token does not grant them. */
  error: [Error];
};

interface Pending {
  resolve: (frame: Frame) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
  /** A subscribe sent for subscriptions: dropped, not failed, when the connection drops
   * (it is sent again after the reconnect). */
  keep: boolean;
}

const OPEN = 1;
const REPLIES = new Set(["subscribed", "unsubscribed", "ack", "pong", "authenticated", "error"]);

/**
 * A connection to a Herald gateway's WebSocket, and its HTTP API (`client.http`).
 *
 * ```ts
 * const client = new HeraldClient({ url: "http://127.0.0.1:8080" });
 * await client.connect();
 * const sub = await client.subscribe("news.*", (msg) => console.log(msg.topic, msg.data));
 * await client.publish("news.sport", { score: "3:1" });
 * ```
 */
export class HeraldClient extends Emitter<ClientEvents> {
  /** The gateway's HTTP API, with the same token. */
  readonly http: HttpApi;
  #wsUrl: string;
  #token: TokenSource | undefined;
  #WebSocket: WebSocketConstructor;
  #reconnect: BackoffOptions | false;
  #requestTimeout: number;
  #pingInterval: number;
  #ws: WebSocketLike | null = null;
  #state: ConnectionState = "idle";
  #connecting: Promise<void> | null = null;
  #subs = new Map<string, Subscription>();
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #attempt = 0;
  #everOpen = false;
  #downSince: number | undefined;
  #reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  #pingTimer: ReturnType<typeof setInterval> | undefined;

  constructor(options: ClientOptions) {
    super();
    const base = options.url.replace(/\/+$/, "");
    this.#wsUrl = options.wsUrl ?? `${base.replace(/^http/, "ws")}/ws`;
    this.#token = options.token;
    const ws = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (ws === undefined) {
      throw new HeraldError(
        "no WebSocket: pass the `WebSocket` option (e.g. the `ws` package's) or use Node 22+",
      );
    }
    this.#WebSocket = ws;
    this.#reconnect = options.reconnect ?? {};
    this.#requestTimeout = options.requestTimeout ?? 10_000;
    this.#pingInterval = options.pingInterval ?? 20_000;
    const http: ConstructorParameters<typeof HttpApi>[0] = { url: base };
    if (options.token !== undefined) http.token = options.token;
    if (options.fetch !== undefined) http.fetch = options.fetch;
    this.http = new HttpApi(http);
  }

  get state(): ConnectionState {
    return this.#state;
  }

  /** The subscriptions, by topic or pattern. */
  get subscriptions(): ReadonlyMap<string, Subscription> {
    return this.#subs;
  }

  /**
   * Open the WebSocket. Rejects with {@link ConnectionClosedError} when the first attempt
   * fails (a wrong URL, a refused token): after the first success, dropped connections are
   * reconnected with backoff.
   */
  connect(): Promise<void> {
    if (this.#state === "open") return Promise.resolve();
    if (this.#connecting !== null) return this.#connecting;
    if (this.#state === "closed") {
      return Promise.reject(new HeraldError("the client is closed"));
    }
    this.#state = "connecting";
    this.#connecting = this.#open().then(
      () => {
        this.#connecting = null;
      },
      (err: unknown) => {
        this.#connecting = null;
        if (this.#state !== "closed") this.#state = "idle";
        throw err;
      },
    );
    return this.#connecting;
  }

  /** Use `token` from now on: sent to the open connection (`{"op": "auth"}`, extending its
   * expiry) and used for reconnects and HTTP calls. Resolves with the token's `exp`, once the
   * subscriptions the new token does not grant have ended (the gateway sends `authenticated`,
   * then an `unsubscribed` frame for those: a ping after it makes sure that frame was read). */
  async authenticate(token: TokenSource): Promise<number | undefined> {
    this.#token = token;
    this.http.setToken(token);
    if (this.#state !== "open") return undefined;
    const reply = await this.#request({ op: "auth", token: await resolveToken(token) });
    await this.#request({ op: "ping" }).catch(() => undefined);
    return typeof reply["expires"] === "number" ? reply["expires"] : undefined;
  }

  /**
   * Subscribe to a topic or pattern. Resolves once the gateway confirmed; rejects with a
   * typed error when it refused (e.g. {@link ForbiddenError}, {@link InvalidTopicError},
   * {@link NotApplicableError} for `since` on a pattern).
   *
   * Before `connect()` (or while reconnecting) the request waits for the connection.
   */
  async subscribe(
    name: string,
    handler?: ((msg: Message) => void) | SubscribeOptions,
    options: SubscribeOptions = {},
  ): Promise<Subscription> {
    if (typeof handler === "object") {
      options = handler;
      handler = undefined;
    }
    if (this.#state === "closed") throw new HeraldError("the client is closed");
    if (this.#subs.has(name)) throw new HeraldError(`already subscribed to ${name}`);
    const sub = new Subscription(name, options, (s) => this.#unsubscribe(s));
    if (handler !== undefined) sub.on("message", handler);
    this.#subs.set(name, sub);
    if (this.#state === "open") this.#sendSubscribe(sub);
    try {
      await sub._confirmed;
    } catch (err) {
      if (this.#subs.get(name) === sub) this.#subs.delete(name);
      throw err;
    }
    return sub;
  }

  /**
   * Publish over the WebSocket. With `confirm` (the default) resolves with the ack (receivers,
   * offset); rejects with a typed error when the gateway refused, or with
   * {@link ConnectionClosedError} when not connected or the connection dropped before the ack
   * (the message may or may not have been published).
   */
  publish(topic: string, data: unknown, options?: PublishOptions & { confirm?: true }): Promise<PublishAck>;
  publish(topic: string, data: unknown, options: PublishOptions & { confirm: false }): Promise<void>;
  async publish(topic: string, data: unknown, options: PublishOptions = {}): Promise<PublishAck | void> {
    const frame: Record<string, unknown> = { op: "publish", topic, ...payloadFields(data) };
    if (options.headers !== undefined) frame["headers"] = options.headers;
    if (options.confirm === false) {
      this.#send(frame);
      return;
    }
    const ack = await this.#request(frame);
    const out: PublishAck = { receivers: Number(ack["receivers"] ?? 0) };
    const offset = ack["offset"];
    if (typeof offset === "number" || typeof offset === "string") out.offset = offset;
    if (ack["duplicate"] === true) out.duplicate = true;
    return out;
  }

  /** A round trip to the gateway; resolves with its duration in milliseconds. */
  async ping(): Promise<number> {
    const start = Date.now();
    await this.#request({ op: "ping" });
    return Date.now() - start;
  }

  /** Close the connection for good; subscriptions end, pending requests fail. */
  close(): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    clearTimeout(this.#reconnectTimer);
    const ws = this.#ws;
    this.#detach(1000, "closed by the client");
    ws?.close(1000, "bye");
    for (const sub of this.#subs.values()) sub._end();
    this.#subs.clear();
    this.emit("close", {});
  }

  // ---- the connection ----

  async #open(): Promise<void> {
    const token = await resolveToken(this.#token);
    const url = new URL(this.#wsUrl);
    if (token) url.searchParams.set("token", token);
    const ws = new this.#WebSocket(url.toString());
    await new Promise<void>((resolve, reject) => {
      let opened = false;
      let closed = false;
      // A handshake that never completes (a silent network) must not stall reconnecting.
      const timer = setTimeout(() => {
        if (opened) return;
        fail(1006, "connect timed out");
        try {
          ws.close();
        } catch {
          // still connecting: nothing to close
        }
      }, this.#requestTimeout);
      const fail = (code: number, reason: string): void => {
        clearTimeout(timer);
        if (closed) return;
        closed = true;
        if (!opened) {
          const detail = `${code}${reason ? `: ${reason}` : ""}`;
          reject(new ConnectionClosedError(code, reason, `could not connect to ${this.#wsUrl} (${detail})`));
        } else if (this.#ws === ws) {
          this.#lost(code, reason);
        }
      };
      ws.onopen = () => {
        opened = true;
        clearTimeout(timer);
        if (this.#state === "closed") {
          ws.close(1000, "bye");
          reject(new HeraldError("the client is closed"));
          return;
        }
        this.#attach(ws);
        resolve();
      };
      ws.onerror = () => {
        // A close event should follow and say more; some WebSocket implementations (Node 20's
        // undici, on a refused handshake) never send it.
        if (!opened) {
          fail(1006, "");
          try {
            ws.close();
          } catch {
            // still connecting: nothing to close
          }
        } else {
          setTimeout(() => fail(1006, "connection error"), 1000);
        }
      };
      ws.onclose = (event: { code?: number; reason?: string }) => {
        fail(event.code ?? 1006, event.reason ?? "");
      };
    });
  }

  #attach(ws: WebSocketLike): void {
    const reconnect = this.#everOpen;
    this.#ws = ws;
    this.#state = "open";
    this.#everOpen = true;
    this.#attempt = 0;
    ws.onmessage = (event: { data: unknown }) => this.#received(event.data);
    if (this.#pingInterval > 0) {
      this.#pingTimer = setInterval(() => {
        this.#request({ op: "ping" }).catch((err: unknown) => {
          if (err instanceof RequestTimeoutError && this.#ws === ws) {
            // No answer: the connection is dead even if the socket does not know it yet.
            ws.close(4000, "no pong");
            this.#lost(1006, "no answer to a ping");
          }
        });
      }, this.#pingInterval);
    }
    // Subscriptions that cannot resume get a gap for the time the connection was down.
    const down = { since: this.#downSince, until: Date.now() / 1000 };
    const confirmed: Promise<unknown>[] = [];
    const resumable: Subscription[] = [];
    for (const sub of this.#subs.values()) {
      if (reconnect && !sub.isPattern && sub._resumeFields().since !== undefined) resumable.push(sub);
      else confirmed.push(this.#sendSubscribe(sub, reconnect ? down : undefined));
    }
    if (resumable.length > 0) confirmed.push(this.#resubscribe(resumable, down));
    this.#downSince = undefined;
    // "open" once every subscription is back (or refused): what is published from then on
    // reaches them.
    void Promise.allSettled(confirmed).then(() => {
      if (this.#ws === ws) this.emit("open", { reconnect });
    });
  }

  /** Stop using the current socket: timers off, requests failed (subscribes kept). */
  #detach(code: number, reason: string): void {
    const ws = this.#ws;
    this.#ws = null;
    clearInterval(this.#pingTimer);
    if (ws !== null) {
      ws.onmessage = ws.onclose = ws.onerror = ws.onopen = null;
    }
    const error = new ConnectionClosedError(code, reason);
    for (const [id, pending] of this.#pending) {
      clearTimeout(pending.timer);
      this.#pending.delete(id);
      if (!pending.keep || this.#state === "closed") pending.reject(error);
    }
  }

  /** The connection dropped: reconnect with backoff, or give up. */
  #lost(code: number, reason: string): void {
    this.#detach(code, reason);
    this.#downSince = Date.now() / 1000;
    this.emit("disconnect", { code, reason });
    if (this.#state === "closed") return;
    if (this.#reconnect === false) {
      this.#giveUp(new ConnectionClosedError(code, reason));
    } else if (code === 1008 && /token/i.test(reason) && typeof this.#token !== "function") {
      // The same token would be refused again; a token function may give a fresh one.
      this.#giveUp(new UnauthorizedError("unauthorized", reason));
    } else {
      this.#state = "reconnecting";
      this.#scheduleReconnect();
    }
  }

  #scheduleReconnect(): void {
    const options = this.#reconnect === false ? {} : this.#reconnect;
    if (options.maxAttempts !== undefined && this.#attempt >= options.maxAttempts) {
      this.#giveUp(new HeraldError(`gave up reconnecting after ${this.#attempt} attempts`));
      return;
    }
    const delay = backoffDelay(this.#attempt, options);
    this.#attempt += 1;
    this.emit("reconnecting", { attempt: this.#attempt, delay });
    this.#reconnectTimer = setTimeout(() => {
      if (this.#state !== "reconnecting") return;
      this.#open().catch(() => {
        if (this.#state === "reconnecting") this.#scheduleReconnect();
      });
    }, delay);
  }

  #giveUp(error: Error): void {
    this.#state = "closed";
    for (const sub of this.#subs.values()) sub._end(error);
    this.#subs.clear();
    this.emit("close", { error });
  }

  // ---- requests and frames ----

  #send(frame: Record<string, unknown>): void {
    const ws = this.#ws;
    if (ws === null || ws.readyState !== OPEN) {
      throw new ConnectionClosedError(1006, "", "not connected to the gateway");
    }
    ws.send(JSON.stringify(frame));
  }

  #request(frame: Record<string, unknown>, keep = false): Promise<Frame> {
    return new Promise<Frame>((resolve, reject) => {
      const id = this.#nextId++;
      try {
        this.#send({ ...frame, id });
      } catch (err) {
        reject(err);
        return;
      }
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new RequestTimeoutError(`no reply to ${String(frame["op"])} in ${this.#requestTimeout} ms`));
      }, this.#requestTimeout);
      const pending: Pending = { resolve, reject, timer, keep };
      this.#pending.set(id, pending);
    });
  }

  /** A gap event for `sub`: it was not resumed after the connection was down. */
  #localGap(sub: Subscription, down: { since: number | undefined; until: number }): void {
    const gap: GapEvent = {
      subscription: sub.name,
      until: down.until,
      reason: "the connection to the gateway was down: live messages may be missing",
      local: true,
    };
    if (down.since !== undefined) gap.since = down.since;
    sub._gap(gap);
    this.emit("gap", gap);
  }

  /**
   * Resume several topics after a reconnect in one request, with one offset per topic
   * (`"since": {"a": 17, "b": 3}`). The gateway serves a request whole or refuses it whole: when
   * it refuses (a topic no longer recoverable, a token without the `history` grant), each
   * subscription is sent again on its own, which falls back on a live one where it must.
   */
  #resubscribe(subs: Subscription[], down: { since: number | undefined; until: number }): Promise<void> {
    if (subs.length === 1) return this.#sendSubscribe(subs[0] as Subscription, down);
    const since: Record<string, number> = {};
    for (const sub of subs) since[sub.name] = sub._resumeFields().since as number;
    return this.#request({ op: "subscribe", topics: Object.keys(since), since }, true).then(
      () => {
        for (const sub of subs) if (this.#subs.get(sub.name) === sub) sub._confirm();
      },
      async (err: unknown) => {
        if (err instanceof ConnectionClosedError) return; // sent again after the reconnect
        const current = subs.filter((sub) => this.#subs.get(sub.name) === sub);
        await Promise.allSettled(current.map((sub) => this.#sendSubscribe(sub, down)));
      },
    );
  }

  /**
   * Send `sub`'s subscribe request (after a reconnect: `down` says since when); the promise
   * settles when the gateway answered. A resume the gateway refuses that the caller did not
   * ask for (the topic is no longer recoverable, or the token has no `history` grant) falls
   * back on a live subscription, with a gap.
   */
  #sendSubscribe(
    sub: Subscription,
    down?: { since: number | undefined; until: number },
  ): Promise<void> {
    const resume = sub._resumeFields();
    const automatic =
      resume.since !== undefined && sub.options.since === undefined && sub.options.last === undefined;
    const send = (fields: { since?: number; last?: number }): Promise<void> =>
      this.#request({ op: "subscribe", topic: sub.name, ...fields }, true).then(
        () => {
          if (this.#subs.get(sub.name) === sub) sub._confirm();
        },
        (err: unknown) => {
          if (err instanceof ConnectionClosedError) return; // sent again after the reconnect
          // A resume refused (not_applicable: the topic is not, or no longer, recoverable;
          // forbidden: no `history` grant) that the caller did not ask for, or after a
          // reconnect of a subscription the gateway had accepted: go on live, with a gap.
          if (
            (automatic || down !== undefined) &&
            ("since" in fields || "last" in fields) &&
            (err instanceof NotApplicableError || err instanceof ForbiddenError)
          ) {
            if (down !== undefined) this.#localGap(sub, down);
            return send({});
          }
          const error = err instanceof Error ? err : new HeraldError(String(err));
          if (this.#subs.get(sub.name) === sub) this.#subs.delete(sub.name);
          if (down !== undefined) this.emit("error", error);
          sub._end(error);
          return undefined;
        },
      );
    if (down !== undefined && resume.since === undefined && resume.last === undefined) {
      this.#localGap(sub, down);
    }
    return send(resume);
  }

  async #unsubscribe(sub: Subscription): Promise<void> {
    if (this.#subs.get(sub.name) === sub) this.#subs.delete(sub.name);
    sub._end();
    if (this.#state !== "open") return;
    try {
      await this.#request({ op: "unsubscribe", topic: sub.name });
    } catch (err) {
      if (!(err instanceof ConnectionClosedError)) throw err;
    }
  }

  #received(data: unknown): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(typeof data === "string" ? data : String(data));
    } catch {
      this.emit("error", new HeraldError("the gateway sent a frame that is not JSON"));
      return;
    }
    for (const frame of Array.isArray(parsed) ? parsed : [parsed]) {
      if (frame !== null && typeof frame === "object") this.#dispatch(frame as Frame);
    }
  }

  #dispatch(frame: Frame): void {
    switch (frame.type) {
      case "message": {
        const name = typeof frame["subscription"] === "string" ? frame["subscription"] : String(frame["topic"]);
        const sub = this.#subs.get(name);
        if (sub === undefined) return; // after an unsubscribe
        const msg = messageFromFrame(frame, name);
        if (sub._deliver(msg)) this.emit("message", msg);
        return;
      }
      case "gap": {
        const event = frame as unknown as GapEvent;
        this.#subs.get(event.subscription)?._gap(event);
        this.emit("gap", event);
        return;
      }
      case "history_lost": {
        const event = frame as unknown as HistoryLostEvent;
        if (typeof event.subscription !== "string") event.subscription = event.topic;
        this.#subs.get(event.subscription)?._historyLost(event);
        this.emit("history_lost", event);
        return;
      }
    }
    if (!REPLIES.has(frame.type)) return; // a frame type this client does not know yet
    const id = typeof frame.id === "number" ? frame.id : undefined;
    const pending = id === undefined ? undefined : this.#pending.get(id);
    if (pending === undefined) {
      if (frame.type === "error") {
        this.emit("error", gatewayError(String(frame["code"]), String(frame["message"] ?? "")));
      } else if (frame.type === "unsubscribed" && Array.isArray(frame["topics"])) {
        // The gateway dropped subscriptions itself: a new token does not grant them.
        const reason = String(frame["reason"] ?? "unsubscribed by the gateway");
        const error = new ForbiddenError("forbidden", reason);
        for (const name of frame["topics"]) {
          const sub = this.#subs.get(String(name));
          if (sub === undefined) continue;
          this.#subs.delete(sub.name);
          sub._end(error);
        }
        this.emit("error", error);
      }
      return;
    }
    this.#pending.delete(id as number);
    clearTimeout(pending.timer);
    if (frame.type === "error") {
      pending.reject(gatewayError(String(frame["code"]), String(frame["message"] ?? ""), undefined, id));
    } else {
      pending.resolve(frame);
    }
  }
}
