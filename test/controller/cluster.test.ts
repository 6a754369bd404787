import assert from "node:assert/strict";
import { suite, type TestContext, test } from "node:test";
import { isDeepStrictEqual } from "node:util";
import type { V1Pod } from "@kubernetes/client-node";
import { imageBuildsPath } from "../../src/kube/resources.ts";
import { skopeo } from "../helpers/skopeo.ts";
import {
  type Cluster,
  cluster,
  createImageBuild,
  createPushSecret,
  getImageBuild,
  layersSpec,
  listPods,
  namespace,
  registryDigest,
  startController,
  waitFor,
} from "./harness.ts";

// The controller against the real test cluster: `kiln controller` processes, stage pods running the kiln
// image built from this checkout, the registry the pods push to. Each test has its own namespace and
// controller(s), so the tests run side by side.

async function phaseOf(c: Cluster, ns: string, name: string, phase: string, generation = 1) {
  let last: unknown;
  try {
    return await waitFor(`${ns}/${name} to reach ${phase}`, async () => {
      const ib = await getImageBuild(c, ns, name);
      last = ib?.status;
      return ib?.status?.phase === phase && ib.status.observedGeneration === generation ? ib : undefined;
    });
  } catch (err) {
    throw new Error(`${ns}/${name} did not reach ${phase}; its status: ${JSON.stringify(last)}`, {
      cause: err,
    });
  }
}

/** Watches the namespace's pods by polling; every pod uid ever seen, by name. */
function podHistory(c: Cluster, ns: string, t: { after(fn: () => void): void }) {
  const seen = new Map<string, Set<string>>();
  let stopped = false;
  const poll = async () => {
    while (!stopped) {
      for (const p of await listPods(c, ns).catch(() => [] as V1Pod[])) {
        const name = p.metadata!.name!;
        if (!seen.has(name)) seen.set(name, new Set());
        seen.get(name)!.add(p.metadata!.uid!);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  void poll();
  t.after(() => {
    stopped = true;
  });
  return seen;
}

/** A namespace of its own with a controller reconciling in it, and the history of its pods. */
async function started(t: TestContext) {
  const c = await cluster();
  const ns = await namespace(c, t);
  const pods = podHistory(c, ns, t);
  const ctl = startController(c, ns, t);
  await ctl.reconciling;
  return { c, ns, pods, ctl };
}

/**
 * Waits until the ImageBuild events of `ns` include every one of `reasons` (the controller sends events
 * in the background, moments after what they report).
 */
async function eventReasons(c: Cluster, ns: string, reasons: readonly string[]): Promise<void> {
  let seen: string[] = [];
  try {
    await waitFor(
      `events ${reasons.join(", ")}`,
      async () => {
        const list = await c.client.request<{ items: { reason: string }[] }>(
          "GET",
          `/api/v1/namespaces/${ns}/events`,
          { query: { fieldSelector: "involvedObject.kind=ImageBuild" } },
        );
        seen = list.items.map((e) => e.reason);
        return reasons.every((r) => seen.includes(r));
      },
      10_000,
    );
  } catch (err) {
    throw new Error(`events recorded: ${seen.join(", ") || "none"}`, { cause: err });
  }
}

suite("controller on the test cluster", { concurrency: true, timeout: 400_000 }, () => {
  test("an ImageBuild reaches Succeeded with the digest the registry holds; the secret reaches only the pusher", async (t) => {
    const { c, ns, ctl } = await started(t);
    const secret = await createPushSecret(c, ns);
    const spec = layersSpec(c, `e2e/${ns}/ok`, { "hello.txt": "hello\n" }, {});
    (spec as { output: object }).output = {
      ...(spec as { output: object }).output,
      pushSecretRef: { name: secret },
      tags: ["extra"],
    };
    await createImageBuild(c, ns, "ok", spec);
    const ib = await phaseOf(c, ns, "ok", "Succeeded");
    const repo = `${c.env.KILN_TEST_REGISTRY}/e2e/${ns}/ok`;
    const digest = await registryDigest(`${repo}:v1`);
    assert.equal(ib.status?.digest, digest);
    assert.equal(ib.status?.image, `${repo}@${digest}`);
    assert.equal(await registryDigest(`${repo}:extra`), digest);
    assert.deepEqual(ib.status?.platforms, [{ platform: "linux/amd64", digest }]);
    assert.deepEqual(
      ib.status?.conditions?.map((x) => [x.type, x.status, x.reason]),
      [
        ["Succeeded", "True", "Succeeded"],
        ["Ready", "True", "Succeeded"],
      ],
    );
    const [stage] = ib.status?.stages ?? [];
    assert.equal(stage?.digest, digest);
    assert.deepEqual(
      // A layer spec's steps have no Dockerfile line.
      stage?.steps?.map((s) => [s.line, s.instruction, s.cached]),
      [[undefined, "COPY hello.txt /data/hello.txt", false]],
    );
    // The layer in status is the one in the pushed manifest, on top of busybox's.
    const manifest = JSON.parse(
      await skopeo("inspect", "--raw", "--tls-verify=false", `docker://${repo}:v1`),
    );
    assert.equal(stage?.steps?.[0]?.layerDigest, manifest.layers.at(-1).digest);

    const pods = await listPods(c, ns);
    assert.deepEqual(
      pods.map((p) => p.metadata?.name),
      [stage?.podName],
    );
    const pod = pods[0]!;
    assert.equal(pod.spec?.automountServiceAccountToken, false);
    // A file-only stage runs no user code: its one container, the pusher, builds and pushes.
    assert.equal(pod.spec?.initContainers, undefined);
    assert.deepEqual(
      pod.spec?.containers.map((x) => [x.name, x.volumeMounts?.map((m) => m.name)]),
      [["pusher", ["job", "work", "push-secret"]]],
    );
    assert.deepEqual(
      pod.metadata?.ownerReferences?.map((o) => [o.kind, o.name, o.uid]),
      [["ImageBuild", "ok", ib.metadata.uid]],
    );
    await eventReasons(c, ns, ["Scheduled", "StageSucceeded", "Pushed"]);

    const port = ctl.logs.find((l) => l.msg === "Controller started")?.port;
    const get = async (path: string) => {
      const res = await fetch(`http://127.0.0.1:${port}${path}`);
      return [res.status, await res.text()] as const;
    };
    assert.deepEqual(await get("/healthz"), [200, "ok\n"]);
    assert.deepEqual(await get("/readyz"), [200, "ok\n"]);
    const [status, metrics] = await get("/metrics");
    assert.equal(status, 200);
    assert.match(metrics, /^kiln_builds_total\{result="succeeded"\} 1$/m);
    assert.match(metrics, /^kiln_build_duration_seconds_count\{result="succeeded"\} 1$/m);
    assert.match(metrics, /^kiln_queue_depth 0$/m);
    assert.equal(await ctl.stop(), 0); // SIGTERM: a graceful stop, exit code 0
  });

  test("two controllers and a killed leader: one leads at a time, exactly one pod, the build finishes", {
    timeout: 180_000,
  }, async (t) => {
    const c = await cluster();
    const ns = await namespace(c, t);
    const pods = podHistory(c, ns, t);
    const a = startController(c, ns, t, ["--lease-namespace", ns]);
    await a.reconciling;
    const b = startController(c, ns, t, ["--lease-namespace", ns]);
    await createImageBuild(c, ns, "ha", layersSpec(c, `e2e/${ns}/ha`, { "a.txt": "a\n" }));
    await waitFor("the stage pod", async () => pods.size > 0);
    await a.kill(); // mid-build, holding the lease
    await b.reconciling; // takes over once the lease expires
    const ib = await phaseOf(c, ns, "ha", "Succeeded");
    assert.equal(ib.status?.digest, await registryDigest(`${c.env.KILN_TEST_REGISTRY}/e2e/${ns}/ha:v1`));
    assert.deepEqual(
      [...pods.entries()].map(([name, uids]) => [name, uids.size]),
      [[ib.status?.stages?.[0]?.podName, 1]],
    );
    // A restarted controller is a standby now and changes nothing.
    const a2 = startController(c, ns, t, ["--lease-namespace", ns]);
    await new Promise((r) => setTimeout(r, 2000));
    assert.ok(
      !a2.logs.some((l) => l.msg === "Caches synced; reconciling"),
      "a2 must not lead while b renews",
    );
    assert.equal(pods.size, 1);
  });

  test("a spec change mid-build cancels the running pod and builds the new spec", async (t) => {
    const { c, ns, pods } = await started(t);
    // The first generation's pod can be scheduled on no node, so it is surely still running when the
    // spec changes (a fast build could otherwise finish first and leave nothing to cancel).
    const unschedulable = { nodeSelector: { "kiln.dev/test-no-such-node": "true" } };
    await createImageBuild(
      c,
      ns,
      "change",
      layersSpec(c, `e2e/${ns}/change`, { "v.txt": "one\n" }, unschedulable),
    );
    const first = await waitFor("the first pod", async () => [...pods.keys()][0]);
    await c.client.request("PATCH", `${imageBuildsPath(ns)}/change`, {
      body: { spec: { nodeSelector: null, source: { inline: { files: { "v.txt": "two\n" } } } } },
      contentType: "application/merge-patch+json",
    });
    const ib = await phaseOf(c, ns, "change", "Succeeded", 2);
    const podName = ib.status?.stages?.[0]?.podName;
    assert.notEqual(podName, first);
    const now = (await listPods(c, ns)).map((p) => [
      p.metadata?.name,
      p.metadata?.labels?.["kiln.dev/generation"],
    ]);
    assert.deepEqual(now, [[podName, "2"]]); // the first generation's pod is gone
    assert.equal(ib.status?.digest, await registryDigest(`${c.env.KILN_TEST_REGISTRY}/e2e/${ns}/change:v1`));
    await eventReasons(c, ns, ["Cancelled", "Scheduled", "Pushed"]);
  });

  test("deleting an ImageBuild mid-build removes its pods, then the finalizer lets it go", async (t) => {
    const { c, ns, pods } = await started(t);
    await createImageBuild(c, ns, "gone", layersSpec(c, `e2e/${ns}/gone`, { "g.txt": "g\n" }));
    await waitFor("the pod", async () => pods.size > 0);
    // The pod comes first, the finalizer with the writes after it (its owner reference covers the moment
    // between).
    await waitFor("the finalizer", async () => {
      const ib = await getImageBuild(c, ns, "gone");
      return isDeepStrictEqual(ib?.metadata.finalizers, ["kiln.dev/cleanup"]);
    });
    await c.client.request("DELETE", `${imageBuildsPath(ns)}/gone`);
    await waitFor(
      "the ImageBuild to go",
      async () => (await getImageBuild(c, ns, "gone")) === undefined,
      60_000,
    );
    await waitFor("its pods to go", async () => (await listPods(c, ns)).length === 0, 60_000);
  });

  test("a COPY of a missing path ends Failed with the message naming the spec item in status.failure", async (t) => {
    const { c, ns } = await started(t);
    const spec = layersSpec(c, `e2e/${ns}/bad`, { "present.txt": "x\n" });
    (spec as { layers: { layers: object[] } }).layers.layers.push({
      files: [{ src: "missing.txt", dest: "/m" }],
    });
    await createImageBuild(c, ns, "bad", spec);
    const ib = await phaseOf(c, ns, "bad", "Failed");
    const f = ib.status?.failure;
    assert.equal(f?.reason, "StepFailed");
    assert.equal(f?.stage, "image");
    assert.equal(f?.line, undefined, "a layer spec has no Dockerfile line");
    assert.match(f?.message ?? "", /^layers\[1\]\.files\[0\]: missing\.txt: not found in the build context/);
    assert.equal(f?.logSnippet, undefined, "no step printed anything; kiln's own log records are no snippet");
    assert.deepEqual(
      ib.status?.conditions?.map((x) => [x.type, x.status, x.reason]),
      [
        ["Succeeded", "False", "StepFailed"],
        ["Ready", "False", "StepFailed"],
      ],
    );
    await eventReasons(c, ns, ["Failed"]);
  });

  test("a push Secret that does not exist fails the build at once, naming it", async (t) => {
    const { c, ns } = await started(t);
    const spec = layersSpec(c, `e2e/${ns}/nosecret`, { "n.txt": "n\n" });
    (spec as { output: object }).output = {
      ...(spec as { output: object }).output,
      pushSecretRef: { name: "not-here" },
    };
    await createImageBuild(c, ns, "nosecret", spec);
    const ib = await phaseOf(c, ns, "nosecret", "Failed");
    assert.deepEqual(ib.status?.failure, {
      reason: "SecretNotFound",
      message: "Secret not-here (volume push-secret) does not exist in the ImageBuild's namespace",
      stage: "image",
    });
    await waitFor("its pod to go", async () => (await listPods(c, ns)).length === 0, 60_000);
  });

  test("a stage pod deleted by hand mid-build is created again and the build succeeds", async (t) => {
    const { c, ns, pods } = await started(t);
    await createImageBuild(c, ns, "retry", layersSpec(c, `e2e/${ns}/retry`, { "r.txt": "r\n" }));
    const name = await waitFor("the pod", async () => [...pods.keys()][0]);
    await c.client.request("DELETE", `/api/v1/namespaces/${ns}/pods/${name}`, {
      body: { gracePeriodSeconds: 0 },
    });
    const ib = await phaseOf(c, ns, "retry", "Succeeded");
    assert.equal(pods.get(name)?.size, 2); // the same name, a second pod
    assert.deepEqual(JSON.parse(ib.metadata.annotations?.["kiln.dev/attempts"] ?? "{}")[name]?.[0], 2);
    assert.equal(ib.status?.digest, await registryDigest(`${c.env.KILN_TEST_REGISTRY}/e2e/${ns}/retry:v1`));
  });

  test("two platforms: a stage pod per platform, then the index pod; the index digest is the build's", async (t) => {
    const { c, ns, pods } = await started(t);
    const spec = layersSpec(
      c,
      `e2e/${ns}/multi`,
      { "m.txt": "m\n" },
      { platforms: ["linux/amd64", "linux/arm64"] },
    );
    (spec as { layers: { base: string } }).layers.base = "scratch"; // no arm64 base image in the test registry
    await createImageBuild(c, ns, "multi", spec);
    const ib = await phaseOf(c, ns, "multi", "Succeeded");
    const ref = `${c.env.KILN_TEST_REGISTRY}/e2e/${ns}/multi:v1`;
    assert.equal(ib.status?.digest, await registryDigest(ref));
    const index = JSON.parse(await skopeo("inspect", "--raw", "--tls-verify=false", `docker://${ref}`));
    assert.equal(index.mediaType, "application/vnd.oci.image.index.v1+json");
    assert.deepEqual(
      index.manifests.map((m: { digest: string; platform: { architecture: string } }) => [
        m.platform.architecture,
        m.digest,
      ]),
      ib.status?.platforms?.map((p) => [p.platform.split("/")[1], p.digest]),
    );
    assert.deepEqual([...pods.keys()].map((n) => n.replace(/^multi-[0-9a-f]{8}-/, "")).sort(), [
      "image-amd64",
      "image-arm64",
      "index",
    ]);
  });
});
