/**
 * The controller at scale against the real API server: N ImageBuilds applied at once (BENCH_BUILDS, 1,000
 * by default; BENCH_APPLY_CONCURRENCY creates in flight, 50 by default). The single test node cannot run a
 * thousand build pods, so the stage pods are made unschedulable (a nodeSelector no node has) and the
 * benchmark plays their kubelet: as each pod appears it writes the pod's status as a finished stage would
 * (phase Succeeded, the pusher's StageResult as termination message) — the pods never run, they complete
 * as soon as they exist. The concurrency limit (--max-builds) is twice the builds, so every build is
 * admitted below it.
 * Measured: apply → pod created (p50/p99, from the POST's answer to the pod's watch event) next to the API
 * server's own latency for those POSTs (the reference: no controller can create a pod faster than the API
 * server answers under the same load), the controller's peak RSS, and API requests per build from its own
 * counter once its events are sent. Targets: p99 ≤ 200 ms below the concurrency limit, RSS ≤ 150 MiB.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import type { KubernetesObject, V1Pod } from "@kubernetes/client-node";
import { encodeStageResult } from "../src/api/stage-result.ts";
import { imageBuildsPath, podsPath } from "../src/kube/resources.ts";
import type { Digest } from "../src/oci/digest.ts";
import { cluster, createImageBuild, startController, waitFor } from "../test/controller/harness.ts";

const BUILDS = Number(process.env.BENCH_BUILDS ?? 1000);
const APPLY_CONCURRENCY = Number(process.env.BENCH_APPLY_CONCURRENCY ?? 50);
const MAX_BUILDS = 2 * BUILDS;
const TARGET_P99_MS = 200;
const TARGET_RSS_MIB = 150;

async function mapLimit<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

const percentile = (sorted: readonly number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(m?.[1] ?? 0) / 1024;
}

export default async function controllerBench(): Promise<boolean> {
  const cleanups: (() => Promise<unknown>)[] = [];
  const t = { after: (fn: () => Promise<unknown>) => cleanups.push(fn) };
  const c = await cluster();
  const ns = `kiln-bench-${Date.now().toString(36)}`;
  await c.client.request("POST", "/api/v1/namespaces", {
    body: { apiVersion: "v1", kind: "Namespace", metadata: { name: ns } },
  });
  try {
    const ctl = startController(
      c,
      ns,
      t,
      ["--no-leader-election", "--workers", "32", "--max-builds", String(MAX_BUILDS)],
      "info",
    );
    await ctl.reconciling;
    const pid = ctl.process.pid!;
    let peakRss = rssMiB(pid);
    const sampler = setInterval(() => {
      peakRss = Math.max(peakRss, rssMiB(pid));
    }, 100);
    t.after(async () => clearInterval(sampler)); // before the controller stops, also when the bench fails

    const applied = new Map<string, number>();
    const applyMs: number[] = [];
    const podSeen = new Map<string, number>();
    const succeeded = new Set<string>();
    const allSucceeded = Promise.withResolvers<void>();
    const kubelet: Promise<unknown>[] = [];
    const watching = new AbortController();
    // The API server ends a watch that falls behind (a slow consumer) without an error; watching again
    // from now lists every object as ADDED once more, and both handlers take an object twice alike.
    const keepWatching = async (path: string, onEvent: (e: { type: string; object: unknown }) => void) => {
      while (!watching.signal.aborted) {
        await c.client
          .watch(path, {}, onEvent, watching.signal, 600_000)
          .catch((err: unknown) => console.error(`watch ${path} failed:`, err));
      }
    };
    void keepWatching(podsPath(ns), ({ type, object }) => {
      const pod = object as V1Pod;
      const ib = pod.metadata?.ownerReferences?.[0]?.name;
      if (type !== "ADDED" || ib === undefined || podSeen.has(ib)) return;
      podSeen.set(ib, performance.now());
      kubelet.push(finishPod(pod));
    });
    void keepWatching(imageBuildsPath(ns), ({ object }) => {
      const ib = object as { metadata: { name: string }; status?: { phase?: string } };
      if (ib.status?.phase === "Succeeded") succeeded.add(ib.metadata.name);
      if (succeeded.size === BUILDS) allSucceeded.resolve();
    });

    const finishPod = async (pod: V1Pod) => {
      const digest = `sha256:${createHash("sha256").update(pod.metadata!.name!).digest("hex")}` as Digest;
      const terminated = (message?: string) => ({
        terminated: {
          exitCode: 0,
          startedAt: new Date().toISOString(),
          finishedAt: new Date().toISOString(),
          ...(message ? { message } : {}),
        },
      });
      const status = (name: string, message?: string) => ({
        name,
        image: "kiln",
        imageID: "",
        ready: false,
        restartCount: 0,
        state: terminated(message),
      });
      await c.client.request("PATCH", `${podsPath(ns)}/${pod.metadata!.name}/status`, {
        contentType: "application/merge-patch+json",
        body: {
          status: {
            phase: "Succeeded",
            initContainerStatuses: [status("executor")],
            containerStatuses: [status("pusher", encodeStageResult({ digest, steps: [] }))],
          },
        },
      });
    };

    await new Promise((r) => setTimeout(r, 500)); // the watches are open before the first apply
    const names = Array.from({ length: BUILDS }, (_, i) => `b-${String(i).padStart(5, "0")}`);
    const r = c.env.KILN_TEST_REGISTRY;
    const started = performance.now();
    await mapLimit(names, APPLY_CONCURRENCY, async (name) => {
      const posted = performance.now();
      await createImageBuild(c, ns, name, {
        source: { inline: { files: { "f.txt": name } } },
        layers: { base: "scratch", layers: [{ files: [{ src: "f.txt", dest: "/f.txt" }] }] },
        output: { image: `${r}/bench/${name}:v1`, insecure: true },
        nodeSelector: { "kiln.dev/bench": "hollow" },
      });
      applied.set(name, performance.now());
      applyMs.push(performance.now() - posted);
    });
    const applySeconds = (performance.now() - started) / 1000;
    const timeout = setTimeout(
      () => allSucceeded.reject(new Error("builds not Succeeded after 600 s")),
      600_000,
    );
    try {
      await allSucceeded.promise;
    } catch (err) {
      const list = await c.client.request<{ items: { status?: { phase?: string } }[] }>(
        "GET",
        imageBuildsPath(ns),
      );
      const phases: Record<string, number> = {};
      for (const ib of list.items)
        phases[ib.status?.phase ?? "none"] = (phases[ib.status?.phase ?? "none"] ?? 0) + 1;
      console.error("builds by phase:", phases, "pods seen:", podSeen.size, ctl.logs.slice(-10));
      throw err;
    } finally {
      clearTimeout(timeout);
    }
    const allSeconds = (performance.now() - started) / 1000;
    await Promise.all(kubelet);
    clearInterval(sampler);
    watching.abort();

    const port = ctl.logs.find((l) => l.msg === "Controller started")?.port;
    const scrape = async () => (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const gauge = (text: string, name: string) =>
      Number(new RegExp(`^${name} (\\S+)`, "m").exec(text)?.[1] ?? Number.NaN);
    // Events are sent in the background: their requests count once they are all sent.
    const metrics = await waitFor(
      "the controller's events to be sent",
      async () => {
        const text = await scrape();
        return gauge(text, "kiln_events_pending") === 0 && text;
      },
      120_000,
    );
    const dropped = gauge(metrics, "kiln_events_dropped");
    const heapMiB = gauge(metrics, "kiln_controller_nodejs_heap_size_used_bytes") / 2 ** 20;
    const requests = [...metrics.matchAll(/^kiln_kube_requests\{verb="(\w+)"\} (\d+)/gm)];
    const total = requests.reduce((n, m) => n + Number(m[2]), 0);
    const byVerb = requests.map((m) => `${m[1]} ${(Number(m[2]) / BUILDS).toFixed(2)}`).join(", ");
    const latencies = names.map((n) => podSeen.get(n)! - applied.get(n)!).sort((a, b) => a - b);
    const p50 = percentile(latencies, 50);
    const p99 = percentile(latencies, 99);
    applyMs.sort((a, b) => a - b);
    const okLatency = p99 <= TARGET_P99_MS;
    const okRss = peakRss <= TARGET_RSS_MIB;
    const rows = [
      [
        `controller: apply → pod p50 / p99 (${BUILDS} builds, all below --max-builds ${MAX_BUILDS})`,
        `${p50.toFixed(0)} / ${p99.toFixed(0)} ms`,
        `${percentile(applyMs, 50).toFixed(0)} / ${percentile(applyMs, 99).toFixed(0)} ms`,
        `p99 ≤ ${TARGET_P99_MS} ms ${okLatency ? "ok" : "MISSED"}`,
        `reference: the API server's answer to the creates (${APPLY_CONCURRENCY} in flight); applied in ${applySeconds.toFixed(1)} s, all Succeeded after ${allSeconds.toFixed(1)} s`,
      ],
      [
        `controller: peak RSS (${BUILDS} builds)`,
        `${peakRss.toFixed(0)} MiB`,
        "-",
        `≤ ${TARGET_RSS_MIB} MiB ${okRss ? "ok" : "MISSED"}`,
        `V8 heap in use at the end: ${heapMiB.toFixed(0)} MiB`,
      ],
      [
        `controller: API requests per build`,
        (total / BUILDS).toFixed(2),
        "-",
        "-",
        `${byVerb}; ${dropped} events dropped`,
      ],
    ];
    for (const [name, value, reference, target, note] of rows)
      console.log(`| ${name} | ${value} | ${reference} | - | ${target} | ${note} |`);
    return okLatency && okRss;
  } finally {
    for (const fn of cleanups.reverse()) await fn().catch(() => {});
    // Builds are deleted with the namespace; their finalizers went with the controller, so drop them first.
    const list = await c.client.request<{ items: KubernetesObject[] }>("GET", imageBuildsPath(ns));
    await mapLimit(list.items, APPLY_CONCURRENCY, async (ib) => {
      await c.client.request("PATCH", `${imageBuildsPath(ns)}/${ib.metadata!.name}`, {
        body: { metadata: { finalizers: null } },
        contentType: "application/merge-patch+json",
      });
    });
    await c.client.request("DELETE", `/api/v1/namespaces/${ns}`).catch(() => {});
    await c.client.close();
  }
}
