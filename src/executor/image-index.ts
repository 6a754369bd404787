import { text } from "node:stream/consumers";
import { pipeline } from "node:stream/promises";
import tar from "tar-stream";
import { decompress } from "../oci/decompress.ts";
import type { Layer } from "../oci/image.ts";
import { TAR_STREAM_TYPES } from "../oci/layer-entry.ts";
import { ImageTree } from "./image-tree.ts";

/**
 * Builds the merged file tree of an image's layers by reading their tar headers (contents are skipped,
 * except the few files ImageTree keeps). File-only builds need no unpacked root filesystem.
 */
export async function indexLayers(layers: readonly Layer[], tree = new ImageTree()): Promise<ImageTree> {
  for (const layer of layers) {
    const extract = tar.extract();
    const done = (async () => {
      for await (const entry of extract) {
        const h = entry.header;
        const type = TAR_STREAM_TYPES[h.type ?? "file"];
        if (type === undefined) {
          entry.resume();
          continue;
        }
        const content = ImageTree.keepsContent(h.name) ? await text(entry) : undefined;
        if (content === undefined) entry.resume();
        tree.apply(
          h.name,
          {
            type,
            mode: h.mode ?? 0,
            uid: h.uid ?? 0,
            gid: h.gid ?? 0,
            size: h.size ?? 0,
            ...(h.linkname ? { linkTarget: h.linkname } : {}),
          },
          content,
        );
      }
    })();
    await Promise.all([pipeline(layer.open(), decompress, extract), done]);
  }
  return tree;
}
