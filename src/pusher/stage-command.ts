import { existsSync, statSync } from "node:fs";
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { DEFAULT_DOCKERFILE } from "../api/image-build.ts";
import { SourceSecretPath, type StageJob, StageJobSchema, stageBaseImage } from "../api/stage-job.ts";
import {
  encodeStageResult,
  type StageFailure,
  type StageResult,
  type StepResult,
} from "../api/stage-result.ts";
import { fileLayerWriter } from "../build/layer-writer.ts";
import { scratchImage } from "../build/local-build.ts";
import { StepCache } from "../build/step-cache.ts";
import { compileDockerfile } from "../dockerfile/compile.ts";
import { DockerfileError, describeError, InvalidInputError, isTemporary, NotFoundError } from "../errors.ts";
import { BuildContext } from "../executor/context.ts";
import { buildFileOnlyStage } from "../executor/file-stage.ts";
import { ImageRoots } from "../executor/image-rootfs.ts";
import {
  contextDir,
  type ExecutorJob,
  ExecutorJobSchema,
  heartbeatFile,
  jobFile,
} from "../executor/workspace.ts";
import { compileLayerSpec } from "../layerspec/compile.ts";
import type { Logger } from "../log.ts";
import { sha256 } from "../oci/digest.ts";
import { configBlob, type Image } from "../oci/image.ts";
import { resolveImage, writeImage } from "../oci/layout.ts";
import type { ImageIndex } from "../oci/manifest.ts";
import { MediaType } from "../oci/media-type.ts";
import { parsePlatform } from "../oci/platform.ts";
import { formatReference, parseReference, type Reference, withDigest } from "../oci/reference.ts";
import { stageCacheKey } from "../plan/cache-key.ts";
import { WORKSPACE_MOUNT } from "../plan/container-layout.ts";
import { type BuildPlan, stageSources } from "../plan/plan.ts";
import { createRegistryClient, type RegistryClient } from "../registry/client.ts";
import { type Credentials, loadDockerConfig } from "../registry/docker-config.ts";
import { parseMirrors } from "../registry/mirrors.ts";
import { pullImage } from "../registry/pull.ts";
import { pushImage, putIndex } from "../registry/push.ts";
import { type FetchedSource, fetchSource } from "../source/fetch-source.ts";
import { followExecutor } from "./executor-events.ts";

/**
 * `kiln stage build|prepare|push|plan|index`: what runs inside a build pod. `build` builds a file-only stage
 * (no user code runs) and pushes it; for a stage with RUN, `prepare` (no credentials) lays out the workspace
 * for the executor in the stage's base image and `push` (the pusher, the only holder of the push secret)
 * uploads what the executor writes; `plan` compiles the build; `index` pushes the image index over the
 * platforms. Each ends by writing a StageResult to the termination-message file, which is all the controller
 * reads (DESIGN decision 8).
 */

const LAYOUT_REF = "stage";
const FAILURE_REASON: Readonly<Record<string, string>> = {
  build: "StepFailed",
  prepare: "StepFailed",
  plan: "InvalidDockerfile",
};
/** An executor whose heartbeat is this old has died (OOM-killed, its node lost) without a word. */
const EXECUTOR_SILENCE_MS = 60_000;
const STEPS_FILE = "steps.json";

interface StageOptions {
  readonly job: StageJob;
  /** The pod's shared work volume (the executor's workspace in stages with RUN). */
  readonly out: string;
  readonly authfile: string | undefined;
  readonly terminationLog: string;
  /** `--registry-mirror FROM=TO` and `--insecure-registry HOST`, as the CLI takes them. */
  readonly mirrors: readonly string[];
  readonly insecure: readonly string[];
}

export async function runStageCommand(args: readonly string[], log: Logger): Promise<number> {
  const [sub, ...rest] = args;
  const opts = await parseStageOptions(rest);
  const started = performance.now();
  let result: StageResult | undefined;
  // What failed decides the reason: a build that built its stage fails as a push.
  let doing = sub;
  try {
    switch (sub) {
      case "build":
        await buildStage(opts, log);
        doing = "push";
        result = await pushStage(opts, log);
        break;
      case "prepare":
        await prepareRunStage(opts, log);
        break;
      case "push":
        result = await pushRunStage(opts, log);
        break;
      case "plan":
        result = await planBuild(opts, log);
        break;
      case "index":
        result = await pushStageIndex(opts, log);
        break;
      default:
        throw new InvalidInputError(
          `usage: kiln stage build|prepare|push|plan|index --job FILE [--out DIR] [--authfile FILE] [--registry-mirror FROM=TO]... [--insecure-registry HOST]...`,
        );
    }
  } catch (err) {
    log.error({ err }, `Stage ${sub} failed`);
    // A step the executor beside the pusher failed is the step's failure, not the push's.
    const reason =
      doing !== "plan" && err instanceof DockerfileError ? "StepFailed" : FAILURE_REASON[doing ?? ""];
    const failure = failureOf(err, reason ?? "PushFailed");
    await writeFile(opts.terminationLog, encodeStageResult({ steps: [], failure }));
    return 1;
  }
  log.info({ ms: Math.round(performance.now() - started), digest: result?.digest }, `Stage ${sub} done`);
  // The executor's steps travel to the pusher through the work volume; only a digest makes a result.
  if (result !== undefined) await writeFile(opts.terminationLog, encodeStageResult(result));
  return 0;
}

async function parseStageOptions(args: readonly string[]): Promise<StageOptions> {
  let values: {
    job?: string;
    out?: string;
    authfile?: string;
    "termination-log"?: string;
    "registry-mirror"?: string[];
    "insecure-registry"?: string[];
  };
  try {
    values = parseArgs({
      args: [...args],
      options: {
        job: { type: "string" },
        out: { type: "string" },
        authfile: { type: "string" },
        "termination-log": { type: "string" },
        "registry-mirror": { type: "string", multiple: true },
        "insecure-registry": { type: "string", multiple: true },
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
    out: values.out ?? WORKSPACE_MOUNT,
    authfile: values.authfile,
    terminationLog: values["termination-log"] ?? "/dev/termination-log",
    mirrors: values["registry-mirror"] ?? [],
    insecure: values["insecure-registry"] ?? [],
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

/** The output's registry, and the step cache's, when the ImageBuild allows them plain HTTP. */
function registryHosts(job: StageJob): string[] {
  if (!job.push.insecure) return [];
  const cache = job.kind === "stage" ? job.cache : undefined;
  return [
    parseReference(job.push.image).registry,
    ...(cache ? [parseReference(cache.repository).registry] : []),
  ];
}

function client(job: StageJob, opts: StageOptions, log: Logger): Promise<RegistryClient> {
  return createRegistryClient({
    insecure: [...opts.insecure, ...registryHosts(job)],
    mirrors: parseMirrors(opts.mirrors),
    ...(opts.authfile !== undefined ? { authfile: opts.authfile } : {}),
    logger: log,
  });
}

async function buildStage(opts: StageOptions, log: Logger): Promise<void> {
  const job = opts.job;
  if (job.kind !== "stage") throw new InvalidInputError("kiln stage build needs a stage job");
  const { stage } = job;
  const contextDir = join(opts.out, "context");
  await fetchContext(job, contextDir, opts, log);
  const images = await stageImages(job, opts, log);
  const base = await images.base();
  const { pull, stageImage } = images;
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

type StageJobOf<K extends StageJob["kind"]> = Extract<StageJob, { kind: K }>;

/**
 * The images a stage job reads — its base and the stages and images it copies from — pulled for its
 * platform. Pulls here use no credentials: bases and earlier stages must be readable without the push
 * secret, which only the pusher holds.
 */
async function stageImages(job: StageJobOf<"stage">, opts: StageOptions, log: Logger) {
  const platform = parsePlatform(job.stage.platform);
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
  const { base } = job.stage;
  return {
    pull,
    stageImage,
    base: (): Promise<Image> =>
      base.kind === "scratch"
        ? Promise.resolve(scratchImage(platform))
        : base.kind === "image"
          ? pull(base.image)
          : stageImage(base.stage),
  };
}

/**
 * `kiln stage prepare` (an init container without credentials, before the executor starts in the stage's
 * base image): writes the executor's job, the context and the unpacked roots of the stages and images the
 * steps copy or bind-mount from into the workspace.
 */
async function prepareRunStage(opts: StageOptions, log: Logger): Promise<void> {
  const job = opts.job;
  if (job.kind !== "stage") throw new InvalidInputError("kiln stage prepare needs a stage job");
  stageBaseImage(job);
  const workspace = opts.out;
  await fetchContext(job, contextDir(workspace), opts, log);
  await mkdir(join(workspace, "tmp"), { recursive: true, mode: 0o1777 });
  const images = await stageImages(job, opts, log);
  const base = await images.base();
  const roots = new ImageRoots(join(workspace, "roots"));
  const sources: Record<string, string> = {};
  for (const from of stageSources(job.stage)) {
    const key = from.kind === "stage" ? `stage:${from.stage}` : `image:${from.image}`;
    if (sources[key] !== undefined) continue;
    const image = from.kind === "stage" ? await images.stageImage(from.stage) : await images.pull(from.image);
    sources[key] = (await roots.root(key, image)).root;
  }
  // The base's own layers are the container's root already; only its config and its blobs' cache go.
  await rm(join(workspace, "blobs"), { recursive: true, force: true });
  const executorJob: ExecutorJob = {
    stage: job.stage,
    baseConfig: base.config,
    cacheKey: stageCacheKey(configBlob(base).digest),
    timestamp: job.timestamp,
    dockerfile: job.dockerfile,
    sources,
    cacheLookups: job.cache !== undefined,
  };
  await writeFile(jobFile(workspace), JSON.stringify(executorJob));
  log.info({ sources: Object.keys(sources) }, "Prepared the workspace");
}

/**
 * `kiln stage push` beside an executor: uploads each layer as the executor announces it, then the config and
 * manifest on top of the base's layers (mounted, not copied, when the registry has them).
 */
async function pushRunStage(opts: StageOptions, log: Logger): Promise<StageResult> {
  const job = opts.job;
  if (job.kind !== "stage") throw new InvalidInputError("kiln stage push needs a stage job");
  const workspace = opts.out;
  const executorJob = ExecutorJobSchema.parse(JSON.parse(await readFile(jobFile(workspace), "utf8")));
  const reg = await client(job, opts, log);
  const baseRef = parseReference(stageBaseImage(job));
  const base = await pullImage(baseRef, reg, {
    platform: parsePlatform(job.stage.platform),
    blobDir: join(workspace, "pusher-blobs"),
    lazyLayers: true,
  });
  const target = targetOf(job);
  const repo = { registry: target.registry, repository: target.repository };
  const platform = parsePlatform(job.stage.platform);
  const cacheRepo = job.cache !== undefined ? parseReference(job.cache.repository) : undefined;
  const cache =
    job.cache !== undefined && cacheRepo !== undefined
      ? new StepCache({
          registry: reg,
          repository: cacheRepo,
          ttlMs: job.cache.ttlSeconds * 1000,
          blobDir: join(workspace, "pusher-blobs"),
        })
      : undefined;
  // A cached layer is in the cache repository already: mounted from there, not uploaded again.
  const mountCached = cacheRepo?.registry === target.registry ? cacheRepo.repository : undefined;
  const steps: StepResult[] = [];
  const image = await followExecutor(workspace, executorJob, base, {
    onStep: async (e, layer) => {
      steps.push({
        ...(e.line !== undefined ? { line: e.line } : {}),
        cached: e.cached,
        ms: e.ms,
        ...(layer !== undefined ? { digest: layer.digest, size: layer.size } : {}),
      });
      if (layer === undefined) return;
      await Promise.all([
        (async () => {
          if (await reg.hasBlob(repo, layer.digest)) return;
          await reg.uploadBlob(repo, layer, e.cached && mountCached ? { mountFrom: mountCached } : {});
        })(),
        // A cache that cannot take the layer costs the next build its hit, not this build.
        e.cacheKey !== undefined
          ? cache
              ?.store(e.cacheKey, layer, platform)
              .catch((err: unknown) =>
                log.warn({ err, line: e.line }, "Could not store the step in the cache"),
              )
          : undefined,
      ]);
    },
    ...(cache !== undefined ? { lookup: (key: string) => cache.lookup(key, platform) } : {}),
    stopped: () => executorSilent(workspace),
    log,
    pollMs: 100,
  });
  const sameRegistry = baseRef.registry === target.registry ? baseRef.repository : undefined;
  const d = await pushImage(image, target, reg, {
    tags: job.push.tagged ? job.push.tags : [],
    ...(sameRegistry !== undefined ? { mountFrom: sameRegistry } : {}),
  });
  log.info({ digest: d.digest, uploaded: reg.stats, cache: cache?.stats }, "Pushed stage");
  return { digest: d.digest, steps };
}

function executorSilent(workspace: string): boolean {
  try {
    return Date.now() - statSync(heartbeatFile(workspace)).mtimeMs > EXECUTOR_SILENCE_MS;
  } catch {
    return false; // not started yet: its image may still be pulling
  }
}

/**
 * `kiln stage plan`: fetches the build's source and pins it, and compiles its Dockerfile (reading the base
 * images' configs from their registries) or its layer spec, every base pinned by digest, so each stage pod
 * builds exactly what was planned from exactly the same files. The plan and the pinned source go to stdout
 * as one line `{"kilnPlan":…}` (the controller reads it from the pod's log: a plan outgrows a termination
 * message), and its digest is the result, so the controller can tell a whole plan from a cut one.
 */
async function planBuild(opts: StageOptions, log: Logger): Promise<StageResult> {
  const job = opts.job;
  if (job.kind !== "plan") throw new InvalidInputError("kiln stage plan needs a plan job");
  const dir = contextDir(opts.out);
  const { source } = await fetchContext(job, dir, opts, log);
  const reg = await client(job, opts, log);
  const pinned = new Map<string, string>();
  const blobDir = join(opts.out, "blobs");
  const resolve = async (image: string, platform: string) => {
    const ref = parseReference(image);
    const pulled = await pullImage(ref, reg, {
      platform: parsePlatform(platform),
      blobDir,
      lazyLayers: true,
    });
    pinned.set(`${image} ${platform}`, formatReference(withDigest(ref, pulled.manifest.digest)));
    return pulled.config;
  };
  let plan: BuildPlan;
  if (job.dockerfile !== undefined) {
    const df = job.dockerfile;
    const text = df.inline ?? (await readDockerfile(dir, df.path ?? DEFAULT_DOCKERFILE));
    plan = await compileDockerfile(text, {
      buildArgs: df.buildArgs ?? {},
      ...(df.target !== undefined ? { target: df.target } : {}),
      platforms: job.platforms,
      buildPlatform: "linux/amd64",
      timestamp: job.timestamp,
      resolveImageConfig: resolve,
    });
  } else if (job.layers !== undefined) {
    plan = compileLayerSpec({ ...job.layers, platforms: job.platforms }, job.timestamp);
  } else {
    throw new InvalidInputError("a plan job names neither a Dockerfile nor layers");
  }
  const stages = [];
  for (const stage of plan.stages) {
    if (stage.base.kind !== "image") {
      stages.push(stage);
      continue;
    }
    const key = `${stage.base.image} ${stage.platform}`;
    if (!pinned.has(key)) await resolve(stage.base.image, stage.platform);
    stages.push({ ...stage, base: { kind: "image" as const, image: pinned.get(key)! } });
  }
  const text = JSON.stringify({ plan: { ...plan, stages }, source });
  process.stdout.write(`{"kilnPlan":${text}}\n`);
  const digest = sha256(text);
  log.info({ stages: stages.length, digest }, "Planned the build");
  return { digest, steps: [] };
}

/**
 * Fetches the job's source into `dir`: inline files, a git commit, an archive or an OCI artifact (through the
 * ImageBuild's pull secrets), and returns it pinned.
 */
async function fetchContext(
  job: StageJobOf<"stage" | "plan">,
  dir: string,
  opts: StageOptions,
  log: Logger,
): Promise<FetchedSource> {
  const credentials = new Map<string, Credentials>();
  const pullFiles = await readdir(SourceSecretPath.Pull).catch(() => [] as string[]);
  for (const f of pullFiles.filter((n) => n.endsWith(".json")).sort())
    for (const [host, c] of await loadDockerConfig(join(SourceSecretPath.Pull, f))) credentials.set(host, c);
  return fetchSource(job.source, dir, {
    ...(existsSync(SourceSecretPath.Git) ? { gitSecretDir: SourceSecretPath.Git } : {}),
    registry: {
      insecure: [...opts.insecure, ...registryHosts(job)],
      mirrors: parseMirrors(opts.mirrors),
      credentials,
      logger: log,
    },
    logger: log,
  });
}

async function readDockerfile(dir: string, path: string): Promise<string> {
  try {
    // The API admits only relative paths without `..`; the context's own symlinks stay inside it.
    return await readFile(join(dir, path), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT")
      throw new NotFoundError(`the build context has no Dockerfile at ${path}`, { cause: err });
    throw err;
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
