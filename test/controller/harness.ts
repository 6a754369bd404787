import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { resolve } from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import type { V1Pod } from "@kubernetes/client-node";
import { imageBuildCrd } from "../../src/api/crd.ts";
import { API_GROUP, IMAGE_BUILD_PLURAL, type ImageBuild } from "../../src/api/image-build.ts";
import { isNotFound, KubeClient } from "../../src/kube/client.ts";
import { loadKubeconfig } from "../../src/kube/kubeconfig.ts";
import { imageBuildsPath, podsPath } from "../../src/kube/resources.ts";
import { type ClusterEnv, loadClusterEnv } from "../cluster/cluster-env.ts";
import { kilnImage } from "../helpers/kiln-image.ts";
import { skopeo } from "../helpers/skopeo.ts";

const KILN = resolve(import.meta.dirname, "../../bin/kiln");

export interface Cluster {
  readonly env: ClusterEnv;
  readonly client: KubeClient;
  /** The kiln image build pods run, pinned by digest. */
  readonly image: string;
}

let shared: Promise<Cluster> | undefined;

/** The test cluster with the ImageBuild CRD applied and the kiln pod image in its registry; once per process. */
export function cluster(): Promise<Cluster> {
  shared ??= (async () => {
    const env = loadClusterEnv();
    const client = new KubeClient(loadKubeconfig(env.KUBECONFIG));
    const crd = `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${IMAGE_BUILD_PLURAL}.${API_GROUP}`;
    await client.request("PATCH", crd, {
      body: imageBuildCrd(),
      contentType: "application/apply-patch+yaml",
      query: { fieldManager: "kiln-test", force: "true" },
    });
    await waitFor("the CRD to be established", async () => {
      const c = await client.request<{ status?: { conditions?: { type: string; status: string }[] } }>(
        "GET",
        crd,
      );
      return c.status?.conditions?.some((x) => x.type === "Established" && x.status === "True");
    });
    return { env, client, image: await kilnImage(env.KILN_TEST_REGISTRY) };
  })();
  return shared;
}

/** Polls `check` until it returns something other than undefined/false, or fails after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false>,
  timeoutMs = 90_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`, { cause: last });
    await sleep(200);
  }
}

/** A fresh namespace for one test, deleted afterwards (with everything in it). */
export async function namespace(c: Cluster, t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const name = `kiln-e2e-${randomBytes(4).toString("hex")}`;
  await c.client.request("POST", "/api/v1/namespaces", {
    body: { apiVersion: "v1", kind: "Namespace", metadata: { name } },
  });
  t.after(async () => {
    // Finalizers need a controller; the test's is gone by now, so they are removed by hand.
    for (const ib of await listImageBuilds(c, name)) {
      await c.client
        .request("PATCH", `${imageBuildsPath(name)}/${ib.metadata.name}`, {
          body: { metadata: { finalizers: null } },
          contentType: "application/merge-patch+json",
        })
        .catch(() => {});
    }
    await c.client.request("DELETE", `/api/v1/namespaces/${name}`).catch(() => {});
  });
  return name;
}

export async function listImageBuilds(c: Cluster, ns: string): Promise<ImageBuild[]> {
  return (await c.client.request<{ items: ImageBuild[] }>("GET", imageBuildsPath(ns))).items;
}

export async function getImageBuild(c: Cluster, ns: string, name: string): Promise<ImageBuild | undefined> {
  try {
    return await c.client.request<ImageBuild>("GET", `${imageBuildsPath(ns)}/${name}`);
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

export async function listPods(c: Cluster, ns: string): Promise<V1Pod[]> {
  return (await c.client.request<{ items: V1Pod[] }>("GET", podsPath(ns))).items;
}

export async function createImageBuild(
  c: Cluster,
  ns: string,
  name: string,
  spec: object,
): Promise<ImageBuild> {
  return c.client.request<ImageBuild>("POST", imageBuildsPath(ns), {
    body: { apiVersion: "kiln.dev/v1alpha1", kind: "ImageBuild", metadata: { name, namespace: ns }, spec },
  });
}

/** A dockerconfigjson Secret for the test registry (it asks for no login; the Secret is there to be mounted). */
export async function createPushSecret(c: Cluster, ns: string, name = "push"): Promise<string> {
  const config = {
    auths: { [c.env.KILN_TEST_REGISTRY]: { auth: Buffer.from("kiln:secret-value").toString("base64") } },
  };
  await c.client.request("POST", `/api/v1/namespaces/${ns}/secrets`, {
    body: {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name, namespace: ns },
      type: "kubernetes.io/dockerconfigjson",
      data: { ".dockerconfigjson": Buffer.from(JSON.stringify(config)).toString("base64") },
    },
  });
  return name;
}

/** A layer-spec ImageBuild writing `files` from an inline source onto busybox from the test registry. */
export function layersSpec(
  c: Cluster,
  repo: string,
  files: Record<string, string>,
  more: object = {},
): object {
  const r = c.env.KILN_TEST_REGISTRY;
  return {
    source: { inline: { files } },
    layers: {
      base: `${r}/library/busybox:latest`,
      layers: Object.keys(files).map((f) => ({ files: [{ src: f, dest: `/data/${f}` }] })),
    },
    output: { image: `${r}/${repo}:v1`, insecure: true },
    ...more,
  };
}

export interface ControllerProcess {
  readonly process: ChildProcess;
  /** Every JSON log line so far. */
  readonly logs: Record<string, unknown>[];
  /** Resolves once it reconciles (caches synced, and leading when elected). */
  readonly reconciling: Promise<void>;
  /** SIGTERM and wait for exit. */
  stop(): Promise<number | null>;
  /** SIGKILL: no release of the lease, no goodbye. */
  kill(): Promise<void>;
}

/** `kiln controller` as its own process, watching one namespace, with a short lease for the tests. */
export function startController(
  c: Cluster,
  ns: string,
  t: { after(fn: () => Promise<unknown>): void },
  extra: readonly string[] = [],
  logLevel = "debug",
): ControllerProcess {
  const args = [
    "controller",
    "--kubeconfig",
    c.env.KUBECONFIG,
    "--builder-image",
    c.image,
    "--namespace",
    ns,
    "--port",
    "0",
    "--lease-duration-seconds",
    "4",
    ...extra,
  ];
  const proc = spawn(KILN, args, {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, LOG_LEVEL: logLevel },
  });
  const logs: Record<string, unknown>[] = [];
  const exited = new Promise<number | null>((res) => proc.once("exit", (code) => res(code)));
  const reconciling = Promise.withResolvers<void>();
  createInterface(proc.stderr!).on("line", (line) => {
    try {
      const o = JSON.parse(line) as Record<string, unknown>;
      logs.push(o);
      if (o.msg === "Caches synced; reconciling") reconciling.resolve();
    } catch {
      logs.push({ msg: line });
    }
  });
  exited.then(() => reconciling.reject(new Error(`controller exited: ${JSON.stringify(logs.slice(-5))}`)));
  const timer = setTimeout(
    () =>
      reconciling.reject(
        new Error(`controller not reconciling after 60 s: ${JSON.stringify(logs.slice(-8))}`),
      ),
    60_000,
  );
  reconciling.promise.then(
    () => clearTimeout(timer),
    () => clearTimeout(timer),
  );
  // A graceful stop must finish within 10 s; a controller that hangs on SIGTERM fails the test.
  const stop = async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return exited;
    proc.kill("SIGTERM");
    const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
    const code = await exited;
    clearTimeout(timer);
    if (proc.signalCode === "SIGKILL" && code === null)
      throw new Error(`controller did not stop on SIGTERM: ${JSON.stringify(logs.slice(-8))}`);
    return code;
  };
  t.after(stop);
  return {
    process: proc,
    logs,
    reconciling: reconciling.promise,
    stop,
    kill: async () => {
      proc.kill("SIGKILL");
      await exited;
    },
  };
}

/**
 * Creates `pod` and waits until each of `containers` (default: every container) has terminated; resolves
 * with their logs by name. A container that exits non-zero fails, its log in the message.
 */
export async function runPod(
  c: Cluster,
  pod: V1Pod,
  containers: readonly string[] = pod.spec!.containers.map((x) => x.name),
  timeoutMs = 180_000,
): Promise<Record<string, string>> {
  const path = `${podsPath(pod.metadata!.namespace!)}/${pod.metadata!.name}`;
  await c.client.request("POST", podsPath(pod.metadata!.namespace!), { body: pod });
  const statuses = await waitFor(
    `pod ${pod.metadata!.name} to run ${containers.join(", ")}`,
    async () => {
      const p = await c.client.request<V1Pod>("GET", path);
      const all = p.status?.containerStatuses ?? [];
      const done = containers.map((n) => all.find((s) => s.name === n && s.state?.terminated));
      return done.every((s) => s !== undefined) && done;
    },
    timeoutMs,
  );
  const logs: Record<string, string> = {};
  for (const s of statuses) {
    logs[s!.name] = await c.client.request<string>("GET", `${path}/log`, {
      query: { container: s!.name },
      text: true,
    });
    const code = s!.state!.terminated!.exitCode;
    if (code !== 0) throw new Error(`container ${s!.name} exited ${code}: ${logs[s!.name]}`);
  }
  return logs;
}

/** The manifest digest the registry holds for `ref`, computed here from its bytes. */
export async function registryDigest(ref: string): Promise<string> {
  const raw = await skopeo("inspect", "--raw", "--tls-verify=false", `docker://${ref}`);
  return `sha256:${createHash("sha256").update(raw).digest("hex")}`;
}
