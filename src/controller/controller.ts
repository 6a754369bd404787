import { randomUUID } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { KubernetesObject, V1Pod } from "@kubernetes/client-node";
import { Phase } from "../api/image-build.ts";
import { KubeClient } from "../kube/client.ts";
import { EventRecorder } from "../kube/event-recorder.ts";
import { Informer, trimMetadata } from "../kube/informer.ts";
import type { KubeEndpoint } from "../kube/kubeconfig.ts";
import { LeaderElector } from "../kube/lease.ts";
import { imageBuildsPath, podsPath } from "../kube/resources.ts";
import type { Logger } from "../log.ts";
import { Admission } from "./admission.ts";
import { createMetrics, type Metrics } from "./metrics.ts";
import { Label } from "./names.ts";
import type { BuilderConfig } from "./pod-builder.ts";
import { summarizePod } from "./pod-state.ts";
import { WorkQueue } from "./queue.ts";
import { Expectations, Plans, RecentWrites, reconcile } from "./reconcile.ts";

/** Event writes in flight at once. */
const EVENT_CONCURRENCY = 2;
/** How long a graceful stop waits for events still queued. */
const STOP_EVENTS_MS = 3000;
const FINISHED = new Set<string>([Phase.Succeeded, Phase.Failed]);

export interface ControllerOptions {
  readonly builder: BuilderConfig;
  /** Watch one namespace; all namespaces when absent. */
  readonly namespace?: string;
  readonly workers: number;
  readonly maxConcurrentBuilds: number;
  readonly maxConcurrentBuildsPerNamespace: number;
  /** Pods a stage may get in all: the first and its retries after transient failures. */
  readonly maxAttempts: number;
  /** The Lease to hold before doing anything; no election when absent (one replica). */
  readonly leaderElection?: {
    readonly namespace: string;
    readonly name: string;
    readonly identity: string;
    /** How long a claim lasts (client-go's 15 s by default); renewal and retry periods scale with it. */
    readonly leaseDurationMs?: number;
  };
  /** Port of /metrics, /healthz and /readyz (0: any free port). */
  readonly port: number;
  readonly host?: string;
}

/** The running controller: informers → queue → reconcile workers, behind leader election. */
export class Controller {
  readonly client: KubeClient;
  readonly metrics: Metrics;
  readonly #opts: ControllerOptions;
  readonly #log: Logger;
  readonly #queue = new WorkQueue({ baseDelayMs: 50, maxDelayMs: 60_000 });
  readonly #admission: Admission;
  readonly #expectations = new Expectations();
  readonly #written = new RecentWrites();
  readonly #plans = new Plans();
  readonly #podsByOwner = new Map<string, Map<string, V1Pod>>();
  /** ImageBuilds as the API server sent them; reconcile parses the one it looks at. */
  readonly #imageBuilds: Informer<KubernetesObject>;
  /** Build pods, as much of them as reconciles read (summarizePod). */
  readonly #pods: Informer<V1Pod>;
  readonly #events: EventRecorder;
  readonly #elector: LeaderElector | undefined;
  #server: Server | undefined;
  #workers: Promise<void> | undefined;
  #started = false;
  #stopping: Promise<void> | undefined;
  /** Called when leadership is lost: the process should exit and start over, as client-go's do. */
  onLostLeadership: () => void = () => {};

  constructor(endpoint: KubeEndpoint, opts: ControllerOptions, log: Logger) {
    // Every worker and the event recorder may hold a connection; the lease renewal must find one too.
    this.client = new KubeClient(endpoint, { maxConnections: opts.workers + EVENT_CONCURRENCY + 2 });
    this.metrics = createMetrics();
    this.#opts = opts;
    this.#log = log;
    this.#admission = new Admission(opts.maxConcurrentBuilds, opts.maxConcurrentBuildsPerNamespace);
    this.#events = new EventRecorder(this.client, {
      source: {
        component: "kiln-controller",
        instance: opts.leaderElection?.identity ?? "kiln-controller",
      },
      log,
      concurrency: EVENT_CONCURRENCY,
    });
    this.#imageBuilds = new Informer<KubernetesObject>(this.client, {
      path: imageBuildsPath(opts.namespace),
      transform: trimMetadata,
      log,
      onChange: (ib, verb) => this.#onImageBuild(ib, verb),
    });
    this.#pods = new Informer<V1Pod>(this.client, {
      path: podsPath(opts.namespace),
      labelSelector: Label.ImageBuildUid,
      transform: summarizePod,
      log,
      onChange: (pod, verb) => this.#onPod(pod, verb),
    });
    if (opts.leaderElection !== undefined) {
      const leaseDurationMs = opts.leaderElection.leaseDurationMs ?? 15_000;
      this.#elector = new LeaderElector(this.client, {
        ...opts.leaderElection,
        leaseDurationMs,
        renewDeadlineMs: Math.round((leaseDurationMs * 2) / 3),
        retryPeriodMs: Math.round(leaseDurationMs / 7.5),
        log,
      });
    }
  }

  get ready(): boolean {
    return this.#imageBuilds.synced && this.#pods.synced;
  }

  get leading(): boolean {
    return this.#elector?.leading ?? this.#started;
  }

  /** Serves health and metrics at once; starts reconciling now or when elected. Resolves when serving. */
  async start(): Promise<void> {
    this.#server = await this.#serve();
    if (this.#elector === undefined) {
      await this.#run();
      return;
    }
    this.#elector.run(
      () => void this.#run().catch((err: unknown) => this.#log.error({ err }, "Failed to start")),
      () => this.onLostLeadership(),
    );
  }

  /** The address /metrics is served on. */
  get address(): { host: string; port: number } {
    const a = this.#server?.address();
    return typeof a === "object" && a !== null ? { host: a.address, port: a.port } : { host: "", port: 0 };
  }

  async #run(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    // Pods first: reconciles must never see an ImageBuild before its pods are in the cache.
    await this.#pods.start();
    await this.#imageBuilds.start();
    this.#log.info(
      { namespace: this.#opts.namespace ?? "(all)", workers: this.#opts.workers },
      "Caches synced; reconciling",
    );
    this.#workers = this.#queue.run(
      this.#opts.workers,
      (key) => this.#reconcile(key),
      (key, err) => {
        this.metrics.reconciles.inc({ result: "error" });
        this.#log.error({ err, imageBuild: key }, "Reconcile failed");
      },
    );
  }

  async #reconcile(key: string): Promise<void> {
    const [namespace = "", name = ""] = key.split("/");
    const log = this.#log.child({ imageBuild: key, reconcileId: randomUUID() });
    const started = performance.now();
    const result = await reconcile(
      { namespace, name },
      {
        client: this.client,
        imageBuilds: this.#imageBuilds,
        podsOf: (uid) => [...(this.#podsByOwner.get(uid)?.values() ?? [])],
        admission: this.#admission,
        expectations: this.#expectations,
        written: this.#written,
        plans: this.#plans,
        decide: {
          builder: this.#opts.builder,
          maxAttempts: this.#opts.maxAttempts,
          retryDelayMs: (n) => Math.min(60_000, 1000 * 2 ** (n - 2)),
        },
        events: this.#events,
        othersWaiting: () => this.#queue.urgentLength > 0,
        metrics: this.metrics,
        log,
        now: () => new Date(),
      },
    );
    this.metrics.reconciles.inc({ result: "ok" });
    this.metrics.reconcileDuration.observe((performance.now() - started) / 1000);
    this.#queue.forget(key);
    if (result.deferred) this.#queue.add(key);
    if (result.requeueAfterMs !== undefined) this.#queue.addAfter(key, result.requeueAfterMs);
    // Woken builds were given slots: their first pods are due.
    for (const k of result.wake ?? []) this.#queue.add(k, true);
  }

  /**
   * An ImageBuild that waits for its first pods of this generation goes ahead of every other key: the
   * pods are what its user waits for, while other keys only bring status and bookkeeping up to date.
   */
  #onImageBuild(ib: KubernetesObject, verb: "add" | "update" | "delete"): void {
    const key = `${ib.metadata?.namespace}/${ib.metadata?.name}`;
    this.#queue.add(key, verb !== "delete" && this.#waitsForPods(key, ib));
  }

  #waitsForPods(
    key: string,
    ib: KubernetesObject & { status?: { observedGeneration?: number; phase?: string } },
  ) {
    const meta = ib.metadata;
    const uid = meta?.uid ?? "";
    const generation = String(meta?.generation ?? 0);
    if (meta?.deletionTimestamp !== undefined || this.#admission.isWaiting(key)) return false;
    if (ib.status?.observedGeneration === meta?.generation && FINISHED.has(ib.status?.phase ?? ""))
      return false;
    for (const pod of this.#podsByOwner.get(uid)?.values() ?? [])
      if (pod.metadata?.labels?.[Label.Generation] === generation) return false;
    return this.#expectations.pending(uid).length === 0;
  }

  #onPod(pod: V1Pod, verb: "add" | "update" | "delete"): void {
    const uid = pod.metadata?.labels?.[Label.ImageBuildUid];
    const name = pod.metadata?.name;
    if (uid === undefined || name === undefined) return;
    let owned = this.#podsByOwner.get(uid);
    if (verb === "delete") {
      owned?.delete(name);
      if (owned?.size === 0) this.#podsByOwner.delete(uid);
    } else {
      if (owned === undefined) {
        owned = new Map();
        this.#podsByOwner.set(uid, owned);
      }
      owned.set(name, pod);
    }
    this.#expectations.observed(pod.metadata?.namespace ?? "", name);
    const owner = pod.metadata?.ownerReferences?.find((r) => r.controller);
    if (owner !== undefined) this.#queue.add(`${pod.metadata?.namespace}/${owner.name}`);
  }

  async #serve(): Promise<Server> {
    const server = createServer((req, res) => {
      const path = (req.url ?? "/").split("?")[0];
      if (path === "/healthz") {
        res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
      } else if (path === "/readyz") {
        // A standby is ready too: it serves its purpose by waiting for the lease.
        const ok = this.#elector !== undefined && !this.#started ? true : this.ready;
        res
          .writeHead(ok ? 200 : 503, { "content-type": "text/plain" })
          .end(ok ? "ok\n" : "caches not synced\n");
      } else if (path === "/metrics") {
        this.metrics.queueDepth.set(this.#queue.length);
        this.metrics.eventsPending.set(this.#events.pending);
        this.metrics.eventsDropped.set(this.#events.dropped);
        this.metrics.activeBuilds.set(this.#admission.active);
        for (const [verb, n] of this.client.requests) this.metrics.kubeRequests.set({ verb }, n);
        this.metrics.registry.metrics().then(
          (text) => res.writeHead(200, { "content-type": this.metrics.registry.contentType }).end(text),
          (err: unknown) => res.writeHead(500).end(String(err)),
        );
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.#opts.port, this.#opts.host ?? "0.0.0.0", resolve);
    });
    return server;
  }

  /** Graceful stop: no new keys, running reconciles finish, the lease is released, then connections close. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      this.#queue.shutdown();
      await this.#workers;
      await this.#events.flush(STOP_EVENTS_MS);
      await Promise.all([this.#imageBuilds.stop(), this.#pods.stop()]);
      await this.#elector?.release();
      await new Promise<void>((resolve) => (this.#server ? this.#server.close(() => resolve()) : resolve()));
      this.#server?.closeAllConnections();
      await this.client.close();
      this.#log.info("Stopped");
    })();
    return this.#stopping;
  }
}
