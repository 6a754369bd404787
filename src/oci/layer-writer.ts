import { createHash, type Hash } from "node:crypto";
import fs from "node:fs";
import type { Readable } from "node:stream";
import { promisify } from "node:util";
import { Worker } from "node:worker_threads";
import { LayerError } from "../errors.ts";
import { type ChunkCompressor, chunkCompressor, MAX_IN_FLIGHT } from "./compress.ts";
import type { Digest } from "./digest.ts";
import { digestOf } from "./digest.ts";
import type { Layer } from "./image.ts";
import { type LayerEntry, normalizeEntries } from "./layer-entry.ts";
import { type Compression, layerMediaType } from "./media-type.ts";
import type { TarDigestReply, TarDigestRequest } from "./tar-digest-worker.ts";
import {
  BLOCK,
  END_OF_ARCHIVE,
  encodeTarHeader,
  padding,
  type TarHeader,
  TarType,
  writeUstarHeader,
} from "./tar-header.ts";

export interface WriteLayerOptions {
  /** Where the layer blob is written (created or truncated). */
  readonly file: string;
  /** Seconds since the epoch, for every entry: SOURCE_DATE_EPOCH or the spec's time. */
  readonly mtime: number;
  readonly compression?: Compression;
  /** Add 0755 root-owned directory entries for parents that have none. */
  readonly addParents?: boolean;
}

/** A layer blob on disk. `open()` re-reads the file. */
export interface LayerFile extends Layer {
  readonly file: string;
  readonly compression: Compression;
  /** Length of the uncompressed tar, whose sha256 is `diffId`. */
  readonly uncompressedSize: number;
}

const MAX_MTIME = 0o77777777777;

/**
 * Writes entries as a deterministic tar (see normalizeEntries for the order), compressed, to a file, and
 * computes the compressed digest and size and the diffID and uncompressed size in the same pass.
 */
export async function writeLayer(
  entries: Iterable<LayerEntry> | AsyncIterable<LayerEntry>,
  options: WriteLayerOptions,
): Promise<LayerFile> {
  const compression = options.compression ?? "gzip";
  if (!Number.isInteger(options.mtime) || options.mtime < 0 || options.mtime > MAX_MTIME) {
    throw new LayerError(`layer mtime ${options.mtime} is not a whole number of seconds in tar's range`);
  }
  const all: LayerEntry[] = [];
  for await (const e of entries) all.push(e);
  const sorted = normalizeEntries(all, { addParents: options.addParents ?? false });

  const fd = fs.openSync(options.file, "w");
  const out = new CompressedOutput(fd, compression);
  let written = false;
  try {
    const tar = new TarChunks(out);
    for (const e of sorted) await writeEntry(tar, e, options.mtime);
    await tar.write(END_OF_ARCHIVE);
    const sizes = await out.finish(tar.takeRest());
    written = true;
    const file = options.file;
    return {
      file,
      compression,
      mediaType: layerMediaType(compression),
      digest: sizes.digest,
      size: sizes.size,
      diffId: sizes.diffId,
      uncompressedSize: sizes.uncompressedSize,
      open: () => fs.createReadStream(file),
    };
  } finally {
    await out.settle();
    fs.closeSync(fd);
    if (!written) fs.rmSync(options.file, { force: true }); // no half layer left to be mistaken for one
  }
}

const TYPEFLAG: Record<LayerEntry["type"], TarType> = {
  file: TarType.file,
  dir: TarType.dir,
  symlink: TarType.symlink,
  hardlink: TarType.hardlink,
  char: TarType.char,
  block: TarType.block,
  fifo: TarType.fifo,
};

async function writeEntry(tar: TarChunks, e: LayerEntry, mtime: number): Promise<void> {
  const size = e.type === "file" ? (e.size ?? 0) : 0;
  await tar.header({
    name: e.type === "dir" ? `${e.path}/` : e.path,
    type: TYPEFLAG[e.type],
    mode: e.mode,
    uid: e.uid,
    gid: e.gid,
    size,
    mtime,
    ...(e.type === "symlink" || e.type === "hardlink" ? { linkname: e.linkTarget ?? "" } : {}),
    ...(e.type === "char" || e.type === "block"
      ? { devMajor: e.devMajor ?? 0, devMinor: e.devMinor ?? 0 }
      : {}),
    ...(e.xattrs ? { xattrs: sortedXattrs(e.xattrs) } : {}),
  });
  if (size === 0) return;
  if (e.content === undefined) throw new LayerError(`layer entry ${JSON.stringify(e.path)} has no content`);
  if (typeof e.content === "string") await tar.copyFile(e.content, size, e.path);
  else await tar.copyStream(e.content(), size, e.path);
  await tar.zeros(padding(size));
}

function sortedXattrs(x: Readonly<Record<string, Buffer | string>>): Array<[string, Buffer]> {
  return Object.keys(x)
    .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
    .map((k) => [k, Buffer.from(x[k]!)]);
}

/**
 * Gathers the tar into chunks of exactly the compressor's chunk size. File content is read straight into
 * the chunk with synchronous reads: no threadpool round trip per file, which is what makes many small files
 * fast, while the threadpool compresses earlier chunks.
 */
class TarChunks {
  readonly #out: CompressedOutput;
  #buf: Buffer;
  #pos = 0;

  constructor(out: CompressedOutput) {
    this.#out = out;
    this.#buf = out.take();
  }

  async write(bytes: Uint8Array): Promise<void> {
    let off = 0;
    while (off < bytes.length) {
      const n = Math.min(bytes.length - off, this.#buf.length - this.#pos);
      this.#buf.set(bytes.subarray(off, off + n), this.#pos);
      this.#pos += n;
      off += n;
      if (this.#pos === this.#buf.length) await this.#emit();
    }
  }

  /** Headers go straight into the chunk; the position is always on a block boundary with a block free. */
  async header(h: TarHeader): Promise<void> {
    if (!writeUstarHeader(h, this.#buf, this.#pos)) return this.write(encodeTarHeader(h));
    this.#pos += BLOCK;
    if (this.#pos === this.#buf.length) await this.#emit();
  }

  /** Padding, always less than a block, so it never crosses a chunk boundary. */
  async zeros(n: number): Promise<void> {
    this.#buf.fill(0, this.#pos, this.#pos + n);
    this.#pos += n;
    if (this.#pos === this.#buf.length) await this.#emit();
  }

  /** Reads exactly `size` bytes; a file that grew since it was measured is cut there, as GNU tar does. */
  async copyFile(file: string, size: number, entry: string): Promise<void> {
    const fd = fs.openSync(file, "r");
    try {
      let left = size;
      while (left > 0) {
        const n = fs.readSync(fd, this.#buf, this.#pos, Math.min(left, this.#buf.length - this.#pos), null);
        if (n === 0) throw changedWhileReading(entry, size, size - left);
        this.#pos += n;
        left -= n;
        if (this.#pos === this.#buf.length) await this.#emit();
      }
    } finally {
      fs.closeSync(fd);
    }
  }

  async copyStream(stream: Readable, size: number, entry: string): Promise<void> {
    let seen = 0;
    for await (const chunk of stream) {
      const bytes = typeof chunk === "string" ? Buffer.from(chunk) : (chunk as Uint8Array);
      seen += bytes.length;
      if (seen > size) break;
      await this.write(bytes);
    }
    stream.destroy();
    if (seen !== size) throw changedWhileReading(entry, size, seen);
  }

  /** The bytes of the last, partial chunk. */
  takeRest(): Buffer {
    return this.#buf.subarray(0, this.#pos);
  }

  async #emit(): Promise<void> {
    const full = this.#buf;
    this.#buf = this.#out.take();
    this.#pos = 0;
    await this.#out.push(full);
  }
}

function changedWhileReading(entry: string, size: number, seen: number): LayerError {
  const found = seen > size ? "more" : String(seen);
  return new LayerError(
    `layer entry ${JSON.stringify(entry)}: expected ${size} bytes of content, found ${found}`,
  );
}

interface Sizes {
  readonly digest: Digest;
  readonly size: number;
  readonly diffId: Digest;
  readonly uncompressedSize: number;
}

interface Chunk {
  readonly input: Buffer;
  /** Settles when the tar digest has taken the chunk in. */
  readonly hashed: Promise<void>;
}

/**
 * Hashes the tar on a worker thread, compresses it chunk by chunk with up to MAX_IN_FLIGHT chunks at once,
 * and hashes and writes the compressed bytes in order; writes run on the threadpool too. The newest chunk
 * is held back until the next arrives, because only the compressor's last call may finish the stream.
 * Chunk buffers live in shared memory, so the worker reads them where they are, and are reused once
 * hashed and written: fresh 1–4 MiB buffers cost page faults and garbage collections.
 */
class CompressedOutput {
  readonly #fd: number;
  readonly #c: ChunkCompressor;
  readonly #tar: TarDigest;
  /** undefined when the blob is the tar itself: its digest is the diffID, hashed once. */
  readonly #digest: Hash | undefined;
  readonly #pending: Array<Chunk & { readonly output: Promise<Buffer> }> = [];
  readonly #free: Buffer[] = [];
  #held: Chunk | undefined;
  #writes: Promise<void> = Promise.resolve();
  #queuedWrites = 0;
  #uncompressed = 0;
  #compressed = 0;

  constructor(fd: number, compression: Compression) {
    this.#fd = fd;
    this.#c = chunkCompressor(compression);
    this.#tar = new TarDigest(this.#c.needsCrc32);
    this.#digest = compression === "none" ? undefined : createHash("sha256");
    this.#emit(this.#c.header);
  }

  /** An empty chunk buffer. */
  take(): Buffer {
    return this.#free.pop() ?? Buffer.from(new SharedArrayBuffer(this.#c.chunkSize));
  }

  async push(input: Buffer): Promise<void> {
    const hashed = this.#tar.update(input);
    this.#uncompressed += input.length;
    if (this.#held !== undefined) await this.#start(this.#held, false);
    this.#held = { input, hashed };
  }

  async finish(rest: Buffer): Promise<Sizes> {
    if (rest.length > 0) await this.push(rest);
    await this.#start(this.#held ?? { input: Buffer.alloc(0), hashed: Promise.resolve() }, true);
    while (this.#pending.length > 0) await this.#writeOldest();
    const tar = await this.#tar.end();
    this.#emit(this.#c.trailer(tar.crc32, this.#uncompressed));
    await this.#writes;
    return {
      digest: this.#digest ? digestOf(this.#digest) : tar.diffId,
      size: this.#compressed,
      diffId: tar.diffId,
      uncompressedSize: this.#uncompressed,
    };
  }

  /** Waits for the work under way, failed or not, so the file can be closed, and frees the compressor. */
  async settle(): Promise<void> {
    await Promise.allSettled(this.#pending.flatMap((p) => [p.output, p.hashed]));
    await this.#held?.hashed.catch(() => {});
    await this.#writes.catch(() => {});
    this.#c.close();
    this.#tar.release();
  }

  async #start(chunk: Chunk, last: boolean): Promise<void> {
    const output = this.#c.compress(chunk.input, last);
    output.catch(() => {}); // awaited in order by #writeOldest; this only keeps a later failure from going unhandled
    this.#pending.push({ ...chunk, output });
    while (this.#pending.length >= MAX_IN_FLIGHT) await this.#writeOldest();
  }

  async #writeOldest(): Promise<void> {
    const { input, hashed, output } = this.#pending.shift()!;
    const [bytes] = await Promise.all([output, hashed]);
    const reuse = input.length === this.#c.chunkSize && input.byteOffset === 0;
    this.#emit(bytes, reuse ? () => this.#free.push(input) : undefined);
    if (this.#queuedWrites > MAX_IN_FLIGHT) await this.#writes;
  }

  #emit(bytes: Buffer, written?: () => void): void {
    this.#digest?.update(bytes);
    this.#compressed += bytes.length;
    this.#queuedWrites++;
    this.#writes = this.#writes.then(async () => {
      let off = 0;
      while (off < bytes.length) off += (await write(this.#fd, bytes, off)).bytesWritten;
      this.#queuedWrites--;
      written?.();
    });
    this.#writes.catch(() => {}); // finish() awaits it and throws
  }
}

/**
 * The tar's sha256 (and CRC-32 for gzip), taken by a worker thread. Workers are kept for the next layer,
 * unreferenced while idle so they never hold the process open.
 */
class TarDigest {
  static readonly #idle: Worker[] = [];
  readonly #worker: Worker;
  readonly #waiting: Array<{ resolve: (r: TarDigestReply) => void; reject: (err: Error) => void }> = [];
  #failure: Error | undefined;

  constructor(crc32: boolean) {
    this.#worker = TarDigest.#idle.pop() ?? TarDigest.#spawn();
    this.#worker.ref();
    this.#worker.on("message", this.#onReply);
    this.#worker.on("error", this.#onFailure);
    this.#worker.on("exit", this.#onExit);
    this.#post({ op: "start", crc32 });
  }

  /** Resolves once the worker has hashed the chunk; the chunk must not change until then. */
  async update(bytes: Buffer): Promise<void> {
    await this.#ask({ op: "update", bytes });
  }

  async end(): Promise<{ readonly diffId: Digest; readonly crc32: number }> {
    const r = await this.#ask({ op: "end" });
    if (r.op !== "ended") throw new LayerError(`the tar digest worker answered ${r.op} to end`);
    return { diffId: `sha256:${r.sha256}` as Digest, crc32: r.crc32 };
  }

  /** Keeps the worker for the next layer when it has answered everything; a worker that failed or still owes answers ends. */
  release(): void {
    this.#worker.off("message", this.#onReply);
    this.#worker.off("error", this.#onFailure);
    this.#worker.off("exit", this.#onExit);
    if (this.#failure === undefined && this.#waiting.length === 0) {
      this.#worker.unref();
      TarDigest.#idle.push(this.#worker);
    } else {
      void this.#worker.terminate();
    }
  }

  static #spawn(): Worker {
    const w = new Worker(new URL("./tar-digest-worker.ts", import.meta.url));
    w.on("error", () => {}); // the layer using the worker hears it through its own listener
    w.on("exit", () => {
      const i = TarDigest.#idle.indexOf(w);
      if (i !== -1) TarDigest.#idle.splice(i, 1);
    });
    return w;
  }

  #ask(m: TarDigestRequest): Promise<TarDigestReply> {
    if (this.#failure) return Promise.reject(this.#failure);
    const reply = new Promise<TarDigestReply>((resolve, reject) => this.#waiting.push({ resolve, reject }));
    this.#post(m);
    return reply;
  }

  #post(m: TarDigestRequest): void {
    this.#worker.postMessage(m);
  }

  readonly #onReply = (r: TarDigestReply): void => {
    this.#waiting.shift()?.resolve(r);
  };

  readonly #onFailure = (err: Error): void => {
    this.#failure ??= new LayerError("hashing the layer's tar failed", { cause: err });
    for (const w of this.#waiting.splice(0)) w.reject(this.#failure);
  };

  readonly #onExit = (code: number): void => {
    this.#onFailure(new Error(`the tar digest worker exited with code ${code}`));
  };
}

const write = promisify(fs.write) as (
  fd: number,
  b: Buffer,
  offset: number,
) => Promise<{ bytesWritten: number }>;
