import fs from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { DockerfileError, describeError, InvalidInputError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Layer } from "../oci/image.ts";
import { applyLayer } from "../oci/layer-apply.ts";
import type { LayerEntry } from "../oci/layer-entry.ts";
import { writeLayer } from "../oci/layer-writer.ts";
import {
  CACHE_MOUNTS_MOUNT,
  KILN_MOUNTS,
  RUNTIME_MOUNT,
  SECRETS_MOUNT,
  WORKSPACE_MOUNT,
} from "../plan/container-layout.ts";
import type { CopyFrom } from "../plan/plan.ts";
import { BuildContext } from "./context.ts";
import { buildStage, type RunLayer, type StepOutcome } from "./file-stage.ts";
import { ImageTree } from "./image-tree.ts";
import { diffSnapshots, mountPointsBelow, type Snapshot, takeSnapshot } from "./snapshot.ts";
import { runStepProcess, StepProcessError } from "./step-process.ts";
import {
  appendEvent,
  contextDir,
  type ExecutorJob,
  layerRef,
  layersDir,
  readCacheAnswer,
} from "./workspace.ts";

/** How long a RUN waits for the pusher's answer to its cache lookup, and how often it looks. */
const LOOKUP_WAIT_MS = 300_000;
const LOOKUP_POLL_MS = 50;

/** kiln's runtime this file runs from (its src/executor/). */
const RUNTIME_DIR = path.resolve(import.meta.dirname, "..", "..");

export interface ExecuteStageOptions {
  /** The stage's root: "/" inside the stage container. */
  readonly rootfs?: string;
  readonly workspace: string;
  readonly log: Logger;
  /** RUN steps' output, each chunk with its step's Dockerfile line. */
  readonly onOutput?: (line: number | undefined, stream: "stdout" | "stderr", chunk: Buffer) => void;
  /** kiln's mount points (runtime, workspace, secrets, caches): hidden from steps, left out of snapshots. */
  readonly kilnMounts?: readonly string[];
  readonly secrets?: string;
  readonly caches?: string;
}

/**
 * Runs a stage's steps in place in the root it is running in (DESIGN decision 2): COPY, ADD and WORKDIR
 * write what they computed into the root; RUN steps run as child processes (kiln-run) and their layer is the
 * stat diff of the root (decision 3); with `cacheLookups`, a RUN first asks the pusher for the layer cached
 * under its key and gets that layer applied instead when there is one. Each layer is announced in the workspace as soon as it is written, for the pusher;
 * the executor itself never holds registry credentials. Returns after the `done` event, or throws after the
 * `failed` event.
 */
export async function executeStage(job: ExecutorJob, options: ExecuteStageOptions): Promise<void> {
  const { workspace, log } = options;
  const rootfs = options.rootfs ?? "/";
  const kilnMounts = options.kilnMounts ?? [
    RUNTIME_MOUNT,
    WORKSPACE_MOUNT,
    SECRETS_MOUNT,
    CACHE_MOUNTS_MOUNT,
  ];
  const inRoot = (p: string) => path.relative(path.resolve(rootfs), path.resolve(rootfs, `.${p}`));
  const snapshotOptions = {
    exclude: [...kilnMounts, KILN_MOUNTS].map(inRoot).filter((p) => p !== "" && !p.startsWith("..")),
  };
  const scratch = path.join(workspace, "scratch");
  fs.mkdirSync(scratch, { recursive: true });
  fs.mkdirSync(layersDir(workspace), { recursive: true });
  let written = 0;
  const writeLayerFile = async (entries: readonly LayerEntry[]) =>
    writeLayer(entries, {
      file: path.join(layersDir(workspace), `layer-${written++}`),
      mtime: job.timestamp,
      addParents: false,
    });

  let snapshot: Snapshot | undefined = takeSnapshot(rootfs, snapshotOptions);
  const tree = treeOf(snapshot);
  const sourceRoot = (key: string): string => {
    const dir = job.sources[key];
    if (dir === undefined) throw new InvalidInputError(`${key} is not among the job's sources`);
    return dir;
  };
  const bindSource = (from: CopyFrom): string => {
    if (from.kind === "stage") return sourceRoot(`stage:${from.stage}`);
    if (from.kind === "image") return sourceRoot(`image:${from.image}`);
    if (from.kind === "context") return contextDir(workspace);
    throw new InvalidInputError(`RUN --mount=type=bind cannot mount from ${from.kind}`);
  };
  // Only what is mounted can be hidden; outside a container (tests on a folder) there is nothing to hide.
  const mounted = new Set(
    rootfs === "/" ? mountPointsBelow("/", "/proc/self/mountinfo").map((m) => `/${m}`) : [],
  );
  const hide = kilnMounts.filter((m) => mounted.has(m));
  const context = BuildContext.open(contextDir(workspace));
  const run = async (step: Parameters<typeof runStepProcess>[0], key: string): Promise<RunLayer> => {
    const cached = job.cacheLookups ? await askCache(workspace, key, log) : undefined;
    if (cached !== undefined) {
      await applyLayer(cached.open(), rootfs);
      snapshot = undefined;
      log.info({ line: step.line }, "Used the cached layer");
      return { layer: cached, cached: true };
    }
    const before = snapshot ?? takeSnapshot(rootfs, snapshotOptions);
    const { touchedDirs } = await runStepProcess(step, {
      rootfs,
      helper: path.join(RUNTIME_DIR, "bin", "kiln-run"),
      hide,
      scratch,
      secrets: options.secrets ?? SECRETS_MOUNT,
      caches: options.caches ?? CACHE_MOUNTS_MOUNT,
      bindRoot: (m) => (m.from === undefined ? contextDir(workspace) : bindSource(m.from)),
      onOutput: (stream, chunk) => options.onOutput?.(step.line, stream, chunk),
    });
    const after = takeSnapshot(rootfs, snapshotOptions);
    const entries = diffSnapshots(before, after, { ignoreTimes: touchedDirs });
    snapshot = after;
    return { layer: await writeLayerFile(entries), entries, cached: false };
  };
  const onStep = async (step: ExecutorJob["stage"]["steps"][number], outcome: StepOutcome) => {
    const layer = outcome.layer as (Layer & { file: string }) | undefined;
    if (layer !== undefined && step.kind !== "run") {
      await applyLayer(layer.open(), rootfs);
      snapshot = undefined;
    }
    appendEvent(workspace, {
      type: "step",
      index: outcome.index,
      ...(step.line !== undefined ? { line: step.line } : {}),
      kind: step.kind,
      cached: outcome.cached,
      ms: outcome.ms,
      ...(step.kind === "run" && !outcome.cached ? { cacheKey: outcome.key } : {}),
      ...(layer !== undefined ? { layer: layerRef(workspace, layer) } : {}),
    });
  };
  try {
    const { image } = await buildStage(job.stage, {
      base: { config: job.baseConfig, layers: [] },
      context,
      writeLayer: writeLayerFile,
      created: createdAt(job.timestamp),
      sourceRoots: async (from) => {
        const key = from.kind === "stage" ? `stage:${from.stage}` : `image:${from.image}`;
        return new BuildContext(sourceRoot(key), [], { policy: "scoped", keepOwners: true, name: key });
      },
      dockerfile: job.dockerfile,
      tree,
      cacheKey: job.cacheKey,
      runStep: run,
      onStep,
    });
    appendEvent(workspace, { type: "done", config: image.config });
  } catch (err) {
    const cause = err instanceof Error ? err.cause : undefined;
    appendEvent(workspace, {
      type: "failed",
      message: err instanceof DockerfileError ? err.detail : describeError(err),
      ...(err instanceof DockerfileError && err.line !== undefined ? { line: err.line } : {}),
      ...(cause instanceof StepProcessError ? { exitCode: cause.exitCode } : {}),
    });
    throw err;
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

/** RFC 3339 without fractional seconds, as Go tools write it. */
export function createdAt(timestamp: number): string {
  return new Date(timestamp * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/**
 * Asks the pusher for the layer cached under `key` and waits for its answer. A pusher that does not answer
 * in time (a slow registry) costs the step its cache, not the build.
 */
async function askCache(
  workspace: string,
  key: string,
  log: Logger,
): Promise<(Layer & { file: string }) | undefined> {
  appendEvent(workspace, { type: "lookup", key });
  const deadline = Date.now() + LOOKUP_WAIT_MS;
  for (;;) {
    const answer = readCacheAnswer(workspace, key);
    if (answer !== undefined) return answer === "miss" ? undefined : answer;
    if (Date.now() > deadline) {
      log.warn({ key, waitedMs: LOOKUP_WAIT_MS }, "The cache did not answer; running the step");
      return undefined;
    }
    await sleep(LOOKUP_POLL_MS);
  }
}

/** The root's tree as the file-only steps see an image's: types, modes, owners, link targets, users. */
export function treeOf(s: Snapshot): ImageTree {
  const tree = new ImageTree();
  const paths = [...s.stats.keys()].sort();
  for (const p of paths) {
    const st = s.stats.get(p)!;
    const type = st.isDirectory() ? "dir" : st.isSymbolicLink() ? "symlink" : st.isFile() ? "file" : "char";
    const link = s.links.get(p);
    const content =
      ImageTree.keepsContent(p) && st.isFile() ? fs.readFileSync(path.join(s.root, p), "utf8") : undefined;
    tree.apply(
      p,
      {
        type,
        mode: st.mode & 0o7777,
        uid: st.uid,
        gid: st.gid,
        size: st.size,
        ...(link !== undefined ? { linkTarget: link } : {}),
      },
      content,
    );
  }
  return tree;
}
