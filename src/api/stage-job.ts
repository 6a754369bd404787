import { z } from "zod";
import { InvalidInputError, NotFoundError } from "../errors.ts";
import { LayerSpecSchema } from "../layerspec/spec.ts";
import { DigestSchema } from "../oci/digest.ts";
import { StageSchema } from "../plan/plan.ts";
import { DockerfileSchema, SourceSchema } from "./image-build.ts";

/**
 * What the controller hands a build pod: the one unit of work it runs, written as the pod's `kiln.dev/job`
 * annotation and read inside the pod through a downward-API volume, so a build creates no object besides
 * its pods (nothing the garbage collector could miss). Its answer is a StageResult (stage-result.ts).
 */

export const JOB_ANNOTATION = "kiln.dev/job";

/**
 * Where build pods find the Secrets of the build's source: the git credentials, and the pull secrets as
 * `N.json` (.dockerconfigjson) for an oci source. Mounted only into the containers that fetch the source.
 */
export const SourceSecretPath = {
  Git: "/kiln-git-secret",
  Pull: "/kiln-pull-secrets",
} as const;

export const PushTargetSchema = z.object({
  /** The ImageBuild's output image, `registry/repository[:tag]`. */
  image: z.string().min(1),
  /** Push under the image's tag and `tags`; otherwise by digest only (intermediate stages, index members). */
  tagged: z.boolean(),
  tags: z.array(z.string()).default([]),
  /** Plain HTTP (or unverified TLS) for the output registry. */
  insecure: z.boolean().default(false),
});
export type PushTarget = z.infer<typeof PushTargetSchema>;

/** The RUN step cache a stage pod's pusher reads and fills (build/step-cache.ts), with the push secret. */
export const StepCacheTargetSchema = z.object({
  /** `registry/repository`, without tag or digest. */
  repository: z.string().min(1),
  /** Cached steps older than this run again. */
  ttlSeconds: z.number().int().positive(),
});

export const StageJobSchema = z.discriminatedUnion("kind", [
  z.object({
    kind: z.literal("stage"),
    stage: StageSchema,
    /** Layer and history time, seconds since the epoch. */
    timestamp: z.number().int().nonnegative(),
    /** Errors name Dockerfile lines rather than layer spec items. */
    dockerfile: z.boolean().default(false),
    /** Images of the stages this one starts from or copies from, by stage name, pinned by digest. */
    inputs: z.record(z.string(), z.string()).default({}),
    /** The build context, pinned by the plan pod (a git commit, an archive's sha256, an artifact's digest). */
    source: SourceSchema,
    push: PushTargetSchema,
    /** Absent when the ImageBuild disables the cache. */
    cache: StepCacheTargetSchema.optional(),
  }),
  z.object({
    kind: z.literal("plan"),
    /**
     * The ImageBuild's Dockerfile or layers, compiled in the pod: a Dockerfile's compiler reads the base
     * images' configs, and a source other than inline is fetched and pinned there.
     */
    dockerfile: DockerfileSchema.optional(),
    layers: LayerSpecSchema.omit({ platforms: true }).optional(),
    platforms: z.array(z.string()).default([]),
    timestamp: z.number().int().nonnegative(),
    source: SourceSchema,
    push: PushTargetSchema,
  }),
  z.object({
    kind: z.literal("index"),
    manifests: z.array(z.object({ platform: z.string(), digest: DigestSchema })).min(1),
    push: PushTargetSchema,
  }),
]);
export type StageJob = z.infer<typeof StageJobSchema>;

/** The base image's reference a stage pod runs its executor in: pinned by digest (DESIGN decision 2). */
export function stageBaseImage(job: Extract<StageJob, { kind: "stage" }>): string {
  const { base } = job.stage;
  if (base.kind === "image") return base.image;
  if (base.kind === "stage") {
    const ref = job.inputs[base.stage];
    if (ref === undefined) throw new NotFoundError(`stage ${base.stage} has no image in the job's inputs`);
    return ref;
  }
  throw new InvalidInputError(
    "a stage FROM scratch cannot RUN in a cluster: its steps have no program to run (copy one in with a stage that does not start from scratch)",
  );
}
