import { buildStage, type StageInputs } from "../executor/file-stage.ts";
import { takeSnapshot } from "../executor/snapshot.ts";
import { treeOf } from "../executor/stage-executor.ts";
import type { ExecutorEvent } from "../executor/workspace.ts";
import type { Logger } from "../log.ts";
import type { Image, Layer } from "../oci/image.ts";
import type { Platform } from "../oci/platform.ts";
import { type Stage, stageSources } from "../plan/plan.ts";
import type { LocalRuntime } from "./local-runtime.ts";
import { cachedRoot } from "./root-cache.ts";
import { runStageInContainer } from "./stage-container.ts";
import type { StepCache } from "./step-cache.ts";

/** What running stages with RUN on this machine needs besides a file-only build's inputs. */
export interface RunOptions {
  readonly runtime: LocalRuntime;
  /** The build context folder on the host. */
  readonly contextDir: string;
  /** Host folder of the build's secrets, one file per id. */
  readonly secrets?: string;
  /** Host folder of the persistent `RUN --mount=type=cache` folders. */
  readonly caches: string;
  /** Host folder of unpacked base images kept between builds (root-cache.ts). */
  readonly roots: string;
  /** Host folder for Node's compile cache of the executor's code. */
  readonly compileCache: string;
  readonly cache?: StepCache;
  /** Uploads a layer to where the build pushes, as soon as it is written. */
  readonly uploadLayer?: (layer: Layer) => Promise<void>;
  readonly log: Logger;
  readonly onOutput?: (chunk: Buffer) => void;
}

/** A stage's image and, when it ran in a container, its root (mounted until `close()`). */
export interface BuiltStage {
  readonly image: Image;
  readonly root?: string;
  close?(): Promise<void>;
}

/** How a stage with RUN steps went: how many RUN steps ran, how many came from the cache. */
export interface RunStageStats {
  ran: number;
  cached: number;
}

/**
 * Builds a stage that has RUN steps. The steps up to the first RUN the cache cannot answer are done here,
 * file-only, from the base's layers and the cache (DESIGN decision 2: those layers become the container's
 * root); the rest run in a stage container with the executor. New RUN layers go to the cache and to the
 * push targets as the executor writes them.
 */
export async function buildRunStage(
  stage: Stage,
  inputs: StageInputs,
  platform: Platform,
  timestamp: number,
  dir: string,
  run: RunOptions,
  stats: RunStageStats = { ran: 0, cached: 0 },
): Promise<BuiltStage> {
  // The base is unpacked (once, kept between builds) for the container anyway: its tree comes from a walk
  // of that root, cheaper than reading every layer's headers again.
  const baseRoot = await cachedRoot(inputs.base, run.roots);
  // Only the cache or a file step before the first RUN needs the tree here; the executor walks the root anyway.
  const first = stage.steps.find((s) => s.kind !== "config");
  const needsTree = run.cache !== undefined || first?.kind !== "run";
  // The RUN the file-only pass stopped at missed already; the executor asks again for it and the ones after.
  const missed = new Set<string>();
  const progress = await buildStage(stage, {
    ...inputs,
    ...(needsTree ? { tree: treeOf(takeSnapshot(baseRoot)) } : {}),
    runStep: async (_step, key) => {
      const layer = await run.cache?.lookup(key, platform);
      if (layer === undefined) {
        missed.add(key);
        return undefined;
      }
      stats.cached++;
      return { layer, cached: true };
    },
  });
  if (progress.stoppedAt === undefined) return { image: progress.image };
  const rest: Stage = { ...stage, steps: stage.steps.slice(progress.stoppedAt) };
  const sources = new Map<string, string>();
  for (const from of stageSources(rest)) {
    const key = from.kind === "stage" ? `stage:${from.stage}` : `image:${from.image}`;
    if (!sources.has(key) && inputs.sourceRoots !== undefined) {
      sources.set(key, (await inputs.sourceRoots(from)).root);
    }
  }
  const cache = run.cache;
  const onStep = async (e: Extract<ExecutorEvent, { type: "step" }>, layer: Layer | undefined) => {
    if (e.kind === "run") e.cached ? stats.cached++ : stats.ran++;
    if (layer === undefined) return;
    await Promise.all([
      run.uploadLayer?.(layer),
      e.cacheKey !== undefined ? run.cache?.store(e.cacheKey, layer, platform) : undefined,
    ]);
  };
  return runStageInContainer(
    {
      stage: rest,
      baseConfig: progress.image.config,
      cacheKey: progress.cacheKey,
      timestamp,
      dockerfile: inputs.dockerfile ?? false,
      sources: {},
      cacheLookups: run.cache !== undefined,
    },
    progress.image,
    {
      dir,
      base: { root: baseRoot, layers: inputs.base.layers.length },
      runtime: run.runtime,
      context: run.contextDir,
      sources,
      ...(run.secrets !== undefined ? { secrets: run.secrets } : {}),
      caches: run.caches,
      compileCache: run.compileCache,
      onStep,
      ...(cache !== undefined
        ? { lookup: async (key: string) => (missed.has(key) ? undefined : cache.lookup(key, platform)) }
        : {}),
      ...(run.onOutput !== undefined ? { onOutput: run.onOutput } : {}),
      log: run.log,
    },
  );
}
