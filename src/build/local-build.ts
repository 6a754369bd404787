import { InvalidInputError } from "../errors.ts";
import type { BuildContext } from "../executor/context.ts";
import { buildFileOnlyStage, type LayerWriter } from "../executor/file-stage.ts";
import type { Image } from "../oci/image.ts";
import { type Platform, parsePlatform } from "../oci/platform.ts";
import type { BuildPlan, Stage } from "../plan/plan.ts";

/** Finds a base image (a registry reference or `oci:DIR[:REF]`) for a platform. */
export type BaseResolver = (image: string, platform: Platform) => Promise<Image>;

export interface PlatformResult {
  readonly platform: Platform;
  readonly image: Image;
}

/** Builds a plan's target for each of its platforms, stages in plan order. */
export async function buildPlanLocally(
  plan: BuildPlan,
  context: BuildContext,
  resolveBase: BaseResolver,
  writeLayer: LayerWriter,
): Promise<PlatformResult[]> {
  // RFC 3339 without fractional seconds, as Go tools write it.
  const created = new Date(plan.timestamp * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
  const results: PlatformResult[] = [];
  for (const platformName of plan.platforms) {
    const platform = parsePlatform(platformName);
    const built = new Map<string, Image>();
    for (const stage of plan.stages.filter((s) => s.platform === platformName)) {
      const base = await baseOf(stage, platform, built, resolveBase);
      built.set(stage.name, await buildFileOnlyStage(stage, { base, context, writeLayer, created }));
    }
    const image = built.get(plan.target);
    if (image === undefined)
      throw new InvalidInputError(`target stage ${plan.target} was not built for ${platformName}`);
    results.push({ platform, image });
  }
  return results;
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
