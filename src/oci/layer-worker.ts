/**
 * The work a layer hands to worker threads: hashing the tar (its diffID, and the CRC-32 gzip's trailer
 * needs) and reading file content into chunks. On two cores, the main thread reading every file and hashing
 * the tar in turn left a core idle; now it only lays out headers and hands on chunks. Chunks are views of
 * shared memory: workers read files into them and hash them where they are, never copying. A small layer
 * runs the same handler on the calling thread, where a worker's start would cost more than it saves.
 */
import { createHash, type Hash } from "node:crypto";
import fs from "node:fs";
import { parentPort, workerData } from "node:worker_threads";
import zlib from "node:zlib";

/**
 * The file content of one chunk, in a form cheap to pass between threads (tens of thousands of small
 * arrays cost more to clone than the reads they describe): the files' paths joined by NUL, which no path
 * holds, and for each file four numbers in `spans`: the offset in the file, the length to read, the offset
 * in the chunk, and the entry's whole size (for the error when the file is shorter).
 */
export interface ChunkReads {
  readonly files: string;
  readonly spans: Float64Array;
}

/** For one layer: hash-start, then hashes in tar order, then hash-end. Reads may come at any point. */
export type LayerWorkerRequest =
  | { readonly op: "hash-start"; readonly crc32: boolean }
  | { readonly op: "hash"; readonly bytes: Uint8Array }
  | { readonly op: "hash-end" }
  | { readonly op: "read"; readonly chunk: Uint8Array; readonly reads: ChunkReads };

/** One reply per request except hash-start, in request order. `file` counts the chunk's files from 0. */
export type LayerWorkerReply =
  | { readonly op: "hashed" }
  | { readonly op: "hash-ended"; readonly sha256: string; readonly crc32: number }
  | { readonly op: "read" }
  | { readonly op: "short"; readonly file: number; readonly found: number }
  | { readonly op: "failed"; readonly file: number; readonly message: string; readonly code?: string };

/** Marks a worker started for layers, so this module never answers another worker's port. */
export const LAYER_WORKER = "kiln.layer-worker";

export function layerWorkerHandler(): (m: LayerWorkerRequest) => LayerWorkerReply | undefined {
  let hash: Hash | undefined;
  let crc: number | undefined;
  return (m) => {
    switch (m.op) {
      case "hash-start":
        hash = createHash("sha256");
        crc = m.crc32 ? 0 : undefined;
        return undefined;
      case "hash":
        hash!.update(m.bytes);
        if (crc !== undefined) crc = zlib.crc32(m.bytes, crc);
        return { op: "hashed" };
      case "hash-end": {
        const sha256 = hash!.digest("hex");
        hash = undefined;
        return { op: "hash-ended", sha256, crc32: crc ?? 0 };
      }
      case "read":
        return readFiles(m.chunk, m.reads);
    }
  };
}

/** Reads exactly the bytes each span names; a file that grew since it was measured is cut there, as GNU tar does. */
function readFiles(chunk: Uint8Array, reads: ChunkReads): LayerWorkerReply {
  const files = reads.files.split("\0");
  const s = reads.spans;
  for (const [file, path] of files.entries()) {
    const [fileOffset, length, chunkOffset] = [s[4 * file]!, s[4 * file + 1]!, s[4 * file + 2]!];
    let fd: number;
    try {
      fd = fs.openSync(path, "r");
    } catch (error) {
      return failed(file, error);
    }
    try {
      for (let done = 0; done < length; ) {
        const n = fs.readSync(fd, chunk, chunkOffset + done, length - done, fileOffset + done);
        if (n === 0) return { op: "short", file, found: fileOffset + done };
        done += n;
      }
    } catch (error) {
      return failed(file, error);
    } finally {
      fs.closeSync(fd);
    }
  }
  return { op: "read" };
}

/** An error's message and errno code: a cloned Error keeps its message but loses `code`. */
function failed(file: number, error: unknown): LayerWorkerReply {
  const { message, code } = error as NodeJS.ErrnoException;
  return { op: "failed", file, message: String(message), ...(code === undefined ? {} : { code }) };
}

if (parentPort !== null && workerData === LAYER_WORKER) {
  const port = parentPort;
  const handle = layerWorkerHandler();
  port.on("message", (m: LayerWorkerRequest) => {
    const reply = handle(m);
    if (reply !== undefined) port.postMessage(reply);
  });
}
