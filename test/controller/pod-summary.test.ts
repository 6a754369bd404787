import assert from "node:assert/strict";
import { test } from "node:test";
import type { V1Pod } from "@kubernetes/client-node";
import { logSnippet, type PodState, podState, summarizePod } from "../../src/controller/pod-state.ts";
import { countAttempts } from "../../src/controller/reconcile.ts";
import { DIGEST_A, finishedPod, runningPod, succeededPod } from "./fixtures.ts";

/** A pod as the API server sends it: spec, the job annotation, image fields and all. */
function asServed(pod: V1Pod, extra: Partial<V1Pod["metadata"]> = {}): V1Pod {
  return {
    ...pod,
    metadata: {
      ...pod.metadata,
      uid: "pod-uid",
      resourceVersion: "42",
      labels: { "kiln.dev/imagebuild-uid": "ib-uid", "kiln.dev/generation": "3" },
      annotations: { "kiln.dev/job": JSON.stringify({ files: { big: "x".repeat(100_000) } }) },
      ownerReferences: [
        { apiVersion: "v1", kind: "ConfigMap", name: "other", uid: "u0" },
        {
          apiVersion: "kiln.dev/v1alpha1",
          kind: "ImageBuild",
          name: "app",
          uid: "ib-uid",
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
      managedFields: [{ manager: "kiln", operation: "Update" }],
      ...extra,
    },
    spec: { containers: [{ name: "pusher", image: "kiln", env: [{ name: "A", value: "b" }] }] },
  };
}

const pods: [PodState["kind"], V1Pod][] = [
  ["succeeded", succeededPod("app-1", { digest: DIGEST_A, steps: [] })],
  ["failed", finishedPod("app-2", "Failed", { executor: { exitCode: 1, message: "RUN failed" } })],
  ["failed", finishedPod("app-3", "Failed", { executor: { exitCode: 137 } }, { reason: "Evicted" })],
  ["running", runningPod("app-4")],
];

for (const [kind, pod] of pods) {
  test(`a ${kind} pod (${pod.status?.reason ?? pod.status?.phase}) reads the same from its summary`, () => {
    const served = asServed(pod);
    const state = podState(served);
    assert.equal(state.kind, kind);
    assert.deepEqual(podState(summarizePod(served)), state);
  });
}

test("a pod summary keeps identity, labels, deletion and the controller owner; drops spec and annotations", () => {
  const served = asServed(runningPod("app-4"), { deletionTimestamp: "2026-01-01T00:00:20Z" as never });
  served.status!.conditions = [
    { type: "DisruptionTarget", status: "True", reason: "EvictionByEvictionAPI", message: "m" },
  ];
  const s = summarizePod(served);
  assert.deepEqual(s, {
    metadata: {
      name: "app-4",
      namespace: "team",
      uid: "pod-uid",
      resourceVersion: "42",
      creationTimestamp: "2026-01-01T00:00:00Z",
      deletionTimestamp: "2026-01-01T00:00:20Z",
      labels: { "kiln.dev/imagebuild-uid": "ib-uid", "kiln.dev/generation": "3" },
      ownerReferences: [
        { apiVersion: "kiln.dev/v1alpha1", kind: "ImageBuild", name: "app", uid: "ib-uid", controller: true },
      ],
    },
    status: {
      phase: "Running",
      startTime: "2026-01-01T00:00:00Z",
      conditions: [
        { type: "DisruptionTarget", status: "True", reason: "EvictionByEvictionAPI", message: "m" },
      ],
    },
  });
  assert.deepEqual(podState(s), podState(served));
});

test("countAttempts counts a pod no recorded attempt covers, at its creation time; recorded ones stay", () => {
  const now = new Date("2026-01-01T00:01:00Z");
  const recorded = { "app-1": [2, 1000] as const };
  const found = new Map<string, V1Pod>([
    ["app-1", runningPod("app-1")],
    ["app-2", runningPod("app-2")], // created 2026-01-01T00:00:00Z, not recorded
    ["app-3", { metadata: { name: "app-3" } }], // an expected pod the cache has not shown: no creation time
  ]);
  assert.deepEqual(countAttempts(recorded, found, now), {
    "app-1": [2, 1000],
    "app-2": [1, Date.parse("2026-01-01T00:00:00Z")],
    "app-3": [1, now.getTime()],
  });
  const same = new Map([["app-1", runningPod("app-1")]]);
  assert.equal(countAttempts(recorded, same, now), recorded); // nothing new: the recorded value itself
});

test("logSnippet keeps what the steps printed, not kiln's own log records, the last 20 lines", () => {
  const record = (msg: string) => JSON.stringify({ level: 30, app: "kiln", msg });
  const steps = Array.from({ length: 25 }, (_, i) => `[line 3] output ${i}`);
  const log = [
    record("Starting"),
    ...steps,
    '{"app":"mine","msg":"a step printed JSON"}',
    record("Stage build failed"),
    "",
  ];
  assert.equal(
    logSnippet(log.join("\n")),
    [...steps.slice(-19), '{"app":"mine","msg":"a step printed JSON"}'].join("\n"),
  );
  assert.equal(logSnippet([record("Starting"), record("COPY failed"), ""].join("\n")), undefined);
});
