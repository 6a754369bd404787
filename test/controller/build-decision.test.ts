import assert from "node:assert/strict";
import { test } from "node:test";
import type { V1Pod } from "@kubernetes/client-node";
import type { ImageBuild } from "../../src/api/image-build.ts";
import type { StageJob } from "../../src/api/stage-job.ts";
import { encodeStageResult } from "../../src/api/stage-result.ts";
import { type DecideOptions, decide, type World } from "../../src/controller/build-decision.ts";
import { compilePlan, PLANNED_BY_POD } from "../../src/controller/compile-plan.ts";
import { indexPodName, planPodName, stagePodName } from "../../src/controller/names.ts";
import { buildPod } from "../../src/controller/pod-builder.ts";
import { missingSecret } from "../../src/controller/pod-state.ts";
import type { BuildPlan } from "../../src/plan/plan.ts";
import {
  DIGEST_A,
  DIGEST_B,
  DIGEST_C,
  finishedPod,
  imageBuild,
  LAYER,
  runningPod,
  runStep,
  stageJob,
  succeededPod,
} from "./fixtures.ts";

const NOW = new Date("2026-01-01T00:00:10Z");
const NOW_S = "2026-01-01T00:00:10Z";
const NOW_MS = "2026-01-01T00:00:10.000Z"; // setCondition's lastTransitionTime
const OPTS: DecideOptions = {
  builder: { image: "kiln" },
  maxAttempts: 3,
  retryDelayMs: (n) => 1000 * 2 ** (n - 2),
};

function world(ib: ImageBuild, pods: Record<string, V1Pod> = {}, more: Partial<World> = {}): World {
  const plan = compilePlan(ib);
  return {
    ib,
    plan: plan === PLANNED_BY_POD ? undefined : plan,
    source: ib.spec.source,
    pods: new Map(Object.entries(pods)),
    stalePods: [],
    attempts: {},
    admitted: true,
    logs: new Map(),
    now: NOW,
    ...more,
  };
}

const conditions = (status: "True" | "False" | "Unknown", reason: string, message: string) => [
  { type: "Succeeded", status, reason, message, observedGeneration: 1, lastTransitionTime: NOW_MS },
  {
    type: "Ready",
    status: status === "True" ? "True" : "False",
    reason,
    message,
    observedGeneration: 1,
    lastTransitionTime: NOW_MS,
  },
];

const ib = imageBuild();
const POD = stagePodName(ib, "image", "linux/amd64");
const job = stageJob(
  {
    name: "image",
    base: { kind: "image", image: "registry:5000/library/busybox:latest" },
    platform: "linux/amd64",
    steps: [
      {
        kind: "copy",
        createdBy: "COPY hello.txt /hello.txt",
        ops: [
          {
            from: { kind: "context" },
            sources: ["hello.txt"],
            dest: "/hello.txt",
            exclude: [],
            extract: false,
            parents: false,
          },
        ],
      },
    ],
    config: {},
  },
  { "hello.txt": "hello\n" },
);

test("a new build creates its stage pod, records the attempt and says Building", () => {
  const d = decide(world(ib), OPTS);
  assert.deepEqual(d.create, [
    buildPod(ib, { name: POD, job, stage: "image", platform: "linux/amd64", runsCode: false }, OPTS.builder),
  ]);
  assert.deepEqual(d.delete, []);
  assert.deepEqual(d.attempts, { [POD]: [1, NOW.getTime()] });
  assert.deepEqual(d.status, {
    phase: "Building",
    observedGeneration: 1,
    stages: [{ name: "image", platform: "linux/amd64", podName: POD }],
    startTime: NOW_S,
    conditions: conditions("Unknown", "Building", "Building 0/1 units"),
  });
  assert.deepEqual(d.events, [
    { type: "Normal", reason: "Scheduled", message: `Created pod ${POD} for stage image (linux/amd64)` },
  ]);
  assert.equal(d.requeueAfterMs, 3_600_000 - 0); // the timeout, counted from the start just set
});

test("a succeeded stage pod gives Succeeded with the digest, steps and times", () => {
  const d = decide(
    world(ib, {
      [POD]: succeededPod(POD, {
        digest: DIGEST_A,
        steps: [{ line: 1, cached: false, ms: 12, digest: LAYER, size: 96 }],
      }),
    }),
    OPTS,
  );
  assert.deepEqual(d.create, []);
  assert.deepEqual(d.status, {
    phase: "Succeeded",
    observedGeneration: 1,
    image: `registry:5000/team/hello@${DIGEST_A}`,
    digest: DIGEST_A,
    platforms: [{ platform: "linux/amd64", digest: DIGEST_A }],
    stages: [
      {
        name: "image",
        platform: "linux/amd64",
        podName: POD,
        digest: DIGEST_A,
        startTime: "2026-01-01T00:00:00Z",
        completionTime: "2026-01-01T00:00:09Z",
        steps: [
          {
            line: 1,
            instruction: "COPY hello.txt /hello.txt",
            cached: false,
            durationMs: 12,
            layerDigest: LAYER,
          },
        ],
      },
    ],
    startTime: NOW_S,
    completionTime: NOW_S,
    conditions: conditions("True", "Succeeded", `Pushed registry:5000/team/hello@${DIGEST_A}`),
  });
  assert.deepEqual(
    d.events.map((e) => e.reason),
    ["StageSucceeded", "Pushed"],
  );
  // Deciding again on the written status changes nothing and announces nothing.
  const again = decide(
    world(
      { ...ib, status: d.status },
      {
        [POD]: succeededPod(POD, {
          digest: DIGEST_A,
          steps: [{ line: 1, cached: false, ms: 12, digest: LAYER, size: 96 }],
        }),
      },
    ),
    OPTS,
  );
  assert.deepEqual(again.status, d.status);
  assert.deepEqual(again.events, []);
});

test("a user error fails the build at once with the line, the message and the log snippet", () => {
  const failure = { reason: "StepFailed", message: "line 1: COPY: hello.txt: no such file", line: 1 };
  const pod = finishedPod(POD, "Failed", {
    executor: { exitCode: 1, message: encodeStageResult({ steps: [], failure }) },
  });
  const d = decide(
    world(ib, { [POD]: pod }, { logs: new Map([[POD, "building...\nerror: no such file\n"]]) }),
    OPTS,
  );
  assert.deepEqual(d.status, {
    phase: "Failed",
    observedGeneration: 1,
    stages: [
      {
        name: "image",
        platform: "linux/amd64",
        podName: POD,
        startTime: "2026-01-01T00:00:00Z",
        completionTime: "2026-01-01T00:00:05Z",
      },
    ],
    startTime: NOW_S,
    completionTime: NOW_S,
    failure: { ...failure, stage: "image", logSnippet: "building...\nerror: no such file\n" },
    conditions: conditions("False", "StepFailed", failure.message),
  });
  assert.deepEqual(d.events, [
    { type: "Warning", reason: "Failed", message: `StepFailed: ${failure.message}` },
  ]);
  assert.deepEqual(d.delete, []);
});

test("an evicted pod is deleted and created again after the retry delay, up to the limit", () => {
  const evicted = finishedPod(
    POD,
    "Failed",
    {},
    { reason: "Evicted", message: "The node was low on memory." },
  );
  const first = decide(world(ib, { [POD]: evicted }, { attempts: { [POD]: [1, 0] } }), OPTS);
  assert.deepEqual(first.delete, [POD]);
  assert.deepEqual(first.create, []);
  assert.equal(first.status.phase, "Building");
  // Why is kept with the count, as the pod that says it goes, and the status says it while waiting.
  const why = "Evicted: The node was low on memory.";
  assert.deepEqual(first.attempts, { [POD]: [1, 0, why] });
  assert.equal(
    first.status.conditions?.find((c) => c.type === "Succeeded")?.message,
    `Building 0/1 units; stage image (linux/amd64) is retried after 1 attempt(s): ${why}`,
  );
  assert.deepEqual(first.events, [
    {
      type: "Warning",
      reason: "Retrying",
      message: `Stage image (linux/amd64) failed for a reason outside the build (Evicted: The node was low on memory.); running it again`,
    },
  ]);
  // Gone now: the second attempt waits 1 s after the first was created.
  const early = decide(world(ib, {}, { attempts: { [POD]: [1, NOW.getTime() - 400] } }), OPTS);
  assert.deepEqual(early.create, []);
  assert.equal(early.requeueAfterMs, 600);
  const due = decide(world(ib, {}, { attempts: { [POD]: [1, NOW.getTime() - 1000] } }), OPTS);
  assert.equal(due.create.length, 1);
  assert.deepEqual(due.attempts, { [POD]: [2, NOW.getTime()] });
  assert.match(due.events[0]!.message, /attempt 2$/);
  const again = decide(world(ib, {}, { attempts: { [POD]: [1, NOW.getTime() - 1000, why] } }), OPTS);
  assert.deepEqual(again.attempts, { [POD]: [2, NOW.getTime(), why] });
  const spent = decide(world(ib, {}, { attempts: { [POD]: [3, 0] } }), OPTS);
  assert.equal(spent.status.phase, "Failed");
  assert.deepEqual(spent.status.failure, {
    reason: "RetryLimitExceeded",
    message: "stage image (linux/amd64) was started 3 times without finishing",
    stage: "image",
  });
  const said = decide(world(ib, {}, { attempts: { [POD]: [3, 0, why] } }), OPTS);
  assert.equal(
    said.status.failure?.message,
    `stage image (linux/amd64) was started 3 times without finishing; the last time: ${why}`,
  );
});

test("a registry 5xx reported by the pusher is retried; a pod deleted by someone is waited out", () => {
  const failure = { reason: "RegistryUnavailable", message: "PUT .../blobs: 503" };
  const pod = finishedPod(POD, "Failed", {
    executor: { exitCode: 0 },
    pusher: { exitCode: 1, message: encodeStageResult({ steps: [], failure }) },
  });
  assert.deepEqual(decide(world(ib, { [POD]: pod }), OPTS).delete, [POD]);
  const deleting = {
    ...runningPod(POD),
    metadata: { ...runningPod(POD).metadata, deletionTimestamp: NOW as never },
  };
  const d = decide(world(ib, { [POD]: deleting }), OPTS);
  assert.deepEqual([d.delete, d.create, d.status.phase], [[], [], "Building"]);
});

test("over the concurrency limit a build waits as Pending/Queued", () => {
  const d = decide(world(ib, {}, { admitted: false }), OPTS);
  assert.deepEqual(d.create, []);
  assert.deepEqual(d.status, {
    phase: "Pending",
    observedGeneration: 1,
    stages: [{ name: "image", platform: "linux/amd64", podName: POD }],
    conditions: conditions("Unknown", "Queued", "Waiting for a build slot (concurrency limit)"),
  });
});

test("a build past its timeout fails with Timeout and its running pods are deleted", () => {
  const started = imageBuild({
    spec: { timeout: "10s" },
    status: { phase: "Building", observedGeneration: 1, startTime: "2026-01-01T00:00:00Z" },
  });
  const name = stagePodName(started, "image", "linux/amd64");
  const d = decide(world(started, { [name]: runningPod(name) }), OPTS);
  assert.equal(d.status.phase, "Failed");
  assert.deepEqual(d.status.failure, { reason: "Timeout", message: "the build did not finish within 10s" });
  assert.deepEqual(d.delete, [name]);
});

test("a spec change deletes the previous generation's pods and starts over", () => {
  const changed = imageBuild({
    generation: 2,
    status: { phase: "Building", observedGeneration: 1, startTime: "2025-12-31T00:00:00Z" },
  });
  const d = decide(world(changed, {}, { stalePods: ["hello-old-image-amd64"] }), OPTS);
  assert.deepEqual(d.delete, ["hello-old-image-amd64"]);
  assert.equal(d.status.startTime, NOW_S); // the old start does not count against the new build's timeout
  assert.equal(d.status.observedGeneration, 2);
  assert.deepEqual(
    d.events.map((e) => e.reason),
    ["Cancelled", "Scheduled"],
  );
  assert.equal(d.create[0]?.metadata?.labels?.["kiln.dev/generation"], "2");
});

test("several platforms: stages pushed by digest, then an index pod, whose digest is the build's", () => {
  const multi = imageBuild({ spec: { platforms: ["linux/amd64", "linux/arm64"] } });
  const amd = stagePodName(multi, "image", "linux/amd64");
  const arm = stagePodName(multi, "image", "linux/arm64");
  const idx = indexPodName(multi);
  const start = decide(world(multi), OPTS);
  assert.deepEqual(
    start.create.map((p) => p.metadata?.name),
    [amd, arm],
  );
  const jobOf = (p: V1Pod) => JSON.parse(p.metadata?.annotations?.["kiln.dev/job"] ?? "{}") as StageJob;
  assert.equal(jobOf(start.create[0]!).push.tagged, false);
  const pods = {
    [amd]: succeededPod(amd, { digest: DIGEST_A, steps: [] }),
    [arm]: succeededPod(arm, { digest: DIGEST_B, steps: [] }),
  };
  const index = decide(world(multi, pods), OPTS);
  assert.deepEqual(
    index.create.map((p) => [p.metadata?.name, jobOf(p)]),
    [
      [
        idx,
        {
          kind: "index",
          manifests: [
            { platform: "linux/amd64", digest: DIGEST_A },
            { platform: "linux/arm64", digest: DIGEST_B },
          ],
          push: { image: "registry:5000/team/hello:v1", tagged: true, tags: [], insecure: true },
        },
      ],
    ],
  );
  assert.equal(index.create[0]?.spec?.initContainers, undefined);
  const done = decide(
    world(multi, { ...pods, [idx]: succeededPod(idx, { digest: DIGEST_C, steps: [] }) }),
    OPTS,
  );
  assert.equal(done.status.phase, "Succeeded");
  assert.equal(done.status.digest, DIGEST_C);
  assert.deepEqual(done.status.platforms, [
    { platform: "linux/amd64", digest: DIGEST_A },
    { platform: "linux/arm64", digest: DIGEST_B },
  ]);
});

test("a stage that starts FROM another waits for it and gets its image by digest", () => {
  const plan: BuildPlan = {
    stages: [
      { name: "base", base: { kind: "scratch" }, platform: "linux/amd64", steps: [], config: {} },
      { name: "app", base: { kind: "stage", stage: "base" }, platform: "linux/amd64", steps: [], config: {} },
    ],
    target: "app",
    platforms: ["linux/amd64"],
    timestamp: 0,
  };
  const base = stagePodName(ib, "base", "linux/amd64");
  const app = stagePodName(ib, "app", "linux/amd64");
  const first = decide(world(ib, {}, { plan }), OPTS);
  assert.deepEqual(
    first.create.map((p) => p.metadata?.name),
    [base],
  );
  const next = decide(
    world(ib, { [base]: succeededPod(base, { digest: DIGEST_A, steps: [] }) }, { plan }),
    OPTS,
  );
  assert.deepEqual(
    next.create.map((p) => p.metadata?.name),
    [app],
  );
  const job = JSON.parse(next.create[0]!.metadata!.annotations!["kiln.dev/job"]!) as StageJob;
  assert.equal(job.kind === "stage" && job.inputs.base, `registry:5000/team/hello@${DIGEST_A}`);
  assert.equal(job.push.tagged, true);
});

test("a Dockerfile build plans in a plan pod first, then builds the plan's stages; the plan pod is not made again", () => {
  const df = imageBuild({
    spec: { layers: undefined, dockerfile: { inline: "FROM busybox\nRUN true\n", buildArgs: { V: "1" } } },
  });
  const planPod = planPodName(df);
  const first = decide(world(df), OPTS);
  const planJob = {
    kind: "plan" as const,
    dockerfile: { inline: "FROM busybox\nRUN true\n", buildArgs: { V: "1" } },
    platforms: ["linux/amd64"], // the CRD's default
    timestamp: 0,
    source: { inline: { files: { "hello.txt": "hello\n" } } },
    push: { image: "registry:5000/team/hello:v1", tagged: false, tags: [], insecure: true },
  };
  assert.deepEqual(first.create, [
    buildPod(
      df,
      { name: planPod, job: planJob, stage: "plan", platform: "linux/amd64", runsCode: false },
      OPTS.builder,
    ),
  ]);
  assert.deepEqual(
    first.create[0]?.spec?.containers.map((c) => c.name),
    ["planner"],
  );
  assert.equal(first.status.phase, "Building");
  assert.deepEqual(first.status.conditions, conditions("Unknown", "Planning", "Compiling the Dockerfile"));
  assert.equal(first.status.stages, undefined);

  const base = `registry:5000/library/busybox@sha256:${"b".repeat(64)}`;
  const plan: BuildPlan = {
    stages: [
      {
        name: "0",
        base: { kind: "image", image: base },
        platform: "linux/amd64",
        steps: [runStep("true", 2)],
        config: {},
      },
    ],
    target: "0",
    platforms: ["linux/amd64"],
    timestamp: 0,
  };
  const planned = decide(
    world(df, { [planPod]: succeededPod(planPod, { digest: DIGEST_A, steps: [] }) }, { plan }),
    OPTS,
  );
  const stagePod = stagePodName(df, "0", "linux/amd64");
  assert.deepEqual(
    planned.create.map((p) => [p.metadata?.name, p.spec?.containers.map((c) => [c.name, c.image])]),
    [
      [
        stagePod,
        [
          ["executor", base],
          ["pusher", "kiln"],
        ],
      ],
    ],
  );
  assert.deepEqual(planned.status.stages, [{ name: "0", platform: "linux/amd64", podName: stagePod }]);
  assert.deepEqual(planned.status.conditions, conditions("Unknown", "Building", "Building 1/2 units"));
});

test("a Dockerfile whose plan pod fails with a Dockerfile error fails the build with the line", () => {
  const df = imageBuild({ spec: { layers: undefined, dockerfile: { inline: "FROM busybox\nNOPE\n" } } });
  const planPod = planPodName(df);
  const d = decide(
    world(df, {
      [planPod]: finishedPod(planPod, "Failed", {
        planner: {
          exitCode: 1,
          message: encodeStageResult({
            steps: [],
            failure: {
              reason: "InvalidDockerfile",
              message: "Dockerfile:2: unknown instruction NOPE",
              line: 2,
            },
          }),
        },
      }),
    }),
    OPTS,
  );
  assert.equal(d.status.phase, "Failed");
  assert.deepEqual(d.status.failure, {
    reason: "InvalidDockerfile",
    message: "Dockerfile:2: unknown instruction NOPE",
    stage: "plan",
    line: 2,
  });
});

test("a pod that cannot start for a missing Secret fails the build with the Secret's name; the pod goes", () => {
  const ib = imageBuild();
  const failure = missingSecret([
    'MountVolume.SetUp failed for volume "push-secret" : secret "not-here" not found',
  ]);
  assert.deepEqual(failure, {
    reason: "SecretNotFound",
    message: "Secret not-here (volume push-secret) does not exist in the ImageBuild's namespace",
  });
  assert.equal(
    missingSecret(['MountVolume.SetUp failed for volume "work" : no space left on device']),
    undefined,
  );
  const d = decide(world(ib, { [POD]: runningPod(POD) }, { stuck: new Map([[POD, failure!]]) }), OPTS);
  assert.equal(d.status.phase, "Failed");
  assert.deepEqual(d.status.failure, { ...failure, stage: "image" });
  assert.deepEqual(d.delete, [POD]);
});

test("a pod the scheduler cannot place says why in the Succeeded condition while the build waits", () => {
  const ib = imageBuild();
  const pending = runningPod(POD);
  pending.status = {
    phase: "Pending",
    conditions: [
      {
        type: "PodScheduled",
        status: "False",
        reason: "Unschedulable",
        message: "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.",
      },
    ],
  };
  const d = decide(world(ib, { [POD]: pending }), OPTS);
  assert.equal(d.status.phase, "Building");
  assert.equal(
    d.status.conditions?.find((c) => c.type === "Succeeded")?.message,
    `Building 0/1 units; pod ${POD} is not scheduled: 0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.`,
  );
});
