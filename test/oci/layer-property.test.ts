import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { test } from "node:test";
import { gunzipSync } from "node:zlib";
import fc from "fast-check";
import tar from "tar-stream";
import {
  comparePaths,
  type EntryType,
  type LayerEntry,
  TAR_STREAM_TYPES,
} from "../../src/oci/layer-entry.ts";
import { writeLayer } from "../../src/oci/layer-writer.ts";
import { pythonTarEntries, tempDir } from "../helpers/layer-fixtures.ts";

/** What a reader should see of one entry: [type, mode, uid, gid, size, linkname, devmajor, devminor, sha256]. */
type Seen = [string, number, number, number, number, string, number, number, string];

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

const component = fc
  .array(fc.constantFrom("a", "b", "Z", "-", ".", "_", "é", "日", "🎉", "x".repeat(40), " "), {
    minLength: 1,
    maxLength: 4,
  })
  .map((parts) => parts.join(""))
  .filter((c) => c !== "." && c !== ".." && !c.startsWith(".wh."));

const node = fc.record({
  path: fc.array(component, { minLength: 1, maxLength: 7 }).map((c) => c.join("/")),
  type: fc.constantFrom<EntryType>("file", "file", "dir", "symlink", "hardlink", "char", "block", "fifo"),
  mode: fc.integer({ min: 0, max: 0o7777 }),
  uid: fc.oneof(fc.integer({ min: 0, max: 70000 }), fc.integer({ min: 0o7777777, max: 2 ** 31 - 1 })),
  gid: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
  data: fc.uint8Array({ maxLength: 3000 }),
  link: fc.string({ unit: "grapheme", minLength: 1, maxLength: 160 }).filter((s) => !s.includes("\0")),
  dev: fc.tuple(fc.integer({ min: 0, max: 4095 }), fc.integer({ min: 0, max: 0o7777777 })),
  pick: fc.nat(),
});

type RandomNode = typeof node extends fc.Arbitrary<infer T> ? T : never;

/** Every proper prefix of a path: `a/b/c` → `a`, `a/b`. */
function parentsOf(path: string): string[] {
  const parts = path.split("/");
  return parts.slice(0, -1).map((_, i) => parts.slice(0, i + 1).join("/"));
}

/**
 * Turns random nodes into a consistent layer: every path that has children is a directory, hardlinks
 * point at a file of the layer (or become files when there is none). Returns the entries and what a
 * reader must see for every path, parents the writer adds included.
 */
function layerOf(nodes: readonly RandomNode[]): { entries: LayerEntry[]; seen: Map<string, Seen> } {
  const byPath = new Map(nodes.map((n) => [n.path, n]));
  const parents = new Set(nodes.flatMap((n) => parentsOf(n.path)));
  const files = [...byPath.values()]
    .filter((n) => n.type === "file" && !parents.has(n.path))
    .map((n) => n.path);
  const entries: LayerEntry[] = [];
  for (const n of byPath.values()) {
    const base = { path: n.path, mode: n.mode, uid: n.uid, gid: n.gid };
    const type = parents.has(n.path) ? "dir" : n.type === "hardlink" && files.length === 0 ? "file" : n.type;
    const data = Buffer.from(n.data);
    if (type === "file")
      entries.push({ ...base, type, size: data.length, content: () => Readable.from([data]) });
    else if (type === "symlink") entries.push({ ...base, type, linkTarget: n.link });
    else if (type === "hardlink") entries.push({ ...base, type, linkTarget: files[n.pick % files.length]! });
    else if (type === "char" || type === "block")
      entries.push({ ...base, type, devMajor: n.dev[0], devMinor: n.dev[1] });
    else entries.push({ ...base, type });
  }
  const seen = new Map<string, Seen>();
  const content = new Map(nodes.map((n) => [n.path, Buffer.from(n.data)]));
  for (const p of parents) if (!byPath.has(p)) seen.set(p, ["dir", 0o755, 0, 0, 0, "", 0, 0, ""]);
  for (const e of entries) {
    const dev = e.type === "char" || e.type === "block" ? [e.devMajor!, e.devMinor!] : [0, 0];
    const body = e.type === "file" ? content.get(e.path)! : Buffer.alloc(0);
    seen.set(e.path, [
      e.type,
      e.mode,
      e.uid,
      e.gid,
      body.length,
      e.linkTarget ?? "",
      dev[0]!,
      dev[1]!,
      e.type === "file" ? sha(body) : "",
    ]);
  }
  return { entries, seen };
}

/**
 * A hardlink group (a file and the links to it) may come back with another member holding the content;
 * the group, its content and its attributes must be the same.
 */
function canonical(seen: Map<string, Seen>): Map<string, Seen> {
  const out = new Map(seen);
  for (const [path, s] of seen) {
    if (s[0] !== "hardlink") continue;
    const target = seen.get(s[5])!;
    out.set(path, ["linked", target[1], target[2], target[3], 0, target[8], 0, 0, ""]);
  }
  for (const [path, s] of seen) {
    if (s[0] === "file" && [...seen.values()].some((o) => o[0] === "hardlink" && o[5] === path)) {
      out.set(path, ["linked", s[1], s[2], s[3], 0, s[8], 0, 0, ""]);
    }
  }
  return out;
}

async function readWithTarStream(archive: Buffer): Promise<Map<string, Seen>> {
  const seen = new Map<string, Seen>();
  const extract = tar.extract();
  Readable.from([archive]).pipe(extract);
  for await (const entry of extract) {
    const h = entry.header;
    const chunks: Buffer[] = [];
    for await (const c of entry) chunks.push(c as Buffer);
    const pax = (h.pax ?? {}) as Record<string, string>;
    const body = Buffer.concat(chunks);
    seen.set(h.name.replace(/\/$/, ""), [
      TAR_STREAM_TYPES[h.type]!,
      h.mode,
      pax.uid ? Number(pax.uid) : h.uid,
      pax.gid ? Number(pax.gid) : h.gid,
      h.size,
      h.linkname ?? "",
      h.devmajor,
      h.devminor,
      h.type === "file" ? sha(body) : "",
    ]);
  }
  return seen;
}

test("random layers read back the same with tar-stream and with Python's tarfile", async (t) => {
  const dir = await tempDir(t);
  await fc.assert(
    fc.asyncProperty(fc.array(node, { minLength: 1, maxLength: 25 }), async (nodes) => {
      const { entries, seen } = layerOf(nodes);
      const layer = await writeLayer(entries, { file: join(dir, "l.tar.gz"), mtime: 0, addParents: true });
      const gz = fs.readFileSync(layer.file);
      const want = canonical(seen);
      assert.deepEqual(canonical(await readWithTarStream(gunzipSync(gz))), want, "tar-stream");
      const py = new Map<string, Seen>();
      for (const e of await pythonTarEntries(gz)) {
        py.set(e.name, [e.type, e.mode, e.uid, e.gid, e.size, e.linkname, e.devmajor, e.devminor, e.sha256]);
      }
      assert.deepEqual(canonical(py), want, "python tarfile");
      const order = [...py.keys()];
      for (const [i, p] of order.entries()) {
        const parent = p.slice(0, p.lastIndexOf("/"));
        if (p.includes("/")) assert.ok(order.indexOf(parent) < i, `${parent} before ${p}`);
      }
    }),
    { numRuns: 30 },
  );
});

/** The order GNU tar's `--sort=name` walk writes: UTF-8 bytes, `/` lower than any other byte. */
function byteOrder(a: string, b: string): number {
  const key = (p: string) => Buffer.from(p.replaceAll("/", "\0"), "utf8");
  return Math.sign(Buffer.compare(key(a), key(b)));
}

test("paths compare as their UTF-8 bytes with / lowest, surrogate pairs and private-use letters too", () => {
  const path = fc
    .array(fc.constantFrom("a", "b", "-", "/", "é", "日", "\uffff", "\ue000", "🎉", "🎊", "𝄞", "\ud83c"), {
      maxLength: 8,
    })
    .map((parts) => parts.join(""));
  fc.assert(
    fc.property(path, path, (a, b) => {
      assert.equal(
        Math.sign(comparePaths(a, b)),
        byteOrder(a, b),
        `${JSON.stringify(a)} vs ${JSON.stringify(b)}`,
      );
    }),
    { numRuns: 2000 },
  );
});
