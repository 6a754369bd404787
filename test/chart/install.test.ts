import assert from "node:assert/strict";
import { readFile, rm } from "node:fs/promises";
import { test } from "node:test";
import { imageBuildsPath, podsPath } from "../../src/kube/resources.ts";
import {
  type Cluster,
  cluster,
  createImageBuild,
  getImageBuild,
  layersSpec,
  listImageBuilds,
  listPods,
  namespace,
  registryDigest,
  waitFor,
} from "../controller/harness.ts";
import { makePki } from "../helpers/registry.ts";
import { helm, installChart } from "./helm.ts";

// The chart installed into the real test cluster with the kiln image built from this checkout. The release
// watches only its own fresh namespace (Roles there, not a ClusterRole), so it never touches the builds of
// tests running beside it; the API server enforces the chart's RBAC on everything the controller does.

async function items<T = { metadata: { name: string; labels?: Record<string, string> } }>(
  c: Cluster,
  path: string,
): Promise<T[]> {
  return (await c.client.request<{ items: T[] }>("GET", path)).items;
}

test("helm install runs the controller, which builds an ImageBuild to the registry's digest; helm uninstall leaves nothing", async (t) => {
  const c = await cluster();
  const ns = await namespace(c, t);
  // The test registry is plain HTTP, so the CA is not needed; it shows the bundle's way into build pods.
  const pki = makePki();
  t.after(() => rm(pki.dir, { recursive: true, force: true }));
  const buildResources = { requests: { cpu: "10m", memory: "64Mi" }, limits: { memory: "1Gi" } };
  const chart = await installChart(t, {
    kubeconfig: c.env.KUBECONFIG,
    namespace: ns,
    image: c.image,
    set: {
      watchNamespace: ns,
      logLevel: "debug",
      "leaderElection.leaseDurationSeconds": 5,
      "builds.resources": buildResources,
      insecureRegistries: [c.env.KILN_TEST_REGISTRY],
      registryMirrors: [`docker.io=${c.env.KILN_TEST_REGISTRY}`],
    },
    setFile: { "registryCA.bundle": pki.caFile },
  });

  type Deployment = { status?: { conditions?: { type: string; status: string }[] } };
  const deployment = await c.client.request<Deployment>(
    "GET",
    `/apis/apps/v1/namespaces/${ns}/deployments/kiln`,
  );
  assert.ok(
    deployment.status?.conditions?.some((x) => x.type === "Available" && x.status === "True"),
    "the Deployment is Available",
  );
  const [controllerPod] = (await listPods(c, ns)).filter(
    (p) => p.metadata?.labels?.["app.kubernetes.io/component"] === "controller",
  );
  assert.ok(controllerPod?.metadata?.name !== undefined);
  assert.equal(controllerPod.status?.containerStatuses?.[0]?.ready, true);

  const repo = `chart-test/${ns}`;
  const spec = layersSpec(c, repo, { "hello.txt": "hello from the chart\n" });
  const registry = c.env.KILN_TEST_REGISTRY;
  await createImageBuild(c, ns, "hello", spec);
  // A Dockerfile build also runs a plan pod, whose plan the controller reads from its log (pods/log).
  await createImageBuild(c, ns, "greet", {
    source: { inline: { files: { "hello.txt": "hello from a Dockerfile\n" } } },
    dockerfile: { inline: "FROM busybox\nCOPY hello.txt /hello.txt\n" },
    output: { image: `${registry}/${repo}-dockerfile:v1`, insecure: true },
  });
  const finished = (name: string) =>
    waitFor(
      `${name} to finish`,
      async () => {
        const b = await getImageBuild(c, ns, name);
        const done = b?.status?.conditions?.some((x) => x.type === "Succeeded" && x.status !== "Unknown");
        return done ? b : undefined;
      },
      180_000,
    );
  for (const [name, image] of [
    ["hello", `${registry}/${repo}`],
    ["greet", `${registry}/${repo}-dockerfile`],
  ] as const) {
    const ib = await finished(name);
    assert.equal(ib.status?.phase, "Succeeded", JSON.stringify(ib.status?.failure));
    assert.equal(ib.status?.digest, await registryDigest(`${image}:v1`));
    assert.equal(ib.status?.image, `${image}@${ib.status?.digest}`);
  }

  // Build pods run as the chart's build ServiceAccount, with no token, the default resources and the CA.
  const pem = await readFile(pki.caFile, "utf8");
  const buildPods = (await listPods(c, ns)).filter(
    (p) => p.metadata?.labels?.["kiln.dev/imagebuild"] === "hello",
  );
  assert.ok(buildPods.length > 0);
  for (const p of buildPods) {
    assert.equal(p.spec?.serviceAccountName, "kiln-build");
    assert.equal(p.spec?.automountServiceAccountToken, false);
    assert.ok(!p.spec?.volumes?.some((v) => v.projected?.sources?.some((s) => s.serviceAccountToken)));
    assert.equal(p.metadata?.annotations?.["kiln.dev/registry-ca"], pem);
    for (const container of [...(p.spec?.initContainers ?? []), ...(p.spec?.containers ?? [])]) {
      assert.deepEqual(container.resources, buildResources);
      assert.ok(container.env?.some((e) => e.name === "NODE_EXTRA_CA_CERTS"));
      assert.ok(container.args?.includes(registry));
      assert.ok(container.args?.includes(`docker.io=${registry}`));
    }
  }
  // Events were recorded and nothing the controller did was forbidden by the chart's RBAC.
  const events = await items<{ reason: string; involvedObject: { name: string } }>(
    c,
    `/api/v1/namespaces/${ns}/events`,
  );
  assert.ok(
    events.some((e) => e.involvedObject.name === "hello" && e.reason === "Pushed"),
    "a Pushed event",
  );
  const log = await c.client.request<string>("GET", `${podsPath(ns)}/${controllerPod.metadata.name}/log`, {
    query: { container: "controller" },
    text: true,
  });
  assert.doesNotMatch(log, /forbidden/i);

  // Deleting the ImageBuild goes through the controller's finalizer, then the garbage collector takes its pods.
  for (const name of ["hello", "greet"]) await c.client.request("DELETE", `${imageBuildsPath(ns)}/${name}`);
  await waitFor("the ImageBuilds to be gone", async () => (await listImageBuilds(c, ns)).length === 0);

  await chart.uninstall();
  const { stdout } = await helm(["list", ...chart.kube, "--all", "--short"]);
  assert.equal(stdout, "");
  const left: string[] = [];
  for (const [kind, path] of [
    ["Deployment", `/apis/apps/v1/namespaces/${ns}/deployments`],
    ["ReplicaSet", `/apis/apps/v1/namespaces/${ns}/replicasets`],
    ["Service", `/api/v1/namespaces/${ns}/services`],
    ["ConfigMap", `/api/v1/namespaces/${ns}/configmaps`],
    ["ServiceAccount", `/api/v1/namespaces/${ns}/serviceaccounts`],
    ["Role", `/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/roles`],
    ["RoleBinding", `/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/rolebindings`],
    ["Lease", `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases`],
    ["Secret", `/api/v1/namespaces/${ns}/secrets`],
  ] as const) {
    for (const o of await items(c, path)) left.push(`${kind} ${o.metadata.name}`);
  }
  // What every namespace has of its own: the default ServiceAccount and the cluster's CA bundle.
  assert.deepEqual(left.sort(), ["ConfigMap kube-root-ca.crt", "ServiceAccount default"]);
  // Build pods go with their ImageBuild (owner references), the controller's with its Deployment.
  await waitFor("the namespace's pods to be gone", async () => (await listPods(c, ns)).length === 0, 120_000);
});
