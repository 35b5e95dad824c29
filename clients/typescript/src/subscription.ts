/** One subscription to a topic or pattern: its events and the offsets it has seen. */

import { isPattern } from "./codec.js";
import { Emitter } from "./emitter.js";
import { HeraldError } from "./errors.js";
import type { GapEvent, HistoryLostEvent, Message } from "./types.js";

export interface SubscribeOptions {
  /** Start after this offset (a recoverable topic): every later message, then live ones. */
  since?: number;
  /** Start with the newest `last` messages (a recoverable topic). */
  last?: number;
  /**
   * After a reconnect, continue from the last offset seen (default `true`): a topic whose
   * messages carry offsets (a recoverable topic) is subscribed again with `since`, so nothing
   * is missed and nothing comes twice while its history reaches back.
   */
  resume?: boolean;
}

export type SubscriptionEvents = {
  message: [Message];
  gap: [GapEvent];
  history_lost: [HistoryLostEvent];
  /** The subscription ended for good: a resubscribe after a reconnect was refused, or the
   * client closed. */
  end: [Error | undefined];
};

/** Messages kept for a subscription nobody listens to yet; beyond, the oldest are dropped. */
const HELD_LIMIT = 10_000;

interface Position {
  offset: number;
  epoch: number | undefined;
}

export class Subscription extends Emitter<SubscriptionEvents> implements AsyncIterable<Message> {
  /** The topic or pattern. */
  readonly name: string;
  readonly isPattern: boolean;
  readonly options: Readonly<SubscribeOptions>;
  #positions = new Map<string, Position>();
  #held: Message[] = [];
  #flushing = false;
  #active = true;
  #unsubscribe: (sub: Subscription) => Promise<void>;
  #ready: { resolve: () => void; reject: (error: Error) => void } | undefined;
  /** Settles when the gateway first confirms the subscription (or refuses it).
   * @internal */
  readonly _confirmed: Promise<void>;

  /** @internal */
  constructor(
    name: string,
    options: SubscribeOptions,
    unsubscribe: (sub: Subscription) => Promise<void>,
  ) {
    super();
    this.name = name;
    this.isPattern = isPattern(name);
    this.options = { ...options };
    this.#unsubscribe = unsubscribe;
    this._confirmed = new Promise<void>((resolve, reject) => {
      this.#ready = { resolve, reject };
    });
  }

  /** The gateway confirmed a (re)subscribe.
   * @internal */
  _confirm(): void {
    this.#ready?.resolve();
    this.#ready = undefined;
  }

  /** Whether messages still come (not unsubscribed, not ended). */
  get active(): boolean {
    return this.#active;
  }

  /** The offset of the last message seen on `topic` (default: the subscription's own name). */
  lastOffset(topic: string = this.name): number | undefined {
    return this.#positions.get(topic)?.offset;
  }

  /** Stop receiving; resolves when the gateway confirmed (or at once when disconnected). */
  async unsubscribe(): Promise<void> {
    if (!this.#active) return;
    await this.#unsubscribe(this);
  }

  /**
   * The `subscribe` request's resume fields for a (re)subscribe: `since` the last offset seen
   * when there is one, else what the caller asked for.
   * @internal
   */
  _resumeFields(): { since?: number; last?: number } {
    const seen = this.isPattern ? undefined : this.#positions.get(this.name);
    if (seen !== undefined && this.options.resume !== false) return { since: seen.offset };
    if (seen !== undefined) return {};
    const out: { since?: number; last?: number } = {};
    if (this.options.since !== undefined) out.since = this.options.since;
    if (this.options.last !== undefined) out.last = this.options.last;
    return out;
  }

  /** Whether a message with this offset was delivered already (a duplicate after a resume). */
  #seen(msg: Message): boolean {
    if (typeof msg.offset !== "number") return false;
    const pos = this.#positions.get(msg.topic);
    if (pos !== undefined && pos.epoch === msg.epoch && msg.offset <= pos.offset) return true;
    this.#positions.set(msg.topic, { offset: msg.offset, epoch: msg.epoch });
    return false;
  }

  /**
   * Listen to an event. Messages that came before the first `message` listener (a resume's
   * history can arrive before `subscribe()` resolves) are kept and delivered to it, in order.
   */
  override on<K extends keyof SubscriptionEvents>(
    event: K,
    listener: (...args: SubscriptionEvents[K]) => void,
  ): () => void {
    const off = super.on(event, listener);
    if (event === "message" && this.#held.length > 0) this.#scheduleFlush();
    return off;
  }

  #scheduleFlush(): void {
    if (this.#flushing) return;
    this.#flushing = true;
    queueMicrotask(() => {
      this.#flushing = false;
      while (this.#held.length > 0 && this.listening("message")) {
        this.emit("message", this.#held.shift() as Message);
      }
    });
  }

  /** @internal */
  _deliver(msg: Message): boolean {
    if (!this.#active || this.#seen(msg)) return false;
    if (this.#held.length > 0 || !this.listening("message")) {
      if (this.#held.length >= HELD_LIMIT) this.#held.shift();
      this.#held.push(msg);
      if (this.listening("message")) this.#scheduleFlush();
    } else {
      this.emit("message", msg);
    }
    return true;
  }

  /** @internal */
  _gap(event: GapEvent): void {
    this.emit("gap", event);
  }

  /** @internal */
  _historyLost(event: HistoryLostEvent): void {
    // The position stays: messages of a new epoch are told apart by their epoch, and what
    // history was left may have been delivered before this event.
    this.emit("history_lost", event);
  }

  /** @internal */
  _end(error?: Error): void {
    if (!this.#active) return;
    this.#active = false;
    this.#ready?.reject(error ?? new HeraldError(`unsubscribed from ${this.name}`));
    this.#ready = undefined;
    this.emit("end", error);
  }

  /**
   * The messages, in order, until the subscription ends: `for await (const msg of sub)`.
   * Messages are queued from the moment iteration starts; breaking out of the loop
   * unsubscribes.
   */
  async *[Symbol.asyncIterator](): AsyncGenerator<Message, void, undefined> {
    const queue: Message[] = [];
    let wake: (() => void) | undefined;
    const state: { ended: Error | undefined | null } = { ended: null };
    const offMessage = this.on("message", (m) => {
      queue.push(m);
      wake?.();
    });
    const offEnd = this.on("end", (err) => {
      state.ended = err;
      wake?.();
    });
    try {
      for (;;) {
        const next = queue.shift();
        if (next !== undefined) {
          yield next;
          continue;
        }
        if (state.ended !== null || !this.#active) {
          if (state.ended) throw state.ended;
          return;
        }
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = undefined;
      }
    } finally {
      offMessage();
      offEnd();
      await this.unsubscribe();
    }
  }
}
