import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import tar, { type Header } from "tar-stream";
import { KilnError, LayerError, PathEscapeError } from "../errors.ts";
import { decompress } from "./decompress.ts";
import { resolveInRoot } from "./root-path.ts";
import { parseWhiteout } from "./whiteout.ts";

export interface ApplyLayerOptions {
  /** Give entries their uids and gids (needs root). Defaults to whether the process runs as root. */
  readonly sameOwner?: boolean;
}

const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;

/**
 * Unpacks a layer blob (gzip, zstd or plain tar, told apart by magic bytes) onto `root`, as a container
 * runtime applies a layer over the ones below it: whiteouts delete, opaque markers empty a directory of
 * what lower layers put there, no `.wh.` file lands in the tree, hardlinks are made again, modes, owners and
 * mtimes are set (directories' at the end, once their children are written).
 *
 * An entry that is absolute, has a `..` component, or whose parent resolves through a symlink climbing
 * above the root is refused with a PathEscapeError naming the entry (absolute symlink targets resolve
 * inside the root, as in the image itself);
 * nothing outside `root` is touched. Node cannot create device nodes or FIFOs, so `mknod` makes them; it
 * has no xattr API, so SCHILY.xattr records are not applied.
 */
export async function applyLayer(
  blob: AsyncIterable<Buffer>,
  root: string,
  options: ApplyLayerOptions = {},
): Promise<void> {
  const run = new Application(path.resolve(root), options.sameOwner ?? process.getuid?.() === 0);
  const extract = tar.extract();
  const feeding = pipeline(Readable.from(decompress(blob)), extract);
  feeding.catch(() => {}); // a failure also destroys `extract`, and so surfaces in the loop below
  try {
    for await (const entry of extract) {
      await run.entry(entry.header as TarEntryHeader, entry as AsyncIterable<Buffer>);
      entry.resume();
    }
    await feeding;
  } catch (err) {
    if (err instanceof KilnError) throw err;
    throw new LayerError(`applying a layer to ${root}: ${(err as Error).message}`, { cause: err });
  }
  run.finish();
}

/** tar-stream hands an entry's PAX records on as `pax`, typed `unknown`. */
type TarEntryHeader = Omit<Header, "pax"> & { readonly pax?: Readonly<Record<string, string>> | null };

interface DeferredDir {
  readonly abs: string;
  readonly mode: number;
  readonly mtime: Date;
}

class Application {
  readonly #root: string;
  readonly #sameOwner: boolean;
  /** Paths (relative to the root) this layer wrote; an opaque marker keeps them. */
  readonly #unpacked = new Set<string>();
  readonly #dirs: DeferredDir[] = [];

  constructor(root: string, sameOwner: boolean) {
    this.#root = root;
    this.#sameOwner = sameOwner;
  }

  async entry(h: TarEntryHeader, content: AsyncIterable<Buffer>): Promise<void> {
    const name = entryName(h.name, this.#root);
    if (name === "") return;
    const wh = parseWhiteout(name);
    if (wh?.kind === "opaque") {
      const dir = this.#resolve(wh.dir, h.name);
      const abs = this.#abs(dir);
      if (lstatOrUndefined(abs)?.isDirectory()) this.#removeLower(abs, dir);
      return;
    }
    if (wh?.kind === "whiteout") {
      const base = wh.target.slice(wh.target.lastIndexOf("/") + 1);
      if (base === "" || base === "." || base === "..") {
        throw new PathEscapeError(h.name, this.#root, "a whiteout must name an entry of its directory");
      }
      fs.rmSync(this.#abs(this.#resolve(wh.target, h.name)), { recursive: true, force: true });
      return;
    }

    const rel = this.#resolve(name, h.name);
    if (rel === "") return;
    const abs = this.#abs(rel);
    // As containerd does: a parent the layers never created is made 0755 (its components are resolved, so
    // this only creates real directories inside the root).
    fs.mkdirSync(path.dirname(abs), { recursive: true, mode: 0o755 });
    const existing = lstatOrUndefined(abs);
    if (existing !== undefined && !(existing.isDirectory() && h.type === "directory")) {
      fs.rmSync(abs, { recursive: true, force: true });
    }
    this.#unpacked.add(rel);
    const mode = (h.mode ?? 0) & 0o7777;
    const mtime = h.pax?.mtime ? new Date(Number(h.pax.mtime) * 1000) : (h.mtime ?? new Date(0));
    switch (h.type) {
      case "file":
      case "contiguous-file":
        await writeFile(abs, content);
        break;
      case "directory":
        if (existing?.isDirectory() !== true) fs.mkdirSync(abs, { mode: 0o700 });
        break;
      case "symlink":
        fs.symlinkSync(h.linkname ?? "", abs);
        break;
      case "link":
        fs.linkSync(this.#abs(this.#resolve(h.linkname ?? "", h.name)), abs);
        return; // a hardlink shares the inode, and with it the attributes, of its target
      case "character-device":
      case "block-device":
        mknod(abs, h.type === "block-device" ? "b" : "c", h.devmajor ?? 0, h.devminor ?? 0);
        break;
      case "fifo":
        mknod(abs, "p");
        break;
      default:
        throw new LayerError(`layer entry ${JSON.stringify(h.name)} has the unsupported type ${h.type}`);
    }
    if (this.#sameOwner) fs.lchownSync(abs, id(h.pax?.uid, h.uid), id(h.pax?.gid, h.gid));
    if (h.type === "symlink") fs.lutimesSync(abs, mtime, mtime);
    else if (h.type === "directory") this.#dirs.push({ abs, mode, mtime });
    else {
      fs.chmodSync(abs, mode); // after chown, which clears setuid and setgid
      fs.utimesSync(abs, mtime, mtime);
    }
  }

  /** Directory modes and mtimes last: writing children changes a directory's mtime, and 0500 would stop them. */
  finish(): void {
    for (const d of this.#dirs.reverse()) {
      fs.chmodSync(d.abs, d.mode);
      fs.utimesSync(d.abs, d.mtime, d.mtime);
    }
  }

  /** Resolves a layer path inside the root; its last component is not followed. */
  #resolve(p: string, entry: string): string {
    const readlink = (rel: string): string | undefined => {
      try {
        return fs.readlinkSync(this.#abs(rel));
      } catch {
        return undefined; // not a symlink, or not there yet
      }
    };
    try {
      return resolveInRoot(p, readlink, "rooted", false, this.#root);
    } catch (err) {
      if (err instanceof PathEscapeError && err.path !== entry) {
        throw new PathEscapeError(entry, this.#root, `${JSON.stringify(p)} resolves out of it`, {
          cause: err,
        });
      }
      throw err;
    }
  }

  #abs(rel: string): string {
    return rel === "" ? this.#root : path.join(this.#root, rel);
  }

  /** Removes what lower layers left below `dir`, keeping what this layer wrote (containerd's rule). */
  #removeLower(abs: string, rel: string): void {
    for (const name of fs.readdirSync(abs)) {
      const childRel = rel === "" ? name : `${rel}/${name}`;
      const childAbs = path.join(abs, name);
      if (!this.#unpacked.has(childRel)) fs.rmSync(childAbs, { recursive: true, force: true });
      else if (fs.lstatSync(childAbs).isDirectory()) this.#removeLower(childAbs, childRel);
    }
  }
}

/** The entry's path without a leading `./` or trailing `/`; absolute paths and `..` are refused. */
function entryName(name: string, root: string): string {
  if (name.startsWith("/"))
    throw new PathEscapeError(name, root, "absolute paths are not allowed in a layer");
  const parts = name.split("/").filter((c) => c !== "" && c !== ".");
  if (parts.includes("..")) throw new PathEscapeError(name, root, "'..' is not allowed in a layer path");
  return parts.join("/");
}

async function writeFile(abs: string, content: AsyncIterable<Buffer>): Promise<void> {
  const fd = fs.openSync(abs, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
  try {
    for await (const chunk of content) {
      let off = 0;
      while (off < chunk.length) off += fs.writeSync(fd, chunk, off);
    }
  } finally {
    fs.closeSync(fd);
  }
}

function mknod(abs: string, kind: "b" | "c" | "p", major?: number, minor?: number): void {
  const args = kind === "p" ? [abs, "p"] : [abs, kind, String(major), String(minor)];
  execFileSync("mknod", args, { stdio: ["ignore", "ignore", "pipe"] });
}

function id(pax: string | undefined, header: number | undefined): number {
  return pax !== undefined ? Number(pax) : (header ?? 0);
}

function lstatOrUndefined(abs: string): fs.Stats | undefined {
  return fs.lstatSync(abs, { throwIfNoEntry: false });
}
