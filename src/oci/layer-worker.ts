/**
 * The work a layer hands to worker threads: hashing the tar (its diffID, and the CRC-32 gzip's trailer
 * needs) and filling chunks with headers and file content. On two cores, the main thread writing and
 * reading every entry and hashing the tar in turn left a core idle; now it only lays chunks out. Chunks
 * are views of shared memory: workers read files into them and hash them where they are, never copying.
 * A small layer runs the same handler on the calling thread, where starting workers would cost more.
 */
import { createHash, type Hash } from "node:crypto";
import fs from "node:fs";
import { parentPort, workerData } from "node:worker_threads";
import zlib from "node:zlib";
import { type TarType, writeUstarHeader } from "./tar-header.ts";

/**
 * What fills one chunk besides the bytes the main thread copied in (streamed content, PAX headers): ustar
 * headers, file content and padding. Passed in a form cheap to clone, as tens of thousands of small objects
 * cost more to pass than the work they describe: `strings` joins, NUL-separated (no name or path holds a
 * NUL), each header's name and linkname and each file's path, in op order; `ops` holds one record per op:
 *   HEADER, chunk offset, mode, uid, gid, size, mtime, typeflag (char code), devmajor, devminor
 *   FILE, chunk offset, offset in the file, length
 *   ZEROS, chunk offset, length
 */
export interface ChunkFill {
  readonly strings: string;
  readonly ops: Float64Array;
}

export const FillOp = { header: 0, file: 1, zeros: 2 } as const;

/** For one layer: hash-start, then hashes in tar order, then hash-end. Fills may come at any point. */
export type LayerWorkerRequest =
  | { readonly op: "hash-start"; readonly crc32: boolean }
  | { readonly op: "hash"; readonly bytes: Uint8Array }
  | { readonly op: "hash-end" }
  | { readonly op: "fill"; readonly chunk: Uint8Array; readonly fill: ChunkFill };

/** One reply per request except hash-start, in request order. `file` counts the chunk's FILE ops from 0. */
export type LayerWorkerReply =
  | { readonly op: "hashed" }
  | { readonly op: "hash-ended"; readonly sha256: string; readonly crc32: number }
  | { readonly op: "filled" }
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
      case "fill":
        return fillChunk(Buffer.from(m.chunk.buffer, m.chunk.byteOffset, m.chunk.byteLength), m.fill);
    }
  };
}

/** Reads exactly the bytes each FILE op names; a file that grew since it was measured is cut there, as GNU tar does. */
function fillChunk(chunk: Buffer, fill: ChunkFill): LayerWorkerReply {
  const strings = fill.strings.split("\0");
  const o = fill.ops;
  let s = 0;
  let file = 0;
  for (let i = 0; i < o.length; ) {
    const at = o[i + 1]!;
    switch (o[i]) {
      case FillOp.header:
        writeUstarHeader(
          {
            name: strings[s++]!,
            linkname: strings[s++]!,
            mode: o[i + 2]!,
            uid: o[i + 3]!,
            gid: o[i + 4]!,
            size: o[i + 5]!,
            mtime: o[i + 6]!,
            type: String.fromCharCode(o[i + 7]!) as TarType,
            devMajor: o[i + 8]!,
            devMinor: o[i + 9]!,
          },
          chunk,
          at,
        );
        i += 10;
        break;
      case FillOp.file: {
        const error = readFile(chunk, strings[s++]!, o[i + 2]!, o[i + 3]!, at, file++);
        if (error !== undefined) return error;
        i += 4;
        break;
      }
      default:
        chunk.fill(0, at, at + o[i + 2]!);
        i += 3;
    }
  }
  return { op: "filled" };
}

function readFile(
  chunk: Buffer,
  path: string,
  fileOffset: number,
  length: number,
  at: number,
  file: number,
): LayerWorkerReply | undefined {
  let fd: number;
  try {
    fd = fs.openSync(path, "r");
  } catch (error) {
    return failed(file, error);
  }
  try {
    for (let done = 0; done < length; ) {
      const n = fs.readSync(fd, chunk, at + done, length - done, fileOffset + done);
      if (n === 0) return { op: "short", file, found: fileOffset + done };
      done += n;
    }
  } catch (error) {
    return failed(file, error);
  } finally {
    fs.closeSync(fd);
  }
  return undefined;
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
