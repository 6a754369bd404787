import { InvalidInputError } from "../errors.ts";
import type { LayerEntry } from "../oci/layer-entry.ts";
import { layerPath, resolveInRoot } from "../oci/root-path.ts";
import { parseWhiteout } from "../oci/whiteout.ts";

/** What kiln knows of one path of an image without unpacking it: the metadata of its tar entry. */
export type TreeNode = Pick<LayerEntry, "type" | "mode" | "uid" | "gid" | "size" | "linkTarget">;

/** Files whose content kiln keeps while indexing layers: they resolve user and group names. */
const KEPT_FILES = new Set(["etc/passwd", "etc/group"]);

/**
 * An image's merged file tree as metadata: the base layers applied in order (whiteouts and opaque
 * directories included), then what the build adds. File-only builds use it to resolve destinations
 * through the image's own symlinks, to know whether a destination is a directory, and to read users.
 */
export class ImageTree {
  readonly #nodes = new Map<string, TreeNode>([["", { type: "dir", mode: 0o755, uid: 0, gid: 0, size: 0 }]]);
  readonly #content = new Map<string, string>();

  get(path: string): TreeNode | undefined {
    return this.#nodes.get(layerPath(path));
  }

  readonly readlink = (rel: string): string | undefined => {
    const n = this.#nodes.get(rel);
    return n?.type === "symlink" ? n.linkTarget : undefined;
  };

  /** Resolves a path as a process inside the image would, symlinks included (absolute targets start at the image root). */
  resolve(path: string, followFinal = true): string {
    return resolveInRoot(path, this.readlink, "scoped", followFinal, "the image");
  }

  /** Applies one layer entry; whiteout entries remove what lower layers had. */
  apply(path: string, node: TreeNode, content?: string): void {
    const p = layerPath(path);
    const wh = parseWhiteout(p);
    if (wh?.kind === "opaque") {
      this.#removeBelow(wh.dir);
      return;
    }
    if (wh?.kind === "whiteout") {
      this.remove(wh.target);
      return;
    }
    const prev = this.#nodes.get(p);
    if (prev?.type === "dir" && node.type !== "dir") this.#removeBelow(p);
    this.#nodes.set(p, node);
    if (KEPT_FILES.has(p)) {
      if (content !== undefined) this.#content.set(p, content);
      else this.#content.delete(p);
    }
  }

  remove(path: string): void {
    const p = layerPath(path);
    this.#nodes.delete(p);
    this.#content.delete(p);
    this.#removeBelow(p);
  }

  /** Paths under a directory, sorted. */
  children(dir: string): string[] {
    const prefix = dir === "" ? "" : `${dir}/`;
    return [...this.#nodes.keys()].filter((k) => k !== dir && k.startsWith(prefix)).sort();
  }

  /** Whether an entry at `path` needs its content to be kept (so the caller reads it while indexing). */
  static keepsContent(path: string): boolean {
    return KEPT_FILES.has(layerPath(path));
  }

  /**
   * Resolves `--chown` / `USER` words to numeric ids through the image's /etc/passwd and /etc/group, as
   * BuildKit does: a user name without a group takes the user's primary group, a number alone means uid:uid.
   */
  resolveOwner(user: string, group?: string): { uid: number; gid: number } {
    let uid: number;
    let primary: number;
    if (/^\d+$/.test(user)) {
      uid = numericId(user, "user");
      primary = uid;
    } else {
      const fields = this.#lookup("etc/passwd", user, "user");
      uid = Number(fields[2]);
      primary = /^\d+$/.test(fields[3] ?? "") ? Number(fields[3]) : uid;
    }
    if (group === undefined) return { uid, gid: primary };
    const gid = /^\d+$/.test(group)
      ? numericId(group, "group")
      : Number(this.#lookup("etc/group", group, "group")[2]);
    return { uid, gid };
  }

  #lookup(file: string, name: string, what: string): string[] {
    const text = this.#content.get(file);
    if (text === undefined)
      throw new InvalidInputError(`unable to find ${what} ${name}: no /${file} in the image`);
    for (const line of text.split("\n")) {
      const fields = line.split(":");
      if (fields[0] === name && fields[2] !== undefined && /^\d+$/.test(fields[2])) return fields;
    }
    throw new InvalidInputError(`unable to find ${what} ${name} in /${file} of the image`);
  }

  #removeBelow(dir: string): void {
    for (const k of this.children(dir)) {
      this.#nodes.delete(k);
      this.#content.delete(k);
    }
  }
}

/** A numeric uid or gid as the kernel takes it: 0 … 2^32-2 (2^32-1 is "no id"). */
function numericId(s: string, what: string): number {
  const n = Number(s);
  if (!Number.isSafeInteger(n) || n > 0xfffffffe) {
    throw new InvalidInputError(`${what} id ${s} is out of range (0 to 4294967294)`);
  }
  return n;
}
