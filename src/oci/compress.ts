import { availableParallelism } from "node:os";
import { promisify } from "node:util";
import zlib from "node:zlib";
import type { Compression } from "./media-type.ts";

/**
 * Compresses a stream given as fixed-size chunks, several chunks at once on the libuv threadpool, and hands
 * the output on in input order. Chunk boundaries are fixed by `chunkSize`, never by timing, so the output
 * is the same for the same input on every run.
 */
export interface ChunkCompressor {
  /** Every chunk but the last must be exactly this long. */
  readonly chunkSize: number;
  /** Bytes before the first chunk's output. */
  readonly header: Buffer;
  compress(chunk: Buffer, last: boolean): Promise<Buffer>;
  /** Bytes after the last chunk's output. */
  trailer(): Buffer;
}

/** gzip level 6, zstd level 3: the defaults of `gzip` and `zstd`. */
export const GZIP_LEVEL = 6;
export const ZSTD_LEVEL = 3;

const GZIP_CHUNK = 1 << 20;
const ZSTD_CHUNK = 4 << 20;
const WINDOW = 32 * 1024;

/**
 * `gzip -n`'s header: no file name, mtime 0, XFL 0, OS 3 (Unix). Written by kiln, not by zlib, so it is the
 * same on every machine.
 */
const GZIP_HEADER = Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03]);

const deflateRaw = promisify(zlib.deflateRaw);
const zstdCompress = promisify(zlib.zstdCompress);

/**
 * One gzip member made as pigz makes it: each chunk is deflated on its own, primed with the previous
 * chunk's last 32 KiB as the dictionary so matches may reach back across the boundary, and ended with a
 * sync flush (the last with Z_FINISH), so the pieces join into one deflate stream.
 */
export function gzipChunks(): ChunkCompressor {
  let crc = 0;
  let isize = 0;
  let previous: Buffer | undefined;
  return {
    chunkSize: GZIP_CHUNK,
    header: GZIP_HEADER,
    compress(chunk, last) {
      crc = zlib.crc32(chunk, crc);
      isize = (isize + chunk.length) % 2 ** 32;
      const dictionary = previous?.subarray(Math.max(0, previous.length - WINDOW));
      previous = chunk;
      return deflateRaw(chunk, {
        level: GZIP_LEVEL,
        ...(dictionary ? { dictionary } : {}),
        finishFlush: last ? zlib.constants.Z_FINISH : zlib.constants.Z_SYNC_FLUSH,
      });
    },
    trailer() {
      const t = Buffer.alloc(8);
      t.writeUInt32LE(crc >>> 0, 0);
      t.writeUInt32LE(isize, 4);
      return t;
    },
  };
}

/**
 * One zstd frame per 4 MiB chunk, with content size and checksum. Concatenated frames are one valid zstd
 * stream (RFC 8878 §3.1); zstd's own multithreading is not used because Node's streaming zstd with
 * `nbWorkers` loses output at the end of the stream.
 */
export function zstdChunks(): ChunkCompressor {
  const params = {
    [zlib.constants.ZSTD_c_compressionLevel]: ZSTD_LEVEL,
    [zlib.constants.ZSTD_c_checksumFlag]: 1,
  };
  return {
    chunkSize: ZSTD_CHUNK,
    header: Buffer.alloc(0),
    compress: (chunk) => zstdCompress(chunk, { params }),
    trailer: () => Buffer.alloc(0),
  };
}

export function noCompression(): ChunkCompressor {
  return {
    chunkSize: GZIP_CHUNK,
    header: Buffer.alloc(0),
    compress: (chunk) => Promise.resolve(chunk),
    trailer: () => Buffer.alloc(0),
  };
}

export function chunkCompressor(c: Compression): ChunkCompressor {
  return c === "gzip" ? gzipChunks() : c === "zstd" ? zstdChunks() : noCompression();
}

/** Compressions running at once: enough to keep every core busy while the main thread makes the tar. */
export const MAX_IN_FLIGHT: number = availableParallelism() + 1;
