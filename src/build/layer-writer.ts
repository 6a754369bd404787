import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { LayerWriter } from "../executor/file-stage.ts";
import { writeLayer } from "../oci/layer-writer.ts";
import type { Compression } from "../oci/media-type.ts";

/** Writes each layer a build produces as a numbered file in `dir`, all entries with the build's mtime. */
export function fileLayerWriter(dir: string, mtime: number, compression: Compression = "gzip"): LayerWriter {
  mkdirSync(dir, { recursive: true });
  let n = 0;
  return (entries) =>
    writeLayer(entries, { file: join(dir, `layer-${n++}`), mtime, compression, addParents: false });
}
