import { posix } from "node:path";
import { PathEscapeError } from "../errors.ts";

/**
 * Resolves paths inside a root (a build context, an image's file tree) one component at a time, following
 * symlinks the way the root's own processes would see them, never the host's.
 *
 * - `scoped`: the root is `/` for what is inside it: `..` stops at the root and absolute symlink targets
 *   start at the root. This is how paths inside an image resolve (containerd's fs.RootPath, securejoin).
 * - `strict`: a `..` that would leave the root, or a symlink that points outside it, is a PathEscapeError.
 *   This is how kiln reads a build context: nothing outside it may be named, even by accident.
 * - `rooted`: absolute symlink targets start at the root (as inside the image), but a `..` that climbs above
 *   the root is a PathEscapeError. This is how kiln applies layers: images may rely on `/var/run -> /run`,
 *   and an entry that tries to climb out is named, not silently redirected.
 */
export type EscapePolicy = "scoped" | "strict" | "rooted";

/** Returns the target of the symlink at `path` (relative to the root, no leading `/`), or undefined if `path` is not a symlink. */
export type ReadLink = (path: string) => string | undefined;

const MAX_LINKS = 255;

/** Splits a user-supplied path into clean components; `.` and empty components are dropped. */
function components(p: string): string[] {
  return p.split("/").filter((c) => c !== "" && c !== ".");
}

/**
 * Resolves `path` inside the root and returns it relative to the root ("" for the root itself).
 * `followFinal` decides whether a symlink in the last component is followed (COPY of a named symlink) or
 * returned as is (a layer entry that *is* the symlink).
 */
export function resolveInRoot(
  path: string,
  readlink: ReadLink,
  policy: EscapePolicy,
  followFinal = true,
  rootName = "the root",
): string {
  const done: string[] = [];
  let todo = components(path);
  let links = 0;
  while (todo.length > 0) {
    const c = todo.shift()!;
    if (c === "..") {
      if (done.length === 0) {
        if (policy !== "scoped") throw new PathEscapeError(path, rootName, "'..' leads outside it");
        continue;
      }
      done.pop();
      continue;
    }
    const candidate = [...done, c].join("/");
    const target = todo.length === 0 && !followFinal ? undefined : readlink(candidate);
    if (target === undefined) {
      done.push(c);
      continue;
    }
    if (++links > MAX_LINKS) throw new PathEscapeError(path, rootName, "too many levels of symbolic links");
    if (target.startsWith("/")) {
      if (policy === "strict") {
        throw new PathEscapeError(path, rootName, `${candidate} is a symlink to the absolute path ${target}`);
      }
      done.length = 0;
    }
    todo = [...components(target), ...todo];
  }
  return done.join("/");
}

/** Normalises an image path to its form in a layer: relative, clean, no leading `/` ("" is the root). */
export function layerPath(p: string): string {
  const n = posix.normalize(`/${p}`);
  return n === "/" ? "" : n.slice(1).replace(/\/$/, "");
}
