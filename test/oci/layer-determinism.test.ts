import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { test } from "node:test";
import type { LayerEntry } from "../../src/oci/layer-entry.ts";
import { writeLayer } from "../../src/oci/layer-writer.ts";
import { walkTree } from "../../src/oci/tree-walk.ts";
import { tempDir } from "../helpers/layer-fixtures.ts";

/** 6 MiB that is half noise, half text: spans gzip's 1 MiB and zstd's 4 MiB chunks, with matches across them. */
function content(): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; parts.length < 6 * 1024; i++) {
    const noise = createHash("sha512").update(`block ${i}`).digest();
    parts.push(
      Buffer.concat([...Array(8).fill(noise), Buffer.from(`line ${i % 97} of some text\n`.repeat(20))]),
    );
  }
  return Buffer.concat(parts).subarray(0, 6 << 20);
}

type Node = readonly [path: string, kind: "dir" | "file" | "symlink", mode: number, data: string | Buffer];

function spec(big: Buffer): Node[] {
  return [
    ["etc", "dir", 0o755, ""],
    ["etc/hostname", "file", 0o644, "kiln\n"],
    ["etc/shadow", "file", 0o640, "root:*:1::::::\n"],
    ["usr/local/bin", "dir", 0o755, ""],
    ["usr", "dir", 0o755, ""],
    ["usr/local", "dir", 0o755, ""],
    ["usr/local/bin/run", "file", 0o4755, "#!/bin/sh\n"],
    ["usr/share/big.bin", "file", 0o644, big],
    ["usr/share", "dir", 0o2755, ""],
    ["tmp", "dir", 0o1777, ""],
    ["etc/localtime", "symlink", 0o777, "/usr/share/zoneinfo/UTC"],
  ];
}

/** Makes the tree in the given order under a umask, with its own mtimes, then sets the spec's modes. */
function makeTree(root: string, nodes: readonly Node[], umask: number, mtime: number): void {
  const old = process.umask(umask);
  try {
    for (const [path, kind, , data] of nodes) {
      const abs = join(root, path);
      if (kind === "dir") fs.mkdirSync(abs, { recursive: true });
      else {
        fs.mkdirSync(join(abs, ".."), { recursive: true });
        if (kind === "file") fs.writeFileSync(abs, data);
        else fs.symlinkSync(data, abs);
      }
    }
  } finally {
    process.umask(old);
  }
  for (const [path, kind, mode] of nodes) {
    if (kind === "symlink") continue;
    fs.chmodSync(join(root, path), mode);
    fs.utimesSync(join(root, path), mtime, mtime + 7);
  }
}

test("the same tree made in another order, umask and time gives the same digests, gzip and zstd", async (t) => {
  const dir = await tempDir(t);
  const big = content();
  const a = join(dir, "a");
  const b = join(dir, "b");
  makeTree(a, spec(big), 0o022, 1000);
  makeTree(b, spec(big).reverse(), 0o077, 2_000_000_000);
  for (const compression of ["gzip", "zstd", "none"] as const) {
    const [la, lb] = await Promise.all(
      [a, b].map((tree, i) =>
        writeLayer(walkTree(tree), { file: join(dir, `${i}.${compression}`), mtime: 0, compression }),
      ),
    );
    assert.equal(la?.digest, lb?.digest, compression);
    assert.equal(la?.diffId, lb?.diffId, compression);
    assert.deepEqual(fs.readFileSync(la!.file), fs.readFileSync(lb!.file), compression);
  }
});

/**
 * The same entries give these digests on every machine with kiln's Node: a change here changes every
 * layer kiln has built, so it must be on purpose (a new zlib or zstd in Node changes the compressed ones).
 */
test("known entries give known digests", async (t) => {
  const dir = await tempDir(t);
  const big = content();
  const entries: LayerEntry[] = spec(big).map(([path, kind, mode, data]) => ({
    path,
    type: kind,
    mode,
    uid: 0,
    gid: 0,
    ...(kind === "file"
      ? { size: Buffer.byteLength(data), content: () => Readable.from([Buffer.from(data)]) }
      : {}),
    ...(kind === "symlink" ? { linkTarget: String(data) } : {}),
  }));
  const got: Record<string, [string, string, number]> = {};
  for (const compression of ["gzip", "zstd", "none"] as const) {
    const l = await writeLayer(entries, { file: join(dir, compression), mtime: 1700000000, compression });
    got[compression] = [l.digest, l.diffId, l.size];
  }
  assert.deepEqual(got, GOLDEN);
});

const TAR = "sha256:8b15be94abf9589617404a927e474ea029e1e23728c4f18747fb6955161e2205";
const GOLDEN = {
  gzip: ["sha256:e5404d93225f455c9ed2083528440f303daa0c910f6343c79cec5e13014a7380", TAR, 475921],
  zstd: ["sha256:4b0d1c98a191a0df200e3954127890a746d1d9d579f1b6e28684935fa1fb1cdf", TAR, 423762],
  none: [TAR, TAR, 5721600],
};
