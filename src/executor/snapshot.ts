import fs from "node:fs";
import path from "node:path";
import { cleanEntryPath, type EntryType, type LayerEntry, sortEntries } from "../oci/layer-entry.ts";
import { opaqueWhiteoutEntry, whiteoutEntry } from "../oci/whiteout.ts";

/**
 * What a root filesystem looked like at one moment: the lstat of every path below it (the root itself
 * aside) and the target of every symlink. Paths are relative, `/`-separated.
 */
export interface Snapshot {
  /** Absolute, symlinks resolved. */
  readonly root: string;
  readonly stats: ReadonlyMap<string, fs.Stats>;
  readonly links: ReadonlyMap<string, string>;
  /**
   * The root is an overlay mount: a directory copied up keeps its inode number but gets a new birth time,
   * so only the inode tells a directory made again from one written to.
   */
  readonly overlay?: boolean;
}

/** statfs(2) f_type of overlayfs. */
const OVERLAYFS_MAGIC = 0x794c7630;

export interface SnapshotOptions {
  /** Paths inside the root (`/kiln`, `workspace`) left out with everything below them. */
  readonly exclude?: readonly string[];
  /** Where mount points are read from; each one below the root is left out with what is below it. */
  readonly mountInfo?: string;
}

const LSTAT_OPTIONS = { throwIfNoEntry: false } as const;
const { S_IFMT, S_IFREG, S_IFDIR, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO } = fs.constants;

/**
 * Walks the root: one readdir per directory, one lstat per path, one readlink per symlink, nothing else.
 * Synchronous on purpose, as tree-walk.ts explains: a thread pool round trip costs more than an lstat.
 * Sockets are left out (a layer cannot hold them); a path that vanishes during the walk is skipped.
 */
export function takeSnapshot(root: string, options: SnapshotOptions = {}): Snapshot {
  const abs = fs.realpathSync(root);
  const excluded = new Set([
    ...(options.exclude ?? []).map((p) => cleanEntryPath(p)),
    ...mountPointsBelow(abs, options.mountInfo ?? "/proc/self/mountinfo"),
  ]);
  const prefix = abs === "/" ? "/" : `${abs}/`;
  const stats = new Map<string, fs.Stats>();
  const links = new Map<string, string>();
  const dirs = [""];
  for (let dir = dirs.pop(); dir !== undefined; dir = dirs.pop()) {
    const names = readdirOrEmpty(dir === "" ? abs : prefix + dir);
    const base = dir === "" ? "" : `${dir}/`;
    for (const name of names) {
      const rel = base + name;
      if (excluded.has(rel)) continue;
      const st = fs.lstatSync(prefix + rel, LSTAT_OPTIONS);
      if (st === undefined) continue;
      const fmt = st.mode & S_IFMT;
      if (fmt === S_IFDIR) dirs.push(rel);
      else if (fmt === S_IFLNK) {
        const target = readlinkOrUndefined(prefix + rel);
        if (target === undefined) continue;
        links.set(rel, target);
      } else if (typeOf(st) === undefined) continue;
      stats.set(rel, st);
    }
  }
  return { root: abs, stats, links, overlay: fs.statfsSync(abs).type === OVERLAYFS_MAGIC };
}

export interface DiffOptions {
  /**
   * Directories whose mtime changed for a reason the layer must not show (a mount point made in them and
   * removed again): only their mode and owner count.
   */
  readonly ignoreTimes?: Iterable<string>;
}

/**
 * The layer that turns `before` into `after` (two snapshots of the same root), as sorted LayerEntries:
 *
 * - new and changed paths, with their current metadata and, for files, their content from the root;
 * - deleted paths as whiteouts, only the topmost one of a deleted tree;
 * - a directory that is another directory now (deleted and made again, or replaced by another type and
 *   back: its inode or, as file systems reuse inodes, its birth time changed) as an opaque directory with
 *   all it holds now; where neither tells (same tick of the kernel's coarse clock, no birth time), what was
 *   deleted in it becomes whiteouts instead, which gives the same tree;
 * - a path whose type changed as its new self; what a replaced directory held needs no whiteouts;
 * - hardlinks among the layer's files as hardlinks; when a new link shares an inode with a path the step
 *   did not touch, that path is in the layer too, so the link resolves inside the layer;
 * - every parent of a path in the layer, with its current metadata, as buildah and BuildKit write them.
 */
export function diffSnapshots(before: Snapshot, after: Snapshot, options: DiffOptions = {}): LayerEntry[] {
  const ignoreTimes = new Set(options.ignoreTimes ?? []);
  const emit = new Set<string>();
  const opaque = new Set<string>();
  for (const [p, a] of after.stats) {
    const b = before.stats.get(p);
    if (b === undefined || (b.mode & S_IFMT) !== (a.mode & S_IFMT)) emit.add(p);
    else if ((a.mode & S_IFMT) === S_IFDIR) {
      if (a.ino !== b.ino || a.dev !== b.dev || (!after.overlay && a.birthtimeMs !== b.birthtimeMs)) {
        opaque.add(p);
      } else if (dirChanged(b, a, ignoreTimes.has(p))) emit.add(p);
    } else if (changed(b, a, before.links.get(p), after.links.get(p))) emit.add(p);
  }
  if (opaque.size > 0) {
    for (const p of after.stats.keys()) if (opaque.has(p) || hasAncestorIn(p, opaque)) emit.add(p);
  }
  addHardlinkGroups(after, emit);

  const deleted: string[] = [];
  for (const p of before.stats.keys()) {
    if (after.stats.has(p)) continue;
    const parent = parentOf(p);
    // Under a deleted parent the parent's whiteout covers it; under a replaced or opaque one, nothing is left to hide.
    if (parent !== "" && !isDir(after.stats.get(parent))) continue;
    if (hasAncestorIn(p, opaque)) continue;
    deleted.push(p);
  }

  const withParents = new Set(emit);
  for (const p of [...emit, ...deleted]) {
    for (let parent = parentOf(p); parent !== "" && !withParents.has(parent); parent = parentOf(parent)) {
      withParents.add(parent);
    }
  }
  const entries: LayerEntry[] = [];
  for (const p of withParents) entries.push(entryOf(after, p));
  // Inside an opaque directory, nothing from below shows through anyway.
  for (const p of opaque) if (!hasAncestorIn(p, opaque)) entries.push(opaqueWhiteoutEntry(p));
  for (const p of deleted) entries.push(whiteoutEntry(p));
  return linkHardlinks(sortEntries(entries), after);
}

/**
 * A directory's content changing changes its mtime; its ctime changes also for what the layer cannot show
 * (xattrs) or what it shows through the children anyway (nlink), so ctime is not compared.
 */
function dirChanged(b: fs.Stats, a: fs.Stats, ignoreTimes: boolean): boolean {
  return b.mode !== a.mode || b.uid !== a.uid || b.gid !== a.gid || (!ignoreTimes && b.mtimeMs !== a.mtimeMs);
}

function changed(b: fs.Stats, a: fs.Stats, bLink: string | undefined, aLink: string | undefined): boolean {
  if (
    b.mode !== a.mode ||
    b.uid !== a.uid ||
    b.gid !== a.gid ||
    b.size !== a.size ||
    b.mtimeMs !== a.mtimeMs ||
    b.ino !== a.ino ||
    b.dev !== a.dev ||
    b.rdev !== a.rdev ||
    bLink !== aLink
  ) {
    return true;
  }
  // Removing another link to a file changes only its ctime and link count; the file itself is as it was.
  return b.ctimeMs !== a.ctimeMs && !(a.nlink < b.nlink);
}

/** Adds every other path of an inode that a file in the layer shares. */
function addHardlinkGroups(after: Snapshot, emit: Set<string>): void {
  const wanted = new Set<string>();
  for (const p of emit) {
    const st = after.stats.get(p)!;
    if ((st.mode & S_IFMT) === S_IFREG && st.nlink > 1) wanted.add(inodeKey(st));
  }
  if (wanted.size === 0) return;
  for (const [p, st] of after.stats) {
    if ((st.mode & S_IFMT) === S_IFREG && st.nlink > 1 && wanted.has(inodeKey(st))) emit.add(p);
  }
}

/** The first path of each inode, in layer order, carries the content; the others link to it. */
function linkHardlinks(sorted: LayerEntry[], after: Snapshot): LayerEntry[] {
  const first = new Map<string, string>();
  return sorted.map((e) => {
    const st = e.type === "file" ? after.stats.get(e.path) : undefined;
    if (st === undefined || st.nlink < 2) return e;
    const key = inodeKey(st);
    const head = first.get(key);
    if (head === undefined) {
      first.set(key, e.path);
      return e;
    }
    const { size: _s, content: _c, ...attrs } = e;
    return { ...attrs, type: "hardlink", linkTarget: head };
  });
}

function entryOf(s: Snapshot, p: string): LayerEntry {
  const st = s.stats.get(p)!;
  const type = typeOf(st)!;
  const base = { path: p, type, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
  switch (type) {
    case "file":
      return { ...base, size: st.size, content: path.join(s.root, p) };
    case "symlink":
      return { ...base, linkTarget: s.links.get(p)! };
    case "char":
    case "block":
      return { ...base, devMajor: major(st.rdev), devMinor: minor(st.rdev) };
    default:
      return base;
  }
}

function typeOf(st: fs.Stats): EntryType | undefined {
  switch (st.mode & S_IFMT) {
    case S_IFREG:
      return "file";
    case S_IFDIR:
      return "dir";
    case S_IFLNK:
      return "symlink";
    case S_IFCHR:
      return "char";
    case S_IFBLK:
      return "block";
    case S_IFIFO:
      return "fifo";
    default:
      return undefined;
  }
}

function isDir(st: fs.Stats | undefined): boolean {
  return st !== undefined && (st.mode & S_IFMT) === S_IFDIR;
}

function inodeKey(st: fs.Stats): string {
  return `${st.dev}:${st.ino}`;
}

function parentOf(p: string): string {
  const slash = p.lastIndexOf("/");
  return slash === -1 ? "" : p.slice(0, slash);
}

function hasAncestorIn(p: string, dirs: ReadonlySet<string>): boolean {
  for (let a = parentOf(p); a !== ""; a = parentOf(a)) if (dirs.has(a)) return true;
  return false;
}

/**
 * Mount points strictly below `root`, relative to it. mountinfo's fifth field is the mount point with
 * space, tab, newline and backslash written as octal escapes (proc(5)).
 */
export function mountPointsBelow(root: string, mountInfo: string): string[] {
  let text: string;
  try {
    text = fs.readFileSync(mountInfo, "utf8");
  } catch {
    return [];
  }
  const prefix = root === "/" ? "/" : `${root}/`;
  const found: string[] = [];
  for (const line of text.split("\n")) {
    const field = line.split(" ")[4];
    if (field === undefined) continue;
    const mp = field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
    if (mp.startsWith(prefix) && mp.length > prefix.length) found.push(mp.slice(prefix.length));
  }
  return found;
}

function readdirOrEmpty(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch (err) {
    if (isVanished(err)) return [];
    throw err;
  }
}

function readlinkOrUndefined(p: string): string | undefined {
  try {
    return fs.readlinkSync(p);
  } catch (err) {
    if (isVanished(err)) return undefined;
    throw err;
  }
}

function isVanished(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === "ENOENT" || code === "ENOTDIR";
}

// glibc's gnu_dev_major/gnu_dev_minor; st.rdev is a double, exact below 2^53
function major(dev: number): number {
  return (Math.floor(dev / 256) % 4096) | (Math.floor(dev / 2 ** 32) & ~0xfff);
}
function minor(dev: number): number {
  return (dev & 0xff) | (Math.floor(dev / 4096) & ~0xff);
}
