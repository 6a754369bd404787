import type { LayerEntry } from "./layer-entry.ts";

/** image-spec layer.md: `.wh.<name>` deletes `<name>` of lower layers. */
export const WHITEOUT_PREFIX = ".wh.";
/** image-spec layer.md: `.wh..wh..opq` in a directory hides everything lower layers had in it. */
export const OPAQUE_WHITEOUT = ".wh..wh..opq";

/** The whiteout path that deletes `path`: `a/b` → `a/.wh.b`. */
export function whiteoutPath(path: string): string {
  const slash = path.lastIndexOf("/");
  return `${path.slice(0, slash + 1)}${WHITEOUT_PREFIX}${path.slice(slash + 1)}`;
}

/** The marker that makes `dir` opaque: `a` → `a/.wh..wh..opq`; "" (the root) → `.wh..wh..opq`. */
export function opaqueWhiteoutPath(dir: string): string {
  return dir === "" ? OPAQUE_WHITEOUT : `${dir}/${OPAQUE_WHITEOUT}`;
}

/** A whiteout is an empty root-owned regular file; readers look only at its name. */
export function whiteoutEntry(path: string): LayerEntry {
  return { path: whiteoutPath(path), type: "file", mode: 0o644, uid: 0, gid: 0, size: 0 };
}

export function opaqueWhiteoutEntry(dir: string): LayerEntry {
  return { path: opaqueWhiteoutPath(dir), type: "file", mode: 0o644, uid: 0, gid: 0, size: 0 };
}

export type Whiteout =
  | { readonly kind: "whiteout"; readonly target: string }
  | { readonly kind: "opaque"; readonly dir: string };

/** What a layer path means when it is a whiteout; undefined for an ordinary path. */
export function parseWhiteout(path: string): Whiteout | undefined {
  const slash = path.lastIndexOf("/");
  const dir = path.slice(0, Math.max(slash, 0));
  const name = path.slice(slash + 1);
  if (name === OPAQUE_WHITEOUT) return { kind: "opaque", dir };
  if (!name.startsWith(WHITEOUT_PREFIX)) return undefined;
  return { kind: "whiteout", target: `${path.slice(0, slash + 1)}${name.slice(WHITEOUT_PREFIX.length)}` };
}
