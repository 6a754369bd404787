import { createHash } from "node:crypto";
import { type Step, StepSchema } from "./plan.ts";

/**
 * Per-step cache keys (DESIGN decision 1). A stage's first key is its base image's config digest (which names
 * every base layer, so a layer is never reused on another base); each step's key hashes the previous key,
 * what the step does, and the digest of what it read:
 *
 * - a RUN: its argv, environment (build args included), user, working directory, mounts and network;
 * - a COPY, ADD, WORKDIR or delete: its definition and the diffID of the layer it made, which covers the
 *   content, modes and owners of every source file it copied;
 * - a config-only instruction (LABEL, ENV, CMD...) changes nothing below it: its effect on later RUN steps
 *   is in their environment already.
 *
 * Lines and history text are left out: moving an instruction or editing a comment keeps the cache.
 */
export const CACHE_KEY_VERSION = "kiln-step-cache-v1";

export function stageCacheKey(baseConfigDigest: string): string {
  return sha256Hex(`${CACHE_KEY_VERSION}\0${baseConfigDigest}`);
}

/** The key after `step`; `inputDigest` is the diffID of the layer a non-RUN step made. */
export function nextCacheKey(previous: string, step: Step, inputDigest?: string): string {
  if (step.kind === "config") return previous;
  // The schema's defaults and sorted keys: a step compiled here and one read back from a job file hash alike.
  const { line: _line, createdBy: _createdBy, ...definition } = StepSchema.parse(step);
  return sha256Hex(`${previous}\0${canonicalJson(definition)}\0${inputDigest ?? ""}`);
}

function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  );
}

function sha256Hex(s: string): string {
  return createHash("sha256").update(s).digest("hex");
}
