/** Payloads and message frames to and from the gateway's JSON, no I/O. */

import type { Frame, Message, Payload } from "./types.js";

/** Bytes as base64 (the wire form of binary payloads: `data_b64`). */
export function bytesToBase64(bytes: Uint8Array): string {
  let text = "";
  const chunk = 0x8000;
  for (let i = 0; i < bytes.length; i += chunk) {
    text += String.fromCharCode(...bytes.subarray(i, i + chunk));
  }
  return btoa(text);
}

/** base64 as bytes. */
export function base64ToBytes(text: string): Uint8Array {
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

/** A bytes payload (`Uint8Array`, `ArrayBuffer`, another typed array or a `DataView`) as a
 * `Uint8Array`; `undefined` for anything else. */
export function payloadBytes(data: unknown): Uint8Array | undefined {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return undefined;
}

/** The payload field of a publish frame: `data_b64` for bytes, `text` for a string, `data`
 * for any other JSON value. */
export function payloadFields(
  data: unknown,
): { data: unknown } | { text: string } | { data_b64: string } {
  const bytes = payloadBytes(data);
  if (bytes !== undefined) return { data_b64: bytesToBase64(bytes) };
  if (typeof data === "string") return { text: data };
  return { data };
}

/** A frame's payload: from `data_b64` (bytes), `text` (text) or `data` (a JSON value). */
export function payloadOf(frame: Frame): Payload {
  if (typeof frame["data_b64"] === "string") return { kind: "bytes", data: base64ToBytes(frame["data_b64"]) };
  if (typeof frame["text"] === "string") return { kind: "text", data: frame["text"] };
  return { kind: "json", data: frame["data"] ?? null };
}

/** A `message` frame (WebSocket, SSE, or an item of a history page) as a {@link Message}. */
export function messageFromFrame(frame: Frame, subscription?: string): Message {
  const topic = String(frame["topic"]);
  const msg: Message = {
    topic,
    subscription:
      typeof frame["subscription"] === "string" ? frame["subscription"] : (subscription ?? topic),
    ...payloadOf(frame),
    headers: (frame["headers"] as Record<string, string> | undefined) ?? {},
  };
  if (typeof frame.id === "string") msg.id = frame.id;
  if (typeof frame["ts"] === "number") msg.ts = frame["ts"];
  const offset = frame["offset"];
  if (typeof offset === "number" || typeof offset === "string") msg.offset = offset;
  if (typeof frame["epoch"] === "number") msg.epoch = frame["epoch"];
  return msg;
}

/** Whether a subscription name is a glob pattern (Redis `stringmatch`: `*`, `?`, `[`, `\`). */
export function isPattern(name: string): boolean {
  return /[*?[\\]/.test(name);
}
