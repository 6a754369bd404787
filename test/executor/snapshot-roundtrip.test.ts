import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  createReadStream,
  linkSync,
  mkdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import fc from "fast-check";
import { diffSnapshots, takeSnapshot } from "../../src/executor/snapshot.ts";
import { applyLayer } from "../../src/oci/layer-apply.ts";
import { writeLayer } from "../../src/oci/layer-writer.ts";
import { tempDir } from "../runtime/roots.ts";

/** Every path with type, mode, owner and link target, and for files the sha256 of the content (GNU find). */
function listing(root: string): string[] {
  return execFileSync("find", [root, "-mindepth", "1", "-printf", "%P\t%y\t%m\t%U:%G\t%l\n"], {
    encoding: "utf8",
  })
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => {
      const [p, type] = l.split("\t");
      if (type !== "f") return l;
      return `${l}\t${createHash("sha256")
        .update(readFileSync(join(root, p!)))
        .digest("hex")}`;
    })
    .sort();
}

const NAMES = ["a", "b", "a/x", "a/y", "b/x", "a/x/z"] as const;
type Op =
  | { op: "write"; path: string; text: string }
  | { op: "rm"; path: string }
  | { op: "mkdir"; path: string }
  | { op: "symlink"; path: string; target: string }
  | { op: "link"; from: string; path: string }
  | { op: "chmod"; path: string; mode: number };

const path = fc.constantFrom(...NAMES);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constant("write" as const), path, text: fc.string({ maxLength: 6 }) }),
  fc.record({ op: fc.constant("rm" as const), path }),
  fc.record({ op: fc.constant("mkdir" as const), path }),
  fc.record({ op: fc.constant("symlink" as const), path, target: fc.constantFrom("a", "/etc", "../b") }),
  fc.record({ op: fc.constant("link" as const), from: path, path }),
  fc.record({ op: fc.constant("chmod" as const), path, mode: fc.constantFrom(0o700, 0o755, 0o4755, 0o600) }),
);

/** Applies one change; a change the tree does not allow (a parent that is a file, a name taken) is skipped. */
function apply(root: string, o: Op): void {
  const at = join(root, o.path);
  try {
    if (o.op === "write") writeFileSync(at, o.text);
    else if (o.op === "rm") rmSync(at, { recursive: true, force: true });
    else if (o.op === "mkdir") mkdirSync(at);
    else if (o.op === "symlink") symlinkSync(o.target, at);
    else if (o.op === "link") linkSync(join(root, o.from), at);
    else chmodSync(at, o.mode);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (!["EEXIST", "ENOENT", "ENOTDIR", "EISDIR", "EPERM", "ENOTEMPTY"].includes(code ?? "")) throw err;
  }
}

function base(root: string): void {
  for (const o of [
    { op: "mkdir", path: "a" },
    { op: "mkdir", path: "a/x" },
    { op: "write", path: "a/y", text: "y" },
    { op: "write", path: "a/x/z", text: "zz" },
    { op: "mkdir", path: "b" },
    { op: "link", from: "a/y", path: "b/x" },
  ] as const)
    apply(root, o);
}

test("the layer of any change, applied over a copy of the tree before it, gives the tree after it", async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 8 }), async (ops) => {
      const work = tempDir("snapshot-roundtrip");
      try {
        const upper = join(work, "root");
        const lower = join(work, "lower");
        mkdirSync(upper);
        base(upper);
        execFileSync("cp", ["-a", upper, lower]);
        const before = takeSnapshot(upper);
        await sleep(10); // past the kernel's coarse clock tick, as any RUN step is
        for (const o of ops) apply(upper, o);
        const entries = diffSnapshots(before, takeSnapshot(upper));
        const layer = await writeLayer(entries, {
          file: join(work, "layer.tar"),
          mtime: 0,
          compression: "none",
        });
        await applyLayer(createReadStream(layer.file), lower);
        assert.deepEqual(listing(lower), listing(upper), JSON.stringify(ops));
      } finally {
        rmSync(work, { recursive: true, force: true });
      }
    }),
    { numRuns: 60 },
  );
});
