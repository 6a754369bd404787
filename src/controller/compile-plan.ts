import { z } from "zod";
import { type Failure, type ImageBuild, type Source, SourceSchema } from "../api/image-build.ts";
import { describeError } from "../errors.ts";
import { compileLayerSpec } from "../layerspec/compile.ts";
import { sha256 } from "../oci/digest.ts";
import { type BuildPlan, BuildPlanSchema } from "../plan/plan.ts";

/** Where a build's plan comes from: compiled here, or by a plan pod (PLANNED_BY_POD). */
export type PlanOutcome = BuildPlan | { readonly failure: Failure } | typeof PLANNED_BY_POD;
export const PLANNED_BY_POD = "planned-by-pod";

/** What a plan pod found: the plan, and the source pinned (a commit, a digest) for every stage pod to fetch. */
export interface PodPlan {
  readonly plan: BuildPlan;
  readonly source: Source;
}

/**
 * A plan pod plans the build: a Dockerfile's compiler reads base images from registries, and a source
 * other than inline must be fetched and pinned once for all stage pods — both need the network and
 * credentials the controller does not have.
 */
export function plannedInPod(ib: ImageBuild): boolean {
  return ib.spec.dockerfile !== undefined || ib.spec.source.inline === undefined;
}

/**
 * The plan of an ImageBuild, or the reason it has none. Layer specs compile here, purely. A Dockerfile's
 * compiler reads its base images' configs from registries, which the controller never talks to (it holds no
 * registry credentials), so a plan pod compiles it (`kiln stage plan`) and the controller reads the plan from
 * that pod's output ({@link readPlanOutput}).
 */
export function compilePlan(ib: ImageBuild): PlanOutcome {
  const spec = ib.spec;
  if (plannedInPod(ib) || spec.layers === undefined) return PLANNED_BY_POD;
  try {
    return compileLayerSpec({ ...spec.layers, platforms: spec.platforms }, spec.timestamp);
  } catch (err) {
    return { failure: { reason: "InvalidSpec", message: describeError(err) } };
  }
}

/** The line a plan pod writes its plan on: `{"kilnPlan":{"plan":…,"source":…}}`. */
const PLAN_LINE = '{"kilnPlan":';

/**
 * The plan in a plan pod's output, checked against the digest the pod reported (so a log cut short, or
 * lines of another writer, never pass for a plan).
 */
export function readPlanOutput(log: string, digest: string): PodPlan | { readonly failure: Failure } {
  const line = log.split("\n").find((l) => l.startsWith(PLAN_LINE) && l.endsWith("}"));
  const text = line?.slice(PLAN_LINE.length, -1);
  if (text === undefined || sha256(text) !== digest) {
    return {
      failure: {
        reason: "InvalidPlan",
        message: `the plan pod's output holds no plan with digest ${digest}`,
      },
    };
  }
  const raw = JSON.parse(text) as { plan?: unknown; source?: unknown };
  const parsed = z.object({ plan: BuildPlanSchema, source: SourceSchema }).safeParse(raw);
  if (!parsed.success)
    return {
      failure: {
        reason: "InvalidPlan",
        message: `the plan pod's plan is invalid: ${describeError(parsed.error)}`,
      },
    };
  // As written, not as zod re-orders it: config keys keep kiln's order, so digests match local builds.
  return { plan: raw.plan as BuildPlan, source: parsed.data.source };
}
