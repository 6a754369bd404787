import { z } from "zod";
import { DigestSchema } from "../oci/digest.ts";
import { StageSchema } from "../plan/plan.ts";

/**
 * What the controller hands a build pod: the one unit of work it runs, written as the pod's `kiln.dev/job`
 * annotation and read inside the pod through a downward-API volume, so a build creates no object besides
 * its pods (nothing the garbage collector could miss). Its answer is a StageResult (stage-result.ts).
 */

export const JOB_ANNOTATION = "kiln.dev/job";

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
    /** The build context: an inline source's files (path → text). */
    context: z.object({ files: z.record(z.string(), z.string()) }),
    push: PushTargetSchema,
  }),
  z.object({
    kind: z.literal("index"),
    manifests: z.array(z.object({ platform: z.string(), digest: DigestSchema })).min(1),
    push: PushTargetSchema,
  }),
]);
export type StageJob = z.infer<typeof StageJobSchema>;
