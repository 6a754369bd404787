import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { type StageJob, StageJobSchema } from "../api/stage-job.ts";
import {
  encodeStageResult,
  type StageFailure,
  type StageResult,
  type StepResult,
} from "../api/stage-result.ts";
import { fileLayerWriter } from "../build/layer-writer.ts";
import { scratchImage } from "../build/local-build.ts";
import { DockerfileError, describeError, InvalidInputError, isTemporary, NotFoundError } from "../errors.ts";
import { BuildContext } from "../executor/context.ts";
import { buildFileOnlyStage } from "../executor/file-stage.ts";
import { ImageRoots } from "../executor/image-rootfs.ts";
import type { Logger } from "../log.ts";
import type { Image } from "../oci/image.ts";
import { resolveImage, writeImage } from "../oci/layout.ts";
import type { ImageIndex } from "../oci/manifest.ts";
import { MediaType } from "../oci/media-type.ts";
import { parsePlatform } from "../oci/platform.ts";
import { parseReference, type Reference } from "../oci/reference.ts";
import { createRegistryClient, type RegistryClient } from "../registry/client.ts";
import { pullImage } from "../registry/pull.ts";
import { pushImage, putIndex } from "../registry/push.ts";

/**
 * `kiln stage build|push|index`: what runs inside a build pod. `build` (the executor, no credentials) turns
 * the job's stage into an OCI layout on the shared volume; `push` (the pusher, the only holder of the push
 * secret) uploads it; `index` pushes the image index over the platforms. Each ends by writing a StageResult
 * to the termination-message file, which is all the controller reads (DESIGN decision 8).
 */

const LAYOUT_REF = "stage";
const STEPS_FILE = "steps.json";

interface StageOptions {
  readonly job: StageJob;
  readonly out: string;
  readonly authfile: string | undefined;
  readonly terminationLog: string;
}

export async function runStageCommand(args: readonly string[], log: Logger): Promise<number> {
  const [sub, ...rest] = args;
  const opts = await parseStageOptions(rest);
  const started = performance.now();
  let result: StageResult | undefined;
  try {
    switch (sub) {
      case "build":
        await buildStage(opts, log);
        break;
      case "push":
        result = await pushStage(opts, log);
        break;
      case "index":
        result = await pushStageIndex(opts, log);
        break;
      default:
        throw new InvalidInputError(
          `usage: kiln stage build|push|index --job FILE [--out DIR] [--authfile FILE]`,
        );
    }
  } catch (err) {
    log.error({ err }, `Stage ${sub} failed`);
    const failure = failureOf(err, sub === "build" ? "StepFailed" : "PushFailed");
    await writeFile(opts.terminationLog, encodeStageResult({ steps: [], failure }));
    return 1;
  }
  log.info({ ms: Math.round(performance.now() - started), digest: result?.digest }, `Stage ${sub} done`);
  // The executor's steps travel to the pusher through the work volume; only a digest makes a result.
  if (result !== undefined) await writeFile(opts.terminationLog, encodeStageResult(result));
  return 0;
}

async function parseStageOptions(args: readonly string[]): Promise<StageOptions> {
  let values: { job?: string; out?: string; authfile?: string; "termination-log"?: string };
  try {
    values = parseArgs({
      args: [...args],
      options: {
        job: { type: "string" },
        out: { type: "string" },
        authfile: { type: "string" },
        "termination-log": { type: "string" },
      },
    }).values;
  } catch (err) {
    throw new InvalidInputError((err as Error).message, { cause: err });
  }
  if (values.job === undefined) throw new InvalidInputError("kiln stage: --job FILE is required");
  let job: StageJob;
  try {
    job = StageJobSchema.parse(JSON.parse(await readFile(values.job, "utf8")));
  } catch (err) {
    throw new InvalidInputError(`kiln stage: ${values.job} is not a stage job: ${describeError(err)}`, {
      cause: err,
    });
  }
  return {
    job,
    out: values.out ?? "/kiln/work",
    authfile: values.authfile,
    terminationLog: values["termination-log"] ?? "/dev/termination-log",
  };
}

/** The StageResult failure for an error: the step's line when known; registry hiccups are marked temporary. */
export function failureOf(err: unknown, reason: string): StageFailure {
  const message = describeError(err);
  const line =
    err instanceof DockerfileError ? err.line : Number(/^line (\d+):/.exec(message)?.[1] ?? Number.NaN);
  return {
    reason: isTemporary(err) ? "RegistryUnavailable" : reason,
    message,
    ...(line !== undefined && Number.isInteger(line) && line > 0 ? { line } : {}),
  };
}

function registryHosts(job: StageJob): string[] {
  return job.push.insecure ? [parseReference(job.push.image).registry] : [];
}

function client(job: StageJob, opts: StageOptions, log: Logger): Promise<RegistryClient> {
  return createRegistryClient({
    insecure: registryHosts(job),
    ...(opts.authfile !== undefined ? { authfile: opts.authfile } : {}),
    logger: log,
  });
}

async function buildStage(opts: StageOptions, log: Logger): Promise<void> {
  const job = opts.job;
  if (job.kind !== "stage") throw new InvalidInputError("kiln stage build needs a stage job");
  const { stage } = job;
  const platform = parsePlatform(stage.platform);
  const contextDir = join(opts.out, "context");
  await writeContext(contextDir, job.context.files);
  // Pulls here use no credentials: bases and earlier stages must be readable without the push secret.
  const reg = await client(job, { ...opts, authfile: undefined }, log);
  const blobDir = join(opts.out, "blobs");
  const pulled = new Map<string, Promise<Image>>();
  const pull = (ref: string): Promise<Image> => {
    let p = pulled.get(ref);
    if (p === undefined) {
      p = pullImage(parseReference(ref), reg, { platform, blobDir });
      pulled.set(ref, p);
    }
    return p;
  };
  const stageImage = (name: string): Promise<Image> => {
    const ref = job.inputs[name];
    if (ref === undefined) throw new NotFoundError(`stage ${name} has no image in the job's inputs`);
    return pull(ref);
  };
  const base =
    stage.base.kind === "scratch"
      ? scratchImage(platform)
      : await (stage.base.kind === "image" ? pull(stage.base.image) : stageImage(stage.base.stage));
  const roots = new ImageRoots(join(opts.out, "roots"));
  const writer = fileLayerWriter(join(opts.out, "layers"), job.timestamp);
  const layerTimes: number[] = [];
  let last = performance.now();
  const started = last;
  try {
    const image = await buildFileOnlyStage(stage, {
      base,
      context: BuildContext.open(contextDir),
      writeLayer: async (entries) => {
        const layer = await writer(entries);
        const now = performance.now();
        layerTimes.push(Math.round(now - last));
        last = now;
        return layer;
      },
      created: new Date(job.timestamp * 1000).toISOString().replace(/\.\d{3}Z$/, "Z"),
      sourceRoots: async (from) =>
        from.kind === "stage"
          ? roots.root(`stage ${from.stage}`, await stageImage(from.stage))
          : roots.root(`image ${from.image}`, await pull(from.image)),
      dockerfile: job.dockerfile,
    });
    await writeImage(join(opts.out, "image"), LAYOUT_REF, image);
    const steps = stepResults(stage.steps, base, image, layerTimes);
    const total = Math.round(performance.now() - started);
    log.info(
      { steps: steps.length, layers: image.layers.length - base.layers.length, ms: total },
      "Built stage",
    );
    const mountFrom = stage.base.kind === "image" ? parseReference(stage.base.image) : undefined;
    await writeFile(
      join(opts.out, STEPS_FILE),
      JSON.stringify({ steps, ...(mountFrom !== undefined ? { mountFrom } : {}) }),
    );
  } finally {
    await roots.close();
  }
}

/** One StepResult per plan step, the layer each added; steps that added none have no digest. */
function stepResults(
  steps: readonly { line?: number | undefined }[],
  base: Image,
  image: Image,
  layerTimes: readonly number[],
): StepResult[] {
  const history = (image.config.history ?? []).slice(base.config.history?.length ?? 0);
  let layer = base.layers.length;
  let timed = 0;
  return steps.map((step, i): StepResult => {
    const added = history[i] !== undefined && history[i]?.empty_layer !== true;
    const l = added ? image.layers[layer++] : undefined;
    return {
      ...(step.line !== undefined ? { line: step.line } : {}),
      cached: false,
      ms: added ? (layerTimes[timed++] ?? 0) : 0,
      ...(l !== undefined ? { digest: l.digest, size: l.size } : {}),
    };
  });
}

async function writeContext(dir: string, files: Readonly<Record<string, string>>): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const [path, text] of Object.entries(files)) {
    const file = join(dir, path);
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, text, { mode: 0o644 });
  }
}

async function pushStage(opts: StageOptions, log: Logger): Promise<StageResult> {
  const job = opts.job;
  const image = await resolveImage(join(opts.out, "image"), LAYOUT_REF);
  const built = JSON.parse(await readFile(join(opts.out, STEPS_FILE), "utf8")) as {
    steps: StepResult[];
    mountFrom?: Reference;
  };
  const target = targetOf(job);
  const reg = await client(job, opts, log);
  const sameRegistry = built.mountFrom?.registry === target.registry ? built.mountFrom.repository : undefined;
  const d = await pushImage(image, target, reg, {
    tags: job.push.tagged ? job.push.tags : [],
    ...(sameRegistry !== undefined ? { mountFrom: sameRegistry } : {}),
  });
  log.info({ digest: d.digest, uploaded: reg.stats }, "Pushed stage");
  return { digest: d.digest, steps: built.steps };
}

async function pushStageIndex(opts: StageOptions, log: Logger): Promise<StageResult> {
  const job = opts.job;
  if (job.kind !== "index") throw new InvalidInputError("kiln stage index needs an index job");
  const target = targetOf(job);
  const reg = await client(job, opts, log);
  const manifests = [];
  for (const m of job.manifests) {
    const { descriptor } = await reg.getManifest({
      registry: target.registry,
      repository: target.repository,
      digest: m.digest,
    });
    manifests.push({
      mediaType: descriptor.mediaType,
      digest: m.digest,
      size: descriptor.size,
      platform: parsePlatform(m.platform),
    });
  }
  const index: ImageIndex = { schemaVersion: 2, mediaType: MediaType.ImageIndex, manifests };
  const d = await putIndex(index, target, reg, { tags: job.push.tags });
  log.info({ digest: d.digest }, "Pushed index");
  return { digest: d.digest, steps: [] };
}

/** Where to push: the output under its tags, or its repository by digest only. */
function targetOf(job: StageJob): Reference {
  const ref = parseReference(job.push.image);
  return job.push.tagged ? ref : { registry: ref.registry, repository: ref.repository };
}
