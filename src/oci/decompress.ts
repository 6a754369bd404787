import { pipeline, Readable } from "node:stream";
import { createGunzip, createZstdDecompress } from "node:zlib";

const GZIP_MAGIC = [0x1f, 0x8b];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

function startsWith(buf: Buffer, magic: readonly number[]): boolean {
  return magic.every((b, i) => buf[i] === b);
}

/**
 * Decompresses a layer by its content (gzip, zstd, or plain tar) rather than its media type: registries and
 * tools mislabel layers, magic bytes do not lie. Use as a `pipeline` stage.
 */
export async function* decompress(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const it = source[Symbol.asyncIterator]();
  const first: Buffer[] = [];
  let length = 0;
  let ended = false;
  while (length < ZSTD_MAGIC.length) {
    const r = await it.next();
    if (r.done) {
      ended = true;
      break;
    }
    first.push(r.value);
    length += r.value.length;
  }
  const head = Buffer.concat(first);
  async function* whole(): AsyncGenerator<Buffer> {
    if (head.length > 0) yield head;
    if (ended) return;
    for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
  }
  const inflater = startsWith(head, GZIP_MAGIC)
    ? createGunzip()
    : startsWith(head, ZSTD_MAGIC)
      ? createZstdDecompress()
      : undefined;
  if (inflater === undefined) {
    yield* whole();
    return;
  }
  // pipeline destroys the inflater when the source fails, so the error reaches whoever reads below.
  pipeline(Readable.from(whole()), inflater, () => {});
  yield* inflater;
}
