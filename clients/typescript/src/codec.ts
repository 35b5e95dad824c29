/** Payloads and message frames to and from the gateway's JSON, no I/O. */

import type { Frame, Message } from "./types.js";

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

/** The payload fields of a publish frame: `data`, or `data_b64` for bytes. */
export function payloadFields(data: unknown): { data: unknown } | { data_b64: string } {
  if (data instanceof Uint8Array) return { data_b64: bytesToBase64(data) };
  if (data instanceof ArrayBuffer) return { data_b64: bytesToBase64(new Uint8Array(data)) };
  return { data };
}

/** A `message` frame (WebSocket, SSE, or an item of a history page) as a {@link Message}. */
export function messageFromFrame(frame: Frame, subscription?: string): Message {
  const topic = String(frame["topic"]);
  const msg: Message = {
    topic,
    subscription:
      typeof frame["subscription"] === "string" ? frame["subscription"] : (subscription ?? topic),
    data:
      typeof frame["data_b64"] === "string" ? base64ToBytes(frame["data_b64"]) : frame["data"],
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
