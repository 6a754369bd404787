import { isDeepStrictEqual } from "node:util";
import type { Logger } from "../log.ts";
import { isConflict, isNotFound, type KubeClient } from "./client.ts";

/** coordination.k8s.io/v1 Lease, the fields leader election reads and writes. */
export interface Lease {
  apiVersion: "coordination.k8s.io/v1";
  kind: "Lease";
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec: LeaseSpec;
}
export interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

export interface LeaderElectionOptions {
  readonly namespace: string;
  readonly name: string;
  readonly identity: string;
  /** How long a holder's claim lasts without renewal (client-go default 15s). */
  readonly leaseDurationMs: number;
  /** How often to try to acquire or renew (client-go default 2s). */
  readonly retryPeriodMs: number;
  /** A leader that cannot renew for this long steps down (client-go default 10s). */
  readonly renewDeadlineMs: number;
  readonly log: Logger;
  readonly now?: () => Date;
}

/** metav1.MicroTime as the API server writes it: RFC 3339 with six fractional digits. */
export function microTime(d: Date): string {
  return d.toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

/**
 * Leader election on a Lease with client-go's rules: a lease is free when its holder is empty or when its
 * record has not changed for leaseDuration by this process's own clock (no trust in other clocks), every
 * write is conditional on the resourceVersion read, and a leader that fails to renew within renewDeadline
 * stops leading before another process may take over.
 */
export class LeaderElector {
  readonly #client: KubeClient;
  readonly #o: LeaderElectionOptions;
  readonly #now: () => Date;
  #observed: { spec: LeaseSpec; at: number } | undefined;
  #leading = false;
  #lastRenew = 0;
  #stopped = false;
  #timer: NodeJS.Timeout | undefined;
  #onStart: () => void = () => {};
  #onStop: () => void = () => {};

  constructor(client: KubeClient, options: LeaderElectionOptions) {
    this.#client = client;
    this.#o = options;
    this.#now = options.now ?? (() => new Date());
  }

  get leading(): boolean {
    return this.#leading;
  }

  get #path(): string {
    return `/apis/coordination.k8s.io/v1/namespaces/${this.#o.namespace}/leases/${this.#o.name}`;
  }

  /** Tries every retryPeriod; calls `onStart` on becoming leader and `onStop` when leadership is lost. */
  run(onStart: () => void, onStop: () => void): void {
    this.#onStart = onStart;
    this.#onStop = onStop;
    void this.#tick();
  }

  async #tick(): Promise<void> {
    if (this.#stopped) return;
    let held = false;
    try {
      held = await this.tryAcquireOrRenew();
    } catch (err) {
      this.#o.log.warn({ err, lease: this.#o.name }, "Failed to update lease");
    }
    if (this.#stopped) return;
    if (held) {
      this.#lastRenew = Date.now();
      if (!this.#leading) {
        this.#leading = true;
        this.#o.log.info({ lease: this.#o.name, identity: this.#o.identity }, "Became leader");
        this.#onStart();
      }
    } else if (this.#leading && Date.now() - this.#lastRenew > this.#o.renewDeadlineMs) {
      this.#leading = false;
      this.#o.log.warn({ lease: this.#o.name }, "Lost leadership");
      this.#onStop();
    }
    this.#timer = setTimeout(() => void this.#tick(), this.#o.retryPeriodMs);
  }

  /** One attempt; true when this process holds the lease afterwards. */
  async tryAcquireOrRenew(): Promise<boolean> {
    const now = this.#now();
    let current: Lease | undefined;
    try {
      current = await this.#client.request<Lease>("GET", this.#path);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    const mine: LeaseSpec = {
      holderIdentity: this.#o.identity,
      leaseDurationSeconds: Math.ceil(this.#o.leaseDurationMs / 1000),
      acquireTime: microTime(now),
      renewTime: microTime(now),
      leaseTransitions: 0,
    };
    if (current === undefined) {
      return this.#write("POST", {
        apiVersion: "coordination.k8s.io/v1",
        kind: "Lease",
        metadata: { name: this.#o.name, namespace: this.#o.namespace },
        spec: mine,
      });
    }
    const spec = current.spec ?? {};
    if (!isDeepStrictEqual(this.#observed?.spec, spec)) this.#observed = { spec, at: Date.now() };
    const holder = spec.holderIdentity ?? "";
    const expired =
      Date.now() > (this.#observed?.at ?? 0) + (spec.leaseDurationSeconds ?? 0) * 1000 || holder === "";
    if (holder !== this.#o.identity && !expired) return false;
    const next: LeaseSpec =
      holder === this.#o.identity
        ? {
            ...mine,
            acquireTime: spec.acquireTime ?? mine.acquireTime,
            leaseTransitions: spec.leaseTransitions ?? 0,
          }
        : { ...mine, leaseTransitions: (spec.leaseTransitions ?? 0) + 1 };
    return this.#write("PUT", { ...current, spec: next });
  }

  async #write(method: "POST" | "PUT", lease: Lease): Promise<boolean> {
    const path = method === "POST" ? this.#path.replace(/\/[^/]+$/, "") : this.#path;
    try {
      const written = await this.#client.request<Lease>(method, path, { body: lease });
      this.#observed = { spec: written.spec, at: Date.now() };
      return true;
    } catch (err) {
      if (isConflict(err)) return false; // another process wrote first; read again next round
      throw err;
    }
  }

  /** Stops trying and, when leading, gives the lease up at once so a standby need not wait it out. */
  async release(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    if (!this.#leading) return;
    this.#leading = false;
    try {
      const current = await this.#client.request<Lease>("GET", this.#path);
      if (current.spec.holderIdentity !== this.#o.identity) return;
      const now = microTime(this.#now());
      await this.#client.request("PUT", this.#path, {
        body: {
          ...current,
          spec: {
            ...current.spec,
            holderIdentity: "",
            leaseDurationSeconds: 1,
            renewTime: now,
            acquireTime: now,
          },
        },
      });
    } catch (err) {
      this.#o.log.warn({ err, lease: this.#o.name }, "Failed to release lease");
    }
  }
}
