import type { KubernetesObject, V1Pod } from "@kubernetes/client-node";
import { type Failure, type ImageBuild, ImageBuildSchema, Phase } from "../api/image-build.ts";
import type { StageFailure } from "../api/stage-result.ts";
import { isConflict, type KubeClient } from "../kube/client.ts";
import type { EventRecorder } from "../kube/event-recorder.ts";
import { trimMetadata } from "../kube/informer.ts";
import {
  createPod,
  deletePod,
  patchMetadata,
  podEventMessages,
  readPodLog,
  writeStatus,
} from "../kube/resources.ts";
import type { Logger } from "../log.ts";
import type { Admission } from "./admission.ts";
import { type Attempts, type DecideOptions, decide, EVENT_FOLLOWS, isFinished } from "./build-decision.ts";
import { compilePlan, PLANNED_BY_POD, type PodPlan, readPlanOutput } from "./compile-plan.ts";
import type { Metrics } from "./metrics.ts";
import { Annotation, FINALIZER, Label, planPodName } from "./names.ts";
import { logSnippet, missingSecret, podState } from "./pod-state.ts";

export type Request = { readonly namespace: string; readonly name: string };
export type Result = {
  readonly requeueAfterMs?: number;
  readonly wake?: readonly string[];
  /**
   * Pods were created and the writes after them (metadata, status) left to a later pass, as other builds
   * were waiting for their first pods; the key must be looked at again.
   */
  readonly deferred?: boolean;
};

/**
 * Pods this controller created or deleted that its cache has not shown yet. Without them a reconcile that
 * runs before the watch delivers its own write would count a missing pod as lost (and retry it) or a
 * deleted one as still there.
 */
export class Expectations {
  /** By ImageBuild uid: pod name → its namespace/name key and when the expectation lapses. */
  readonly #byUid = new Map<string, Map<string, { key: string; until: number }>>();
  /** namespace/name → ImageBuild uid. */
  readonly #uidOf = new Map<string, string>();
  readonly #ttlMs: number;
  constructor(ttlMs = 60_000) {
    this.#ttlMs = ttlMs;
  }
  created(uid: string, namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    const pods = this.#byUid.get(uid) ?? new Map<string, { key: string; until: number }>();
    this.#byUid.set(uid, pods);
    pods.set(name, { key, until: Date.now() + this.#ttlMs });
    this.#uidOf.set(key, uid);
  }
  /** The cache showed the pod (or showed it gone). */
  observed(namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    const uid = this.#uidOf.get(key);
    if (uid !== undefined) this.#forget(uid, name, key);
  }
  /** Names of pods created for the ImageBuild `uid` that the cache has not shown yet. */
  pending(uid: string): string[] {
    const now = Date.now();
    const names: string[] = [];
    for (const [name, e] of this.#byUid.get(uid) ?? []) {
      if (e.until > now) names.push(name);
      else this.#forget(uid, name, e.key);
    }
    return names;
  }
  #forget(uid: string, name: string, key: string): void {
    this.#uidOf.delete(key);
    const pods = this.#byUid.get(uid);
    pods?.delete(name);
    if (pods?.size === 0) this.#byUid.delete(uid);
  }
}

/**
 * What this controller last wrote to each ImageBuild (by uid) while its cache still shows an older version.
 * A reconcile that reads one of those older versions works from the written object instead, so a stale
 * cache causes no second status write, no second event and no 409 on the next conditional metadata write.
 */
export class RecentWrites {
  readonly #byUid = new Map<string, { stale: Set<string>; latest: ImageBuild }>();

  /** The newest of `ib` and what was written after it. */
  current(ib: ImageBuild): ImageBuild {
    const uid = ib.metadata.uid ?? "";
    const memo = this.#byUid.get(uid);
    if (memo === undefined) return ib;
    if (memo.stale.has(ib.metadata.resourceVersion ?? "")) return memo.latest;
    this.#byUid.delete(uid); // the cache caught up (or someone else wrote): it is the truth again
    return ib;
  }

  /** Records the API server's answer to a write made on `before`. */
  wrote(before: ImageBuild, answer: unknown): ImageBuild {
    const parsed = ImageBuildSchema.safeParse(trimMetadata(answer as KubernetesObject));
    if (!parsed.success) return before;
    const uid = before.metadata.uid ?? "";
    const stale = this.#byUid.get(uid)?.stale ?? new Set<string>();
    stale.add(before.metadata.resourceVersion ?? "");
    this.#byUid.set(uid, { stale, latest: parsed.data });
    return parsed.data;
  }

  forget(uid: string): void {
    this.#byUid.delete(uid);
  }
}

/**
 * Plans read from plan pods, by ImageBuild uid, for the generation they were compiled for: a plan pod's
 * output is read once, not on every reconcile of the build it plans.
 */
export class Plans {
  readonly #byUid = new Map<string, { generation: number; plan: PodPlan | { failure: Failure } }>();

  get(uid: string, generation: number): PodPlan | { failure: Failure } | undefined {
    const memo = this.#byUid.get(uid);
    return memo?.generation === generation ? memo.plan : undefined;
  }

  set(uid: string, generation: number, plan: PodPlan | { failure: Failure }): void {
    this.#byUid.set(uid, { generation, plan });
  }

  forget(uid: string): void {
    this.#byUid.delete(uid);
  }
}

export interface ReconcileDeps {
  readonly client: KubeClient;
  /** The ImageBuild informer's cache: objects as the API server sent them, parsed here. */
  readonly imageBuilds: { get(name: string, namespace: string): unknown };
  /** Pods of one ImageBuild (by uid), from the pod informer's cache. */
  readonly podsOf: (uid: string) => readonly V1Pod[];
  readonly admission: Admission;
  readonly expectations: Expectations;
  readonly written: RecentWrites;
  readonly plans: Plans;
  readonly decide: DecideOptions;
  readonly events: EventRecorder;
  /** Whether other builds wait for their first pods: then a pass that created pods leaves its writes. */
  readonly othersWaiting: () => boolean;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly now: () => Date;
}

const QUEUED_RECHECK_MS = 30_000;

/** Reads the world for one ImageBuild and converges it (STYLE R6); the key is the only input. */
export async function reconcile(req: Request, deps: ReconcileDeps): Promise<Result> {
  const key = `${req.namespace}/${req.name}`;
  const raw = deps.imageBuilds.get(req.name, req.namespace);
  if (raw === undefined) return { wake: deps.admission.release(key) };
  const parsed = ImageBuildSchema.safeParse(raw);
  // The API server validated it; a failed parse means a newer schema wrote it. Leave it alone.
  if (!parsed.success) {
    deps.log.warn({ err: parsed.error }, "ImageBuild does not match the schema; skipping");
    return {};
  }
  let ib = deps.written.current(parsed.data);
  const uid = ib.metadata.uid ?? "";
  const generation = ib.metadata.generation ?? 0;
  const namespace = req.namespace;
  const allPods = deps.podsOf(uid);
  const finalizers = ib.metadata.finalizers ?? [];

  if (ib.metadata.deletionTimestamp !== undefined) {
    deps.written.forget(uid);
    deps.plans.forget(uid);
    await Promise.all(
      allPods
        .filter((p) => p.metadata?.deletionTimestamp === undefined)
        .map((p) => deletePod(deps.client, namespace, p.metadata!.name!)),
    );
    if (allPods.length === 0 && finalizers.includes(FINALIZER)) {
      await patchMetadata(deps.client, ib, { finalizers: finalizers.filter((f) => f !== FINALIZER) });
      deps.log.info("Removed finalizer");
    }
    return { wake: deps.admission.release(key) };
  }

  const current = new Map<string, V1Pod>();
  const stale: string[] = [];
  for (const p of allPods) {
    const name = p.metadata?.name ?? "";
    if (p.metadata?.labels?.[Label.Generation] === String(generation)) current.set(name, p);
    else if (p.metadata?.deletionTimestamp === undefined) stale.push(name);
  }
  if (isFinished(ib.status, generation)) {
    const running = [...current.values()].filter((p) => podState(p).kind === "running");
    if (stale.length === 0 && running.length === 0) {
      deps.plans.forget(uid);
      return { wake: deps.admission.release(key) };
    }
  }

  const compiled = compilePlan(ib);
  const podPlan =
    compiled === PLANNED_BY_POD ? await plannedByPod(ib, current.get(planPodName(ib)), deps) : undefined;
  const plan =
    compiled !== PLANNED_BY_POD ? compiled : podPlan && ("failure" in podPlan ? podPlan : podPlan.plan);
  const source = podPlan !== undefined && "source" in podPlan ? podPlan.source : ib.spec.source;
  const running = [...current.values()].some((p) => podState(p).kind === "running");
  const admitted = deps.admission.admit(key, namespace, running || current.size > 0);
  const logs = new Map<string, string>();
  if (!isFinished(ib.status, generation)) {
    for (const [name, pod] of current) {
      const s = podState(pod);
      if (s.kind !== "failed" || s.transient || s.failure.log !== undefined || s.container === undefined)
        continue;
      try {
        const snippet = logSnippet(await readPodLog(deps.client, namespace, name, s.container));
        if (snippet !== undefined) logs.set(name, snippet);
      } catch (err) {
        deps.log.warn({ err, pod: name }, "Failed to read pod log");
      }
    }
  }
  const stuck = isFinished(ib.status, generation) ? new Map() : await stuckPods(deps, namespace, current);
  const pods = new Map(current);
  // Pods created moments ago that the cache has not delivered yet exist all the same.
  for (const name of deps.expectations.pending(uid)) {
    if (!pods.has(name)) pods.set(name, { metadata: { name, namespace }, status: { phase: "Pending" } });
  }
  const now = deps.now();
  const recorded = ib.metadata.annotations?.[Annotation.Attempts];
  const attempts = countAttempts(readAttempts(recorded), pods, now);

  const decision = decide(
    { ib, plan, source, pods, stalePods: stale, attempts, admitted, logs, stuck, now },
    deps.decide,
  );

  // Pods first: they are what a waiting user (and the apply → pod latency) needs. A pass that ends before
  // the attempts annotation is written (a crash, or writes left for later) loses no count: the next one
  // counts the pod it finds.
  await Promise.all(
    decision.create.map(async (pod) => {
      const name = pod.metadata!.name!;
      deps.expectations.created(uid, namespace, name);
      const outcome = await createPod(deps.client, pod);
      deps.log.info({ pod: name, outcome }, outcome === "created" ? "Created Pod" : "Pod already exists");
    }),
  );
  // Events are for people; the recorder sends them in the background. Each is recorded once what it
  // reports is done, so a pass that ends early loses none and the next one repeats none.
  const recordEvents = (follows: "create" | "delete" | "status") => {
    for (const e of decision.events)
      if (EVENT_FOLLOWS[e.reason] === follows) deps.events.record(ib, e.type, e.reason, e.message, now);
  };
  recordEvents("create");
  // Under a burst of new builds their pods come first: the rest of this pass waits for a quieter one, which
  // decides again from what it finds then (often the pod finished, and the final status is written at
  // once).
  if (decision.create.length > 0 && deps.othersWaiting()) return { deferred: true };
  await Promise.all(
    decision.delete.map(async (name) => {
      await deletePod(deps.client, namespace, name);
      deps.log.info({ pod: name }, "Deleted Pod");
    }),
  );
  recordEvents("delete");

  const phase = decision.status.phase;
  const finished = phase === Phase.Succeeded || phase === Phase.Failed;
  // The finalizer and the attempts annotation matter while pods may still be made or run: a build that is
  // over needs neither written.
  const needsFinalizer =
    !finished && !finalizers.includes(FINALIZER) && pods.size + decision.create.length > 0;
  const wantAttempts = decision.attempts ?? attempts;
  const attemptsText = JSON.stringify(wantAttempts);
  const attemptsChanged = Object.keys(wantAttempts).length > 0 && attemptsText !== (recorded ?? "{}");
  if (needsFinalizer || (!finished && attemptsChanged)) {
    try {
      const answer = await patchMetadata(deps.client, ib, {
        ...(needsFinalizer ? { finalizers: [...finalizers, FINALIZER] } : {}),
        annotations: { [Annotation.Attempts]: attemptsText },
      });
      ib = deps.written.wrote(ib, answer);
    } catch (err) {
      // Someone changed the ImageBuild since the cache read it; the watch brings the change and a new look.
      if (isConflict(err)) return { requeueAfterMs: 100 };
      throw err;
    }
  }
  const answer = await writeStatus(deps.client, ib, decision.status);
  if (answer !== undefined) {
    const before = ib;
    ib = deps.written.wrote(ib, answer);
    // Events below name the ImageBuild as it was read; its status is compared as it was before the write.
    ib = { ...ib, status: before.status };
    deps.log.debug({ phase: decision.status.phase }, "Wrote status");
  }
  recordEvents("status");
  if (finished) {
    if (ib.status?.phase !== phase)
      recordFinished(deps, decision.status.startTime, phase, decision.status.failure?.message);
    return { wake: deps.admission.release(key) };
  }
  if (phase === Phase.Pending) return { requeueAfterMs: QUEUED_RECHECK_MS };
  // A pod waiting to start changes nothing the watch would bring: look again for why it waits.
  const waiting = [...current.values()].some((p) => p.status?.phase === "Pending");
  const requeueAfterMs = Math.min(
    decision.requeueAfterMs ?? Number.POSITIVE_INFINITY,
    waiting ? STUCK_RECHECK_MS : Number.POSITIVE_INFINITY,
  );
  return Number.isFinite(requeueAfterMs) ? { requeueAfterMs } : {};
}

/** How long a pod may wait to start before its Events are read for why, and how often after that. */
const STUCK_AFTER_MS = 8_000;
const STUCK_RECHECK_MS = 10_000;

/** This generation's pods that wait to start because a Secret they mount is missing (missingSecret). */
async function stuckPods(
  deps: ReconcileDeps,
  namespace: string,
  pods: ReadonlyMap<string, V1Pod>,
): Promise<Map<string, StageFailure>> {
  const stuck = new Map<string, StageFailure>();
  const now = deps.now().getTime();
  for (const [name, pod] of pods) {
    const created = Date.parse(String(pod.metadata?.creationTimestamp ?? ""));
    if (pod.status?.phase !== "Pending" || !(now - created >= STUCK_AFTER_MS)) continue;
    try {
      const failure = missingSecret(await podEventMessages(deps.client, namespace, name, "FailedMount"));
      if (failure !== undefined) stuck.set(name, failure);
    } catch (err) {
      deps.log.warn({ err, pod: name }, "Failed to read the pod's events");
    }
  }
  return stuck;
}

/** The plan the build's plan pod wrote, once it succeeded; read from its log once per generation. */
async function plannedByPod(
  ib: ImageBuild,
  pod: V1Pod | undefined,
  deps: ReconcileDeps,
): Promise<PodPlan | { failure: Failure } | undefined> {
  const uid = ib.metadata.uid ?? "";
  const generation = ib.metadata.generation ?? 0;
  const known = deps.plans.get(uid, generation);
  if (known !== undefined || pod === undefined) return known;
  const state = podState(pod);
  if (state.kind !== "succeeded" || state.result.digest === undefined) return undefined;
  const log = await readPodLog(
    deps.client,
    pod.metadata?.namespace ?? "",
    pod.metadata?.name ?? "",
    "planner",
    {},
  );
  const plan = readPlanOutput(log, state.result.digest);
  deps.plans.set(uid, generation, plan);
  return plan;
}

function recordFinished(
  deps: ReconcileDeps,
  startTime: string | undefined,
  phase: Phase,
  why: string | undefined,
) {
  const result = phase === Phase.Succeeded ? "succeeded" : "failed";
  deps.metrics.builds.inc({ result });
  if (startTime !== undefined)
    deps.metrics.buildDuration.observe({ result }, (deps.now().getTime() - Date.parse(startTime)) / 1000);
  if (phase === Phase.Failed) deps.log.info({ failure: why }, "Build failed");
  else deps.log.info("Build succeeded");
}

/**
 * Attempts as recorded, with one counted for each unit whose pod exists but is not counted yet: it was
 * created by a pass that ended before it wrote the annotation. Its creation time stands in for when.
 */
export function countAttempts(recorded: Attempts, pods: ReadonlyMap<string, V1Pod>, now: Date): Attempts {
  let counted: Record<string, Attempts[string]> | undefined;
  for (const [name, pod] of pods) {
    if (recorded[name] !== undefined) continue;
    const created = pod.metadata?.creationTimestamp;
    counted ??= { ...recorded };
    counted[name] = [1, created !== undefined ? new Date(created).getTime() : now.getTime()];
  }
  return counted ?? recorded;
}

function readAttempts(text: string | undefined): Attempts {
  if (text === undefined) return {};
  try {
    return JSON.parse(text) as Attempts;
  } catch {
    return {}; // a hand-edited annotation: count from zero again
  }
}
