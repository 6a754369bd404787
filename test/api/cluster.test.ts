import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import {
  ApiException,
  ApiextensionsV1Api,
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type V1CustomResourceDefinition,
} from "@kubernetes/client-node";
import { setCondition } from "../../src/api/condition.ts";
import { imageBuildCrd } from "../../src/api/crd.ts";
import {
  API_GROUP,
  API_VERSION,
  IMAGE_BUILD_KIND,
  IMAGE_BUILD_PLURAL,
  type ImageBuildStatus,
  ImageBuildStatusSchema,
} from "../../src/api/image-build.ts";
import type { Digest } from "../../src/oci/digest.ts";
import { BAD_CASES, GOOD_SOURCES, GOOD_SPEC, GOOD_SPEC_DEFAULTED, specOf } from "./cases.ts";

// Against the real API server of the test cluster: the CRD must be accepted as it is generated (structural,
// CEL rules compiled and within their cost budget), and ImageBuilds must be refused or defaulted by the server
// exactly as the zod schemas do it.

const ENV_FILE = resolve(import.meta.dirname, "../cluster/.work/env");
const NAMESPACE = "default";
const CRD_NAME = `${IMAGE_BUILD_PLURAL}.${API_GROUP}`;

let objects: CustomObjectsApi;

async function kubeConfig(): Promise<KubeConfig> {
  let env: string;
  try {
    env = await readFile(ENV_FILE, "utf8");
  } catch (err) {
    throw new Error(`the test cluster is not up (no ${ENV_FILE}): run test/cluster/up`, { cause: err });
  }
  const path = /^KUBECONFIG=(.*)$/m.exec(env)?.[1];
  assert.ok(path, `${ENV_FILE} has no KUBECONFIG; run test/cluster/up`);
  const kc = new KubeConfig();
  kc.loadFromFile(path);
  return kc;
}

async function applyCrd(kc: KubeConfig): Promise<V1CustomResourceDefinition> {
  const api = kc.makeApiClient(ApiextensionsV1Api);
  try {
    await api.patchCustomResourceDefinition(
      { name: CRD_NAME, body: imageBuildCrd(), fieldManager: "kiln-test", force: true },
      setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply),
    );
  } catch (err) {
    if (err instanceof ApiException)
      throw new Error(`the API server refused the CRD: ${statusOf(err).message}`);
    throw new Error(`the test cluster's API server does not answer: run test/cluster/up`, { cause: err });
  }
  for (let i = 0; i < 100; i++) {
    const crd = await api.readCustomResourceDefinition({ name: CRD_NAME });
    if (crd.status?.conditions?.some((c) => c.type === "Established" && c.status === "True")) return crd;
    await sleep(100);
  }
  throw new Error(`${CRD_NAME} did not become Established`);
}

interface Status {
  message: string;
  details?: { causes?: { field?: string; message?: string }[] };
}

function statusOf(err: ApiException<unknown>): Status {
  return (typeof err.body === "string" ? JSON.parse(err.body) : err.body) as Status;
}

/** Creates the ImageBuild in dry-run mode, as `kubectl apply --dry-run=server` does, and returns it defaulted. */
function create(name: string, spec: unknown): Promise<{ spec: unknown }> {
  return objects.createNamespacedCustomObject({
    group: API_GROUP,
    version: API_VERSION,
    namespace: NAMESPACE,
    plural: IMAGE_BUILD_PLURAL,
    body: { apiVersion: `${API_GROUP}/${API_VERSION}`, kind: IMAGE_BUILD_KIND, metadata: { name }, spec },
    dryRun: "All",
    fieldValidation: "Strict",
  });
}

before(async () => {
  const kc = await kubeConfig();
  await applyCrd(kc);
  objects = kc.makeApiClient(CustomObjectsApi);
});

test("a good ImageBuild is accepted with its defaults filled", async () => {
  const created = await create("good", GOOD_SPEC);
  assert.deepEqual(created.spec, GOOD_SPEC_DEFAULTED);
});

test("a layers ImageBuild gets the layer spec's defaults", async () => {
  const created = await create("layers", {
    source: { inline: { files: { "bin/app": "#!/bin/sh\n" } } },
    layers: { layers: [{ files: [{ src: "bin", dest: "/usr/local/bin/" }] }, { delete: ["/tmp"] }] },
    output: { image: "registry:5000/app:v1", tags: ["v1.2.3"] },
    platforms: ["linux/amd64", "linux/arm64"],
    resources: { requests: { cpu: "500m", memory: "1Gi" }, limits: { memory: 2147483648 } },
    tolerations: [{ key: "arch", operator: "Exists", effect: "NoSchedule" }],
  });
  assert.deepEqual((created.spec as { layers: unknown }).layers, {
    base: "scratch",
    layers: [{ files: [{ src: "bin", dest: "/usr/local/bin/", exclude: [] }] }, { delete: ["/tmp"] }],
    config: {},
  });
});

test("every good source is accepted", async () => {
  for (const [i, source] of GOOD_SOURCES.entries()) await create(`source-${i}`, { ...GOOD_SPEC, source });
});

for (const [i, c] of BAD_CASES.entries()) {
  test(`the API server refuses: ${c.name}`, async () => {
    const err = await create(`bad-${i}`, specOf(c)).then(
      () => assert.fail("accepted"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ApiException, String(err));
    assert.equal(err.code, 422, statusOf(err).message);
    const status = statusOf(err);
    const field = c.field === "" ? "spec" : `spec.${c.field}`;
    const expected = c.message ?? c.apiMessage!;
    const causes = (status.details?.causes ?? []).map((x) => `${x.field}: ${x.message}`);
    assert.ok(
      causes.some((x) => x.startsWith(`${field}: `) && x.includes(expected)),
      `expected "${field}: ...${expected}" in\n${status.message}`,
    );
    assert.ok(status.message.startsWith(`ImageBuild.${API_GROUP} "bad-${i}" is invalid: `), status.message);
  });
}

test("a misspelt field is refused, not silently dropped", async () => {
  const err = await create("typo", { ...GOOD_SPEC, platform: ["linux/arm64"] }).then(
    () => assert.fail("accepted"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof ApiException, String(err));
  assert.equal(
    statusOf(err).message,
    `ImageBuild in version "v1alpha1" cannot be handled as a ImageBuild: strict decoding error: unknown field "spec.platform"`,
  );
});

test("the status subresource takes a status the controller writes, and refuses a malformed one", async (t) => {
  const ref = { group: API_GROUP, version: API_VERSION, namespace: NAMESPACE, plural: IMAGE_BUILD_PLURAL };
  const name = "status";
  await objects.deleteNamespacedCustomObject({ ...ref, name }).catch(() => undefined);
  await objects.createNamespacedCustomObject({
    ...ref,
    body: {
      apiVersion: `${API_GROUP}/${API_VERSION}`,
      kind: IMAGE_BUILD_KIND,
      metadata: { name },
      spec: GOOD_SPEC,
    },
  });
  t.after(() => objects.deleteNamespacedCustomObject({ ...ref, name }));
  const digest = `sha256:${"b".repeat(64)}`;
  const now = new Date("2026-01-02T03:04:05Z");
  const status: ImageBuildStatus = {
    phase: "Succeeded",
    observedGeneration: 1,
    conditions: setCondition(
      [],
      { type: "Succeeded", status: "True", reason: "Succeeded", message: "pushed", observedGeneration: 1 },
      now,
    ),
    image: `registry.example.com/team/app@${digest}`,
    digest: digest as Digest,
    stages: [
      {
        name: "0",
        platform: "linux/amd64",
        podName: "status-0-amd64",
        digest: digest as Digest,
        startTime: "2026-01-02T03:00:00Z",
        steps: [
          {
            line: 2,
            instruction: "RUN make",
            cached: false,
            durationMs: 1234,
            layerDigest: digest as Digest,
          },
        ],
      },
    ],
    startTime: "2026-01-02T03:00:00Z",
    completionTime: "2026-01-02T03:04:05Z",
  };
  const patch = (s: unknown) =>
    objects.patchNamespacedCustomObjectStatus(
      { ...ref, name, body: { status: s } },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );
  const written = (await patch(status)) as { status: unknown };
  assert.deepEqual(written.status, ImageBuildStatusSchema.parse(status));
  const err = await patch({ phase: "Done" }).then(
    () => assert.fail("accepted"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof ApiException, String(err));
  assert.match(
    statusOf(err).message,
    /status\.phase: Unsupported value: "Done": supported values: "Pending", "Building", "Succeeded", "Failed"/,
  );
});
