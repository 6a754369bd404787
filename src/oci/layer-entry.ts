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
  const cleaned = entries.map((e) => {
    const path = cleanEntryPath(e.path);
    checkNumbers(e);
    if (e.type === "hardlink") return { ...e, path, linkTarget: cleanEntryPath(e.linkTarget ?? "") };
    return path === e.path ? e : { ...e, path };
  });
  if (options.addParents) {
    const paths = new Set(cleaned.map((e) => e.path));
    for (const { path } of cleaned.slice()) {
      for (let i = path.indexOf("/"); i !== -1; i = path.indexOf("/", i + 1)) {
        const parent = path.slice(0, i);
        if (paths.has(parent)) continue;
        paths.add(parent);
        cleaned.push({ path: parent, type: "dir", mode: 0o755, uid: 0, gid: 0 });
      }
    }
  }
  // Walks and snapshots hand entries over sorted already: checking is one pass, sorting would be n log n.
  const sorted = isSorted(cleaned) ? cleaned : sortEntries(cleaned);
  for (let i = 1; i < sorted.length; i++) {
    if (comparePaths(sorted[i - 1]!.path, sorted[i]!.path) === 0)
      throw new InvalidInputError(`layer entry ${JSON.stringify(sorted[i]!.path)} is given twice`);
  }
  return relinkHardlinks(sorted);
}

function checkNumbers(e: LayerEntry): void {
  const bad = (value: number) => !Number.isSafeInteger(value) || value < 0;
  const name = bad(e.mode)
    ? "mode"
    : bad(e.uid)
      ? "uid"
      : bad(e.gid)
        ? "gid"
        : bad(e.size ?? 0)
          ? "size"
          : "";
  if (name === "") return;
  const value = e[name as "mode" | "uid" | "gid" | "size"];
  throw new InvalidInputError(
    `layer entry ${JSON.stringify(e.path)}: ${name} ${value} is not a whole number ≥ 0`,
  );
}

function isSorted(entries: ReadonlyArray<{ readonly path: string }>): boolean {
  for (let i = 1; i < entries.length; i++) {
    if (comparePaths(entries[i - 1]!.path, entries[i]!.path) > 0) return false;
  }
  return true;
}

/** Sorts by path, compared component by component in UTF-8 byte order. */
export function sortEntries<T extends { readonly path: string }>(entries: readonly T[]): T[] {
  return entries.toSorted((a, b) => comparePaths(a.path, b.path));
}

const SLASH = 0x2f;
const SURROGATES = 0xd800;
const isHighSurrogate = (c: number) => c >= SURROGATES && c < 0xdc00;

/**
 * Orders paths as their UTF-8 bytes with `/` taken as the lowest byte, so that "a" and everything below it
 * sorts before "a-b", as a sorted walk visits them. Below U+D800, UTF-16 code units order as UTF-8 bytes
 * do, so nearly every comparison needs no encoding.
 */
export function comparePaths(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    if (x === SLASH) return -1;
    if (y === SLASH) return 1;
    if (x < SURROGATES && y < SURROGATES) return x - y;
    const from = i > 0 && isHighSurrogate(a.charCodeAt(i - 1)) ? i - 1 : i; // whole code points only
    return Buffer.compare(Buffer.from(a.slice(from), "utf8"), Buffer.from(b.slice(from), "utf8"));
  }
  return a.length - b.length;
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
