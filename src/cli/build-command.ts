import { existsSync, rmSync } from "node:fs";
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { homedir, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileLayerWriter } from "../build/layer-writer.ts";
import type { BaseResolver, PlatformResult } from "../build/local-build.ts";
import { buildPlanLocally } from "../build/local-build.ts";
import { localRuntime } from "../build/local-runtime.ts";
import type { RunOptions } from "../build/run-stage.ts";
import { StepCache } from "../build/step-cache.ts";
import type { Config } from "../config.ts";
import { compileDockerfile } from "../dockerfile/compile.ts";
import { InvalidInputError } from "../errors.ts";
import { BuildContext } from "../executor/context.ts";
import type { Logger } from "../log.ts";
import type { Descriptor } from "../oci/descriptor.ts";
import type { Image, Layer } from "../oci/image.ts";
import { resolveImage, writeImage, writeIndex } from "../oci/layout.ts";
import { formatPlatform, parsePlatform } from "../oci/platform.ts";
import { parseReference } from "../oci/reference.ts";
import type { BuildPlan } from "../plan/plan.ts";
import type { RegistryClient } from "../registry/client.ts";
import { BUILD_USAGE, type BuildOptions, parseBuildOptions } from "./build-options.ts";

/**
 * What local builds keep between runs, as a container engine keeps pulled images: blobs by digest (checked
 * on download, never partial), unpacked bases by config digest, `RUN --mount=type=cache` folders.
 */
const CACHE_DIR = join(homedir(), ".cache", "kiln");
const BLOB_CACHE = join(CACHE_DIR, "blobs");

/** `kiln build`: compile, build every platform, then write each output. Prints the result's digest. */
export async function runBuild(args: readonly string[], config: Config, log: Logger): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    process.stdout.write(`${BUILD_USAGE}\n`);
    return 0;
  }
  const opts = parseBuildOptions(args, config.SOURCE_DATE_EPOCH);
  if (opts.outputs.length === 0 && opts.push.length === 0) {
    throw new InvalidInputError("nothing to do: give --output oci:DIR[:REF] and/or --push REF");
  }
  for (const target of opts.push) {
    // Checked before any work: a bad reference found after a long build wastes it.
    if (parseReference(target).digest !== undefined) {
      throw new InvalidInputError(`--push ${target}: push to a tag; the digest is what the push produces`);
    }
  }
  const scratch = await mkdtemp(join(tmpdir(), "kiln-build-"));
  // Ctrl-C or a SIGTERM ends the process without running `finally`: the scratch folder goes first.
  const interrupted = (signal: NodeJS.Signals): void => {
    rmSync(scratch, { recursive: true, force: true });
    process.kill(process.pid, signal);
  };
  process.once("SIGINT", interrupted);
  process.once("SIGTERM", interrupted);
  let registry: RegistryClient | undefined;
  // The registry code (undici, auth) and the layer spec reader load only when a build needs them: a
  // file-only build from scratch starts faster.
  const registryClient = async (): Promise<RegistryClient> => {
    const { createRegistryClient } = await import("../registry/client.ts");
    const { parseMirrors } = await import("../registry/mirrors.ts");
    registry ??= await createRegistryClient({
      insecure: opts.insecureRegistries,
      caFiles: opts.caFiles,
      mirrors: parseMirrors(opts.mirrors),
      ...(opts.authfile !== undefined ? { authfile: opts.authfile } : {}),
      logger: log,
    });
    return registry;
  };
  // Images are pulled once per reference and platform: the compiler reads their configs, the build their layers.
  const pulled = new Map<string, Promise<Image>>();
  const resolveBase: BaseResolver = (image, platform) => {
    const key = `${image}\0${formatPlatform(platform)}`;
    let found = pulled.get(key);
    if (found === undefined) {
      const layout = /^oci:([^:]+)(?::(.+))?$/.exec(image);
      found = layout
        ? resolveImage(layout[1]!, layout[2], platform)
        : registryClient().then(async (reg) => {
            const { pullImage } = await import("../registry/pull.ts");
            return pullImage(parseReference(image), reg, { platform, blobDir: BLOB_CACHE });
          });
      pulled.set(key, found);
    }
    return found;
  };
  try {
    const plan = await compile(opts, resolveBase);
    const context = BuildContext.open(opts.context);
    const started = performance.now();
    const stats = { ran: 0, cached: 0 };
    const hasRun = plan.stages.some((s) => s.steps.some((step) => step.kind === "run"));
    const run = hasRun ? await runOptions(opts, scratch, registryClient, log) : undefined;
    const results = await buildPlanLocally(
      plan,
      context,
      resolveBase,
      fileLayerWriter(join(scratch, "layers"), plan.timestamp),
      {
        dockerfile: opts.dockerfile !== undefined,
        workDir: join(scratch, "work"),
        ...(run !== undefined ? { run, stats } : {}),
      },
    );
    log.info(
      {
        platforms: results.map((r) => formatPlatform(r.platform)),
        ms: Math.round(performance.now() - started),
        ...(hasRun ? { runSteps: stats.ran, cachedSteps: stats.cached } : {}),
      },
      "Built image",
    );
    let digest: string | undefined;
    for (const out of opts.outputs) {
      const d = await writeOutput(out.dir, out.ref, results);
      digest = d.digest;
      log.info({ layout: out.dir, ref: out.ref, digest: d.digest }, "Wrote OCI layout");
    }
    for (const target of opts.push) {
      const ref = parseReference(target);
      const reg = await registryClient();
      const { pushImage, pushIndex } = await import("../registry/push.ts");
      const d =
        results.length === 1
          ? await pushImage(results[0]!.image, ref, reg)
          : await pushIndex(
              results.map((r) => r.image),
              ref,
              reg,
            );
      digest = d.digest;
      log.info({ ref: target, digest: d.digest, blobsUploaded: reg.stats.blobsUploaded }, "Pushed image");
    }
    if (opts.digestFile !== undefined && digest !== undefined)
      await writeFile(opts.digestFile, `${digest}\n`);
    process.stdout.write(`${digest}\n`);
    return 0;
  } finally {
    process.off("SIGINT", interrupted);
    process.off("SIGTERM", interrupted);
    await rm(scratch, { recursive: true, force: true });
  }
}

/**
 * What stages with RUN need on this machine: the runtime, the secrets copied into a folder of their own on
 * a tmpfs when there is one (only the stage container sees it, and only kiln-run's copy reaches a step),
 * the cache folders, and the pusher's side: the step cache and early layer uploads, with this process's
 * registry credentials, which never enter the container.
 */
async function runOptions(
  opts: BuildOptions,
  scratch: string,
  registryClient: () => Promise<RegistryClient>,
  log: Logger,
): Promise<RunOptions> {
  let secrets: string | undefined;
  if (Object.keys(opts.secrets).length > 0) {
    secrets = await mkdtemp(join(existsSync("/dev/shm") ? "/dev/shm" : scratch, "kiln-secrets-"));
    await chmod(secrets, 0o700);
    for (const [id, src] of Object.entries(opts.secrets)) {
      try {
        await copyFile(src, join(secrets, id));
      } catch (err) {
        await rm(secrets, { recursive: true, force: true });
        throw new InvalidInputError(`--secret id=${id}: cannot read ${src}: ${(err as Error).message}`, {
          cause: err,
        });
      }
    }
    const dir = secrets;
    process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
  }
  const cache =
    opts.cacheRepo === undefined
      ? undefined
      : new StepCache({
          registry: await registryClient(),
          repository: parseReference(opts.cacheRepo),
          ttlMs: opts.cacheTtlMs,
          blobDir: BLOB_CACHE,
        });
  const targets = opts.push.map(parseReference);
  const caches = join(CACHE_DIR, "run-mounts");
  const roots = join(CACHE_DIR, "roots");
  for (const d of [caches, join(CACHE_DIR, "executor-compile-cache")]) await mkdir(d, { recursive: true });
  return {
    runtime: await localRuntime(),
    contextDir: resolve(opts.context),
    ...(secrets !== undefined ? { secrets } : {}),
    caches,
    roots,
    compileCache: join(CACHE_DIR, "executor-compile-cache"),
    ...(cache !== undefined ? { cache } : {}),
    ...(targets.length > 0
      ? {
          uploadLayer: async (layer: Layer) => {
            const reg = await registryClient();
            for (const ref of targets) {
              const repo = { registry: ref.registry, repository: ref.repository };
              if (!(await reg.hasBlob(repo, layer.digest))) await reg.uploadBlob(repo, layer);
            }
          },
        }
      : {}),
    log,
    onOutput: (chunk) => process.stderr.write(chunk),
  };
}

async function compile(opts: BuildOptions, resolveBase: BaseResolver): Promise<BuildPlan> {
  if (opts.dockerfile !== undefined) {
    return compileDockerfile(await readFile(opts.dockerfile, "utf8"), {
      buildArgs: opts.buildArgs,
      ...(opts.target !== undefined ? { target: opts.target } : {}),
      platforms: opts.platforms,
      timestamp: opts.timestamp ?? 0,
      resolveImageConfig: async (ref, platform) => (await resolveBase(ref, parsePlatform(platform))).config,
    });
  }
  const { loadLayerSpec } = await import("../layerspec/load.ts");
  const { compileLayerSpec } = await import("../layerspec/compile.ts");
  const spec = await loadLayerSpec(opts.spec!);
  const withPlatforms = opts.platforms.length > 0 ? { ...spec, platforms: [...opts.platforms] } : spec;
  return compileLayerSpec(withPlatforms, opts.timestamp ?? 0);
}

function writeOutput(dir: string, ref: string, results: readonly PlatformResult[]): Promise<Descriptor> {
  return results.length === 1 ? writeImage(dir, ref, results[0]!.image) : writeIndex(dir, ref, results);
}
