import { join, posix } from "node:path";
import { Readable } from "node:stream";
import { InvalidInputError } from "../errors.ts";
import type { EntryType, LayerEntry } from "../oci/layer-entry.ts";
import { resolveInRoot } from "../oci/root-path.ts";
import type { CopyOp } from "../plan/plan.ts";
import { ArchiveBreakoutError, type ArchiveEntry, pathInside, readArchive } from "./archive.ts";
import type { BuildContext, ContextFile, SourceMatch } from "./context.ts";
import type { ImageTree } from "./image-tree.ts";

type Ids = { readonly uid: number; readonly gid: number };
const ROOT_OWNED: Ids = { uid: 0, gid: 0 };

/**
 * Plans a COPY from a root — the build context, or a stage's or image's file system — with Docker's
 * rules: a directory source copies its contents, a file lands in a destination directory when the
 * destination ends in `/`, already is a directory in the image, or several sources are given; a symlink
 * named as a source is followed and keeps its own name; destinations resolve through the image's own
 * symlinks; missing parents are created owned by the `--chown` owner; symlinks inside copied directories
 * stay symlinks and hardlinks stay hardlinks. Ownership is `--chown`, else the source's between stages
 * and 0:0 from the context.
 */
export function planContextCopy(op: CopyOp, ctx: BuildContext, tree: ImageTree, workdir = "/"): LayerEntry[] {
  const sources = op.sources.flatMap((s) => ctx.matchNamed(s));
  return planMatches(op, sources, ctx, tree, workdir);
}

function planMatches(
  op: CopyOp,
  sources: readonly SourceMatch[],
  ctx: BuildContext,
  tree: ImageTree,
  workdir: string,
): LayerEntry[] {
  const chown = chownOf(op, tree);
  const chmod = op.chmod !== undefined ? Number.parseInt(op.chmod, 8) : undefined;
  const { resolved: destResolved, isDir: destIsDir } = destinationOf(op, tree, workdir);
  if (sources.length > 1 && !destIsDir && op.sources.length > 1) {
    throw new InvalidInputError(
      `when copying several sources the destination must be a directory and end with a / (got ${op.dest})`,
    );
  }
  const parentOwner = chown ?? ROOT_OWNED;
  const entries = new Map<string, LayerEntry>();
  const inodes = new Map<string, string>();
  const add = (path: string, f: ContextFile): void => {
    const st = f.stats;
    const type = nodeType(st);
    const owner = chown ?? (ctx.keepOwners ? { uid: st.uid, gid: st.gid } : ROOT_OWNED);
    const key = `${st.dev}:${st.ino}`;
    const first = type === "file" && st.nlink > 1 ? inodes.get(key) : undefined;
    const mode = chmod ?? st.mode & 0o7777;
    if (first !== undefined) {
      entries.set(path, { path, type: "hardlink", linkTarget: first, mode, ...owner, size: 0 });
      return;
    }
    if (type === "file" && st.nlink > 1) inodes.set(key, path);
    // BuildKit's copy does not turn a file into a directory: its contents would land below a file.
    const existing = type === "dir" ? (entries.get(path) ?? tree.get(path)) : undefined;
    if (existing !== undefined && existing.type !== "dir" && existing.type !== "symlink")
      throw notADirectory(path, path);
    entries.set(path, {
      path,
      type,
      mode,
      ...owner,
      size: type === "file" ? st.size : 0,
      ...(type === "symlink" ? { linkTarget: ctx.readlink(f.path)! } : {}),
      ...(type === "file" ? { content: join(ctx.root, f.path) } : {}),
      ...(type === "char" || type === "block"
        ? { devMajor: Math.floor(st.rdev / 256), devMinor: st.rdev % 256 }
        : {}),
    });
  };

  for (const { path: src, name } of sources) {
    const files = ctx.walk(src, op.exclude);
    const top = files[0];
    if (top === undefined) continue; // excluded as a whole
    const under = op.parents ? childPath(destResolved, src) : destResolved;
    if (top.stats.isDirectory()) {
      // Only the contents are copied: a missing destination is made 0755 for the --chown owner, as
      // BuildKit's copy creates it, and an existing one keeps its own mode and owner.
      addParents(entries, tree, under, parentOwner, true);
      for (const f of files.slice(1))
        add(childPath(under, f.path.slice(src.length + (src === "" ? 0 : 1))), f);
    } else {
      const target = op.parents
        ? under
        : destIsDir || sources.length > 1
          ? childPath(destResolved, name)
          : destResolved;
      addParents(entries, tree, target, parentOwner, false);
      add(target, top);
    }
  }
  return [...entries.values()].sort((a, b) => compareBytes(a.path, b.path));
}

/**
 * ADD from the context: each source that is a tar archive by its content (plain, gzip, bzip2, xz, zstd) is
 * unpacked into the destination directory, its entries keeping their modes, owners and links (`--chown`
 * does not apply to them); every other source is copied as COPY would.
 */
export async function planAddCopy(
  op: CopyOp,
  ctx: BuildContext,
  tree: ImageTree,
  workdir = "/",
): Promise<LayerEntry[]> {
  const sources = op.sources.flatMap((s) => ctx.matchNamed(s));
  if (!op.extract) return planMatches(op, sources, ctx, tree, workdir);
  const plain: SourceMatch[] = [];
  const entries = new Map<string, LayerEntry>();
  for (const m of sources) {
    const archive = ctx.lstat(m.path)?.isFile() ? await readArchive(join(ctx.root, m.path)) : undefined;
    if (archive === undefined) plain.push(m);
    else unpack(m.path, archive, tree.resolve(posix.resolve(workdir, op.dest)), tree, entries);
  }
  if (plain.length > 0) {
    for (const e of planMatches(op, plain, ctx, tree, workdir)) entries.set(e.path, e);
  }
  return [...entries.values()].sort((a, b) => compareBytes(a.path, b.path));
}

/**
 * Places an archive's entries below `dest` as Docker unpacks them, chrooted into the destination: names are
 * cleaned inside it, and a path through a symlink — one the image has or an earlier entry made — resolves
 * with the destination as its root (absolute targets start there, `..` stops there). As Docker's breakout
 * checks, a relative name climbing out of the destination, a relative symlink pointing above it and a
 * hardlink to a path outside it are refused, naming the archive and the entry.
 */
function unpack(
  archive: string,
  members: readonly ArchiveEntry[],
  dest: string,
  tree: ImageTree,
  entries: Map<string, LayerEntry>,
): void {
  const where = `/${dest}`;
  const refuse = (e: ArchiveEntry, detail: string) => new ArchiveBreakoutError(archive, e.path, detail);
  addParents(entries, tree, dest, ROOT_OWNED, true);
  // What a process chrooted into the destination sees: the entries placed so far over the image.
  const readlink = (rel: string): string | undefined => {
    const placed = entries.get(childPath(dest, rel));
    if (placed !== undefined) return placed.type === "symlink" ? placed.linkTarget : undefined;
    return tree.readlink(childPath(dest, rel));
  };
  const placeAt = (rel: string): string => {
    const parent = resolveInRoot(posix.dirname(rel), readlink, "scoped", true, where);
    return childPath(dest, childPath(parent, posix.basename(rel)));
  };
  for (const e of members) {
    const rel = pathInside(e.path);
    if (rel === undefined)
      throw refuse(e, `entry ${JSON.stringify(e.path)} is outside the destination ${where}`);
    if (rel === "") continue;
    let linkTarget = e.linkTarget;
    if (e.type === "symlink" && !linkTarget!.startsWith("/")) {
      if (pathInside(`${posix.dirname(rel)}/${linkTarget}`) === undefined)
        throw refuse(
          e,
          `symlink ${JSON.stringify(e.path)} -> ${JSON.stringify(linkTarget)} points outside the destination ${where}`,
        );
    }
    if (e.type === "hardlink") {
      const target = pathInside(linkTarget!);
      if (target === undefined)
        throw refuse(
          e,
          `hardlink ${JSON.stringify(e.path)} -> ${JSON.stringify(linkTarget)} points outside the destination ${where}`,
        );
      if (target === "")
        throw new InvalidInputError(
          `${archive}: hardlink ${JSON.stringify(e.path)} links to the destination directory itself`,
        );
      linkTarget = placeAt(target);
    }
    const path = placeAt(rel);
    addParents(entries, tree, path, ROOT_OWNED, false);
    const { content, linkTarget: _, ...attrs } = e;
    entries.set(path, {
      ...attrs,
      path,
      size: content?.length ?? 0,
      ...(content !== undefined ? { content: () => Readable.from([content]) } : {}),
      ...(linkTarget !== undefined ? { linkTarget } : {}),
    });
  }
}

/** A file whose bytes the build holds (a heredoc, a download): named `name` inside a directory destination. */
export interface BytesFile {
  readonly name: string;
  readonly content: Buffer;
  /** Mode before `--chmod`. */
  readonly mode: number;
}

/** Plans files given as bytes, with the destination rules of a COPY of files named `name`. */
export function planBytesCopy(
  op: CopyOp,
  files: readonly BytesFile[],
  tree: ImageTree,
  workdir = "/",
): LayerEntry[] {
  const owner = chownOf(op, tree) ?? ROOT_OWNED;
  const chmod = op.chmod !== undefined ? Number.parseInt(op.chmod, 8) : undefined;
  const { resolved, isDir } = destinationOf(op, tree, workdir);
  const entries = new Map<string, LayerEntry>();
  for (const f of files) {
    const path = isDir || files.length > 1 ? childPath(resolved, f.name) : resolved;
    addParents(entries, tree, path, owner, false);
    const content = f.content;
    entries.set(path, {
      path,
      type: "file",
      mode: chmod ?? f.mode,
      ...owner,
      size: content.length,
      content: () => Readable.from([content]),
    });
  }
  return [...entries.values()].sort((a, b) => compareBytes(a.path, b.path));
}

/**
 * The directories WORKDIR creates: every missing component of `path` (resolved through the image's
 * symlinks), mode 0755, owned by the stage's USER at that point.
 */
export function planMkdir(path: string, owner: Ids, tree: ImageTree): LayerEntry[] {
  const entries = new Map<string, LayerEntry>();
  addParents(entries, tree, tree.resolve(path), owner, true);
  return [...entries.values()];
}

function chownOf(op: CopyOp, tree: ImageTree): Ids | undefined {
  return op.chown ? tree.resolveOwner(op.chown.user, op.chown.group) : undefined;
}

function destinationOf(op: CopyOp, tree: ImageTree, workdir: string): { resolved: string; isDir: boolean } {
  const resolved = tree.resolve(posix.resolve(workdir, op.dest));
  const isDir = op.dest.endsWith("/") || op.dest.endsWith("/.") || tree.get(resolved)?.type === "dir";
  return { resolved, isDir };
}

/**
 * Adds the directories above `path` (and `path` itself when `inclusive`) that the image lacks, owned by
 * `owner`, mode 0755. A component that is already something other than a directory or a symlink — a file
 * of the image, an earlier layer or this copy — fails as Docker's mkdir does: "not a directory".
 */
function addParents(
  entries: Map<string, LayerEntry>,
  tree: ImageTree,
  path: string,
  owner: Ids,
  inclusive: boolean,
): void {
  const parts = path.split("/").filter((p) => p !== "");
  const upto = inclusive ? parts.length : parts.length - 1;
  for (let i = 1; i <= upto; i++) {
    const p = parts.slice(0, i).join("/");
    const existing = entries.get(p) ?? tree.get(p);
    if (existing === undefined) entries.set(p, { path: p, type: "dir", mode: 0o755, ...owner, size: 0 });
    else if (existing.type !== "dir" && existing.type !== "symlink") throw notADirectory(path, p);
  }
}

function notADirectory(path: string, component: string): InvalidInputError {
  const what = `/${component} is not a directory`;
  return new InvalidInputError(path === component ? what : `/${path}: ${what}`);
}

function childPath(dir: string, name: string): string {
  return dir === "" ? name : `${dir}/${name}`;
}

function nodeType(st: ContextFile["stats"]): EntryType {
  if (st.isDirectory()) return "dir";
  if (st.isSymbolicLink()) return "symlink";
  if (st.isFile()) return "file";
  if (st.isFIFO()) return "fifo";
  if (st.isCharacterDevice()) return "char";
  if (st.isBlockDevice()) return "block";
  throw new InvalidInputError("sockets cannot be copied into an image");
}

/** Orders paths by their bytes, as tar writers that sort do, so parents come before children. */
export function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}
