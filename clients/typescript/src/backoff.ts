/** Reconnect delays: exponential with full jitter, no I/O. */

export interface BackoffOptions {
  /** The first delay, in milliseconds (default 250). */
  initialDelay?: number;
  /** The largest delay, in milliseconds (default 10,000). */
  maxDelay?: number;
  /** Each attempt's ceiling is the previous one's times this (default 2). */
  factor?: number;
  /** Give up after this many failed attempts in a row (default: never). */
  maxAttempts?: number;
}

/**
 * The delay before reconnect attempt `attempt` (0 for the first): a random value between half
 * the ceiling and the ceiling, where the ceiling grows by `factor` from `initialDelay` to
 * `maxDelay`. The randomness spreads the reconnects of many clients after a gateway restart.
 */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions = {},
  random: () => number = Math.random,
): number {
  const initial = options.initialDelay ?? 250;
  const max = options.maxDelay ?? 10_000;
  const factor = options.factor ?? 2;
  const ceiling = Math.min(max, initial * factor ** Math.max(0, attempt));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}
