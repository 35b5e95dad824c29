/** Server-sent events (`GET /topics/{topic}/events`): the fallback where WebSocket is not
 * available, read with `fetch` so that it can carry a token header and resume by itself. */

import { type BackoffOptions, backoffDelay } from "./backoff.js";
import { messageFromFrame } from "./codec.js";
import { GatewayError, HeraldError } from "./errors.js";
import type { Frame, GapEvent, HistoryLostEvent, Message } from "./types.js";

export interface EventsOptions {
  /** Start after this offset (a recoverable topic). */
  since?: number;
  /** Start with the newest `last` messages (a recoverable topic). */
  last?: number;
  /** Stops the stream (the loop ends). */
  signal?: AbortSignal;
  /** Delays between reconnects, or `false` to end when the stream breaks. */
  reconnect?: BackoffOptions | false;
}

/** One item of an event stream. */
export type StreamEvent =
  | { type: "message"; message: Message }
  | { type: "gap"; gap: GapEvent }
  | { type: "history_lost"; event: HistoryLostEvent }
  /** The gateway ended the stream (e.g. a slow client cut); a reconnect follows. */
  | { type: "closed"; reason: string };

/** @internal What the stream needs of the HTTP API. */
export type Opener = (path: string, headers: Record<string, string>, signal?: AbortSignal) => Promise<Response>;

/** Parse an SSE byte stream into events of `id` and `data` (comments and `retry` skipped). */
export async function* parseSse(
  body: ReadableStream<Uint8Array>,
): AsyncGenerator<{ id: string | undefined; data: string }, void, undefined> {
  const decoder = new TextDecoder();
  const reader = body.getReader();
  let buffer = "";
  let id: string | undefined;
  let data: string[] = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let newline: number;
      while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
        if (line === "") {
          if (data.length > 0) yield { id, data: data.join("\n") };
          data = [];
          id = undefined;
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") data.push(value);
        else if (field === "id") id = value;
      }
    }
  } finally {
    // Leaving early (a break in the caller's loop) closes the connection.
    await reader.cancel().catch(() => {});
  }
}

/**
 * The events of one topic over SSE, reconnecting with `Last-Event-ID` (so a recoverable topic
 * resumes after its last offset, and a live one reports a `gap`), until `signal` aborts or the
 * caller leaves the loop. A refused request (401, 403, 404, ...) throws its typed error.
 */
export async function* eventStream(
  open: Opener,
  topic: string,
  options: EventsOptions = {},
): AsyncGenerator<StreamEvent, void, undefined> {
  const query = new URLSearchParams();
  if (options.since !== undefined) query.set("since", String(options.since));
  if (options.last !== undefined) query.set("last", String(options.last));
  let lastId: string | undefined;
  let attempt = 0;
  const path = `/topics/${encodeURIComponent(topic)}/events`;
  while (!options.signal?.aborted) {
    const headers: Record<string, string> = { accept: "text/event-stream" };
    // The first request starts where asked; later ones where the stream left off.
    const qs = lastId === undefined && query.size ? `?${query}` : "";
    if (lastId !== undefined) headers["last-event-id"] = lastId;
    try {
      const response = await open(`${path}${qs}`, headers, options.signal);
      if (response.body === null) throw new HeraldError("the event stream has no body");
      attempt = 0;
      for await (const { id, data } of parseSse(response.body)) {
        const frame = JSON.parse(data) as Frame;
        if (id !== undefined && id !== "") lastId = id;
        if (frame.type === "message") yield { type: "message", message: messageFromFrame(frame, topic) };
        else if (frame.type === "gap") yield { type: "gap", gap: frame as unknown as GapEvent };
        else if (frame.type === "history_lost") {
          yield { type: "history_lost", event: frame as unknown as HistoryLostEvent };
        } else if (frame.type === "closed") yield { type: "closed", reason: String(frame["reason"] ?? "") };
      }
    } catch (err) {
      if (err instanceof GatewayError || options.signal?.aborted) {
        if (options.signal?.aborted) return;
        throw err;
      }
      // a broken stream: reconnect below
    }
    if (options.reconnect === false) return;
    const delay = backoffDelay(attempt++, options.reconnect ?? {});
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}
