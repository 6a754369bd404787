import fs from "node:fs";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { z } from "zod";
import { DigestSchema } from "../oci/digest.ts";
import type { Layer } from "../oci/image.ts";
import { ImageConfigSchema } from "../oci/image-config.ts";
import { StageSchema } from "../plan/plan.ts";

/**
 * The workspace: the one folder the executor (inside the stage container, no credentials) and the pusher
 * (outside it, the only holder of credentials) share (DESIGN decision 4). The executor reads `job.json`,
 * the build context and the roots of the stages it copies from, and appends one JSON line per event to
 * `events.jsonl`: each finished layer file as soon as it is written, so the pusher uploads it while the
 * next step runs, then the stage's config or its failure. Cached layers the pusher found are in `cache/`.
 */

export const ExecutorJobSchema = z.object({
  /** The steps still to do; the ones before ran elsewhere (their layers are in the root already). */
  stage: StageSchema,
  /** The config the first step starts from, history included. */
  baseConfig: ImageConfigSchema,
  /** The cache key before the first step (plan/cache-key.ts). */
  cacheKey: z.string(),
  /** Layer mtime and history time, seconds since the epoch. */
  timestamp: z.number().int().nonnegative(),
  dockerfile: z.boolean(),
  /** The roots of the stages and images the steps copy or bind-mount from, by `stage:NAME` / `image:REF`. */
  sources: z.record(z.string(), z.string()).default({}),
  /** A pusher answers cache lookups: each RUN asks for its key before it runs. */
  cacheLookups: z.boolean().default(false),
});
export type ExecutorJob = z.infer<typeof ExecutorJobSchema>;

/** A layer file in the workspace; `file` is relative to it. */
export const LayerFileSchema = z.object({
  file: z.string(),
  digest: DigestSchema,
  diffId: DigestSchema,
  size: z.number().int().nonnegative(),
  mediaType: z.string(),
});
export type LayerFileRef = z.infer<typeof LayerFileSchema>;

export const ExecutorEventSchema = z.discriminatedUnion("type", [
  z.object({
    type: z.literal("step"),
    index: z.number().int().nonnegative(),
    line: z.number().int().positive().optional(),
    kind: z.string(),
    cached: z.boolean(),
    ms: z.number().int().nonnegative(),
    /** The step's cache key; set on RUN steps the executor ran, whose layer the pusher may store. */
    cacheKey: z.string().optional(),
    layer: LayerFileSchema.optional(),
  }),
  /** A RUN step about to run asks the pusher for its cached layer; it answers in `cache/` (cachedLayerFile). */
  z.object({ type: z.literal("lookup"), key: z.string() }),
  z.object({ type: z.literal("done"), config: ImageConfigSchema }),
  z.object({
    type: z.literal("failed"),
    message: z.string(),
    line: z.number().int().positive().optional(),
    exitCode: z.number().int().optional(),
  }),
]);
export type ExecutorEvent = z.infer<typeof ExecutorEventSchema>;

/**
 * Checks `value` against `schema` and returns it as it was: zod's output lists keys in the schema's order,
 * and configs must keep the order kiln wrote them in, or the same image gets another config digest.
 */
export function validated<T>(schema: z.ZodType<T>, value: unknown): T {
  schema.parse(value);
  return value as T;
}

export function jobFile(workspace: string): string {
  return path.join(workspace, "job.json");
}

export function eventsFile(workspace: string): string {
  return path.join(workspace, "events.jsonl");
}

/** Touched by the executor every few seconds while it lives, so the pusher can tell a dead one from a slow step. */
export function heartbeatFile(workspace: string): string {
  return path.join(workspace, "heartbeat");
}

export function layersDir(workspace: string): string {
  return path.join(workspace, "layers");
}

export function contextDir(workspace: string): string {
  return path.join(workspace, "context");
}

/**
 * The pusher's answer to a lookup: `cache/KEY` (the layer blob) and `cache/KEY.json` (its LayerFileRef), or
 * `cache/KEY.miss` when the cache has none. Each file is renamed into place whole, the JSON last, so the
 * executor never reads half an answer.
 */
export async function writeCacheAnswer(
  workspace: string,
  key: string,
  layer: Layer | undefined,
): Promise<void> {
  const file = cachedLayerFile(workspace, key);
  await fs.promises.mkdir(path.dirname(file), { recursive: true });
  if (layer === undefined) {
    await fs.promises.writeFile(`${file}.miss`, "");
    return;
  }
  await pipeline(layer.open(), fs.createWriteStream(`${file}.part`));
  await fs.promises.rename(`${file}.part`, file);
  const ref = layerRef(workspace, { ...layer, file });
  await fs.promises.writeFile(`${file}.json.part`, JSON.stringify(ref));
  await fs.promises.rename(`${file}.json.part`, `${file}.json`);
}

/** The pusher's answer to a lookup of `key`: the cached layer, "miss", or undefined while it has not answered. */
export function readCacheAnswer(
  workspace: string,
  key: string,
): (Layer & { file: string }) | "miss" | undefined {
  const file = cachedLayerFile(workspace, key);
  try {
    return layerOf(workspace, LayerFileSchema.parse(JSON.parse(fs.readFileSync(`${file}.json`, "utf8"))));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  return fs.existsSync(`${file}.miss`) ? "miss" : undefined;
}

function cachedLayerFile(workspace: string, key: string): string {
  return path.join(workspace, "cache", key);
}

/** Appends one event; a line is written in one call, so a reader never sees half of it with a newline. */
export function appendEvent(workspace: string, event: ExecutorEvent): void {
  fs.appendFileSync(eventsFile(workspace), `${JSON.stringify(event)}\n`);
}

/** A layer file as a Layer: `open()` reads the file again on every call. */
export function layerOf(workspace: string, ref: LayerFileRef): Layer & { readonly file: string } {
  const file = path.join(workspace, ref.file);
  return {
    file,
    digest: ref.digest,
    diffId: ref.diffId,
    size: ref.size,
    mediaType: ref.mediaType,
    open: () => fs.createReadStream(file),
  };
}

export function layerRef(workspace: string, layer: Layer & { readonly file: string }): LayerFileRef {
  return {
    file: path.relative(workspace, layer.file),
    digest: layer.digest,
    diffId: layer.diffId,
    size: layer.size,
    mediaType: layer.mediaType,
  };
}
