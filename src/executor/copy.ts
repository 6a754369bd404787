import { basename, join } from "node:path";
import { InvalidInputError } from "../errors.ts";
import type { EntryType, LayerEntry } from "../oci/layer-entry.ts";
import type { CopyOp } from "../plan/plan.ts";
import type { BuildContext, ContextFile } from "./context.ts";
import type { ImageTree } from "./image-tree.ts";

/**
 * Plans a COPY from the build context with Docker's rules: a directory source copies its contents, a file
 * lands in a destination directory when the destination ends in `/`, already is a directory in the image,
 * or several sources are given; destinations resolve through the image's own symlinks; missing parents
 * are created owned by the `--chown` owner; symlinks inside copied directories stay symlinks and hardlinks
 * stay hardlinks. Ownership is `--chown` or 0:0 and never the context's.
 */
export function planContextCopy(op: CopyOp, ctx: BuildContext, tree: ImageTree, workdir = "/"): LayerEntry[] {
  const owner = op.chown ? tree.resolveOwner(op.chown.user, op.chown.group) : { uid: 0, gid: 0 };
  const chmod = op.chmod !== undefined ? Number.parseInt(op.chmod, 8) : undefined;
  const sources = op.sources.flatMap((s) => ctx.match(s));
  const destAbs = op.dest.startsWith("/") ? op.dest : join(workdir, op.dest);
  const destResolved = tree.resolve(destAbs);
  const destIsDir = op.dest.endsWith("/") || op.dest.endsWith("/.") || tree.get(destResolved)?.type === "dir";
  if (sources.length > 1 && !destIsDir && op.sources.length > 1) {
    throw new InvalidInputError(
      `when copying several sources the destination must be a directory and end with a / (got ${op.dest})`,
    );
  }
  const entries = new Map<string, LayerEntry>();
  const inodes = new Map<string, string>();
  const add = (path: string, f: ContextFile): void => {
    const st = f.stats;
    const type = nodeType(st);
    const key = `${st.dev}:${st.ino}`;
    const first = type === "file" && st.nlink > 1 ? inodes.get(key) : undefined;
    const mode = chmod ?? st.mode & 0o7777;
    if (first !== undefined) {
      entries.set(path, { path, type: "hardlink", linkTarget: first, mode, ...owner, size: 0 });
      return;
    }
    if (type === "file" && st.nlink > 1) inodes.set(key, path);
    entries.set(path, {
      path,
      type,
      mode,
      ...owner,
      size: type === "file" ? st.size : 0,
      ...(type === "symlink" ? { linkTarget: ctx.readlink(f.path)! } : {}),
      ...(type === "file" ? { content: join(ctx.root, f.path) } : {}),
    });
  };

  for (const src of sources) {
    const files = ctx.walk(src, op.exclude);
    const top = files[0];
    if (top === undefined) continue; // excluded as a whole
    if (top.stats.isDirectory()) {
      addParents(entries, tree, destResolved, owner, true);
      if (destResolved !== "") add(destResolved, top);
      for (const f of files.slice(1))
        add(childPath(destResolved, f.path.slice(src.length + (src === "" ? 0 : 1))), f);
    } else {
      const target = destIsDir || sources.length > 1 ? childPath(destResolved, basename(src)) : destResolved;
      addParents(entries, tree, target, owner, false);
      add(target, top);
    }
  }
  return [...entries.values()].sort((a, b) => compareBytes(a.path, b.path));
}

/** Adds the directories above `path` that the image lacks, owned by the copy's owner, mode 0755. */
function addParents(
  entries: Map<string, LayerEntry>,
  tree: ImageTree,
  path: string,
  owner: { uid: number; gid: number },
  inclusive: boolean,
): void {
  const parts = path.split("/").filter((p) => p !== "");
  const upto = inclusive ? parts.length : parts.length - 1;
  for (let i = 1; i <= upto; i++) {
    const p = parts.slice(0, i).join("/");
    if (tree.get(p) === undefined && !entries.has(p)) {
      entries.set(p, { path: p, type: "dir", mode: 0o755, ...owner, size: 0 });
    }
  }
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
