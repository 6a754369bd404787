import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { type TestContext, test } from "node:test";
import { LayerError } from "../../src/errors.ts";
import type { LayerEntry } from "../../src/oci/layer-entry.ts";
import { writeLayer } from "../../src/oci/layer-writer.ts";
import { BLOCK, fitsUstar, TarType, writeUstarHeader } from "../../src/oci/tar-header.ts";
import { walkTree } from "../../src/oci/tree-walk.ts";
import { runCommand } from "../helpers/command.ts";
import {
  DEEP,
  gnuTar,
  LONG_DIR,
  LONG_TARGET,
  pythonTarEntries,
  tempDir,
  treeIn,
} from "../helpers/layer-fixtures.ts";
import { sha256sum } from "../helpers/tar-layer.ts";

const MTIME = 1700000000;
test("a layer of a tree is byte for byte GNU tar's archive of it, with real and overridden owners", async (t) => {
  const { dir, tree } = await treeIn(t, randomBytes(3 << 20));

  const own = await writeLayer(walkTree(tree), {
    file: join(dir, "own.tar"),
    mtime: MTIME,
    compression: "none",
  });
  const gnu = await gnuTar(tree, MTIME);
  assert.equal(own.diffId, await sha256sum(gnu));
  assert.equal(own.uncompressedSize, gnu.length);
  assert.equal(own.digest, own.diffId);
  assert.deepEqual(fs.readFileSync(own.file), gnu);

  const root = await writeLayer(walkTree(tree, { uid: 0, gid: 0 }), {
    file: join(dir, "root.tar"),
    mtime: MTIME,
    compression: "none",
  });
  assert.equal(root.diffId, await sha256sum(await gnuTar(tree, MTIME, ["--owner=0", "--group=0"])));
});

test("the entries Python's tarfile reads are the tree's, field by field", async (t) => {
  const big = randomBytes(3 << 20);
  const { dir, tree } = await treeIn(t, big);
  const layer = await writeLayer(walkTree(tree), { file: join(dir, "l.tar.gz"), mtime: MTIME });
  const entries = await pythonTarEntries(fs.readFileSync(layer.file));
  const byName = new Map(entries.map((e) => [e.name, e]));
  const sha = async (s: string | Buffer) => (await sha256sum(Buffer.from(s))).slice("sha256:".length);

  assert.deepEqual(
    entries.map((e) => e.name).slice(0, 8),
    ["0-first", "a", "a/x", "a-b", "a.b", "big.bin", "bin", "bin/sg"],
    "sorted by path, a directory's children right after it",
  );
  for (const e of entries) {
    assert.equal(e.mtime, MTIME);
    assert.equal(e.uname, "");
    assert.equal(e.gname, "");
  }
  assert.deepEqual(pick(byName.get("bin/tool")), ["file", 0o4755, 0, 0, 20, ""]);
  assert.equal(byName.get("bin/tool")?.sha256, await sha("#!/bin/sh\necho tool\n"));
  assert.deepEqual(pick(byName.get("bin/tool-again")), ["hardlink", 0o4755, 0, 0, 0, "bin/tool"]);
  assert.deepEqual(pick(byName.get("0-first")), ["file", 0o644, 0, 0, 6, ""]);
  assert.deepEqual(pick(byName.get("z-original")), ["hardlink", 0o644, 0, 0, 0, "0-first"]);
  assert.deepEqual(pick(byName.get("bin/sg")), ["file", 0o2711, 0, 0, 2, ""]);
  assert.deepEqual(pick(byName.get("tmp")), ["dir", 0o1777, 0, 0, 0, ""]);
  assert.deepEqual(pick(byName.get("srv")), ["dir", 0o2775, 0, 0, 0, ""]);
  assert.deepEqual(pick(byName.get("none")), ["file", 0, 0, 0, 18, ""]);
  assert.deepEqual(pick(byName.get(LONG_DIR)), ["dir", 0, 0, 0, 0, ""]);
  assert.deepEqual(pick(byName.get("a.b")), ["file", 0o600, 3000000, 4000000, 3, ""]);
  assert.deepEqual(pick(byName.get("a-b")), ["file", 0o640, 1000, 1000, 4, ""]);
  assert.deepEqual(pick(byName.get("big.bin")), ["file", 0o644, 0, 0, 3 << 20, ""]);
  assert.equal(byName.get("big.bin")?.sha256, await sha(big));
  assert.deepEqual(pick(byName.get(`${DEEP}/leaf`)), ["file", 0o644, 0, 0, 4, ""]);
  assert.deepEqual(pick(byName.get(`${"n".repeat(120)}.txt`)), ["file", 0o644, 0, 0, 9, ""]);
  assert.deepEqual(pick(byName.get("données/résumé.txt")), ["file", 0o644, 0, 0, 5, ""]);
  assert.deepEqual(pick(byName.get("日本語-🎉")), ["file", 0o644, 0, 0, 10, ""]);
  assert.deepEqual(pick(byName.get("localtime")), ["symlink", 0o777, 0, 0, 0, "/usr/share/zoneinfo/UTC"]);
  assert.deepEqual(pick(byName.get("long-link")), ["symlink", 0o777, 0, 0, 0, LONG_TARGET]);
  assert.deepEqual(pick(byName.get("utf8-link")), ["symlink", 0o777, 0, 0, 0, "résumé"]);
  assert.deepEqual(pick(byName.get("dev/null")), ["char", 0o644, 0, 0, 0, ""]);
  assert.deepEqual([byName.get("dev/null")?.devmajor, byName.get("dev/null")?.devminor], [1, 3]);
  assert.deepEqual(pick(byName.get("dev/loop0")), ["block", 0o644, 0, 0, 0, ""]);
  assert.deepEqual([byName.get("dev/loop0")?.devmajor, byName.get("dev/loop0")?.devminor], [7, 0]);
  assert.deepEqual(pick(byName.get("dev/fifo")), ["fifo", 0o644, 0, 0, 0, ""]);
});

function pick(
  e: { type: string; mode: number; uid: number; gid: number; size: number; linkname: string } | undefined,
) {
  assert.ok(e, "entry is in the layer");
  return [e.type, e.mode, e.uid, e.gid, e.size, e.linkname];
}

test("gzip layers are one gzip member that gzip, Python and zcat read back to the tar", async (t) => {
  const { dir, tree } = await treeIn(
    t,
    Buffer.concat([randomBytes(1 << 20), Buffer.alloc(3 << 20, "compressible ")]),
  );
  const plain = await writeLayer(walkTree(tree), {
    file: join(dir, "l.tar"),
    mtime: MTIME,
    compression: "none",
  });
  const gz = await writeLayer(walkTree(tree), {
    file: join(dir, "l.tar.gz"),
    mtime: MTIME,
    compression: "gzip",
  });
  const bytes = fs.readFileSync(gz.file);

  assert.equal(gz.mediaType, "application/vnd.oci.image.layer.v1.tar+gzip");
  assert.equal(gz.diffId, plain.diffId);
  assert.equal(gz.uncompressedSize, plain.uncompressedSize);
  assert.equal(gz.digest, await sha256sum(bytes));
  assert.equal(gz.size, bytes.length);
  assert.deepEqual(bytes.subarray(0, 10), Buffer.from("1f8b0800000000000003", "hex"), "gzip -n header");
  await runCommand("gzip", ["-t", gz.file]);
  assert.equal(await sha256sum(await runCommand("gzip", ["-dc", gz.file])), gz.diffId);
  const py = await runCommand(
    "python3",
    [
      "-c",
      "import sys,zlib; d=zlib.decompressobj(31); sys.stdout.buffer.write(d.decompress(sys.stdin.buffer.read())); assert d.eof and d.unused_data == b''",
    ],
    bytes,
  );
  assert.equal(await sha256sum(py), gz.diffId, "one member: nothing follows the first member's trailer");
});

test("zstd layers decompress with zstd to the tar, and open() re-reads the blob", async (t) => {
  const { dir, tree } = await treeIn(
    t,
    Buffer.concat([randomBytes(5 << 20), Buffer.alloc(6 << 20, "zstd ")]),
  );
  const zst = await writeLayer(walkTree(tree), {
    file: join(dir, "l.tar.zst"),
    mtime: MTIME,
    compression: "zstd",
  });
  const bytes = fs.readFileSync(zst.file);
  assert.equal(zst.mediaType, "application/vnd.oci.image.layer.v1.tar+zstd");
  assert.equal(zst.digest, await sha256sum(bytes));
  await runCommand("zstd", ["-q", "-t", zst.file]);
  const tar = await runCommand("zstd", ["-q", "-dc", zst.file]);
  assert.equal(await sha256sum(tar), zst.diffId);
  assert.equal(tar.length, zst.uncompressedSize);
  for (let i = 0; i < 2; i++) {
    const chunks: Buffer[] = [];
    for await (const c of zst.open()) chunks.push(c as Buffer);
    assert.deepEqual(Buffer.concat(chunks), bytes);
  }
});

/** Thousands of small files around two that cross chunk boundaries: more than 8 MiB, so workers read it. */
async function manyFilesTree(t: TestContext): Promise<{ dir: string; tree: string }> {
  const { dir, tree } = await treeIn(t, randomBytes(6 << 20));
  for (let d = 0; d < 30; d++) {
    fs.mkdirSync(join(tree, `many/d${d}`), { recursive: true });
    for (let f = 0; f < 100; f++) {
      const n = ((d * 100 + f) * 2654435761) % 5000;
      fs.writeFileSync(join(tree, `many/d${d}/f${f}`), `file ${d}/${f}\n`.repeat(400).slice(0, n));
    }
  }
  fs.writeFileSync(join(tree, "many/noise"), randomBytes((3 << 20) + 777));
  return { dir, tree };
}

test("a layer of thousands of files, read and hashed on worker threads, is GNU tar's archive in every compression", async (t) => {
  const { dir, tree } = await manyFilesTree(t);
  const gnu = await gnuTar(tree, MTIME);
  assert.ok(gnu.length > 8 << 20, "large enough for the worker threads");
  const diffId = await sha256sum(gnu);
  const plain = await writeLayer(walkTree(tree), {
    file: join(dir, "l.tar"),
    mtime: MTIME,
    compression: "none",
  });
  assert.deepEqual(fs.readFileSync(plain.file), gnu);
  assert.equal(plain.diffId, diffId);
  for (const [compression, tool] of [
    ["gzip", "gzip"],
    ["zstd", "zstd"],
  ] as const) {
    const [a, b] = await Promise.all(
      ["a", "b"].map((n) =>
        writeLayer(walkTree(tree), { file: join(dir, `${n}.${compression}`), mtime: MTIME, compression }),
      ),
    );
    assert.equal(a!.diffId, diffId, compression);
    assert.equal(a!.uncompressedSize, gnu.length, compression);
    assert.equal(a!.digest, await sha256sum(fs.readFileSync(a!.file)), compression);
    assert.deepEqual(
      fs.readFileSync(a!.file),
      fs.readFileSync(b!.file),
      `${compression}: two layers at once`,
    );
    assert.deepEqual(await runCommand(tool, ["-q", "-dc", a!.file]), gnu, compression);
  }
});

test("on worker threads too, a file shorter than its entry or missing is an error naming the entry", async (t) => {
  const { dir, tree } = await manyFilesTree(t);
  const file = join(dir, "l.tar.gz");
  const entries = walkTree(tree);
  const shrunk = entries.map((e) =>
    e.path === "many/noise" ? { ...e, size: (e.size ?? 0) + (8 << 20) } : e,
  );
  await assert.rejects(writeLayer(shrunk, { file, mtime: 0 }), {
    code: "KILN_ERR_LAYER",
    message: `layer entry "many/noise": expected ${(3 << 20) + 777 + (8 << 20)} bytes of content, found ${(3 << 20) + 777}`,
  });
  fs.rmSync(join(tree, "many/d7/f3"));
  await assert.rejects(writeLayer(entries, { file, mtime: 0 }), (err: unknown) => {
    assert.ok(err instanceof LayerError);
    assert.equal(err.message, 'layer entry "many/d7/f3": its content cannot be read');
    assert.equal((err.cause as NodeJS.ErrnoException).code, "ENOENT");
    return true;
  });
  assert.equal(fs.existsSync(file), false, "a failed write leaves no layer file behind");
});

test("entries given unsorted get sorted, parents added, hardlinks pointed at the first path", async (t) => {
  const dir = await tempDir(t);
  const entries: LayerEntry[] = [
    { path: "usr/bin/z", type: "hardlink", mode: 0o755, uid: 0, gid: 0, linkTarget: "usr/bin/b" },
    {
      path: "/usr/bin/b",
      type: "file",
      mode: 0o755,
      uid: 0,
      gid: 0,
      size: 5,
      content: () => Readable.from([Buffer.from("he"), Buffer.from("llo")]),
    },
    { path: "./usr/bin/a", type: "hardlink", mode: 0o755, uid: 0, gid: 0, linkTarget: "usr/bin/b" },
    { path: "etc/", type: "dir", mode: 0o750, uid: 0, gid: 42 },
    { path: "etc/motd", type: "symlink", mode: 0o777, uid: 0, gid: 0, linkTarget: "../run/motd" },
    {
      path: "etc/cap",
      type: "file",
      mode: 0o755,
      uid: 0,
      gid: 0,
      size: 0,
      xattrs: { "user.z": "last", "security.capability": Buffer.from([1, 0, 0, 2]) },
    },
  ];
  const layer = await writeLayer(entries, {
    file: join(dir, "l.tar"),
    mtime: 0,
    compression: "none",
    addParents: true,
  });
  const got = await pythonTarEntries(fs.readFileSync(layer.file));
  assert.deepEqual(
    got.map((e) => [e.name, e.type, e.mode, e.gid, e.size, e.linkname]),
    [
      ["etc", "dir", 0o750, 42, 0, ""],
      ["etc/cap", "file", 0o755, 0, 0, ""],
      ["etc/motd", "symlink", 0o777, 0, 0, "../run/motd"],
      ["usr", "dir", 0o755, 0, 0, ""],
      ["usr/bin", "dir", 0o755, 0, 0, ""],
      ["usr/bin/a", "file", 0o755, 0, 5, ""],
      ["usr/bin/b", "hardlink", 0o755, 0, 0, "usr/bin/a"],
      ["usr/bin/z", "hardlink", 0o755, 0, 0, "usr/bin/a"],
    ],
  );
  assert.equal(got[5]?.sha256, (await sha256sum(Buffer.from("hello"))).slice(7));
  assert.deepEqual(got[1]?.xattrs, { "security.capability": "\u0001\u0000\u0000\u0002", "user.z": "last" });
});

test("content that does not match its size, duplicate and escaping paths are refused", async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, "l.tar");
  const e = { type: "file", mode: 0o644, uid: 0, gid: 0 } as const;
  await assert.rejects(
    writeLayer([{ ...e, path: "f", size: 4, content: () => Readable.from([Buffer.from("toolong")]) }], {
      file,
      mtime: 0,
    }),
    (err: unknown) =>
      err instanceof LayerError && /"f": expected 4 bytes of content, found more/.test(err.message),
  );
  fs.writeFileSync(join(dir, "short"), "ab");
  await assert.rejects(
    writeLayer([{ ...e, path: "f", size: 3, content: join(dir, "short") }], { file, mtime: 0 }),
    {
      code: "KILN_ERR_LAYER",
      message: 'layer entry "f": expected 3 bytes of content, found 2',
    },
  );
  await assert.rejects(writeLayer([{ ...e, path: "a/../../etc/passwd", size: 0 }], { file, mtime: 0 }), {
    code: "KILN_ERR_INVALID_INPUT",
  });
  await assert.rejects(
    writeLayer(
      [
        { ...e, path: "x", size: 0 },
        { ...e, path: "./x", size: 0 },
      ],
      { file, mtime: 0 },
    ),
    { code: "KILN_ERR_INVALID_INPUT", message: 'layer entry "x" is given twice' },
  );
  await assert.rejects(writeLayer([{ ...e, path: "f", size: 0, uid: -1 }], { file, mtime: 0 }), {
    code: "KILN_ERR_INVALID_INPUT",
    message: 'layer entry "f": uid -1 is not a whole number ≥ 0',
  });
  assert.equal(fs.existsSync(file), false, "a failed write leaves no layer file behind");
});

// A device entry, so that Python writes the device fields as GNU tar does for every type.
test("ustar headers with sizes and times past 2^31 are Python tarfile's, byte for byte", async () => {
  const cases = [
    [5_000_000_000, 4_000_000_000],
    [2 ** 31, 2 ** 31 - 1],
    [0o77777777777, 0o77777777777],
    [0, 0],
  ] as const;
  const ours = cases.map(([size, mtime]) => {
    const h = {
      name: "big",
      type: TarType.char,
      mode: 0o4755,
      uid: 0o7777777,
      gid: 1000,
      size,
      mtime,
      devMajor: 4095,
      devMinor: 0o7777777,
    };
    assert.ok(fitsUstar(h));
    const out = Buffer.alloc(BLOCK);
    writeUstarHeader(h, out, 0);
    return out;
  });
  const script = `
import sys, tarfile
for size, mtime in ${JSON.stringify(cases)}:
    t = tarfile.TarInfo("big"); t.type, t.devmajor, t.devminor = tarfile.CHRTYPE, 4095, 0o7777777
    t.size, t.mtime, t.mode, t.uid, t.gid = size, mtime, 0o4755, 0o7777777, 1000
    sys.stdout.buffer.write(t.tobuf(tarfile.USTAR_FORMAT))`;
  const python = await runCommand("python3", ["-c", script]);
  assert.deepEqual(Buffer.concat(ours), python);
});
