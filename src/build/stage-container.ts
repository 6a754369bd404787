import fs from "node:fs";
import path from "node:path";
import { StringDecoder } from "node:string_decoder";
import { setTimeout as sleep } from "node:timers/promises";
import { DockerfileError, InvalidInputError } from "../errors.ts";
import { ContainerError, type ContainerMount, runContainer } from "../executor/container.ts";
import {
  CACHE_MOUNTS_MOUNT,
  contextDir,
  type ExecutorEvent,
  ExecutorEventSchema,
  type ExecutorJob,
  eventsFile,
  jobFile,
  layerOf,
  SECRETS_MOUNT,
  validated,
  WORKSPACE_MOUNT,
} from "../executor/workspace.ts";
import type { Logger } from "../log.ts";
import type { Image, Layer } from "../oci/image.ts";
import { applyLayer } from "../oci/layer-apply.ts";
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

  const events: ExecutorEvent[] = [];
  const layers: Layer[] = [];
  const uploads: Promise<void>[] = [];
  const tail = new EventTail(eventsFile(workspace));
  const take = () => {
    for (const e of tail.read()) {
      events.push(e);
      if (e.type !== "step") continue;
      o.log.info(
        { line: e.line, step: e.kind, ms: e.ms, ...(e.layer ? { size: e.layer.size } : {}) },
        "Step done",
      );
      const layer = e.layer === undefined ? undefined : layerOf(workspace, e.layer);
      if (layer !== undefined) layers.push(layer);
      if (o.onStep !== undefined) uploads.push(o.onStep(e, layer));
    }
  };
  let running = true;
  const tailing = (async () => {
    while (running) {
      take();
      await sleep(25);
    }
  })();
  let exitCode: number;
  const stderr: Buffer[] = [];
  try {
    ({ exitCode } = await runContainer(
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
    ));
  } finally {
    running = false;
    await tailing;
  }
  take();
  await Promise.all(uploads);
  const last = events.at(-1);
  if (last?.type === "failed") {
    if (job.dockerfile) throw new DockerfileError(last.line, last.message);
    throw new InvalidInputError(
      last.line === undefined ? last.message : `line ${last.line}: ${last.message}`,
    );
  }
  if (last?.type !== "done" || exitCode !== 0) {
    const tailText = Buffer.concat(stderr).toString().slice(-2000);
    throw new ContainerError(
      `the stage executor ended with status ${exitCode} without a result: ${tailText}`,
    );
  }
  if (last.config.rootfs.diff_ids.length !== prefix.layers.length + layers.length) {
    throw new ContainerError("the stage executor's config does not name the layers it wrote");
  }
  return { config: last.config, layers: [...prefix.layers, ...layers] };
}

/** Reads complete JSON lines appended to a file since the last read. */
class EventTail {
  readonly #file: string;
  readonly #decoder = new StringDecoder("utf8");
  #offset = 0;
  #rest = "";

  constructor(file: string) {
    this.#file = file;
  }

  read(): ExecutorEvent[] {
    const fd = fs.openSync(this.#file, "r");
    try {
      const out: ExecutorEvent[] = [];
      const buf = Buffer.alloc(1 << 16);
      for (;;) {
        const n = fs.readSync(fd, buf, 0, buf.length, this.#offset);
        if (n === 0) break;
        this.#offset += n;
        this.#rest += this.#decoder.write(buf.subarray(0, n));
      }
      const lines = this.#rest.split("\n");
      this.#rest = lines.pop() ?? "";
      for (const line of lines) if (line !== "") out.push(validated(ExecutorEventSchema, JSON.parse(line)));
      return out;
    } finally {
      fs.closeSync(fd);
    }
  }
}
