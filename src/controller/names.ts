import { createHash } from "node:crypto";
import type { ImageBuild } from "../api/image-build.ts";

/** Labels and annotations kiln puts on the pods it creates. */
export const Label = {
  /** The owning ImageBuild's uid: the pod informer's selector and the join key (names may exceed 63). */
  ImageBuildUid: "kiln.dev/imagebuild-uid",
  /** The owning ImageBuild's name, shortened to a label value; for people and `kubectl -l`. */
  ImageBuild: "kiln.dev/imagebuild",
  /** The metadata.generation the pod builds; pods of another generation are cancelled. */
  Generation: "kiln.dev/generation",
  /** `plan`, `stage` or `index`. */
  Role: "kiln.dev/role",
} as const;

export const Annotation = {
  /** The exact stage name and platform (label values cannot hold every stage name). */
  Stage: "kiln.dev/stage",
  Platform: "kiln.dev/platform",
  /** On the ImageBuild: pods created per unit of the current generation, to bound retries. */
  Attempts: "kiln.dev/attempts",
} as const;

export const FINALIZER = "kiln.dev/cleanup";
const MAX_NAME = 63;

/** A DNS-1123 label fragment: lower-case alphanumerics and `-`, no leading/trailing `-`, at most `max`. */
function fragment(s: string, max: number): string {
  return (
    s
      .toLowerCase()
      .replace(/[^a-z0-9-]+/g, "-")
      .slice(0, max)
      .replace(/^-+|-+$/g, "") || "x"
  );
}

function shortHash(...parts: readonly string[]): string {
  return createHash("sha256").update(parts.join("\0")).digest("hex").slice(0, 8);
}

/** `arch` plus variant, as used in pod names: `amd64`, `armv7`. */
export function archOf(platform: string): string {
  const [, arch = "unknown", variant = ""] = platform.split("/");
  return fragment(arch + variant, 16);
}

/**
 * `<ib>-<hash>-<stage>-<arch>`, at most 63 characters: the hash covers the ImageBuild's uid and generation
 * and the exact stage and platform, so a name is stable across reconciles and controller restarts, changes
 * with the spec, and stays unique when the readable parts are shortened.
 */
export function stagePodName(ib: ImageBuild, stage: string, platform: string): string {
  const hash = shortHash(ib.metadata.uid ?? "", String(ib.metadata.generation ?? 0), stage, platform);
  const arch = archOf(platform);
  const stagePart = fragment(stage, 20);
  const room = MAX_NAME - hash.length - stagePart.length - arch.length - 3;
  return `${fragment(ib.metadata.name, room)}-${hash}-${stagePart}-${arch}`;
}

/** `<ib>-<hash>-index`: the pod that pushes the image index over the platforms. */
export function indexPodName(ib: ImageBuild): string {
  return buildPodName(ib, "index");
}

/** `<ib>-<hash>-plan`: the pod that compiles a Dockerfile (it reads base images from registries). */
export function planPodName(ib: ImageBuild): string {
  return buildPodName(ib, "plan");
}

function buildPodName(ib: ImageBuild, role: string): string {
  const hash = shortHash(ib.metadata.uid ?? "", String(ib.metadata.generation ?? 0), role);
  return `${fragment(ib.metadata.name, MAX_NAME - hash.length - role.length - 2)}-${hash}-${role}`;
}

/** A label value (≤ 63, alphanumeric ends) for a name that may be longer. */
export function labelValue(s: string): string {
  return s.length <= MAX_NAME ? s : fragment(s, MAX_NAME);
}
