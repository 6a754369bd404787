import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ApiException, AppsV1Api, CoreV1Api, type V1Pod, VersionApi } from "@kubernetes/client-node";
import { clusterKubeConfig, loadClusterEnv } from "./cluster-env.ts";

// The smoke test of test/cluster: the parts kiln relies on work end to end. It fails (never skips) when the
// cluster is not up, because every suite that needs a cluster would silently test nothing otherwise.
const env = loadClusterEnv();
const kc = clusterKubeConfig(env);
const core = kc.makeApiClient(CoreV1Api);
const apps = kc.makeApiClient(AppsV1Api);
const namespace = `kiln-smoke-${randomBytes(4).toString("hex")}`;
const pinned = /^require k8s\.io\/kubernetes (v\S+)$/m.exec(
  readFileSync(new URL("./go/kubernetes/go.mod", import.meta.url), "utf8"),
)?.[1];

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 90_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

function busyboxPod(name: string, command: string, extra: Partial<V1Pod["metadata"]> = {}): V1Pod {
  return {
    metadata: { name, namespace, ...extra },
    spec: {
      restartPolicy: "Never",
      terminationGracePeriodSeconds: 1,
      containers: [{ name: "main", image: "busybox", command: ["sh", "-c", command] }],
    },
  };
}

async function podPhase(name: string): Promise<string | undefined> {
  return (await core.readNamespacedPod({ name, namespace })).status?.phase;
}

before(async () => {
  await core.createNamespace({ body: { metadata: { name: namespace } } });
  // Pods are refused until the service-account controller has created the namespace's default account.
  await waitFor("the default service account", async () => {
    const accounts = await core.listNamespacedServiceAccount({ namespace });
    return accounts.items.some((a) => a.metadata?.name === "default") ? true : undefined;
  });
});

after(async () => {
  await core.deleteNamespace({ name: namespace, gracePeriodSeconds: 0 });
});

test("the API server and the node run the pinned Kubernetes version", async () => {
  assert.ok(pinned, "go.mod pins k8s.io/kubernetes");
  const version = await kc.makeApiClient(VersionApi).getCode();
  assert.equal(version.gitVersion, pinned);
  const node = await core.readNode({ name: env.KILN_TEST_NODE });
  assert.equal(node.status?.nodeInfo?.kubeletVersion, pinned);
  const ready = node.status?.conditions?.find((c) => c.type === "Ready");
  assert.equal(ready?.status, "True");
});

test("a pod from the local busybox image runs and its log is read through the API", async () => {
  const value = randomBytes(8).toString("hex");
  await core.createNamespacedPod({ namespace, body: busyboxPod("echo", `echo ${value}`) });
  const phase = await waitFor("the echo pod to finish", async () => {
    const p = await podPhase("echo");
    return p === "Succeeded" || p === "Failed" ? p : undefined;
  });
  assert.equal(phase, "Succeeded");
  assert.equal(await core.readNamespacedPodLog({ name: "echo", namespace }), `${value}\n`);
});

test("a pod reaches the API server through the kubernetes Service with its service-account token", async () => {
  // What an in-cluster controller does: Service address from the environment, token from the projected volume.
  const command = [
    "wget -q -O - --no-check-certificate",
    '--header "Authorization: Bearer $(cat /var/run/secrets/kubernetes.io/serviceaccount/token)"',
    '--header "Content-Type: application/json"',
    `--post-data '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}'`,
    '"https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/apis/authentication.k8s.io/v1/selfsubjectreviews"',
  ].join(" ");
  await core.createNamespacedPod({ namespace, body: busyboxPod("service", command) });
  await waitFor("the service pod to finish", async () => {
    const p = await podPhase("service");
    return p === "Succeeded" || p === "Failed" ? p : undefined;
  });
  const log = await core.readNamespacedPodLog({ name: "service", namespace });
  assert.equal(JSON.parse(log).status?.userInfo?.username, `system:serviceaccount:${namespace}:default`, log);
});

test("the registry holds the base images under their Docker Hub names", async () => {
  // By repository, not from the catalog: the catalog's first page ends at 100 repositories, and the
  // tests push many more.
  for (const [repository, tag] of [
    ["kiln/pause", "latest"],
    ["library/busybox", "latest"],
    ["library/debian", "bookworm-slim"],
    ["library/gcc", "bookworm"],
    ["library/node", "24-bookworm-slim"],
  ]) {
    const res = await fetch(`http://${env.KILN_TEST_REGISTRY}/v2/${repository}/tags/list`);
    assert.equal(res.status, 200, repository);
    const { tags } = (await res.json()) as { tags: string[] };
    assert.ok(tags.includes(tag!), `${repository}:${tag} in ${tags.join(", ")}`);
  }
});

test("the gcc:bookworm image (Debian plus gcc) compiles and runs a C program", async () => {
  const pod = busyboxPod(
    "gcc",
    "printf 'int main(void) { return 42; }' >/tmp/a.c && gcc -o /tmp/a /tmp/a.c; /tmp/a; echo $?; cat /etc/debian_version",
  );
  pod.spec!.containers[0]!.image = "gcc:bookworm";
  await core.createNamespacedPod({ namespace, body: pod });
  await waitFor("the gcc pod to finish", async () => {
    const p = await podPhase("gcc");
    return p === "Succeeded" || p === "Failed" ? p : undefined;
  });
  const [exit, debianVersion] = (await core.readNamespacedPodLog({ name: "gcc", namespace }))
    .trim()
    .split("\n");
  assert.equal(exit, "42");
  assert.match(debianVersion ?? "", /^12\.\d+$/);
});

test("a Deployment scales to 2 running pods and back to 1", async () => {
  const labels = { app: "scale" };
  await apps.createNamespacedDeployment({
    namespace,
    body: {
      metadata: { name: "scale", namespace },
      spec: {
        replicas: 2,
        selector: { matchLabels: labels },
        template: {
          metadata: { labels },
          spec: {
            terminationGracePeriodSeconds: 1,
            containers: [{ name: "main", image: "busybox", command: ["sleep", "3600"] }],
          },
        },
      },
    },
  });
  const pods = async () =>
    (await core.listNamespacedPod({ namespace, labelSelector: "app=scale" })).items.filter(
      (p) => p.metadata?.deletionTimestamp === undefined,
    );
  const runningCount = async (want: number) => {
    const all = await pods();
    const running = all.filter((p) => p.status?.phase === "Running");
    return all.length === want && running.length === want ? want : undefined;
  };
  assert.equal(await waitFor("2 running pods", () => runningCount(2)), 2);
  await apps.replaceNamespacedDeploymentScale({
    name: "scale",
    namespace,
    body: {
      apiVersion: "autoscaling/v1",
      kind: "Scale",
      metadata: { name: "scale", namespace },
      spec: { replicas: 1 },
    },
  });
  assert.equal(await waitFor("1 running pod", () => runningCount(1)), 1);
  const remaining = await waitFor("the removed pod to be gone", async () => {
    const all = (await core.listNamespacedPod({ namespace, labelSelector: "app=scale" })).items;
    return all.length === 1 ? all : undefined;
  });
  assert.equal(remaining[0]?.status?.phase, "Running");
});

test("deleting an owner garbage-collects the pod it owns", async () => {
  const owner = await core.createNamespacedConfigMap({
    namespace,
    body: { metadata: { name: "owner", namespace }, data: { k: "v" } },
  });
  const ownerReferences = [{ apiVersion: "v1", kind: "ConfigMap", name: "owner", uid: owner.metadata!.uid! }];
  await core.createNamespacedPod({ namespace, body: busyboxPod("owned", "sleep 3600", { ownerReferences }) });
  await waitFor("the owned pod to run", async () =>
    (await podPhase("owned")) === "Running" ? true : undefined,
  );
  await core.deleteNamespacedConfigMap({ name: "owner", namespace, propagationPolicy: "Background" });
  const status = await waitFor("the owned pod to be collected", async () => {
    try {
      await core.readNamespacedPod({ name: "owned", namespace });
      return undefined;
    } catch (err) {
      if (err instanceof ApiException) return err.code;
      throw err;
    }
  });
  assert.equal(status, 404);
});
