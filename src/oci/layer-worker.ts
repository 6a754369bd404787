/**
 * The worker thread that hashes a layer's tar (its diffID) and, for gzip, takes its CRC-32, so the main
 * thread is free to read files and the threadpool to compress: on two cores, hashing on the main thread
 * left a core idle while it hashed. Chunks arrive as views of shared memory, never copied.
 */
import { createHash, type Hash } from "node:crypto";
import { parentPort } from "node:worker_threads";
import zlib from "node:zlib";

/** In order for each layer: start, any number of updates, end. One layer at a time per worker. */
export type TarDigestRequest =
  | { readonly op: "start"; readonly crc32: boolean }
  | { readonly op: "update"; readonly bytes: Uint8Array }
  | { readonly op: "end" };

/** One reply per update and per end, in request order. */
export type TarDigestReply =
  | { readonly op: "updated" }
  | { readonly op: "ended"; readonly sha256: string; readonly crc32: number };

const port = parentPort;
if (port !== null) {
  let hash: Hash | undefined;
  let crc: number | undefined;
  const reply = (r: TarDigestReply) => port.postMessage(r);
  port.on("message", (m: TarDigestRequest) => {
    switch (m.op) {
      case "start":
        hash = createHash("sha256");
        crc = m.crc32 ? 0 : undefined;
        return;
      case "update":
        hash!.update(m.bytes);
        if (crc !== undefined) crc = zlib.crc32(m.bytes, crc);
        return reply({ op: "updated" });
      case "end":
        reply({ op: "ended", sha256: hash!.digest("hex"), crc32: crc ?? 0 });
        hash = undefined;
    }
  });
}
