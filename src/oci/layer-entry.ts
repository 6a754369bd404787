import type { Readable } from "node:stream";
import { InvalidInputError } from "../errors.ts";

export type EntryType = "file" | "dir" | "symlink" | "hardlink" | "char" | "block" | "fifo";

/** tar-stream's names of entry types (its `header.type`), as kiln names them. */
export const TAR_STREAM_TYPES: Readonly<Record<string, EntryType>> = {
  file: "file",
  "contiguous-file": "file",
  directory: "dir",
  symlink: "symlink",
  link: "hardlink",
  "character-device": "char",
  "block-device": "block",
  fifo: "fifo",
};

/** A file's bytes: the path of a file on disk, or a function that returns a fresh stream on every call. */
export type ContentSource = string | (() => Readable);

/** One path in a layer, as the caller describes it. */
export interface LayerEntry {
  /** Relative to the layer root, `/`-separated; a leading `/` or `./` is dropped. */
  readonly path: string;
  readonly type: EntryType;
  /** Permission bits including setuid, setgid and sticky (`& 0o7777` is kept). */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /** Files: the content's length in bytes; the tar header precedes the content, so it is needed up front. */
  readonly size?: number;
  /** Files: where the bytes come from. */
  readonly content?: ContentSource;
  /** Symlinks: the target as written. Hardlinks: the path of another entry in the same layer. */
  readonly linkTarget?: string;
  readonly devMajor?: number;
  readonly devMinor?: number;
  /** Extended attributes (`user.foo`, `security.capability`), written as SCHILY.xattr PAX records. */
  readonly xattrs?: Readonly<Record<string, Buffer | string>>;
}

export interface NormalizeOptions {
  /** Add a directory entry (0755, root-owned) for every parent path that has none. */
  readonly addParents?: boolean;
}

/**
 * Validates paths, sorts entries so that parents come before children and siblings are in byte order of
 * their names (the order a walk with sorted directories gives, as GNU tar's `--sort=name` writes), and
 * makes the first path of every hardlink group, in that order, the one that carries the content.
 */
export function normalizeEntries(
  entries: readonly LayerEntry[],
  options: NormalizeOptions = {},
): LayerEntry[] {
  const byPath = new Map<string, LayerEntry>();
  for (const e of entries) {
    const path = cleanEntryPath(e.path);
    checkNumbers(e);
    if (byPath.has(path)) throw new InvalidInputError(`layer entry ${JSON.stringify(path)} is given twice`);
    if (e.type === "hardlink")
      byPath.set(path, { ...e, path, linkTarget: cleanEntryPath(e.linkTarget ?? "") });
    else byPath.set(path, path === e.path ? e : { ...e, path });
  }
  if (options.addParents) {
    for (const path of [...byPath.keys()]) {
      for (let i = path.indexOf("/"); i !== -1; i = path.indexOf("/", i + 1)) {
        const parent = path.slice(0, i);
        if (!byPath.has(parent))
          byPath.set(parent, { path: parent, type: "dir", mode: 0o755, uid: 0, gid: 0 });
      }
    }
  }
  return relinkHardlinks(sortEntries([...byPath.values()]));
}

function checkNumbers(e: LayerEntry): void {
  const fields = { mode: e.mode, uid: e.uid, gid: e.gid, size: e.size ?? 0 } as const;
  for (const [name, value] of Object.entries(fields)) {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new InvalidInputError(
        `layer entry ${JSON.stringify(e.path)}: ${name} ${value} is not a whole number ≥ 0`,
      );
    }
  }
}

/** Sorts by path, compared component by component in UTF-8 byte order. */
export function sortEntries<T extends { readonly path: string }>(entries: readonly T[]): T[] {
  const keyed = entries.map((e) => ({ e, key: pathSortKey(e.path) }));
  keyed.sort((a, b) => Buffer.compare(a.key, b.key));
  return keyed.map((k) => k.e);
}

/** `/` becomes NUL so that "a" and everything below it sorts before "a-b", as a sorted walk visits them. */
function pathSortKey(path: string): Buffer {
  const key = Buffer.from(path, "utf8");
  for (let i = 0; i < key.length; i++) if (key[i] === 0x2f) key[i] = 0;
  return key;
}

/** Matches every path cleanEntryPath would change or refuse: the rest, nearly all, are returned as they are. */
const UNCLEAN = /^$|^\.?\/|\/$|\/\/|(^|\/)\.\.?(\/|$)|\0/;

/** Drops a leading `/` or `./` and trailing `/`; refuses empty, `.` and `..` components. */
export function cleanEntryPath(path: string): string {
  if (!UNCLEAN.test(path)) return path;
  let p = path;
  while (p.startsWith("./") || p.startsWith("/")) p = p.slice(p.startsWith("/") ? 1 : 2);
  while (p.endsWith("/")) p = p.slice(0, -1);
  const parts = p.split("/");
  if (p === "" || parts.some((c) => c === "" || c === "." || c === ".." || c.includes("\0"))) {
    throw new InvalidInputError(`invalid layer entry path ${JSON.stringify(path)}`);
  }
  return p;
}

/**
 * When a hardlink names a path that sorts after it, the earliest path of the group becomes the file
 * (with the target's attributes and content) and every other member links to it, as tar writes them.
 */
function relinkHardlinks(sorted: LayerEntry[]): LayerEntry[] {
  if (!sorted.some((e) => e.type === "hardlink")) return sorted;
  const index = new Map(sorted.map((e, i) => [e.path, i]));
  const first = new Map<string, string>(); // target path -> first path of its group
  for (const [i, e] of sorted.entries()) {
    if (e.type !== "hardlink") continue;
    const target = e.linkTarget!;
    const t = index.get(target);
    if (t === undefined || t < i) continue;
    const head = first.get(target);
    if (head === undefined) {
      const { linkTarget: _, ...file } = sorted[t]!;
      sorted[i] = { ...file, path: e.path };
      first.set(target, e.path);
    } else {
      sorted[i] = { ...e, linkTarget: head };
    }
  }
  for (const [target, head] of first) {
    const t = index.get(target)!;
    const { size: _s, content: _c, ...attrs } = sorted[t]!;
    sorted[t] = { ...attrs, type: "hardlink", linkTarget: head };
  }
  // links made earlier to the old target now point at the group's first path
  return sorted.map((e) =>
    e.type === "hardlink" && first.has(e.linkTarget!) && e.path !== e.linkTarget
      ? { ...e, linkTarget: first.get(e.linkTarget!)! }
      : e,
  );
}
