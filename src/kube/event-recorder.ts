import { randomBytes } from "node:crypto";
import { API_GROUP, API_VERSION, IMAGE_BUILD_KIND, type ImageBuild } from "../api/image-build.ts";
import type { Logger } from "../log.ts";
import type { KubeClient } from "./client.ts";

export interface EventSource {
  readonly component: string;
  readonly instance: string;
}

/** The ImageBuild an event is about: what its involvedObject names, not the whole object. */
type InvolvedObject = Pick<ImageBuild["metadata"], "name" | "namespace" | "uid" | "resourceVersion">;

export interface EventRecorderOptions {
  readonly source: EventSource;
  readonly log: Logger;
  /** Events sent at once (client-go's recorder sends one at a time). */
  readonly concurrency?: number;
  /** Events held for sending; beyond it new ones are dropped and counted, as client-go's broadcaster does. */
  readonly maxPending?: number;
}

interface PendingEvent {
  readonly involved: InvolvedObject;
  readonly type: "Normal" | "Warning";
  readonly reason: string;
  readonly message: string;
  readonly time: Date;
}

/**
 * Events are for people: nothing waits for them, and they are sent in the background a few at a time.
 * Sent as they came, a burst of a thousand builds put three thousand event writes in flight at once, each
 * on a TLS connection of its own, and the pods those builds waited for queued behind them in the API server.
 */
export class EventRecorder {
  readonly #client: KubeClient;
  readonly #opts: EventRecorderOptions;
  readonly #concurrency: number;
  readonly #maxPending: number;
  readonly #queue: PendingEvent[] = [];
  #inFlight = 0;
  #dropped = 0;
  #idle = Promise.withResolvers<void>();

  constructor(client: KubeClient, options: EventRecorderOptions) {
    this.#client = client;
    this.#opts = options;
    this.#concurrency = options.concurrency ?? 2;
    this.#maxPending = options.maxPending ?? 10_000;
    this.#idle.resolve();
  }

  /** Events queued or being sent. */
  get pending(): number {
    return this.#queue.length + this.#inFlight;
  }

  /** Events dropped because too many were pending. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Queues an event about `ib`, stamped `time`; returns at once. */
  record(ib: ImageBuild, type: "Normal" | "Warning", reason: string, message: string, time: Date): void {
    if (this.pending >= this.#maxPending) {
      this.#dropped++;
      return;
    }
    if (this.pending === 0) this.#idle = Promise.withResolvers<void>();
    const { name, namespace, uid, resourceVersion } = ib.metadata;
    this.#queue.push({ involved: { name, namespace, uid, resourceVersion }, type, reason, message, time });
    this.#pump();
  }

  /** Resolves when nothing is pending or after `timeoutMs`, whichever comes first. */
  async flush(timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.#idle.promise, new Promise((r) => (timer = setTimeout(r, timeoutMs)))]);
    clearTimeout(timer);
  }

  #pump(): void {
    while (this.#inFlight < this.#concurrency && this.#queue.length > 0) {
      const e = this.#queue.shift()!;
      this.#inFlight++;
      this.#send(e)
        .catch((err: unknown) => this.#opts.log.warn({ err, reason: e.reason }, "Failed to record event"))
        .finally(() => {
          this.#inFlight--;
          this.#pump();
          if (this.pending === 0) this.#idle.resolve();
        });
    }
  }

  /** One core/v1 Event, as `kubectl describe` shows them. */
  async #send(e: PendingEvent): Promise<void> {
    const namespace = e.involved.namespace ?? "default";
    const time = e.time.toISOString();
    const { component, instance } = this.#opts.source;
    await this.#client.request("POST", `/api/v1/namespaces/${namespace}/events`, {
      discard: true,
      body: {
        apiVersion: "v1",
        kind: "Event",
        metadata: { name: `${e.involved.name}.${randomBytes(8).toString("hex")}`, namespace },
        involvedObject: {
          apiVersion: `${API_GROUP}/${API_VERSION}`,
          kind: IMAGE_BUILD_KIND,
          name: e.involved.name,
          namespace,
          uid: e.involved.uid,
          resourceVersion: e.involved.resourceVersion,
        },
        type: e.type,
        reason: e.reason,
        message: e.message,
        firstTimestamp: time,
        lastTimestamp: time,
        eventTime: time.replace(/Z$/, "000Z"),
        count: 1,
        action: e.reason,
        source: { component },
        reportingComponent: component,
        reportingInstance: instance,
      },
    });
  }
}
