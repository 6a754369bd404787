import { closeSync, createReadStream, openSync, readSync } from "node:fs";
import { PassThrough, pipeline, Readable } from "node:stream";
import { buffer } from "node:stream/consumers";
import { createGunzip, createZstdDecompress } from "node:zlib";
import tar from "tar-stream";
import bunzip2 from "unbzip2-stream";
import xz from "xz-decompress";
import { InvalidInputError, LayerError } from "../errors.ts";
import type { LayerEntry } from "../oci/layer-entry.ts";
import { TAR_STREAM_TYPES } from "../oci/layer-entry.ts";

/**
 * One entry of a tar archive ADD unpacks, content in memory. `path` and `linkTarget` are as the archive
 * writes them: where they land is decided against the destination (see {@link pathInside}).
 */
export type ArchiveEntry = Omit<LayerEntry, "content" | "size" | "xattrs"> & { readonly content?: Buffer };

/**
 * An archive entry that would land outside the directory ADD unpacks it in: a name whose `..` climbs out,
 * a symlink pointing above it, a hardlink to a path outside it (Docker's breakoutError). Nothing of the
 * archive is written then.
 */
export class ArchiveBreakoutError extends InvalidInputError {
  override readonly code = "KILN_ERR_ARCHIVE_BREAKOUT";
  readonly archive: string;
  readonly entry: string;
  constructor(archive: string, entry: string, detail: string) {
    super(`${archive}: ${detail}`);
    this.archive = archive;
    this.entry = entry;
  }
}

type Compression = "gzip" | "bzip2" | "xz" | "zstd" | "none";

/** Docker's DetectCompression: the first bytes, never the file name. */
function compressionOf(head: Buffer): Compression {
  if (head[0] === 0x1f && head[1] === 0x8b && head[2] === 0x08) return "gzip";
  if (head.subarray(0, 3).toString("latin1") === "BZh") return "bzip2";
  if (head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return "xz";
  if (head.subarray(0, 4).equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))) return "zstd";
  return "none";
}

function decompressed(file: string, compression: Compression): Readable {
  const raw = createReadStream(file);
  switch (compression) {
    case "none":
      return raw;
    case "gzip":
      return raw.pipe(createGunzip());
    case "zstd":
      return raw.pipe(createZstdDecompress());
    case "xz":
      return Readable.fromWeb(new xz.XzReadableStream(Readable.toWeb(raw)) as never);
    case "bzip2": {
      // unbzip2-stream is a classic stream; a PassThrough gives it async iteration and error forwarding.
      const out = new PassThrough();
      pipeline(raw, bunzip2(), out, () => {});
      return out;
    }
  }
}

function readHead(file: string): Buffer {
  const fd = openSync(file, "r");
  try {
    const head = Buffer.alloc(512);
    const n = readSync(fd, head, 0, head.length, 0);
    return head.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

/**
 * The entries of `file` when it is a tar archive, plain or gzip/bzip2/xz/zstd-compressed, as Docker's ADD
 * decides it: by content (the compression's magic bytes, then a valid first tar header), never by name.
 * Undefined when it is not an archive; an archive that breaks after its first entry is a LayerError.
 */
export async function readArchive(file: string): Promise<ArchiveEntry[] | undefined> {
  const compression = compressionOf(readHead(file));
  const extract = tar.extract();
  const source = decompressed(file, compression);
  const entries: ArchiveEntry[] = [];
  let seen = 0;
  const feeding = new Promise<void>((resolve, reject) => {
    pipeline(source, extract, (err) => (err ? reject(err) : resolve()));
  });
  feeding.catch(() => {});
  try {
    for await (const entry of extract) {
      seen++;
      const h = entry.header;
      const type = TAR_STREAM_TYPES[h.type ?? "file"];
      const content = type === "file" ? await buffer(entry) : undefined;
      if (content === undefined) entry.resume();
      if (type === undefined) continue;
      entries.push({
        path: h.name,
        type,
        mode: (h.mode ?? 0) & 0o7777,
        uid: h.uid ?? 0,
        gid: h.gid ?? 0,
        ...(content !== undefined ? { content } : {}),
        ...(type === "symlink" || type === "hardlink" ? { linkTarget: h.linkname ?? "" } : {}),
        ...(type === "char" || type === "block"
          ? { devMajor: h.devmajor ?? 0, devMinor: h.devminor ?? 0 }
          : {}),
      });
    }
    await feeding;
  } catch (err) {
    if (seen === 0) return undefined;
    throw new LayerError(`${file}: broken archive after ${seen} entries: ${(err as Error).message}`, {
      cause: err,
    });
  }
  // Go's tar reader says io.EOF for an archive without entries, and Docker then copies the file as it is.
  return seen === 0 ? undefined : entries;
}

/**
 * A name from an archive made relative to the directory it is unpacked in, as Docker's Unpack cleans it
 * (Go's filepath.Clean): `./a//b/` → `a/b`, and an absolute name stays inside (`/../a` → `a`). Undefined
 * when a relative name's `..` climbs above the directory: Docker refuses that entry as a breakout.
 */
export function pathInside(name: string): string | undefined {
  const rooted = name.startsWith("/");
  const out: string[] = [];
  for (const c of name.split("/")) {
    if (c === "" || c === ".") continue;
    if (c !== "..") out.push(c);
    else if (out.length > 0) out.pop();
    else if (!rooted) return undefined;
  }
  return out.join("/");
}
