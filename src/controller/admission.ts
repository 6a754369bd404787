/**
 * Global and per-namespace limits on builds running at once. A build is admitted when it starts and stays
 * admitted until it finishes or goes away; builds already running when the controller starts (they have
 * pods) are admitted whatever the limits, so a restart never stalls them. Builds turned away wait in
 * arrival order and are handed back, as many as slots were freed, when one is released.
 */
export class Admission {
  readonly #maxGlobal: number;
  readonly #maxPerNamespace: number;
  readonly #active = new Map<string, string>();
  readonly #perNamespace = new Map<string, number>();
  /** Turned-away keys in arrival order, with their namespaces. */
  readonly #waiting = new Map<string, string>();

  constructor(maxGlobal: number, maxPerNamespace: number) {
    this.#maxGlobal = maxGlobal;
    this.#maxPerNamespace = maxPerNamespace;
  }

  get active(): number {
    return this.#active.size;
  }

  get waiting(): number {
    return this.#waiting.size;
  }

  /** Whether `key` was turned away and waits for a slot. */
  isWaiting(key: string): boolean {
    return this.#waiting.has(key);
  }

  /** Whether `key` may run now; `running` says it already has pods. */
  admit(key: string, namespace: string, running: boolean): boolean {
    if (this.#active.has(key)) return true;
    const inNamespace = this.#perNamespace.get(namespace) ?? 0;
    const full = this.#active.size >= this.#maxGlobal || inNamespace >= this.#maxPerNamespace;
    // Earlier arrivals go first: a newcomer waits while others wait, unless it is already running.
    if (!running && (full || !this.#isNext(key))) {
      if (!this.#waiting.has(key)) this.#waiting.set(key, namespace);
      return false;
    }
    this.#waiting.delete(key);
    this.#active.set(key, namespace);
    this.#perNamespace.set(namespace, inNamespace + 1);
    return true;
  }

  /** Frees the slot of `key`; returns the waiting keys to look at again. */
  release(key: string): string[] {
    this.#waiting.delete(key);
    const namespace = this.#active.get(key);
    if (namespace === undefined) return [];
    this.#active.delete(key);
    const n = (this.#perNamespace.get(namespace) ?? 1) - 1;
    if (n === 0) this.#perNamespace.delete(namespace);
    else this.#perNamespace.set(namespace, n);
    return this.#runnable(this.#maxGlobal - this.#active.size);
  }

  /** A newcomer goes only if no earlier waiter could take the slot instead. */
  #isNext(key: string): boolean {
    const free = this.#maxGlobal - this.#active.size;
    return !this.#waiting.has(key) ? this.#runnable(free).length < free : this.#runnable(free).includes(key);
  }

  /** The first `n` waiters whose namespace has room: one namespace's backlog does not hold up others. */
  #runnable(n: number): string[] {
    const out: string[] = [];
    for (const [k, ns] of this.#waiting) {
      if (out.length >= n) break;
      if ((this.#perNamespace.get(ns) ?? 0) < this.#maxPerNamespace) out.push(k);
    }
    return out;
  }
}
