import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

/** The controller's Prometheus metrics, on a registry of its own (no global state shared with tests). */
export interface Metrics {
  readonly registry: Registry;
  readonly builds: Counter<"result">;
  readonly buildDuration: Histogram<"result">;
  readonly stageDuration: Histogram<"result">;
  readonly queueDepth: Gauge;
  readonly reconciles: Counter<"result">;
  readonly reconcileDuration: Histogram;
  readonly cacheHits: Counter;
  readonly activeBuilds: Gauge;
  readonly kubeRequests: Gauge<"verb">;
  readonly eventsPending: Gauge;
  readonly eventsDropped: Gauge;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "kiln_controller_" });
  const buckets = [1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];
  return {
    registry,
    builds: new Counter({
      name: "kiln_builds_total",
      help: "Builds finished, by result (succeeded, failed).",
      labelNames: ["result"],
      registers: [registry],
    }),
    buildDuration: new Histogram({
      name: "kiln_build_duration_seconds",
      help: "Time from a build's start to its end.",
      labelNames: ["result"],
      buckets,
      registers: [registry],
    }),
    stageDuration: new Histogram({
      name: "kiln_stage_duration_seconds",
      help: "Time a stage pod ran.",
      labelNames: ["result"],
      buckets,
      registers: [registry],
    }),
    queueDepth: new Gauge({
      name: "kiln_queue_depth",
      help: "Keys waiting in the work queue.",
      registers: [registry],
    }),
    reconciles: new Counter({
      name: "kiln_reconciles_total",
      help: "Reconciles, by result (ok, error).",
      labelNames: ["result"],
      registers: [registry],
    }),
    reconcileDuration: new Histogram({
      name: "kiln_reconcile_duration_seconds",
      help: "Time one reconcile took.",
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
      registers: [registry],
    }),
    cacheHits: new Counter({
      name: "kiln_cache_hits_total",
      help: "Steps whose result came from the cache.",
      registers: [registry],
    }),
    activeBuilds: new Gauge({
      name: "kiln_active_builds",
      help: "Builds admitted by the concurrency limits.",
      registers: [registry],
    }),
    kubeRequests: new Gauge({
      name: "kiln_kube_requests",
      help: "Requests sent to the Kubernetes API since start, by verb.",
      labelNames: ["verb"],
      registers: [registry],
    }),
    eventsPending: new Gauge({
      name: "kiln_events_pending",
      help: "Events queued or being sent.",
      registers: [registry],
    }),
    eventsDropped: new Gauge({
      name: "kiln_events_dropped",
      help: "Events dropped since start because too many were queued.",
      registers: [registry],
    }),
  };
}
