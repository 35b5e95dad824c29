/** The gateway's frames and the values this client hands to its user. */

/** A payload: a JSON value, text, or bytes (sent and received as base64 on the wire). */
export type Data = unknown;

/**
 * What a message's payload is, by the frame field it came in: `"json"` (`data`, a JSON value),
 * `"text"` (`text`, a string), `"bytes"` (`data_b64`, a `Uint8Array`, UTF-8 or not).
 */
export type PayloadKind = "json" | "text" | "bytes";

/**
 * A message's payload, by the frame field it came in: `kind: "json"` with the JSON value
 * (`data`), `kind: "text"` with a string (`text`), `kind: "bytes"` with a `Uint8Array`
 * (`data_b64`, whether or not the bytes are UTF-8). `kind` tells a JSON string from text.
 */
export type Payload =
  | { kind: "json"; data: Data }
  | { kind: "text"; data: string }
  | { kind: "bytes"; data: Uint8Array };

/** What a message carries besides its payload. */
export interface MessageFields {
  /** The topic it was published on. */
  topic: string;
  /** The subscription (topic or pattern) that delivered it. */
  subscription: string;
  /** Message headers (e.g. `traceparent`); empty when there are none. */
  headers: Record<string, string>;
  /** Herald's message id. */
  id?: string;
  /** Publish time, seconds since the epoch. */
  ts?: number;
  /** The topic's offset (recoverable and durable topics). */
  offset?: number | string;
  /** The topic's history epoch (recoverable topics). */
  epoch?: number;
}

/** One message, as delivered to a subscription (or read from history): its fields, `kind`
 * (`"json"`, `"text"` or `"bytes"`) and `data`. */
export type Message = MessageFields & Payload;

/** The gateway's connection to Redis was down, or this client's connection to the gateway was:
 * messages of a live subscription published in between may be missing. */
export interface GapEvent {
  subscription: string;
  /** Seconds since the epoch. */
  since?: number;
  until?: number;
  reason: string;
  /** `true` when this client noticed the gap itself (its own reconnect to the gateway). */
  local?: boolean;
}

/** A resume could not be complete: the topic's history no longer reaches back to the offset
 * asked for (or its epoch changed). The subscription continues live. */
export interface HistoryLostEvent {
  subscription: string;
  topic: string;
  last_offset: number | null;
  first_available: number | null;
  epoch: number | null;
  reason: string;
}

/** What a confirmed publish returns. */
export interface PublishAck {
  /** Subscribers the server delivered it to. */
  receivers: number;
  /** The message's offset on recoverable and durable topics. */
  offset?: number | string;
  /** `true` when a durable publish's `msgId` was seen before and nothing was added. */
  duplicate?: boolean;
}

/** `POST /topics/{topic}`'s answer. */
export interface HttpPublishAck extends PublishAck {
  topic: string;
}

/** One page of `GET /topics/{topic}/messages`. */
export interface HistoryPage {
  topic: string;
  messages: Message[];
  /** Pass as `after` to read the next page. */
  next: number | string | null;
}

/** A frame from the gateway (WebSocket message or SSE data), as parsed JSON. */
export interface Frame {
  type: string;
  id?: unknown;
  [field: string]: unknown;
}
