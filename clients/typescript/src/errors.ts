/**
 * Errors, one class per condition, all under {@link HeraldError}:
 *
 * ```
 * HeraldError
 * ├── GatewayError              an `error` frame, or an HTTP error's JSON body: .code, .status?
 * │   ├── UnauthorizedError     unauthorized (no, bad or expired token; HTTP 401)
 * │   ├── ForbiddenError        forbidden (no grant, origin refused; HTTP 403), host_not_allowed (421)
 * │   ├── ReservedNameError     reserved_topic, reserved_header, reserved_payload
 * │   ├── InvalidTopicError     invalid_topic
 * │   ├── BadRequestError       bad_request, bad_json, bad_text
 * │   ├── NotApplicableError    not_applicable (HTTP 409), not_supported, no_history
 * │   ├── NotFoundError         not_found (HTTP 404: no such route), method_not_allowed (405)
 * │   ├── TooLargeError         too_large (HTTP 413)
 * │   ├── TooManySubscriptionsError  too_many_subscriptions
 * │   ├── RateLimitedError      rate_limited (HTTP 429; .retryAfter from Retry-After)
 * │   ├── UnavailableError      unavailable (HTTP 503)
 * │   └── GatewayTimeoutError   timeout (HTTP 504)
 * ├── ConnectionClosedError     the WebSocket closed: .code, .reason
 * └── RequestTimeoutError       no reply to a request in time
 * ```
 *
 * @module
 */

/** The root of every error this package throws. */
export class HeraldError extends Error {
  override name = "HeraldError";
}

/** The error codes the gateway sends (others may come; they are kept as they are). */
export type ErrorCode =
  | "unauthorized"
  | "forbidden"
  | "host_not_allowed"
  | "reserved_topic"
  | "reserved_header"
  | "reserved_payload"
  | "invalid_topic"
  | "bad_request"
  | "bad_json"
  | "bad_text"
  | "not_applicable"
  | "not_supported"
  | "no_history"
  | "not_found"
  | "method_not_allowed"
  | "too_large"
  | "too_many_subscriptions"
  | "rate_limited"
  | "unavailable"
  | "timeout"
  | (string & {});

/** An error the gateway reported: a WebSocket `error` frame or an HTTP error response. */
export class GatewayError extends HeraldError {
  override name = "GatewayError";
  /** The gateway's code, e.g. `forbidden`. */
  readonly code: ErrorCode;
  /** The HTTP status, for errors of the HTTP API; `undefined` over WebSocket. */
  readonly status: number | undefined;
  /** The `id` of the WebSocket request the error answers, if it had one. */
  readonly requestId: number | undefined;

  constructor(code: ErrorCode, message: string, status?: number, requestId?: number) {
    super(message);
    this.code = code;
    this.status = status;
    this.requestId = requestId;
  }
}

export class UnauthorizedError extends GatewayError {
  override name = "UnauthorizedError";
}
export class ForbiddenError extends GatewayError {
  override name = "ForbiddenError";
}
export class ReservedNameError extends GatewayError {
  override name = "ReservedNameError";
}
export class InvalidTopicError extends GatewayError {
  override name = "InvalidTopicError";
}
export class BadRequestError extends GatewayError {
  override name = "BadRequestError";
}
export class NotApplicableError extends GatewayError {
  override name = "NotApplicableError";
}
/** An HTTP route the gateway does not have (404 `not_found`), or a method it does not take
 * there (405 `method_not_allowed`). */
export class NotFoundError extends GatewayError {
  override name = "NotFoundError";
}
export class TooLargeError extends GatewayError {
  override name = "TooLargeError";
}
export class TooManySubscriptionsError extends GatewayError {
  override name = "TooManySubscriptionsError";
}
export class RateLimitedError extends GatewayError {
  override name = "RateLimitedError";
  /** Seconds to wait before trying again (HTTP `Retry-After`), when the gateway said. */
  retryAfter: number | undefined;
}
export class UnavailableError extends GatewayError {
  override name = "UnavailableError";
}
export class GatewayTimeoutError extends GatewayError {
  override name = "GatewayTimeoutError";
}

/** The WebSocket closed (or could not open) while something waited on it. */
export class ConnectionClosedError extends HeraldError {
  override name = "ConnectionClosedError";
  /** The close code (1006 when the connection broke without one). */
  readonly code: number;
  /** The close reason the gateway gave, if any. */
  readonly reason: string;

  constructor(code: number, reason: string, message?: string) {
    super(message ?? `connection closed (${code}${reason ? `: ${reason}` : ""})`);
    this.code = code;
    this.reason = reason;
  }
}

/** A request got no reply within `requestTimeout`. */
export class RequestTimeoutError extends HeraldError {
  override name = "RequestTimeoutError";
}

type GatewayErrorClass = new (
  code: ErrorCode,
  message: string,
  status?: number,
  requestId?: number,
) => GatewayError;

const BY_CODE: Record<string, GatewayErrorClass> = {
  unauthorized: UnauthorizedError,
  forbidden: ForbiddenError,
  host_not_allowed: ForbiddenError,
  reserved_topic: ReservedNameError,
  reserved_header: ReservedNameError,
  reserved_payload: ReservedNameError,
  invalid_topic: InvalidTopicError,
  bad_request: BadRequestError,
  bad_json: BadRequestError,
  bad_text: BadRequestError,
  not_applicable: NotApplicableError,
  not_supported: NotApplicableError,
  no_history: NotApplicableError,
  not_found: NotFoundError,
  method_not_allowed: NotFoundError,
  too_large: TooLargeError,
  too_many_subscriptions: TooManySubscriptionsError,
  rate_limited: RateLimitedError,
  unavailable: UnavailableError,
  timeout: GatewayTimeoutError,
};

const BY_STATUS: Record<number, GatewayErrorClass> = {
  400: BadRequestError,
  401: UnauthorizedError,
  403: ForbiddenError,
  404: NotFoundError,
  405: NotFoundError,
  409: NotApplicableError,
  421: ForbiddenError,
  413: TooLargeError,
  429: RateLimitedError,
  503: UnavailableError,
  504: GatewayTimeoutError,
};

/** The typed error for a gateway error code (and HTTP status, when there is one). */
export function gatewayError(
  code: string,
  message: string,
  status?: number,
  requestId?: number,
): GatewayError {
  const cls = BY_CODE[code] ?? (status !== undefined ? BY_STATUS[status] : undefined) ?? GatewayError;
  return new cls(code, message, status, requestId);
}
