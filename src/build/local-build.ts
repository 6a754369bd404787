import { mkdir, mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DockerfileError, InvalidInputError } from "../errors.ts";
import { BuildContext } from "../executor/context.ts";
import {
  buildFileOnlyStage,
  type LayerWriter,
  type SourceRoots,
  type StageInputs,
} from "../executor/file-stage.ts";
import { ImageRoots } from "../executor/image-rootfs.ts";
import type { Image } from "../oci/image.ts";
import { applyLayer } from "../oci/layer-apply.ts";
import { type Platform, parsePlatform } from "../oci/platform.ts";
import type { BuildPlan, Stage, Step } from "../plan/plan.ts";
import { cachedRoot, mountOverlay } from "./root-cache.ts";
import { buildRunStage, type RunOptions, type RunStageStats } from "./run-stage.ts";

/** Finds a base image (a registry reference or `oci:DIR[:REF]`) for a platform. */
export type BaseResolver = (image: string, platform: Platform) => Promise<Image>;

export interface PlatformResult {
  readonly platform: Platform;
  readonly image: Image;
}

export interface LocalBuildOptions {
  /** Step errors say `Dockerfile:LINE:`; a plan from a Dockerfile sets it. */
  readonly dockerfile?: boolean;
  /** Where stage roots, workspaces and the roots of `COPY --from` sources go (a temporary folder by default). */
  readonly workDir?: string;
  /** Runs stages with RUN in containers on this machine; without it a plan with RUN is refused. */
  readonly run?: RunOptions;
  /** Counts RUN steps run and taken from the cache. */
  readonly stats?: RunStageStats;
}

/**
 * Builds a plan's target for each of its platforms, stages in plan order (dependencies first). Stages with
 * RUN need `options.run`; without it such a plan is refused before anything is built.
 */
export async function buildPlanLocally(
  plan: BuildPlan,
  context: BuildContext,
  resolveBase: BaseResolver,
  writeLayer: LayerWriter,
  options: LocalBuildOptions = {},
): Promise<PlatformResult[]> {
  if (options.run === undefined) refuseRun(plan);
  // RFC 3339 without fractional seconds, as Go tools write it.
  const created = new Date(plan.timestamp * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
  const workDir = options.workDir ?? (await mkdtemp(join(tmpdir(), "kiln-build-")));
  await mkdir(workDir, { recursive: true });
  const roots = new ImageRoots(join(workDir, "roots"));
  // Roots of stages that ran in a container, mounted until the build ends: later stages copy from them.
  const stageRoots = new Map<string, string>();
  const stageBases = new Map<string, Image>();
  const closers: (() => Promise<void>)[] = [];
  try {
    const results: PlatformResult[] = [];
    for (const platformName of plan.platforms) {
      const platform = parsePlatform(platformName);
      const built = new Map<string, Image>();
      for (const stage of plan.stages.filter((s) => (s.buildFor ?? s.platform) === platformName)) {
        const stagePlatform = parsePlatform(stage.platform);
        const base = await baseOf(stage, stagePlatform, built, resolveBase);
        stageBases.set(`${platformName}\0${stage.name}`, base);
        const sourceRoots: SourceRoots = async (from) => {
          if (from.kind === "image") {
            const key = `image ${from.image} (${stage.platform})`;
            const img = await resolveBase(from.image, stagePlatform);
            return options.run === undefined
              ? roots.root(key, img)
              : rootContext(key, await cachedRoot(img, options.run.roots));
          }
          const img = built.get(from.stage);
          if (img === undefined)
            throw new InvalidInputError(
              `stage ${stage.name} copies from stage ${from.stage}, which is not built yet`,
            );
          const key = `stage ${from.stage} (${platformName})`;
          const id = `${platformName}\0${from.stage}`;
          let ran = stageRoots.get(id);
          const stageBase = stageBases.get(id);
          if (ran === undefined && options.run !== undefined && stageBase !== undefined) {
            // A stage whose steps all came from the cache has no root yet: an overlay of its base's
            // unpacked root with the stage's own layers on top costs what those layers cost.
            const overlay = await mountOverlay(
              await cachedRoot(stageBase, options.run.roots),
              await mkdtemp(join(workDir, "from-")),
            );
            closers.push(overlay.unmount);
            for (const layer of img.layers.slice(stageBase.layers.length))
              await applyLayer(layer.open(), overlay.root);
            ran = overlay.root;
            stageRoots.set(id, ran);
          }
          return ran === undefined ? roots.root(key, img) : rootContext(key, ran);
        };
        const inputs: StageInputs = {
          base,
          context,
          writeLayer,
          created,
          sourceRoots,
          ...(options.dockerfile !== undefined ? { dockerfile: options.dockerfile } : {}),
        };
        let image: Image;
        if (options.run !== undefined && stage.steps.some((s) => s.kind === "run")) {
          const dir = await mkdtemp(join(workDir, "stage-"));
          const ran = await buildRunStage(
            stage,
            inputs,
            stagePlatform,
            plan.timestamp,
            dir,
            options.run,
            options.stats,
          );
          image = ran.image;
          if (ran.root !== undefined) stageRoots.set(`${platformName}\0${stage.name}`, ran.root);
          if (ran.close !== undefined) closers.push(ran.close);
        } else image = await buildFileOnlyStage(stage, inputs);
        built.set(stage.name, image);
      }
      const image = built.get(plan.target);
      if (image === undefined)
        throw new InvalidInputError(`target stage ${plan.target} was not built for ${platformName}`);
      results.push({ platform, image });
    }
    return results;
  } finally {
    for (const close of closers) await close();
    await roots.close();
  }
}

/** An unpacked root as a copy source: owners kept, its own symlinks resolved inside it. */
function rootContext(name: string, root: string): BuildContext {
  return new BuildContext(root, [], { policy: "scoped", keepOwners: true, name });
}

/** The RUN step with the lowest line in the plan's stages, if any. */
export function firstRun(plan: BuildPlan): Step | undefined {
  const runs = plan.stages.flatMap((s) => s.steps.filter((step) => step.kind === "run"));
  if (runs.length === 0) return undefined;
  return runs.reduce((a, b) => ((b.line ?? Infinity) < (a.line ?? Infinity) ? b : a));
}

/** The first RUN of the stages to build (by line) is an error until stages run in containers. */
function refuseRun(plan: BuildPlan): void {
  const first = firstRun(plan);
  if (first === undefined) return;
  throw new DockerfileError(
    first.line,
    "RUN needs a container: this build runs file-only steps (COPY, ADD, WORKDIR and config), and RUN is not supported yet",
  );
}

async function baseOf(
  stage: Stage,
  platform: Platform,
  built: ReadonlyMap<string, Image>,
  resolveBase: BaseResolver,
): Promise<Image> {
  switch (stage.base.kind) {
    case "scratch":
      return scratchImage(platform);
    case "stage": {
      const img = built.get(stage.base.stage);
      if (img === undefined)
        throw new InvalidInputError(`stage ${stage.name} starts from unknown stage ${stage.base.stage}`);
      return img;
    }
    case "image":
      return resolveBase(stage.base.image, platform);
  }
}

/** An image with no layers, for `FROM scratch`. */
export function scratchImage(platform: Platform): Image {
  return {
    config: {
      architecture: platform.architecture,
      os: platform.os,
      ...(platform.variant !== undefined ? { variant: platform.variant } : {}),
      config: {},
      rootfs: { type: "layers", diff_ids: [] },
      history: [],
    },
    layers: [],
  };
}
