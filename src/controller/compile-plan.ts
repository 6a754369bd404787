import type { Failure, ImageBuild } from "../api/image-build.ts";
import { describeError } from "../errors.ts";
import { compileLayerSpec } from "../layerspec/compile.ts";
import type { BuildPlan } from "../plan/plan.ts";

/**
 * The plan of an ImageBuild, or the reason it has none. Layer specs compile here, purely. A Dockerfile's
 * compiler reads its base images' configs from a registry, which the controller never talks to (it holds no
 * registry credentials), so Dockerfile builds and non-inline sources are refused until a planning pod does
 * that part.
 */
export function compilePlan(ib: ImageBuild): BuildPlan | { readonly failure: Failure } {
  const spec = ib.spec;
  if (spec.source.inline === undefined) {
    const kind = Object.keys(spec.source)[0] ?? "unknown";
    return unsupported(`a ${kind} source is not supported yet; use source.inline`);
  }
  if (spec.layers === undefined)
    return unsupported("Dockerfile builds are not supported by the controller yet; use layers");
  try {
    return compileLayerSpec({ ...spec.layers, platforms: spec.platforms }, spec.timestamp);
  } catch (err) {
    return { failure: { reason: "InvalidSpec", message: describeError(err) } };
  }
}

function unsupported(message: string): { readonly failure: Failure } {
  return { failure: { reason: "Unsupported", message } };
}
