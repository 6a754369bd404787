import fs from "node:fs";
import path from "node:path";
import { cleanEntryPath, comparePaths, type EntryType, type LayerEntry } from "./layer-entry.ts";

export interface WalkTreeOptions {
  /** Where the tree lands in the layer, e.g. `app`; the root directory itself becomes that entry. */
  readonly prefix?: string;
  /** Owner for every entry instead of the files' own. */
  readonly uid?: number;
  readonly gid?: number;
  /** Permission bits for every file and directory instead of their own (symlinks keep 0777). */
  readonly chmod?: number;
}

/**
 * The entries for a directory tree: lstat only (symlinks are entries, never followed), real modes and
 * owners unless overridden, hardlinks found by (device, inode), sockets skipped. Sorted (each directory's
 * names are, and the walk is depth first, which is layer order), so the result depends only on the tree's
 * content, not on readdir or creation order; mtimes are not read at all.
 *
 * Extended attributes are not read: Node has no xattr API. Callers that need them (file capabilities) set
 * `xattrs` on the entries.
 *
 * Synchronous on purpose: one lstat is a few microseconds, a threadpool round trip costs more than that.
 */
export function walkTree(root: string, options: WalkTreeOptions = {}): LayerEntry[] {
  const prefix = options.prefix === undefined || options.prefix === "" ? "" : cleanEntryPath(options.prefix);
  const found: Array<LayerEntry & { readonly inode?: string }> = [];
  const visit = (abs: string, rel: string): void => {
    const st = fs.lstatSync(abs);
    const type = entryType(st);
    if (type === undefined) return;
    if (rel !== "") found.push(entryOf(abs, rel, type, st, options));
    if (type !== "dir") return;
    for (const name of fs.readdirSync(abs).sort(comparePaths))
      visit(`${abs}/${name}`, rel === "" ? name : `${rel}/${name}`);
  };
  visit(path.resolve(root), prefix);
  return linkHardlinks(found);
}

function entryType(st: fs.Stats): EntryType | undefined {
  if (st.isFile()) return "file";
  if (st.isDirectory()) return "dir";
  if (st.isSymbolicLink()) return "symlink";
  if (st.isCharacterDevice()) return "char";
  if (st.isBlockDevice()) return "block";
  if (st.isFIFO()) return "fifo";
  return undefined; // sockets cannot be archived
}

function entryOf(
  abs: string,
  rel: string,
  type: EntryType,
  st: fs.Stats,
  o: WalkTreeOptions,
): LayerEntry & { readonly inode?: string } {
  const own = st.mode & 0o7777;
  const mode = type === "symlink" ? own : (o.chmod ?? own);
  const uid = o.uid ?? st.uid;
  const gid = o.gid ?? st.gid;
  // One object literal per entry, no spreads: a walk makes tens of thousands of them.
  switch (type) {
    case "file":
      if (st.nlink > 1)
        return { path: rel, type, mode, uid, gid, size: st.size, content: abs, inode: inodeKey(abs) };
      return { path: rel, type, mode, uid, gid, size: st.size, content: abs };
    case "symlink":
      return { path: rel, type, mode, uid, gid, linkTarget: fs.readlinkSync(abs) };
    case "char":
    case "block":
      return {
        path: rel,
        type,
        mode,
        uid,
        gid,
        devMajor: major(BigInt(st.rdev)),
        devMinor: minor(BigInt(st.rdev)),
      };
    default:
      return { path: rel, type, mode, uid, gid };
  }
}

/** Exact (device, inode) of a hardlinked file: inode numbers may not fit a double, so ask for bigints. */
function inodeKey(abs: string): string {
  const st = fs.lstatSync(abs, { bigint: true });
  return `${st.dev}:${st.ino}`;
}

/** The first path of each inode (in layer order) keeps the content; later ones become hardlinks to it. */
function linkHardlinks(sorted: ReadonlyArray<LayerEntry & { readonly inode?: string }>): LayerEntry[] {
  const firstPath = new Map<string, string>();
  return sorted.map((linked) => {
    if (linked.inode === undefined) return linked; // nearly every entry: no copy to make
    const { inode, ...e } = linked;
    const first = firstPath.get(inode);
    if (first === undefined) {
      firstPath.set(inode, e.path);
      return e;
    }
    const { size: _s, content: _c, ...attrs } = e;
    return { ...attrs, type: "hardlink", linkTarget: first };
  });
}

// glibc's gnu_dev_major/gnu_dev_minor
function major(dev: bigint): number {
  return Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
}
function minor(dev: bigint): number {
  return Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn));
}
