import assert from "node:assert/strict";
import fs from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { type TestContext, test } from "node:test";
import { PathEscapeError } from "../../src/errors.ts";
import { applyLayer } from "../../src/oci/layer-apply.ts";
import type { LayerEntry } from "../../src/oci/layer-entry.ts";
import { writeLayer } from "../../src/oci/layer-writer.ts";
import { walkTree } from "../../src/oci/tree-walk.ts";
import { opaqueWhiteoutEntry, whiteoutEntry } from "../../src/oci/whiteout.ts";
import { runCommand } from "../helpers/command.ts";
import { gnuTar, tempDir } from "../helpers/layer-fixtures.ts";

const MTIME = 1600000000;

/** A base tree with every entry type, special modes and owners, made with shell tools. */
async function baseTree(root: string): Promise<void> {
  const script = `
    set -e; cd "$1"
    mkdir -p usr/bin etc/conf.d tmp locked home/user/.cache
    printf 'binary' > usr/bin/tool; chmod 4755 usr/bin/tool
    ln usr/bin/tool usr/bin/tool-hard
    printf 'cfg' > etc/conf.d/a.conf; printf 'old' > etc/conf.d/b.conf
    printf 'secret' > locked/key; chmod 000 locked/key; chmod 000 locked
    printf 'mine' > home/user/notes; chown -R 1000:1000 home/user; chmod 0700 home/user
    chmod 1777 tmp
    ln -s ../usr/bin/tool etc/tool-link
    ln -s /etc/conf.d etc/abs-link
    mkfifo tmp/fifo; mknod tmp/null c 1 3
    printf 'x' > "$(printf 'n%.0s' $(seq 1 130))"
  `;
  await runCommand("sh", ["-c", script, "sh", root]);
}

async function layerOf(
  t: TestContext,
  entries: LayerEntry[],
  compression: "gzip" | "zstd" | "none" = "gzip",
) {
  const file = join(await tempDir(t), "layer");
  return writeLayer(entries, { file, mtime: MTIME, compression });
}

test("applying a layer recreates the tree: GNU tar archives both the same, every mtime is the layer's", async (t) => {
  const src = await tempDir(t);
  await baseTree(src);
  for (const compression of ["gzip", "zstd", "none"] as const) {
    const layer = await layerOf(t, walkTree(src), compression);
    const dst = await tempDir(t);
    await applyLayer(layer.open(), dst);

    assert.deepEqual(await gnuTar(dst, 0), await gnuTar(src, 0), `${compression}: same tree`);
    const tool = fs.statSync(join(dst, "usr/bin/tool"));
    assert.equal(tool.mode & 0o7777, 0o4755);
    assert.equal(tool.nlink, 2);
    assert.equal(fs.statSync(join(dst, "usr/bin/tool-hard")).ino, tool.ino);
    assert.equal(fs.lstatSync(join(dst, "home/user/notes")).uid, 1000);
    for (const e of walkTree(dst)) {
      assert.equal(fs.lstatSync(join(dst, e.path)).mtimeMs, MTIME * 1000, `${e.path} mtime`);
    }
  }
});

test("whiteouts delete lower paths, opaque markers empty directories, and no .wh. file lands", async (t) => {
  const root = await tempDir(t);
  await baseTree(root);
  const file = (path: string, text: string): LayerEntry => ({
    path,
    type: "file",
    mode: 0o644,
    uid: 0,
    gid: 0,
    size: text.length,
    content: () => Readable.from([Buffer.from(text)]),
  });
  const upper = await layerOf(t, [
    whiteoutEntry("usr/bin/tool-hard"),
    whiteoutEntry("home/user"),
    whiteoutEntry("not-there"),
    opaqueWhiteoutEntry("etc/conf.d"),
    file("etc/conf.d/-early.conf", "sorts before the marker"),
    file("etc/conf.d/z.conf", "sorts after the marker"),
    file("etc/conf.d/b.conf", "replaced"),
    { path: "etc/conf.d/sub", type: "dir", mode: 0o750, uid: 0, gid: 0 },
    file("etc/conf.d/sub/file", "new"),
  ]);
  await applyLayer(upper.open(), root);

  assert.deepEqual(fs.readdirSync(join(root, "etc/conf.d")).sort(), [
    "-early.conf",
    "b.conf",
    "sub",
    "z.conf",
  ]);
  assert.equal(fs.readFileSync(join(root, "etc/conf.d/b.conf"), "utf8"), "replaced");
  assert.equal(fs.statSync(join(root, "etc/conf.d/sub")).mode & 0o7777, 0o750);
  assert.deepEqual(fs.readdirSync(join(root, "usr/bin")), ["tool"]);
  assert.equal(fs.statSync(join(root, "usr/bin/tool")).nlink, 1);
  assert.deepEqual(fs.readdirSync(join(root, "home")), []);
  const leftovers = walkTree(root).filter((e) => e.path.split("/").some((c) => c.startsWith(".wh.")));
  assert.deepEqual(leftovers, []);
});

test("an opaque marker keeps what the same layer wrote earlier in the directory, recursively", async (t) => {
  const root = await tempDir(t);
  fs.mkdirSync(join(root, "d/sub"), { recursive: true });
  fs.writeFileSync(join(root, "d/sub/lower"), "lower");
  fs.writeFileSync(join(root, "d/lower"), "lower");
  const dir = (path: string): LayerEntry => ({ path, type: "dir", mode: 0o755, uid: 0, gid: 0 });
  const upper = await layerOf(t, [dir("d"), dir("d/sub"), opaqueWhiteoutEntry("d")], "none");
  await applyLayer(upper.open(), root);
  assert.deepEqual(fs.readdirSync(join(root, "d")), ["sub"]);
  assert.deepEqual(fs.readdirSync(join(root, "d/sub")), [], "lower content below a kept directory goes too");
});

/** A tar crafted by Python's tarfile from [name, type, linkname] triples: what kiln's writer refuses to make. */
async function hostileTar(
  entries: ReadonlyArray<readonly [string, "file" | "dir" | "symlink" | "hardlink", string?]>,
) {
  const py = `
import io, json, sys, tarfile
types = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}
with tarfile.open(fileobj=sys.stdout.buffer, mode="w|", format=tarfile.PAX_FORMAT) as tf:
    for name, kind, *link in json.loads(sys.argv[1]):
        ti = tarfile.TarInfo(name)
        ti.type = types[kind]
        ti.linkname = link[0] if link else ""
        data = b"pwned" if kind == "file" else b""
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
`;
  return runCommand("python3", ["-c", py, JSON.stringify(entries)]);
}

test("hostile layers are refused with a PathEscapeError naming the entry; nothing outside the root changes", async (t) => {
  const base = await tempDir(t);
  const outside = join(base, "outside");
  fs.mkdirSync(outside);
  fs.writeFileSync(join(outside, "secret"), "keep");
  const cases: Array<[string, Parameters<typeof hostileTar>[0], string]> = [
    ["dot-dot", [["../outside/pwned", "file"]], "../outside/pwned"],
    ["absolute", [[`${outside}/pwned`, "file"]], `${outside}/pwned`],
    [
      "relative symlink",
      [
        ["evil", "symlink", "../outside"],
        ["evil/pwned", "file"],
      ],
      "evil/pwned",
    ],
    [
      "symlink chain",
      [
        ["a", "symlink", "b"],
        ["b", "symlink", "../../outside"],
        ["a/pwned", "file"],
      ],
      "a/pwned",
    ],
    [
      "symlink directory",
      [
        ["d", "dir"],
        ["d/up", "symlink", "../.."],
        ["d/up/outside/pwned", "file"],
      ],
      "d/up/outside/pwned",
    ],
    ["hardlink", [["hl", "hardlink", "../outside/secret"]], "hl"],
    [
      "hardlink via symlink",
      [
        ["evil", "symlink", "../outside"],
        ["hl", "hardlink", "evil/secret"],
      ],
      "hl",
    ],
    [
      "whiteout of the parent",
      [
        ["d", "dir"],
        ["d/.wh..", "file"],
      ],
      "d/.wh..",
    ],
  ];
  for (const [what, entries, name] of cases) {
    const root = join(base, `root-${what.replaceAll(" ", "-")}`);
    fs.mkdirSync(root);
    await assert.rejects(
      applyLayer(Readable.from([await hostileTar(entries)]), root),
      (err: unknown) => err instanceof PathEscapeError && err.path === name,
      what,
    );
    assert.deepEqual(fs.readdirSync(outside), ["secret"], what);
    assert.equal(fs.readFileSync(join(outside, "secret"), "utf8"), "keep", what);
    assert.equal(fs.statSync(join(outside, "secret")).nlink, 1, what);
  }
  assert.deepEqual(
    fs.readdirSync(base).filter((n) => !n.startsWith("root-")),
    ["outside"],
  );
});

test("an absolute symlink as a parent resolves inside the root, as in the image; the host path is untouched", async (t) => {
  const base = await tempDir(t);
  const outside = join(base, "outside");
  fs.mkdirSync(outside);
  const root = join(base, "root");
  fs.mkdirSync(root);
  await applyLayer(
    Readable.from([
      await hostileTar([
        ["evil", "symlink", outside],
        ["evil/pwned", "file"],
      ]),
    ]),
    root,
  );
  assert.deepEqual(fs.readdirSync(outside), []);
  assert.equal(fs.readFileSync(join(root, outside, "pwned"), "utf8"), "pwned");
});

test("a symlink inside the root may be a parent when it stays inside", async (t) => {
  const root = await tempDir(t);
  const tar = await hostileTar([
    ["real", "dir"],
    ["link", "symlink", "real"],
    ["link/file", "file"],
  ]);
  await applyLayer(Readable.from([tar]), root);
  assert.equal(fs.readFileSync(join(root, "real/file"), "utf8"), "pwned");
  assert.equal(fs.readlinkSync(join(root, "link")), "real");
});

test("a corrupt layer is a LayerError", async (t) => {
  const root = await tempDir(t);
  const layer = await layerOf(t, [{ path: "f", type: "file", mode: 0o644, uid: 0, gid: 0, size: 0 }]);
  const bytes = fs.readFileSync(layer.file);
  bytes.writeUInt8(bytes.readUInt8(bytes.length - 12) ^ 0xff, bytes.length - 12); // in the deflate stream's end
  await assert.rejects(applyLayer(Readable.from([bytes]), root), { code: "KILN_ERR_LAYER" });
});
