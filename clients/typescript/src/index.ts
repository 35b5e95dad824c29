/**
 * A client for the Herald gateway: WebSocket subscribe, publish, resume and reconnect, and the
 * HTTP API. No dependency beyond the platform's `WebSocket` and `fetch`.
 *
 * @module
 */

export { type BackoffOptions, backoffDelay } from "./backoff.js";
export {
  type ClientEvents,
  type ClientOptions,
  type ConnectionState,
  HeraldClient,
  type PublishOptions,
  type WebSocketConstructor,
  type WebSocketLike,
} from "./client.js";
export * from "./errors.js";
export {
  type HistoryOptions,
  HttpApi,
  type HttpOptions,
  type HttpPublishOptions,
  type TokenSource,
} from "./http.js";
export { type EventsOptions, parseSse, type StreamEvent } from "./sse.js";
export { type SubscribeOptions, Subscription, type SubscriptionEvents } from "./subscription.js";
export type {
  Data,
  Frame,
  GapEvent,
  HistoryLostEvent,
  HistoryPage,
  HttpPublishAck,
  Message,
  MessageFields,
  Payload,
  PayloadKind,
  PublishAck,
} from "./types.js";
