import fs from "node:fs";
import { StringDecoder } from "node:string_decoder";
import { setTimeout as sleep } from "node:timers/promises";
import { DockerfileError, InvalidInputError, KilnError } from "../errors.ts";
import {
  type ExecutorEvent,
  ExecutorEventSchema,
  type ExecutorJob,
  eventsFile,
  layerOf,
  validated,
  writeCacheAnswer,
} from "../executor/workspace.ts";
import type { Logger } from "../log.ts";
import type { Image, Layer } from "../oci/image.ts";

/** The executor ended without saying how its stage went (it crashed, was killed, or never started). */
export class ExecutorLostError extends KilnError {
  override readonly code = "KILN_ERR_EXECUTOR_LOST";
}

export interface FollowOptions {
  /** Called with each step the executor finished and the layer it wrote (if any), while the next step runs. */
  readonly onStep?: (
    event: Extract<ExecutorEvent, { type: "step" }>,
    layer: Layer | undefined,
  ) => Promise<void>;
  /**
   * Answers the executor's cache lookups: the layer cached under a RUN step's key, or undefined. Without it
   * the executor asks nothing (its job's `cacheLookups` is false).
   */
  readonly lookup?: (key: string) => Promise<Layer | undefined>;
  /** True once the executor cannot write any more events (its process ended or stopped answering). */
  readonly stopped: () => boolean;
  readonly log: Logger;
  readonly pollMs?: number;
}

/**
 * The pusher's side of the workspace (DESIGN decision 4): reads the executor's events as they are appended,
 * hands each finished layer on at once, and ends with the stage's image — `prefix`'s layers, then the
 * executor's, under the config the executor wrote. The executor's failure becomes the error it described
 * (with its Dockerfile line); an executor that stopped without a word is an {@link ExecutorLostError}.
 */
export async function followExecutor(
  workspace: string,
  job: ExecutorJob,
  prefix: Image,
  o: FollowOptions,
): Promise<Image> {
  const layers: Layer[] = [];
  const uploads: Promise<void>[] = [];
  const tail = new EventTail(eventsFile(workspace));
  let last: ExecutorEvent | undefined;
  const take = () => {
    for (const e of tail.read()) {
      last = e;
      if (e.type === "lookup") uploads.push(answerLookup(workspace, e.key, o));
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
  const ended = () => last?.type === "done" || last?.type === "failed";
  for (;;) {
    const stopped = o.stopped();
    take();
    if (ended() || stopped) break;
    await sleep(o.pollMs ?? 25);
  }
  await Promise.all(uploads);
  const end = last as ExecutorEvent | undefined;
  if (end?.type === "failed") {
    if (job.dockerfile) throw new DockerfileError(end.line, end.message);
    throw new InvalidInputError(end.line === undefined ? end.message : `line ${end.line}: ${end.message}`);
  }
  if (end?.type !== "done") throw new ExecutorLostError("the stage executor ended without a result");
  if (end.config.rootfs.diff_ids.length !== prefix.layers.length + layers.length) {
    throw new ExecutorLostError("the stage executor's config does not name the layers it wrote");
  }
  return { config: end.config, layers: [...prefix.layers, ...layers] };
}

/** A cache that fails to answer costs the step its cache, never the build: the executor hears "miss". */
async function answerLookup(workspace: string, key: string, o: FollowOptions): Promise<void> {
  let layer: Layer | undefined;
  try {
    layer = await o.lookup?.(key);
  } catch (err) {
    o.log.warn({ err, key }, "Cache lookup failed; the step runs");
  }
  await writeCacheAnswer(workspace, key, layer);
}

/** Reads complete JSON lines appended to a file since the last read; a missing file has none yet. */
class EventTail {
  readonly #file: string;
  readonly #decoder = new StringDecoder("utf8");
  #offset = 0;
  #rest = "";

  constructor(file: string) {
    this.#file = file;
  }

  read(): ExecutorEvent[] {
    let fd: number;
    try {
      fd = fs.openSync(this.#file, "r");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
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
