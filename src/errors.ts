import type { z } from "zod";
/**
 * kiln's one error family. Every error has a stable `code` that scripts and the controller can match on,
 * a message a person understands, and the underlying `cause` when there is one.
 */
export class KilnError extends Error {
  readonly code: string = "KILN_ERR";
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
  /** A temporary error may succeed when the same step is repeated (network, 5xx, 429). */
  get temporary(): boolean {
    return false;
  }
}

/** The user's input is wrong: a spec, a Dockerfile, a flag. Repeating the same input fails the same way. */
export class InvalidInputError extends KilnError {
  override readonly code: string = "KILN_ERR_INVALID_INPUT";
}

/**
 * A Dockerfile that cannot be parsed or expanded. `line` is the 1-based line of the instruction (or of the line
 * being read) when one is known; the message then reads `Dockerfile:LINE: detail`.
 */
export class DockerfileError extends InvalidInputError {
  override readonly code = "KILN_ERR_DOCKERFILE";
  readonly line: number | undefined;
  readonly detail: string;
  constructor(line: number | undefined, detail: string, options?: ErrorOptions) {
    super(line === undefined ? detail : `Dockerfile:${line}: ${detail}`, options);
    this.line = line;
    this.detail = detail;
  }
}

/** A path would leave the root it must stay in (`..`, an absolute symlink, a link through a symlink). */
export class PathEscapeError extends KilnError {
  override readonly code = "KILN_ERR_PATH_ESCAPE";
  readonly path: string;
  constructor(path: string, root: string, why: string, options?: ErrorOptions) {
    super(`path ${JSON.stringify(path)} escapes ${root}: ${why}`, options);
    this.path = path;
  }
}

/** Content did not match the digest it was addressed by. */
export class DigestMismatchError extends KilnError {
  override readonly code = "KILN_ERR_DIGEST_MISMATCH";
  readonly expected: string;
  readonly actual: string;
  constructor(what: string, expected: string, actual: string) {
    super(`${what}: content has digest ${actual}, expected ${expected}`);
    this.expected = expected;
    this.actual = actual;
  }
}

/** Something that should exist does not: a blob, a file in the context, an image in a layout. */
export class NotFoundError extends KilnError {
  override readonly code: string = "KILN_ERR_NOT_FOUND";
}

/** A layer could not be written or read: content changed while read, a malformed tar or compressed stream. */
export class LayerError extends KilnError {
  override readonly code = "KILN_ERR_LAYER";
}

export function isTemporary(err: unknown): boolean {
  return err instanceof KilnError && err.temporary;
}

/** The text a person reads: the message chain, each cause once. */
export function describeError(err: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = err; e !== undefined && parts.length < 5; e = (e as { cause?: unknown }).cause) {
    const msg = e instanceof Error ? e.message : String(e);
    if (!parts.some((p) => p.includes(msg))) parts.push(msg);
    if (!(e instanceof Error)) break;
  }
  return parts.join(": ");
}

/** Schema issues as lines a person reads: `  layers[0].files[1].dest: must be an absolute path`. */
export function describeIssues(issues: readonly z.core.$ZodIssue[]): string {
  return issues
    .map((i) => {
      const path = i.path
        .map((p, n) => (typeof p === "number" ? `[${p}]` : `${n === 0 ? "" : "."}${String(p)}`))
        .join("");
      return `  ${path || "(top level)"}: ${i.message}`;
    })
    .join("\n");
}
