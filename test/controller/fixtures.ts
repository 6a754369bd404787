import type { V1Pod } from "@kubernetes/client-node";
import { type ImageBuild, ImageBuildSchema } from "../../src/api/image-build.ts";
import type { StageJob } from "../../src/api/stage-job.ts";
import { encodeStageResult, type StageResult } from "../../src/api/stage-result.ts";
import type { Digest } from "../../src/oci/digest.ts";
import type { RunStep, Stage } from "../../src/plan/plan.ts";

/** An ImageBuild as the API server would return it (defaults filled by the same zod schema). */
export function imageBuild(
  overrides: { name?: string; generation?: number; spec?: object; status?: object } = {},
): ImageBuild {
  return ImageBuildSchema.parse({
    apiVersion: "kiln.dev/v1alpha1",
    kind: "ImageBuild",
    metadata: {
      name: overrides.name ?? "hello",
      namespace: "team",
      uid: "0d6f7a39-5a4e-4a43-9d7e-2f1b8f5c9a10",
      generation: overrides.generation ?? 1,
      resourceVersion: "42",
    },
    spec: {
      source: { inline: { files: { "hello.txt": "hello\n" } } },
      layers: {
        base: "registry:5000/library/busybox:latest",
        layers: [{ files: [{ src: "hello.txt", dest: "/hello.txt" }] }],
      },
      output: { image: "registry:5000/team/hello:v1", insecure: true, pushSecretRef: { name: "push" } },
      ...overrides.spec,
    },
    ...(overrides.status !== undefined ? { status: overrides.status } : {}),
  });
}

export const DIGEST_A = `sha256:${"a".repeat(64)}` as Digest;
export const DIGEST_B = `sha256:${"b".repeat(64)}` as Digest;
export const DIGEST_C = `sha256:${"c".repeat(64)}` as Digest;
export const LAYER = `sha256:${"1".repeat(64)}` as Digest;

/** A pod as the kubelet leaves it: `phase` with the pusher's (and executor's) terminated states. */
export function finishedPod(
  name: string,
  phase: "Succeeded" | "Failed",
  containers: {
    executor?: { exitCode: number; message?: string };
    pusher?: { exitCode: number; message?: string };
    planner?: { exitCode: number; message?: string };
  },
  extra: { reason?: string; message?: string } = {},
): V1Pod {
  const status = (n: string, c: { exitCode: number; message?: string }) => ({
    name: n,
    image: "kiln",
    imageID: "",
    ready: false,
    restartCount: 0,
    state: {
      terminated: {
        exitCode: c.exitCode,
        ...(c.message !== undefined ? { message: c.message } : {}),
        startedAt: "2026-01-01T00:00:01Z",
        finishedAt: n === "executor" ? "2026-01-01T00:00:05Z" : "2026-01-01T00:00:09Z",
      },
    },
  });
  return {
    metadata: { name, namespace: "team", creationTimestamp: "2026-01-01T00:00:00Z" as never },
    status: {
      phase,
      startTime: "2026-01-01T00:00:00Z" as never,
      ...extra,
      ...(containers.executor ? { initContainerStatuses: [status("executor", containers.executor)] } : {}),
      ...(containers.pusher ? { containerStatuses: [status("pusher", containers.pusher)] } : {}),
      ...(containers.planner ? { containerStatuses: [status("planner", containers.planner)] } : {}),
    } as V1Pod["status"],
  };
}

export function succeededPod(name: string, result: StageResult): V1Pod {
  return finishedPod(name, "Succeeded", {
    executor: { exitCode: 0 },
    pusher: { exitCode: 0, message: encodeStageResult(result) },
  });
}

export function runningPod(name: string): V1Pod {
  return {
    metadata: { name, namespace: "team", creationTimestamp: "2026-01-01T00:00:00Z" as never },
    status: { phase: "Running", startTime: "2026-01-01T00:00:00Z" as never },
  };
}

/** The job the controller writes for the fixture ImageBuild's single-platform target stage. */
export function stageJob(stage: Stage, files: Record<string, string>): StageJob {
  return {
    kind: "stage",
    stage,
    timestamp: 0,
    dockerfile: false,
    inputs: {},
    source: { inline: { files } },
    push: { image: "registry:5000/team/hello:v1", tagged: true, tags: [], insecure: true },
  };
}

/** A shell-form RUN step as the Dockerfile compiler writes it: `RUN <script>` as root in /. */
export function runStep(script: string, line?: number): RunStep {
  return {
    kind: "run",
    ...(line !== undefined ? { line } : {}),
    createdBy: `RUN ${script}`,
    argv: ["/bin/sh", "-c", script],
    env: [],
    user: "",
    workdir: "/",
    mounts: [],
    network: "default",
    usedArgs: {},
  };
}
