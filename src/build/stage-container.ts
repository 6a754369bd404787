import fs from "node:fs";
import path from "node:path";
import { ContainerError, type ContainerMount, runContainer } from "../executor/container.ts";
import {
  contextDir,
  type ExecutorEvent,
  type ExecutorJob,
  eventsFile,
  jobFile,
} from "../executor/workspace.ts";
import type { Logger } from "../log.ts";
import type { Image, Layer } from "../oci/image.ts";
import { applyLayer } from "../oci/layer-apply.ts";
import { CACHE_MOUNTS_MOUNT, SECRETS_MOUNT, WORKSPACE_MOUNT } from "../plan/container-layout.ts";
import { ExecutorLostError, followExecutor } from "../pusher/executor-events.ts";
import type { LocalRuntime } from "./local-runtime.ts";
import { mountOverlay } from "./root-cache.ts";

/** Where Node keeps the executor's compiled code; inside the workspace, so no snapshot sees it. */
const COMPILE_CACHE_MOUNT = `${WORKSPACE_MOUNT}/node-cache`;

export interface StageContainerOptions {
  /** A folder of the stage's own: the root, the workspace and runc's bundle go there. */
  readonly dir: string;
  /** The unpacked base: the root is an overlay over it, with the prefix's own layers applied on top. */
  readonly base: { readonly root: string; readonly layers: number };
  readonly runtime: LocalRuntime;
  /** The build context on the host (mounted read-only). */
  readonly context: string;
  /** Host folders of the roots the steps copy or bind-mount from, by `stage:NAME` / `image:REF`. */
  readonly sources: ReadonlyMap<string, string>;
  /** Host folder of the build's secrets, one file per id (mounted only into the executor's container). */
  readonly secrets?: string;
  /** Host folder of the persistent `RUN --mount=type=cache` folders. */
  readonly caches: string;
  /** Host folder for Node's compile cache of kiln's code, so the executor starts fast in every container. */
  readonly compileCache: string;
  /**
   * The pusher's side: called with each step the executor finished, the layer it wrote (if any) as soon as
   * it is there, while the next step runs.
   */
  readonly onStep?: (
    event: Extract<ExecutorEvent, { type: "step" }>,
    layer: Layer | undefined,
  ) => Promise<void>;
  /** Answers the executor's cache lookups (followExecutor). */
  readonly lookup?: (key: string) => Promise<Layer | undefined>;
  readonly onOutput?: (chunk: Buffer) => void;
  readonly log: Logger;
}

export interface StageContainerResult {
  readonly image: Image;
  /** The stage's root as the last step left it, for `COPY --from` of later stages; mounted until `close()`. */
  readonly root: string;
  close(): Promise<void>;
}

/**
 * Runs the rest of a stage in a container whose root is `prefix` unpacked (DESIGN decision 2, locally): runc
 * starts kiln's executor from the runtime mounted at /kiln, with the workspace, the context, the sources,
 * the secrets and the cache folders mounted; no credentials are in it or given to it. Layer events are read
 * from the workspace as they come. Returns the stage's image: the prefix's layers, then the executor's.
 */
export async function runStageInContainer(
  job: ExecutorJob,
  prefix: Image,
  o: StageContainerOptions,
): Promise<StageContainerResult> {
  const started = performance.now();
  const overlay = await mountOverlay(o.base.root, o.dir);
  try {
    o.log.debug({ ms: Math.round(performance.now() - started) }, "Mounted the stage root");
    const image = await runIn(overlay.root, job, prefix, o);
    return { image, root: overlay.root, close: () => overlay.unmount() };
  } catch (err) {
    await overlay.unmount();
    throw err;
  }
}

async function runIn(
  rootfs: string,
  job: ExecutorJob,
  prefix: Image,
  o: StageContainerOptions,
): Promise<Image> {
  const workspace = path.join(o.dir, "workspace");
  fs.mkdirSync(contextDir(workspace), { recursive: true });
  for (const layer of prefix.layers.slice(o.base.layers)) await applyLayer(layer.open(), rootfs);

  const mounts: ContainerMount[] = [
    ...o.runtime.mounts,
    { type: "bind", source: workspace, target: WORKSPACE_MOUNT, readOnly: false },
    { type: "bind", source: o.context, target: `${WORKSPACE_MOUNT}/context`, readOnly: true },
    { type: "bind", source: o.caches, target: CACHE_MOUNTS_MOUNT, readOnly: false },
    { type: "bind", source: o.compileCache, target: COMPILE_CACHE_MOUNT, readOnly: false },
  ];
  if (o.secrets !== undefined)
    mounts.push({ type: "bind", source: o.secrets, target: SECRETS_MOUNT, readOnly: false });
  const sources: Record<string, string> = {};
  for (const [i, [key, dir]] of [...o.sources].entries()) {
    const target = `${WORKSPACE_MOUNT}/sources/${i}`;
    fs.mkdirSync(path.join(workspace, "sources", String(i)), { recursive: true });
    mounts.push({ type: "bind", source: dir, target, readOnly: true });
    sources[key] = target;
  }
  fs.writeFileSync(jobFile(workspace), JSON.stringify({ ...job, sources }));
  fs.writeFileSync(eventsFile(workspace), "");

  let exited = false;
  const stderr: Buffer[] = [];
  const container = runContainer(
    {
      rootfs,
      argv: o.runtime.executorArgv,
      env: [`TMPDIR=${WORKSPACE_MOUNT}/tmp`, `NODE_COMPILE_CACHE=${COMPILE_CACHE_MOUNT}`],
      cwd: "/",
      uid: 0,
      gid: 0,
      additionalGids: [],
      mounts,
      network: "default",
      hostname: "kiln",
      extraCapabilities: ["CAP_SYS_ADMIN"],
    },
    {
      workDir: path.join(o.dir, "bundles"),
      onOutput: (_stream, chunk) => {
        stderr.push(chunk);
        o.onOutput?.(chunk);
      },
    },
  ).finally(() => {
    exited = true;
  });
  const following = followExecutor(workspace, job, prefix, {
    ...(o.onStep !== undefined ? { onStep: o.onStep } : {}),
    ...(o.lookup !== undefined ? { lookup: o.lookup } : {}),
    stopped: () => exited,
    log: o.log,
  });
  const [ran, followed] = await Promise.allSettled([container, following]);
  if (ran.status === "rejected") throw ran.reason;
  if (followed.status === "fulfilled" && ran.value.exitCode === 0) return followed.value;
  if (followed.status === "rejected" && !(followed.reason instanceof ExecutorLostError))
    throw followed.reason;
  const tailText = Buffer.concat(stderr).toString().slice(-2000);
  throw new ContainerError(
    `the stage executor ended with status ${ran.value.exitCode} without a result: ${tailText}`,
  );
}
