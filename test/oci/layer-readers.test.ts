import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { appendLayers, type Image } from "../../src/oci/image.ts";
import { writeLayer } from "../../src/oci/layer-writer.ts";
import { writeImage } from "../../src/oci/layout.ts";
import { walkTree } from "../../src/oci/tree-walk.ts";
import { gnuTar, treeIn } from "../helpers/layer-fixtures.ts";
import { skopeo } from "../helpers/skopeo.ts";

const EMPTY: Image = {
  config: { architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] } },
  layers: [],
};

for (const compression of ["gzip", "zstd"] as const) {
  test(`containers/storage (Go's readers, via skopeo) unpacks a ${compression} layer to the same tree`, async (t) => {
    const { dir, tree } = await treeIn(
      t,
      Buffer.concat([randomBytes(3 << 20), Buffer.alloc(9 << 20, "abc")]),
    );
    const layer = await writeLayer(walkTree(tree), {
      file: join(dir, "layer"),
      mtime: 1234567890,
      compression,
    });
    await writeImage(join(dir, "layout"), "v1", appendLayers(EMPTY, layer));

    const storage = join(dir, "storage");
    await skopeo(
      "copy",
      `oci:${join(dir, "layout")}:v1`,
      `containers-storage:[vfs@${storage}/root+${storage}/run]kiln.test/layer:${compression}`,
    );
    const layers = fs.readdirSync(join(storage, "root/vfs/dir"));
    assert.equal(layers.length, 1);
    const unpacked = join(storage, "root/vfs/dir", layers[0]!);
    assert.deepEqual(await gnuTar(unpacked, 0), await gnuTar(tree, 0));
    assert.equal(fs.lstatSync(join(unpacked, "bin/tool")).mtimeMs, 1234567890 * 1000);
  });
}
