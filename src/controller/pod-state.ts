import type { V1ContainerStatus, V1Pod, V1PodCondition } from "@kubernetes/client-node";
import { parseStageResult, type StageFailure, type StageResult } from "../api/stage-result.ts";

/**
 * What a build pod says about its unit of work, read from its status alone. Failures are split into the
 * user's (the same input fails the same way: report at once) and the cluster's (eviction, a lost node, a
 * registry that answered 5xx: run the unit again).
 */
export type PodState =
  | { readonly kind: "running"; readonly startTime: string | undefined }
  | {
      readonly kind: "succeeded";
      readonly result: StageResult;
      readonly startTime: string | undefined;
      readonly completionTime: string | undefined;
    }
  | {
      readonly kind: "failed";
      readonly failure: StageFailure;
      /** The cluster's fault: run the unit again (up to the retry limit). */
      readonly transient: boolean;
      /** The failed container, when the log may tell more than the result did. */
      readonly container: string | undefined;
      readonly result: StageResult | undefined;
      readonly startTime: string | undefined;
      readonly completionTime: string | undefined;
    };

/** The containers whose termination message is the pod's result: the pusher, or a plan pod's planner. */
const RESULT_CONTAINERS: ReadonlySet<string> = new Set(["pusher", "planner"]);

/** StageResult failure reasons the pods write for errors that may pass when repeated. */
export const TRANSIENT_REASONS: ReadonlySet<string> = new Set(["RegistryUnavailable"]);
/** Pod status reasons the kubelet and the node lifecycle give pods they stopped for their own reasons. */
const DISRUPTED_POD_REASONS = new Set([
  "Evicted",
  "NodeLost",
  "Shutdown",
  "Terminated",
  "NodeAffinity",
  "UnexpectedAdmissionError",
]);

/**
 * What the pod cache keeps of a build pod: the fields reconcile, the build decision and podState read.
 * Its spec, the job annotation (a whole stage job, inline files included) and the container statuses'
 * image fields are left out; a thousand build pods then cost the cache well under a MiB. A reader of
 * any other pod field must add it here.
 */
export function summarizePod(pod: V1Pod): V1Pod {
  const m = pod.metadata ?? {};
  const s = pod.status;
  const owner = m.ownerReferences?.find((r) => r.controller);
  return {
    metadata: {
      name: m.name,
      namespace: m.namespace,
      uid: m.uid,
      resourceVersion: m.resourceVersion,
      creationTimestamp: m.creationTimestamp,
      ...(m.deletionTimestamp !== undefined ? { deletionTimestamp: m.deletionTimestamp } : {}),
      labels: m.labels,
      ...(owner !== undefined
        ? {
            ownerReferences: [
              {
                apiVersion: owner.apiVersion,
                kind: owner.kind,
                name: owner.name,
                uid: owner.uid,
                controller: true,
              },
            ],
          }
        : {}),
    },
    ...(s !== undefined
      ? {
          status: {
            phase: s.phase,
            ...(s.reason !== undefined ? { reason: s.reason } : {}),
            ...(s.message !== undefined ? { message: s.message } : {}),
            ...(s.startTime !== undefined ? { startTime: s.startTime } : {}),
            ...(s.conditions !== undefined
              ? {
                  conditions: s.conditions.map(
                    (c) =>
                      ({
                        type: c.type,
                        status: c.status,
                        ...(c.reason !== undefined ? { reason: c.reason } : {}),
                        ...(c.message !== undefined ? { message: c.message } : {}),
                      }) as V1PodCondition,
                  ),
                }
              : {}),
            ...(s.initContainerStatuses !== undefined
              ? { initContainerStatuses: s.initContainerStatuses.map(containerSummary) }
              : {}),
            ...(s.containerStatuses !== undefined
              ? { containerStatuses: s.containerStatuses.map(containerSummary) }
              : {}),
          },
        }
      : {}),
  };
}

// The type asks for image, imageID, ready and restartCount, which nothing here reads.
const containerSummary = (c: V1ContainerStatus) => ({ name: c.name, state: c.state }) as V1ContainerStatus;

/**
 * Why a build pod cannot start, from the kubelet's FailedMount Event messages: a Secret it mounts does not
 * exist in its namespace. The kubelet retries such a mount for as long as the pod lives, so a build would
 * wait out its timeout without a word; any other mount trouble may pass and is left to the kubelet.
 */
export function missingSecret(messages: readonly string[]): StageFailure | undefined {
  for (const m of messages) {
    const found = /volume "([^"]+)".*secret "([^"]+)" not found/s.exec(m);
    if (found !== null)
      return {
        reason: "SecretNotFound",
        message: `Secret ${found[2]} (volume ${found[1]}) does not exist in the ImageBuild's namespace`,
      };
  }
  return undefined;
}

/** How many lines of a failed step's output a failure's logSnippet keeps. */
const SNIPPET_LINES = 20;

/**
 * What a failed build container printed for people: its log without kiln's own JSON records (the pod log
 * interleaves them with the steps' output), the last {@link SNIPPET_LINES} lines. A container that printed
 * nothing else has no snippet: the failure's message says it all.
 */
export function logSnippet(log: string): string | undefined {
  const lines = log.split("\n").filter((l) => l.trim() !== "" && !isKilnRecord(l));
  return lines.length > 0 ? lines.slice(-SNIPPET_LINES).join("\n") : undefined;
}

function isKilnRecord(line: string): boolean {
  if (!line.startsWith("{")) return false;
  try {
    return (JSON.parse(line) as { app?: unknown }).app === "kiln";
  } catch {
    return false;
  }
}

/** JSON times arrive as strings; client-node's types call them Date. */
export function timeOf(t: Date | string | undefined): string | undefined {
  if (t === undefined) return undefined;
  return new Date(t).toISOString().replace(/\.\d{3}Z$/, "Z");
}

export function podState(pod: V1Pod): PodState {
  const status = pod.status ?? {};
  const startTime = timeOf(status.startTime) ?? timeOf(pod.metadata?.creationTimestamp);
  const containers = [...(status.initContainerStatuses ?? []), ...(status.containerStatuses ?? [])];
  const finishedAt = latest(containers);
  const disrupted =
    DISRUPTED_POD_REASONS.has(status.reason ?? "") ||
    (status.conditions ?? []).some((c) => c.type === "DisruptionTarget" && c.status === "True");
  if (status.phase === "Succeeded") {
    const reporter = (status.containerStatuses ?? []).find((c) => RESULT_CONTAINERS.has(c.name));
    const message = reporter?.state?.terminated?.message;
    const result = message !== undefined ? tryParse(message) : undefined;
    if (result?.digest !== undefined)
      return { kind: "succeeded", result, startTime, completionTime: finishedAt };
    return {
      kind: "failed",
      failure: {
        reason: "InvalidResult",
        message: `the ${reporter?.name ?? "pusher"} ended without a result: ${message ?? "(none)"}`,
      },
      transient: false,
      container: reporter?.name ?? "pusher",
      result: undefined,
      startTime,
      completionTime: finishedAt,
    };
  }
  if (status.phase !== "Failed") {
    // A pod deleted by someone else, or a node shutting down, ends like an eviction.
    if (pod.metadata?.deletionTimestamp !== undefined)
      return failed({ reason: "PodDeleted", message: `pod ${pod.metadata.name} was deleted` }, true);
    return { kind: "running", startTime };
  }
  const failedContainers = containers.filter((c) => (c.state?.terminated?.exitCode ?? 0) !== 0);
  // The result a container wrote says most (a stage's executor fails first; its pusher tells why, with the
  // line), but the executor's own log is the one with the failing step's output.
  const reported = failedContainers
    .map((c) => ({ c, result: tryParse(c.state?.terminated?.message ?? "") }))
    .find((r) => r.result?.failure !== undefined);
  const broken = failedContainers[0];
  if (reported?.result?.failure !== undefined) {
    const logOf = failedContainers.find((c) => c.name === "executor") ?? reported.c;
    const { failure } = reported.result;
    return failed(failure, TRANSIENT_REASONS.has(failure.reason), logOf, reported.result);
  }
  if (disrupted || broken === undefined) {
    const why = status.message ?? status.reason ?? "the pod failed without a container failing";
    return failed({ reason: status.reason ?? "PodFailed", message: why }, true);
  }
  const t = broken.state?.terminated;
  return failed(
    {
      reason: t?.reason === "OOMKilled" ? "OutOfMemory" : "ContainerFailed",
      message: `container ${broken.name} exited ${t?.exitCode}${t?.reason ? ` (${t.reason})` : ""}`,
    },
    false,
    broken,
  );

  function failed(
    failure: StageFailure,
    transient: boolean,
    container?: V1ContainerStatus,
    res?: StageResult,
  ): PodState {
    return {
      kind: "failed",
      failure,
      transient,
      container: container?.name,
      result: res,
      startTime,
      completionTime: finishedAt,
    };
  }
}

function tryParse(message: string): StageResult | undefined {
  try {
    return parseStageResult(message);
  } catch {
    return undefined;
  }
}

function latest(containers: readonly V1ContainerStatus[]): string | undefined {
  const times = containers
    .map((c) => timeOf(c.state?.terminated?.finishedAt))
    .filter((t): t is string => t !== undefined)
    .sort();
  return times.at(-1);
}
