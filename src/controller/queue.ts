/**
 * A work queue with client-go's guarantees: a key waiting once is queued once however often it is added
 * (de-duplication), a key is never handled by two workers at once (an add while it runs queues it again for
 * after), failures come back after an exponentially growing per-key delay, and `addAfter` schedules a look
 * later (the earliest of several wins). Keys added as urgent are handed out before all others, in arrival
 * order within each lane; adding a waiting key as urgent moves it to the urgent lane.
 */

export interface QueueOptions {
  readonly baseDelayMs?: number;
  readonly maxDelayMs?: number;
}

export type Handler = (key: string) => Promise<void>;

export class WorkQueue {
  // Sets keep insertion order: each is one lane, first in, first out.
  readonly #urgent = new Set<string>();
  readonly #normal = new Set<string>();
  /** Keys added while a worker held them, and whether any of those adds was urgent. */
  readonly #again = new Map<string, boolean>();
  readonly #processing = new Set<string>();
  readonly #failures = new Map<string, number>();
  readonly #timers = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  readonly #waiters: Array<(key: string | undefined) => void> = [];
  readonly #base: number;
  readonly #max: number;
  #shuttingDown = false;

  constructor(options: QueueOptions = {}) {
    this.#base = options.baseDelayMs ?? 5;
    this.#max = options.maxDelayMs ?? 60_000;
  }

  /** Keys waiting (not counting those being handled or scheduled for later). */
  get length(): number {
    return this.#urgent.size + this.#normal.size;
  }

  /** Urgent keys waiting. */
  get urgentLength(): number {
    return this.#urgent.size;
  }

  add(key: string, urgent = false): void {
    if (this.#shuttingDown || this.#urgent.has(key)) return;
    if (this.#processing.has(key)) {
      this.#again.set(key, urgent || (this.#again.get(key) ?? false)); // done() queues it again
      return;
    }
    if (this.#normal.has(key)) {
      if (!urgent) return;
      this.#normal.delete(key);
    }
    (urgent ? this.#urgent : this.#normal).add(key);
    const waiter = this.#waiters.shift();
    if (waiter !== undefined) waiter(this.#take());
  }

  addAfter(key: string, ms: number): void {
    if (this.#shuttingDown) return;
    if (ms <= 0) {
      this.add(key);
      return;
    }
    const at = Date.now() + ms;
    const prev = this.#timers.get(key);
    if (prev !== undefined && prev.at <= at) return;
    if (prev !== undefined) clearTimeout(prev.timer);
    const timer = setTimeout(() => {
      this.#timers.delete(key);
      this.add(key);
    }, ms);
    timer.unref();
    this.#timers.set(key, { at, timer });
  }

  /** After a failure: again later, each failure in a row doubling the delay. */
  addRateLimited(key: string): number {
    const n = this.#failures.get(key) ?? 0;
    this.#failures.set(key, n + 1);
    const delay = Math.min(this.#max, this.#base * 2 ** n);
    this.addAfter(key, delay);
    return delay;
  }

  /** After a success: the next failure starts from the base delay. */
  forget(key: string): void {
    this.#failures.delete(key);
  }

  /** The next key, waiting for one; undefined once shut down. */
  async get(): Promise<string | undefined> {
    if (this.length > 0) return this.#take();
    if (this.#shuttingDown) return undefined;
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** Marks a key handled; if it was added meanwhile it is queued again. */
  done(key: string): void {
    this.#processing.delete(key);
    const urgent = this.#again.get(key);
    if (urgent === undefined) return;
    this.#again.delete(key);
    this.add(key, urgent);
  }

  /**
   * Runs `workers` loops calling `handler` for each key; a handler that throws gets the key back rate
   * limited. Resolves when the queue is shut down and every running handler has returned.
   */
  async run(workers: number, handler: Handler, onError: (key: string, err: unknown) => void): Promise<void> {
    const loop = async () => {
      for (;;) {
        const key = await this.get();
        if (key === undefined) return;
        try {
          await handler(key);
        } catch (err) {
          onError(key, err);
          this.addRateLimited(key);
        } finally {
          this.done(key);
        }
      }
    };
    await Promise.all(Array.from({ length: workers }, loop));
  }

  /** Stops handing out keys; workers finish what they hold. */
  shutdown(): void {
    this.#shuttingDown = true;
    for (const { timer } of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
    for (const w of this.#waiters.splice(0)) w(undefined);
  }

  #take(): string {
    const lane = this.#urgent.size > 0 ? this.#urgent : this.#normal;
    const key = lane.values().next().value as string;
    lane.delete(key);
    this.#processing.add(key);
    return key;
  }
}
