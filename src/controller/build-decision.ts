import type { V1Pod } from "@kubernetes/client-node";
import { type Condition, ConditionType, setCondition } from "../api/condition.ts";
import { parseDuration } from "../api/duration.ts";
import {
  type Failure,
  type ImageBuild,
  type ImageBuildStatus,
  Phase,
  type Source,
  type StageStatus,
  type StepStatus,
} from "../api/image-build.ts";
import type { PushTarget, StageJob } from "../api/stage-job.ts";
import type { StageFailure, StageResult } from "../api/stage-result.ts";
import { type BuildPlan, type Stage, stageSources } from "../plan/plan.ts";
import { plannedInPod } from "./compile-plan.ts";
import { indexPodName, planPodName, stagePodName } from "./names.ts";
import { type BuilderConfig, buildPod } from "./pod-builder.ts";
import { type PodState, podState } from "./pod-state.ts";

/**
 * The pure heart of reconcile: from an ImageBuild, its plan and the pods that exist, what the status should
 * say and which pods to create or delete. Nothing here reads a clock or the API; reconcile.ts does both and
 * applies the decision, so the same world always gives the same decision.
 */

/** One pod's worth of work: a stage on one build platform, or the index over the platforms. */
export interface BuildUnit {
  readonly name: string;
  readonly kind: "plan" | "stage" | "index";
  readonly stageName: string;
  readonly platform: string;
  readonly stage: Stage | undefined;
  /** Units whose images this one needs first (FROM <stage>, COPY --from=<stage>). */
  readonly deps: readonly string[];
}

/** Pods created per unit name, and when the last was created, for the retry limit and backoff. */
/** By pod name: how often it was started, when last, and why the last one failed outside the build. */
export type Attempts = Readonly<
  Record<string, readonly [count: number, lastMs: number, lastFailure?: string]>
>;

export interface World {
  readonly ib: ImageBuild;
  /**
   * The compiled plan, or why there is none (a user error: the build fails), or `undefined` while the plan
   * pod of a Dockerfile build has not produced it.
   */
  readonly plan: BuildPlan | { readonly failure: Failure } | undefined;
  /** The build context as stage pods fetch it: the plan pod's pinned source, or the spec's. */
  readonly source: Source;
  /** This generation's pods by name. */
  readonly pods: ReadonlyMap<string, V1Pod>;
  /** Pods of other generations: a spec change cancels them. */
  readonly stalePods: readonly string[];
  readonly attempts: Attempts;
  /** The concurrency limits let this build run now. */
  readonly admitted: boolean;
  /** Tails of failed containers' logs, by pod name. */
  readonly logs: ReadonlyMap<string, string>;
  /** Pods that cannot start, by name, and why (a Secret they mount does not exist). */
  readonly stuck?: ReadonlyMap<string, StageFailure>;
  readonly now: Date;
}

export interface DecideOptions {
  readonly builder: BuilderConfig;
  /** Pods a unit may get in all (the first and its retries). */
  readonly maxAttempts: number;
  /** Wait before the n-th attempt (n ≥ 2). */
  readonly retryDelayMs: (attempt: number) => number;
}

export interface BuildEvent {
  readonly type: "Normal" | "Warning";
  readonly reason: keyof typeof EVENT_FOLLOWS;
  readonly message: string;
}

/**
 * What each event reports, so it is recorded once that is done: an event about pods created or deleted
 * follows those requests (the next pass finds them done and decides no such event again); an event
 * about the build's progress follows the status write that records it (a pass that ends before it decides
 * it again).
 */
export const EVENT_FOLLOWS = {
  Scheduled: "create",
  Retrying: "delete",
  Cancelled: "delete",
  StageSucceeded: "status",
  Pushed: "status",
  Failed: "status",
} as const satisfies Record<string, "create" | "delete" | "status">;

export interface Decision {
  readonly status: ImageBuildStatus;
  readonly create: readonly V1Pod[];
  readonly delete: readonly string[];
  readonly events: readonly BuildEvent[];
  /** Set when pods are created: written to the ImageBuild before the pods. */
  readonly attempts: Attempts | undefined;
  readonly requeueAfterMs: number | undefined;
}

export const isFinished = (s: ImageBuildStatus | undefined, generation: number): boolean =>
  s?.observedGeneration === generation && (s.phase === Phase.Succeeded || s.phase === Phase.Failed);

/** The units of a plan: every stage on its build platform, plus the index when there are several. */
export function unitsOf(ib: ImageBuild, plan: BuildPlan): BuildUnit[] {
  const units: BuildUnit[] = [];
  for (const platform of plan.platforms) {
    const stages = plan.stages.filter((s) => (s.buildFor ?? s.platform) === platform);
    const nameOf = (stage: string) => stagePodName(ib, stage, platform);
    for (const stage of stages) {
      const deps = new Set<string>();
      if (stage.base.kind === "stage") deps.add(stage.base.stage);
      for (const from of stageSources(stage)) if (from.kind === "stage") deps.add(from.stage);
      units.push({
        name: nameOf(stage.name),
        kind: "stage",
        stageName: stage.name,
        platform,
        stage,
        deps: [...deps].map(nameOf),
      });
    }
  }
  if (plan.platforms.length > 1) {
    units.push({
      name: indexPodName(ib),
      kind: "index",
      stageName: "index",
      platform: plan.platforms[0]!,
      stage: undefined,
      deps: plan.platforms.map((p) => stagePodName(ib, plan.target, p)),
    });
  }
  return units;
}

/** The plan pod's unit: a Dockerfile build compiles in a pod before any stage runs. */
function planUnit(ib: ImageBuild): BuildUnit {
  const platform = ib.spec.platforms?.[0] ?? "linux/amd64";
  return { name: planPodName(ib), kind: "plan", stageName: "plan", platform, stage: undefined, deps: [] };
}

export function decide(world: World, opts: DecideOptions): Decision {
  const { ib, now } = world;
  const generation = ib.metadata.generation ?? 0;
  const prev = ib.status?.observedGeneration === generation ? ib.status : undefined;
  const nowIso = iso(now);
  const create: V1Pod[] = [];
  const events: BuildEvent[] = [];
  const deletes = new Set(world.stalePods);
  if (world.stalePods.length > 0)
    events.push({
      type: "Normal",
      reason: "Cancelled",
      message: `Spec changed to generation ${generation}; deleting ${world.stalePods.length} pod(s) of the previous build`,
    });

  if (world.plan !== undefined && "failure" in world.plan) {
    return finish(fail(world.plan.failure, [], undefined));
  }
  const plan = world.plan;
  const units = [
    ...(plannedInPod(ib) ? [planUnit(ib)] : []),
    ...(plan !== undefined ? unitsOf(ib, plan) : []),
  ];
  const multi = (plan?.platforms.length ?? 0) > 1;
  const states = new Map<string, PodState>();
  for (const u of units) {
    const pod = world.pods.get(u.name);
    if (pod === undefined) continue;
    const stuck = world.stuck?.get(u.name);
    states.set(
      u.name,
      stuck !== undefined
        ? {
            kind: "failed",
            failure: stuck,
            transient: false,
            container: undefined,
            result: undefined,
            startTime: undefined,
            completionTime: undefined,
          }
        : podState(pod),
    );
  }
  const results = new Map<string, StageResult>();
  for (const [name, s] of states) if (s.kind === "succeeded") results.set(name, s.result);

  for (const u of units) {
    const s = states.get(u.name);
    const before = ib.status?.stages?.find((p) => p.podName === u.name);
    if (u.kind === "stage" && s?.kind === "succeeded" && before?.digest === undefined)
      events.push({
        type: "Normal",
        reason: "StageSucceeded",
        message: `Stage ${u.stageName} (${u.platform}) built ${s.result.digest}`,
      });
  }
  const started = prev?.startTime ?? (world.admitted || world.pods.size > 0 ? nowIso : undefined);
  const stageStatuses = units
    .filter((u) => u.kind === "stage")
    .map((u) => stageStatus(u, states.get(u.name)));

  // A user error anywhere fails the build at once; the others' pods are cancelled.
  const userFailure = units.find((u) => {
    const s = states.get(u.name);
    return s?.kind === "failed" && !s.transient;
  });
  if (userFailure !== undefined) {
    const s = states.get(userFailure.name) as Extract<PodState, { kind: "failed" }>;
    const snippet = s.failure.log ?? world.logs.get(userFailure.name);
    return finish(
      fail(
        {
          reason: s.failure.reason,
          message: s.failure.message,
          stage: userFailure.stageName,
          ...(s.failure.line !== undefined ? { line: s.failure.line } : {}),
          ...(snippet !== undefined && snippet !== "" ? { logSnippet: snippet } : {}),
        },
        stageStatuses,
        started,
      ),
    );
  }

  if (started !== undefined) {
    const deadline = Date.parse(started) + parseDuration(ib.spec.timeout);
    if (now.getTime() >= deadline) {
      return finish(
        fail(
          { reason: "Timeout", message: `the build did not finish within ${ib.spec.timeout}` },
          stageStatuses,
          started,
        ),
      );
    }
  }

  const final = plan !== undefined ? finalUnit(units, plan) : undefined;
  const finalResult = final !== undefined ? results.get(final.name) : undefined;
  if (plan !== undefined && finalResult?.digest !== undefined) {
    const repo = repositoryOf(ib.spec.output.image);
    const platforms = plan.platforms.map((p) => ({
      platform: p,
      digest: results.get(stagePodName(ib, plan.target, p))?.digest ?? finalResult.digest!,
    }));
    const status = withConditions(
      {
        phase: Phase.Succeeded,
        observedGeneration: generation,
        image: `${repo}@${finalResult.digest}`,
        digest: finalResult.digest,
        platforms,
        stages: stageStatuses,
        ...(started !== undefined ? { startTime: started } : {}),
        completionTime: prev?.completionTime ?? nowIso,
      },
      "True",
      "Succeeded",
      `Pushed ${repo}@${finalResult.digest}`,
    );
    if (prev?.phase !== Phase.Succeeded)
      events.push({ type: "Normal", reason: "Pushed", message: `Pushed ${repo}@${finalResult.digest}` });
    return finish(status);
  }

  // Transient failures: delete the pod; it is created again (after a delay) once it is gone.
  let requeueAfterMs: number | undefined;
  // Only this generation's units: the names of earlier ones drop out with the next write.
  const attempts: Record<string, Attempts[string]> = Object.fromEntries(
    Object.entries(world.attempts).filter(([name]) => units.some((u) => u.name === name)),
  );
  let attemptsChanged = false;
  for (const u of units) {
    const s = states.get(u.name);
    const pod = world.pods.get(u.name);
    if (s?.kind === "failed" && s.transient && pod?.metadata?.deletionTimestamp === undefined) {
      deletes.add(u.name);
      // Kept with the count: the pod that says why goes now, and the build's final failure must say it.
      const [count = 1, lastMs = now.getTime()] = attempts[u.name] ?? [];
      attempts[u.name] = [count, lastMs, `${s.failure.reason}: ${s.failure.message}`];
      attemptsChanged = true;
      events.push({
        type: "Warning",
        reason: "Retrying",
        message: `Stage ${u.stageName} (${u.platform}) failed for a reason outside the build (${s.failure.reason}: ${s.failure.message}); running it again`,
      });
    }
  }
  if (!world.admitted && world.pods.size === 0) {
    return finish(
      withConditions(
        { phase: Phase.Pending, observedGeneration: generation, stages: stageStatuses },
        "Unknown",
        "Queued",
        "Waiting for a build slot (concurrency limit)",
      ),
    );
  }
  for (const u of units) {
    if (world.pods.has(u.name)) continue;
    if (!u.deps.every((d) => results.has(d))) continue;
    const [count, lastMs, lastFailure] = attempts[u.name] ?? [0, 0];
    if (count >= opts.maxAttempts) {
      return finish(
        fail(
          {
            reason: "RetryLimitExceeded",
            message: `stage ${u.stageName} (${u.platform}) was started ${count} times without finishing${lastFailure !== undefined ? `; the last time: ${lastFailure}` : ""}`,
            stage: u.stageName,
          },
          stageStatuses,
          started,
        ),
      );
    }
    if (count > 0) {
      const wait = lastMs + opts.retryDelayMs(count + 1) - now.getTime();
      if (wait > 0) {
        requeueAfterMs = Math.min(requeueAfterMs ?? wait, wait);
        continue;
      }
    }
    attempts[u.name] =
      lastFailure !== undefined ? [count + 1, now.getTime(), lastFailure] : [count + 1, now.getTime()];
    attemptsChanged = true;
    const job = jobOf(ib, plan, world.source, u, results, multi);
    const runsCode = hasRun(u.stage);
    if (job.kind === "stage" && runsCode && u.stage?.base.kind === "scratch") {
      return finish(
        fail(
          {
            reason: "Unsupported",
            message: `stage ${u.stageName} starts FROM scratch and has RUN steps: a cluster build runs RUN in the stage's base image, and scratch has no program to run`,
            stage: u.stageName,
          },
          stageStatuses,
          started,
        ),
      );
    }
    create.push(
      buildPod(
        ib,
        {
          name: u.name,
          job,
          stage: u.stageName,
          platform: u.platform,
          runsCode,
        },
        opts.builder,
      ),
    );
    events.push({
      type: "Normal",
      reason: "Scheduled",
      message: `Created pod ${u.name} for ${UNIT_WHAT[u.kind] ?? `stage ${u.stageName}`} (${u.platform})${count > 0 ? `, attempt ${count + 1}` : ""}`,
    });
  }
  if (started !== undefined) {
    const left = Date.parse(started) + parseDuration(ib.spec.timeout) - now.getTime();
    requeueAfterMs = Math.min(requeueAfterMs ?? left, left);
  }
  const status = withConditions(
    {
      phase: Phase.Building,
      observedGeneration: generation,
      stages: stageStatuses,
      ...(started !== undefined ? { startTime: started } : {}),
    },
    "Unknown",
    plan === undefined ? "Planning" : "Building",
    [
      plan === undefined
        ? "Compiling the Dockerfile"
        : `Building ${units.filter((u) => results.has(u.name)).length}/${units.length} units`,
      // A build retrying a stage says why while it waits, not only in an event.
      ...units.flatMap((u) => {
        const [count, , lastFailure] = attempts[u.name] ?? [0, 0];
        return lastFailure !== undefined && !results.has(u.name)
          ? [`stage ${u.stageName} (${u.platform}) is retried after ${count} attempt(s): ${lastFailure}`]
          : [];
      }),
      // A pod the scheduler cannot place (no node of its architecture, say) says why in PodScheduled.
      ...units.flatMap((u) => {
        const c = world.pods
          .get(u.name)
          ?.status?.conditions?.find((x) => x.type === "PodScheduled" && x.status === "False");
        return c?.message !== undefined ? [`pod ${u.name} is not scheduled: ${c.message}`] : [];
      }),
    ].join("; "),
  );
  return {
    status,
    create,
    delete: [...deletes],
    events,
    attempts: attemptsChanged ? attempts : undefined,
    requeueAfterMs,
  };

  function finish(status: ImageBuildStatus): Decision {
    if (status.phase === Phase.Failed || status.phase === Phase.Succeeded) {
      // Finished: nothing of this build keeps running.
      for (const [name, pod] of world.pods) {
        const k = podState(pod).kind;
        if (k === "running") deletes.add(name);
      }
    }
    return { status, create, delete: [...deletes], events, attempts: undefined, requeueAfterMs: undefined };
  }

  function fail(failure: Failure, stages: StageStatus[], startTime: string | undefined): ImageBuildStatus {
    if (prev?.phase !== Phase.Failed)
      events.push({
        type: "Warning",
        reason: "Failed",
        message: `${failure.reason}: ${failure.message}`.slice(0, 1024),
      });
    return withConditions(
      {
        phase: Phase.Failed,
        observedGeneration: generation,
        stages,
        ...(startTime !== undefined ? { startTime } : {}),
        completionTime: prev?.completionTime ?? nowIso,
        failure: prev?.failure ?? failure,
      },
      "False",
      failure.reason,
      failure.message,
    );
  }

  function withConditions(
    status: ImageBuildStatus,
    succeeded: Condition["status"],
    reason: string,
    message: string,
  ): ImageBuildStatus {
    let conditions = ib.status?.conditions ?? [];
    const c = { status: succeeded, reason, message: message.slice(0, 32768), observedGeneration: generation };
    conditions = setCondition(conditions, { type: ConditionType.Succeeded, ...c }, now);
    conditions = setCondition(
      conditions,
      { type: ConditionType.Ready, ...c, status: succeeded === "True" ? "True" : "False" },
      now,
    );
    if (status.stages?.length === 0) delete status.stages;
    return { ...status, conditions };
  }
}

/** The unit whose digest is the build's: the index, or the target stage on the only platform. */
function finalUnit(units: readonly BuildUnit[], plan: BuildPlan): BuildUnit {
  return (
    units.find((u) => u.kind === "index") ??
    units.find((u) => u.stageName === plan.target && u.platform === plan.platforms[0])!
  );
}

function stageStatus(u: BuildUnit, s: PodState | undefined): StageStatus {
  const result = s !== undefined && s.kind !== "running" ? s.result : undefined;
  const steps = result !== undefined && u.stage !== undefined ? stepStatuses(u.stage, result) : undefined;
  return {
    name: u.stageName,
    platform: u.platform,
    podName: u.name,
    ...(s?.kind === "succeeded" && s.result.digest !== undefined ? { digest: s.result.digest } : {}),
    ...(s?.startTime !== undefined ? { startTime: s.startTime } : {}),
    ...(s !== undefined && s.kind !== "running" && s.completionTime !== undefined
      ? { completionTime: s.completionTime }
      : {}),
    ...(steps !== undefined && steps.length > 0 ? { steps } : {}),
  };
}

const INSTRUCTION_MAX = 200;

/** The result's steps next to the plan's; a result that left out its first steps lines up from the end. */
export function stepStatuses(stage: Stage, result: StageResult): StepStatus[] {
  const offset = result.omittedSteps ?? 0;
  return result.steps.map((r, i): StepStatus => {
    const step = stage.steps[offset + i];
    const line = r.line ?? step?.line;
    return {
      ...(line !== undefined ? { line } : {}),
      instruction: (step?.createdBy ?? "").slice(0, INSTRUCTION_MAX),
      cached: r.cached,
      durationMs: r.ms,
      ...(r.digest !== undefined ? { layerDigest: r.digest } : {}),
    };
  });
}

/** Whether the stage runs user code (a RUN step), which needs a node of its platform and the step cache. */
function hasRun(stage: Stage | undefined): boolean {
  return stage?.steps.some((s) => s.kind === "run") ?? false;
}

function repositoryOf(image: string): string {
  const at = image.indexOf("@");
  const name = at === -1 ? image : image.slice(0, at);
  const colon = name.lastIndexOf(":");
  return colon > name.lastIndexOf("/") ? name.slice(0, colon) : name;
}

const UNIT_WHAT: Readonly<Record<string, string>> = { index: "the image index", plan: "the build plan" };

function jobOf(
  ib: ImageBuild,
  plan: BuildPlan | undefined,
  source: Source,
  u: BuildUnit,
  results: ReadonlyMap<string, StageResult>,
  multi: boolean,
): StageJob {
  const out = ib.spec.output;
  const repo = repositoryOf(out.image);
  const push = (tagged: boolean): PushTarget => ({
    image: out.image,
    tagged,
    tags: out.tags ?? [],
    insecure: out.insecure,
  });
  if (u.kind === "plan" || plan === undefined) {
    const { dockerfile, layers } = ib.spec;
    return {
      kind: "plan",
      ...(dockerfile !== undefined ? { dockerfile } : {}),
      ...(layers !== undefined ? { layers } : {}),
      platforms: ib.spec.platforms ?? [],
      timestamp: ib.spec.timestamp ?? 0,
      source: ib.spec.source,
      push: push(false),
    };
  }
  if (u.kind === "index") {
    return {
      kind: "index",
      manifests: plan.platforms.map((p) => ({
        platform: p,
        digest: results.get(stagePodName(ib, plan.target, p))!.digest!,
      })),
      push: push(true),
    };
  }
  const inputs: Record<string, string> = {};
  for (const d of u.deps) {
    const stageName =
      d === u.name ? u.stageName : plan.stages.find((s) => stagePodName(ib, s.name, u.platform) === d)?.name;
    const digest = results.get(d)?.digest;
    if (stageName !== undefined && digest !== undefined) inputs[stageName] = `${repo}@${digest}`;
  }
  const cache = ib.spec.cache;
  return {
    kind: "stage",
    stage: u.stage!,
    timestamp: plan.timestamp,
    dockerfile: ib.spec.dockerfile !== undefined,
    inputs,
    source,
    push: push(!multi && u.stageName === plan.target),
    // Only RUN steps are cached: file steps cost less to do again than to fetch.
    ...(hasRun(u.stage) && !cache.disabled
      ? {
          cache: {
            repository: cache.repository ?? `${repo}/cache`,
            ttlSeconds: parseDuration(cache.ttl) / 1000,
          },
        }
      : {}),
  };
}

function iso(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, "Z");
}
