import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { InvalidInputError } from "../../src/errors.ts";
import { type RunStep, RunStepError, runStep } from "../../src/executor/run-step.ts";
import { resolveUser } from "../../src/executor/users.ts";
import { writeLayer } from "../../src/oci/layer-writer.ts";
import { busyboxRoot, emptyRoot, tempDir } from "../runtime/roots.ts";
import { summarizeEntries } from "./snapshot-summary.ts";

const step = (script: string, more: Partial<RunStep> = {}): RunStep => ({
  kind: "run",
  line: 4,
  createdBy: `RUN ${script}`,
  argv: ["/bin/sh", "-c", script],
  env: ["PATH=/bin"],
  user: "",
  workdir: "/",
  mounts: [],
  network: "none",
  usedArgs: {},
  ...more,
});

function setup(t: { after: (fn: () => void) => void }): { root: string; work: string } {
  const root = busyboxRoot();
  const work = tempDir("run-step");
  t.after(() => {
    rmSync(root, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  });
  return { root, work };
}

test("RUN echo hi > /x; rm /etc/motd; mkdir -p /a/b; ln /x /a/b/y", async (t) => {
  const { root, work } = setup(t);
  const r = await runStep(step("echo hi > /x; rm /etc/motd; mkdir -p /a/b; ln /x /a/b/y"), root, {
    workDir: work,
  });
  assert.equal(r.exitCode, 0);
  assert.deepEqual(summarizeEntries(r.entries, root), [
    "a dir 755 0:0",
    "a/b dir 755 0:0",
    "a/b/y file 644 0:0 3 <a/b/y>",
    "etc dir 755 0:0",
    "etc/.wh.motd file 644 0:0 0",
    "x hardlink 644 0:0 -> a/b/y",
  ]);
  // The layer GNU tar reads back: the hardlink after its file, the whiteout an empty file.
  const layer = await writeLayer(r.entries, { file: join(work, "layer.tar"), mtime: 0, compression: "none" });
  assert.deepEqual(
    execFileSync("tar", ["-tvf", layer.file, "--numeric-owner"], { encoding: "utf8" })
      .split("\n")
      .map((l) => l.replace(/\s+\d{4}-\d\d-\d\d \d\d:\d\d /, " ").replace(/\s+/g, " ")),
    [
      "drwxr-xr-x 0/0 0 a/",
      "drwxr-xr-x 0/0 0 a/b/",
      "-rw-r--r-- 0/0 3 a/b/y",
      "drwxr-xr-x 0/0 0 etc/",
      "-rw-r--r-- 0/0 0 etc/.wh.motd",
      "hrw-r--r-- 0/0 0 x link to a/b/y",
      "",
    ],
  );
  // The next step starts from this step's snapshot: nothing changed, nothing in its layer.
  const again = await runStep(step("cat /x"), root, { workDir: work, before: r.snapshot });
  assert.deepEqual(again.entries, []);
});

test("a non-zero status is a RunStepError with the status and the line; the output streams to the callback", async (t) => {
  const { root, work } = setup(t);
  let output = "";
  await assert.rejects(
    runStep(step("echo partial > /p; echo oops >&2; exit 7"), root, {
      workDir: work,
      onOutput: (_s, b) => (output += b.toString()),
    }),
    (err: unknown) => {
      assert.ok(err instanceof RunStepError);
      assert.equal(err.exitCode, 7);
      assert.equal(err.line, 4);
      assert.equal(err.code, "KILN_ERR_RUN");
      assert.equal(err.message, "line 4: RUN echo partial > /p; echo oops >&2; exit 7: exit status 7");
      return true;
    },
  );
  assert.equal(output, "oops\n");
});

test("USER by name gets its groups; uid:gid as given; a missing WORKDIR is made and is in the layer", async (t) => {
  const { root, work } = setup(t);
  let out = "";
  const onOutput = (_s: string, b: Buffer) => {
    out += b.toString();
  };
  const r = await runStep(step("id; pwd", { user: "app", workdir: "/home/app/src" }), root, {
    workDir: work,
    onOutput,
  });
  assert.equal(out, "uid=1000(app) gid=1000(app) groups=10(wheel),29(audio)\n/home/app/src\n");
  assert.deepEqual(summarizeEntries(r.entries, root), [
    "home dir 755 0:0",
    "home/app dir 755 0:0",
    "home/app/src dir 755 0:0",
  ]);
  out = "";
  const numeric = await runStep(step("id", { user: "4242:audio" }), root, { workDir: work, onOutput });
  assert.equal(out, "uid=4242 gid=29(audio)\n");
  assert.deepEqual(numeric.entries, []);
});

test("resolveUser follows runc: passwd, group membership, numeric ids, errors for unknown names", (t) => {
  const root = busyboxRoot();
  const empty = emptyRoot();
  t.after(() => {
    for (const d of [root, empty]) rmSync(d, { recursive: true, force: true });
  });
  assert.deepEqual(resolveUser(root, ""), { uid: 0, gid: 0, additionalGids: [] });
  assert.deepEqual(resolveUser(root, "app"), { uid: 1000, gid: 1000, additionalGids: [10, 29] });
  assert.deepEqual(resolveUser(root, "1000"), { uid: 1000, gid: 1000, additionalGids: [10, 29] });
  assert.deepEqual(resolveUser(root, "nobody"), { uid: 65534, gid: 65534, additionalGids: [29] });
  assert.deepEqual(resolveUser(root, "app:wheel"), { uid: 1000, gid: 10, additionalGids: [] });
  assert.deepEqual(resolveUser(root, "5000"), { uid: 5000, gid: 0, additionalGids: [] });
  assert.deepEqual(resolveUser(root, "5000:5001"), { uid: 5000, gid: 5001, additionalGids: [] });
  assert.deepEqual(resolveUser(empty, "0:0"), { uid: 0, gid: 0, additionalGids: [] });
  assert.deepEqual(resolveUser(empty, ""), { uid: 0, gid: 0, additionalGids: [] });
  assert.throws(() => resolveUser(root, "ghost"), {
    name: "InvalidInputError",
    message: "unable to find user ghost: no matching entries in passwd file",
  });
  assert.throws(() => resolveUser(root, "app:ghosts"), {
    message: "unable to find group ghosts: no matching entries in group file",
  });
  assert.throws(() => resolveUser(empty, "root"), InvalidInputError);
  // /etc/passwd is read through the root's own symlinks, never the host's.
  rmSync(join(root, "etc/passwd"));
  mkdirSync(join(root, "data"));
  writeFileSync(join(root, "data/passwd"), "builder:x:77:88::/:/bin/sh\n");
  symlinkSync("/data/passwd", join(root, "etc/passwd"));
  assert.deepEqual(resolveUser(root, "builder"), { uid: 77, gid: 88, additionalGids: [] });
});
