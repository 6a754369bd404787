import { createHash, type Hash } from "node:crypto";
import fs from "node:fs";
import { availableParallelism } from "node:os";
import type { Readable } from "node:stream";
import { promisify } from "node:util";
import { Worker } from "node:worker_threads";
import { LayerError } from "../errors.ts";
import { type ChunkCompressor, chunkCompressor, chunksInFlight } from "./compress.ts";
import type { Digest } from "./digest.ts";
import { digestOf } from "./digest.ts";
import type { Layer } from "./image.ts";
import { type LayerEntry, normalizeEntries } from "./layer-entry.ts";
import {
  type ChunkFill,
  FillOp,
  LAYER_WORKER,
  type LayerWorkerReply,
  type LayerWorkerRequest,
  layerWorkerHandler,
} from "./layer-worker.ts";
import { type Compression, layerMediaType } from "./media-type.ts";
import {
  BLOCK,
  END_OF_ARCHIVE,
  encodeTarHeader,
  fitsUstar,
  padding,
  type TarHeader,
  TarType,
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
  const all = Array.isArray(entries) ? (entries as readonly LayerEntry[]) : await collect(entries);
  const sorted = normalizeEntries(all, { addParents: options.addParents ?? false });

  const fd = fs.openSync(options.file, "w");
  const out = new CompressedOutput(fd, compression, tarSizeAtLeast(sorted) >= PARALLEL_FROM);
  let written = false;
  try {
    const tar = new TarChunks(out);
    for (const e of sorted) {
      const more = writeEntry(tar, e, options.mtime);
      if (more !== undefined) await more;
    }
    await tar.write(END_OF_ARCHIVE);
    const sizes = await out.finish(...tar.takeRest());
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

/** An array is taken as it is: awaiting each of tens of thousands of entries costs more than writing them. */
async function collect(entries: Iterable<LayerEntry> | AsyncIterable<LayerEntry>): Promise<LayerEntry[]> {
  const all: LayerEntry[] = [];
  for await (const e of entries) all.push(e);
  return all;
}

/**
 * From this many bytes of tar on, files are read and the tar hashed on worker threads; below it the calling
 * thread does both, as starting workers (tens of milliseconds, once per process) would cost more.
 */
const PARALLEL_FROM = 8 << 20;

/** Content plus one header block per entry: PAX records only add to it. */
function tarSizeAtLeast(entries: readonly LayerEntry[]): number {
  let size = 0;
  for (const e of entries) size += BLOCK + (e.type === "file" ? (e.size ?? 0) : 0);
  return size;
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

/**
 * Returns a promise only when the entry filled a chunk and may have to wait for room; nearly every small
 * entry is laid out without one, as an await per entry (and per field) cost more than the entry itself.
 */
function writeEntry(tar: TarChunks, e: LayerEntry, mtime: number): Promise<void> | undefined {
  const size = e.type === "file" ? (e.size ?? 0) : 0;
  const linked = e.type === "symlink" || e.type === "hardlink";
  const device = e.type === "char" || e.type === "block";
  // One literal of one shape for every entry: no spreads in a loop over tens of thousands.
  const header = tar.header({
    name: e.type === "dir" ? `${e.path}/` : e.path,
    type: TYPEFLAG[e.type],
    mode: e.mode,
    uid: e.uid,
    gid: e.gid,
    size,
    mtime,
    linkname: linked ? (e.linkTarget ?? "") : undefined,
    devMajor: device ? (e.devMajor ?? 0) : undefined,
    devMinor: device ? (e.devMinor ?? 0) : undefined,
    xattrs: e.xattrs ? sortedXattrs(e.xattrs) : undefined,
  });
  if (header !== undefined) return header.then(() => writeContent(tar, e, size));
  return writeContent(tar, e, size);
}

function writeContent(tar: TarChunks, e: LayerEntry, size: number): Promise<void> | undefined {
  if (size === 0) return undefined;
  if (e.content === undefined) throw new LayerError(`layer entry ${JSON.stringify(e.path)} has no content`);
  const content =
    typeof e.content === "string"
      ? tar.copyFile(e.content, size, e.path)
      : tar.copyStream(e.content(), size, e.path);
  if (content !== undefined) return content.then(() => tar.zeros(padding(size)));
  return tar.zeros(padding(size));
}

function sortedXattrs(x: Readonly<Record<string, Buffer | string>>): Array<[string, Buffer]> {
  return Object.keys(x)
    .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
    .map((k) => [k, Buffer.from(x[k]!)]);
}

/**
 * Lays the tar out in chunks of exactly the compressor's chunk size. Headers, file content and padding are
 * only recorded, as the chunk's fill, for a worker to write and read, so the main thread never touches a
 * file or a header's bytes while workers and the threadpool fill, hash and compress the chunks before it.
 * Bytes it has in hand (streamed content, PAX headers, the end of the archive) it copies in itself.
 */
class TarChunks {
  readonly #out: CompressedOutput;
  #buf: Buffer;
  #pos = 0;
  #fill = new PendingFill();

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

  /** A ustar header is one block, and the position is always on a block boundary with a block free. */
  header(h: TarHeader): Promise<void> | undefined {
    if (!fitsUstar(h) || h.name.includes("\0") || h.linkname?.includes("\0"))
      return this.write(encodeTarHeader(h));
    this.#fill.header(h, this.#pos);
    this.#pos += BLOCK;
    return this.#pos === this.#buf.length ? this.#emit() : undefined;
  }

  /** Padding, always less than a block, so it never crosses a chunk boundary. */
  zeros(n: number): Promise<void> | undefined {
    if (n === 0) return undefined;
    this.#fill.zeros(this.#pos, n);
    this.#pos += n;
    return this.#pos === this.#buf.length ? this.#emit() : undefined;
  }

  /** Lays out `size` bytes of the file, split where chunks end. */
  copyFile(file: string, size: number, entry: string): Promise<void> | undefined {
    if (file.includes("\0"))
      throw new LayerError(`layer entry ${JSON.stringify(entry)}: its file's path holds a NUL`);
    if (this.#pos + size < this.#buf.length) {
      this.#fill.file(file, entry, 0, size, this.#pos, size);
      this.#pos += size;
      return undefined;
    }
    return this.#copyAcross(file, size, entry);
  }

  async #copyAcross(file: string, size: number, entry: string): Promise<void> {
    for (let done = 0; done < size; ) {
      const n = Math.min(size - done, this.#buf.length - this.#pos);
      this.#fill.file(file, entry, done, n, this.#pos, size);
      this.#pos += n;
      done += n;
      if (this.#pos === this.#buf.length) await this.#emit();
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

  /** The last, partial chunk and its fill. */
  takeRest(): [Buffer, PendingFill] {
    return [this.#buf.subarray(0, this.#pos), this.#fill];
  }

  async #emit(): Promise<void> {
    const full = this.#buf;
    const fill = this.#fill;
    this.#buf = this.#out.take();
    this.#pos = 0;
    this.#fill = new PendingFill();
    await this.#out.push(full, fill);
  }
}

/** The fill of one chunk, gathered as the chunk is laid out (see ChunkFill). */
class PendingFill {
  readonly #strings: string[] = [];
  readonly #ops: number[] = [];
  /** Per FILE op, its entry's path and whole size, for the error when the file is short. */
  readonly #files: Array<readonly [entry: string, size: number]> = [];

  get empty(): boolean {
    return this.#ops.length === 0;
  }

  header(h: TarHeader, at: number): void {
    this.#strings.push(h.name, h.linkname ?? "");
    this.#ops.push(FillOp.header, at, h.mode, h.uid, h.gid, h.size, h.mtime, h.type.charCodeAt(0));
    this.#ops.push(h.devMajor ?? 0, h.devMinor ?? 0);
  }

  file(path: string, entry: string, fileOffset: number, length: number, at: number, size: number): void {
    this.#strings.push(path);
    this.#ops.push(FillOp.file, at, fileOffset, length);
    this.#files.push([entry, size]);
  }

  zeros(at: number, length: number): void {
    this.#ops.push(FillOp.zeros, at, length);
  }

  message(): ChunkFill {
    return { strings: this.#strings.join("\0"), ops: Float64Array.from(this.#ops) };
  }

  /** The error for a worker's answer about the chunk's `file`th FILE op. */
  error(r: Extract<LayerWorkerReply, { readonly file: number }>): LayerError {
    const [entry, size] = this.#files[r.file]!;
    if (r.op === "short") return changedWhileReading(entry, size, r.found);
    const cause = Object.assign(new Error(r.message), r.code === undefined ? {} : { code: r.code });
    return new LayerError(`layer entry ${JSON.stringify(entry)}: its content cannot be read`, { cause });
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

/** Readers per large layer: with the digest worker, the main thread and the threadpool, enough for every core. */
const READERS = Math.max(1, availableParallelism());

/** Chunks handed to readers and not yet hashed: one each and the next one, or 8 MiB of small chunks. */
function chunksReading(chunkSize: number): number {
  return Math.max(READERS + 1, Math.floor((8 << 20) / chunkSize));
}

/**
 * Compressed chunks waiting for their write. Writes to the page cache rarely queue; this bounds memory
 * when the disk is slow, so that with reads and compression at most about 14 chunks of 4 MiB, or 40 of
 * 1 MiB, are held at once on two cores.
 */
const MAX_QUEUED_WRITES = 2;

/**
 * Fills chunks' content on reader workers, hashes the tar on a digest worker, compresses it chunk by chunk
 * with up to chunksInFlight chunks at once, and hashes and writes the compressed bytes in order; writes run
 * on the threadpool. Chunks are read in any order but hashed and compressed in tar order. For gzip the
 * newest chunk is held back until the next arrives, because only the compressor's last call may finish
 * the stream.
 * Chunk buffers live in shared memory and are reused once hashed and written: fresh 1–4 MiB buffers cost
 * page faults and garbage collections.
 */
class CompressedOutput {
  readonly #fd: number;
  readonly #c: ChunkCompressor;
  readonly #inFlight: number;
  readonly #readingDepth: number;
  readonly #tar: LayerWorker;
  readonly #readers: readonly LayerWorker[];
  /** undefined when the blob is the tar itself: its digest is the diffID, hashed once. */
  readonly #digest: Hash | undefined;
  readonly #reading: Array<{ readonly input: Buffer; readonly read: Promise<void> }> = [];
  readonly #pending: Array<Chunk & { readonly output: Promise<Buffer> }> = [];
  readonly #free: Buffer[] = [];
  #held: Chunk | undefined;
  #writes: Promise<void> = Promise.resolve();
  #queuedWrites = 0;
  #uncompressed = 0;
  #compressed = 0;

  constructor(fd: number, compression: Compression, parallel: boolean) {
    this.#fd = fd;
    this.#c = chunkCompressor(compression);
    this.#inFlight = chunksInFlight(this.#c.chunkSize);
    this.#readingDepth = chunksReading(this.#c.chunkSize);
    if (parallel) {
      this.#tar = ThreadWorker.take();
      this.#readers = Array.from({ length: READERS }, () => ThreadWorker.take());
    } else {
      this.#tar = localWorker();
      this.#readers = [this.#tar];
    }
    this.#tar.post({ op: "hash-start", crc32: this.#c.needsCrc32 });
    this.#digest = compression === "none" ? undefined : createHash("sha256");
    this.#emit(this.#c.header);
  }

  /** An empty chunk buffer. */
  take(): Buffer {
    return this.#free.pop() ?? Buffer.from(new SharedArrayBuffer(this.#c.chunkSize));
  }

  /** Takes a laid-out chunk, which `fill` completes. */
  async push(input: Buffer, fill: PendingFill): Promise<void> {
    const read = fill.empty ? Promise.resolve() : this.#fillChunk(input, fill);
    read.catch(() => {}); // awaited in order by #hashOldest; this only keeps a later failure from going unhandled
    this.#reading.push({ input, read });
    while (this.#reading.length > this.#readingDepth) await this.#hashOldest();
  }

  async finish(rest: Buffer, fill: PendingFill): Promise<Sizes> {
    if (rest.length > 0) await this.push(rest, fill);
    while (this.#reading.length > 0) await this.#hashOldest();
    if (this.#held !== undefined) await this.#start(this.#held, true);
    while (this.#pending.length > 0) await this.#writeOldest();
    const tar = await this.#tar.ask({ op: "hash-end" });
    if (tar.op !== "hash-ended") throw new LayerError(`a layer worker answered ${tar.op} to hash-end`);
    const diffId = `sha256:${tar.sha256}` as Digest;
    this.#emit(this.#c.trailer(tar.crc32, this.#uncompressed));
    await this.#writes;
    return {
      digest: this.#digest ? digestOf(this.#digest) : diffId,
      size: this.#compressed,
      diffId,
      uncompressedSize: this.#uncompressed,
    };
  }

  /** Waits for the work under way, failed or not, so the file can be closed, and frees the compressor. */
  async settle(): Promise<void> {
    await Promise.allSettled([
      ...this.#reading.map((r) => r.read),
      ...this.#pending.flatMap((p) => [p.output, p.hashed]),
      this.#held?.hashed,
      this.#writes,
    ]);
    this.#c.close();
    for (const w of new Set([this.#tar, ...this.#readers])) w.release();
  }

  /** Hands the fill to the worker with the least to do: each fills its own ranges, so any may. */
  async #fillChunk(input: Buffer, fill: PendingFill): Promise<void> {
    const reader = this.#readers.reduce((a, b) => (b.waiting < a.waiting ? b : a));
    const r = await reader.ask({ op: "fill", chunk: input, fill: fill.message() });
    if (r.op === "short" || r.op === "failed") throw fill.error(r);
  }

  async #hashOldest(): Promise<void> {
    const { input, read } = this.#reading.shift()!;
    await read;
    const hashed = this.#tar.ask({ op: "hash", bytes: input }).then(() => {});
    hashed.catch(() => {}); // awaited by #writeOldest
    this.#uncompressed += input.length;
    if (!this.#c.needsLast) return this.#start({ input, hashed }, false);
    if (this.#held !== undefined) await this.#start(this.#held, false);
    this.#held = { input, hashed };
  }

  async #start(chunk: Chunk, last: boolean): Promise<void> {
    const output = this.#c.compress(chunk.input, last);
    output.catch(() => {}); // awaited in order by #writeOldest
    this.#pending.push({ ...chunk, output });
    while (this.#pending.length >= this.#inFlight) await this.#writeOldest();
  }

  async #writeOldest(): Promise<void> {
    const { input, hashed, output } = this.#pending.shift()!;
    const [bytes] = await Promise.all([output, hashed]);
    const reuse = input.length === this.#c.chunkSize && input.byteOffset === 0;
    this.#emit(bytes, reuse ? () => this.#free.push(input) : undefined);
    if (this.#queuedWrites > MAX_QUEUED_WRITES) await this.#writes;
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

/** Answers requests in the order asked, on a worker thread or on the calling thread. */
interface LayerWorker {
  /** Requests asked and not yet answered. */
  readonly waiting: number;
  ask(m: LayerWorkerRequest): Promise<LayerWorkerReply>;
  /** A request without a reply. */
  post(m: LayerWorkerRequest): void;
  /** Done with it for this layer. */
  release(): void;
}

function localWorker(): LayerWorker {
  const handle = layerWorkerHandler();
  return {
    waiting: 0,
    ask: async (m) => handle(m)!,
    post: (m) => void handle(m),
    release() {},
  };
}

/**
 * A worker thread, kept for the next layer when it has answered everything and unreferenced while idle, so
 * it never holds the process open.
 */
class ThreadWorker implements LayerWorker {
  static readonly #idle: Worker[] = [];
  readonly #worker: Worker;
  readonly #waiting: Array<{ resolve: (r: LayerWorkerReply) => void; reject: (err: Error) => void }> = [];
  #failure: Error | undefined;

  static take(): ThreadWorker {
    return new ThreadWorker(ThreadWorker.#idle.pop() ?? ThreadWorker.#spawn());
  }

  static #spawn(): Worker {
    const w = new Worker(new URL("./layer-worker.ts", import.meta.url), { workerData: LAYER_WORKER });
    w.on("error", () => {}); // the layer using the worker hears it through its own listener
    w.on("exit", () => {
      const i = ThreadWorker.#idle.indexOf(w);
      if (i !== -1) ThreadWorker.#idle.splice(i, 1);
    });
    return w;
  }

  private constructor(worker: Worker) {
    this.#worker = worker;
    this.#worker.ref();
    this.#worker.on("message", this.#onReply);
    this.#worker.on("error", this.#onFailure);
    this.#worker.on("exit", this.#onExit);
  }

  get waiting(): number {
    return this.#waiting.length;
  }

  ask(m: LayerWorkerRequest): Promise<LayerWorkerReply> {
    if (this.#failure) return Promise.reject(this.#failure);
    const reply = new Promise<LayerWorkerReply>((resolve, reject) => this.#waiting.push({ resolve, reject }));
    this.#worker.postMessage(m);
    return reply;
  }

  post(m: LayerWorkerRequest): void {
    this.#worker.postMessage(m);
  }

  release(): void {
    this.#worker.off("message", this.#onReply);
    this.#worker.off("error", this.#onFailure);
    this.#worker.off("exit", this.#onExit);
    if (this.#failure === undefined && this.#waiting.length === 0) {
      this.#worker.unref();
      ThreadWorker.#idle.push(this.#worker);
    } else {
      void this.#worker.terminate(); // a worker that failed or still owes answers is not reused
    }
  }

  readonly #onReply = (r: LayerWorkerReply): void => {
    this.#waiting.shift()?.resolve(r);
  };

  readonly #onFailure = (err: Error): void => {
    this.#failure ??= new LayerError("a layer worker thread failed", { cause: err });
    for (const w of this.#waiting.splice(0)) w.reject(this.#failure);
  };

  readonly #onExit = (code: number): void => {
    this.#onFailure(new Error(`the layer worker thread exited with code ${code}`));
  };
}

const write = promisify(fs.write) as (
  fd: number,
  b: Buffer,
  offset: number,
) => Promise<{ bytesWritten: number }>;
