import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { before, test } from "node:test";
import { localRuntime } from "../../src/build/local-runtime.ts";
import { InvalidInputError } from "../../src/errors.ts";
import { diffSnapshots, takeSnapshot } from "../../src/executor/snapshot.ts";
import {
  runStepProcess,
  StepProcessError,
  type StepProcessOptions,
} from "../../src/executor/step-process.ts";
import { resolveUser } from "../../src/executor/users.ts";
import { writeLayer } from "../../src/oci/layer-writer.ts";
import type { RunStep } from "../../src/plan/plan.ts";
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

let helper: string;
before(async () => {
  const runtime = (await localRuntime()).mounts[0]!;
  assert.ok(runtime.type === "bind");
  helper = join(runtime.source, "bin", "kiln-run");
});

function setup(t: { after: (fn: () => void) => void }): {
  root: string;
  options: StepProcessOptions;
  out: () => string;
} {
  const root = busyboxRoot();
  const work = tempDir("step-process");
  for (const d of ["scratch", "secrets", "caches", "context"]) mkdirSync(join(work, d));
  t.after(() => {
    rmSync(root, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  });
  let out = "";
  return {
    root,
    out: () => out,
    options: {
      rootfs: root,
      helper,
      hide: [],
      scratch: join(work, "scratch"),
      secrets: join(work, "secrets"),
      caches: join(work, "caches"),
      bindRoot: () => join(work, "context"),
      onOutput: (_s, b) => {
        out += b.toString();
      },
    },
  };
}

test("a RUN's stat diff: new files, a whiteout for a deleted base file, a hardlink after its file", async (t) => {
  const { root, options } = setup(t);
  const before = takeSnapshot(root);
  const r = await runStepProcess(step("echo hi > /x; rm /etc/motd; mkdir -p /a/b; ln /x /a/b/y"), options);
  const entries = diffSnapshots(before, takeSnapshot(root), { ignoreTimes: r.touchedDirs });
  assert.deepEqual(summarizeEntries(entries, root), [
    "a dir 755 0:0",
    "a/b dir 755 0:0",
    "a/b/y file 644 0:0 3 <a/b/y>",
    "etc dir 755 0:0",
    "etc/.wh.motd file 644 0:0 0",
    "x hardlink 644 0:0 -> a/b/y",
  ]);
  const layer = await writeLayer(entries, {
    file: join(options.scratch, "l.tar"),
    mtime: 0,
    compression: "none",
  });
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
});

test("a non-zero status is a StepProcessError with BuildKit's wording; output streams as it comes", async (t) => {
  const { options, out } = setup(t);
  await assert.rejects(
    runStepProcess(step("echo partial > /p; echo oops >&2; exit 7"), options),
    (err: unknown) => {
      assert.ok(err instanceof StepProcessError);
      assert.equal(err.exitCode, 7);
      assert.equal(err.code, "KILN_ERR_RUN");
      assert.equal(
        err.message,
        'process "/bin/sh -c echo partial > /p; echo oops >&2; exit 7" did not complete successfully: exit code: 7',
      );
      return true;
    },
  );
  assert.equal(out(), "oops\n");
});

test("USER by name gets its groups and HOME; a missing WORKDIR is made (root-owned, in the layer)", async (t) => {
  const { root, options, out } = setup(t);
  const before = takeSnapshot(root);
  const r = await runStepProcess(
    step('id; pwd; echo "$HOME"', { user: "app", workdir: "/home/app/src" }),
    options,
  );
  assert.equal(out(), "uid=1000(app) gid=1000(app) groups=10(wheel),29(audio)\n/home/app/src\n/home/app\n");
  assert.deepEqual(
    summarizeEntries(diffSnapshots(before, takeSnapshot(root), { ignoreTimes: r.touchedDirs }), root),
    ["home dir 755 0:0", "home/app dir 755 0:0", "home/app/src dir 755 0:0"],
  );
});

test("RUN --mount: tmpfs, cache kept across steps, read-only bind from the context; stubs removed, none in the diff", async (t) => {
  const { root, options, out } = setup(t);
  writeFileSync(
    join(options.bindRoot({ type: "bind", target: "/", source: "/", readWrite: false }), "ctx.txt"),
    "from context\n",
  );
  const before = takeSnapshot(root);
  const mounts: RunStep["mounts"] = [
    { type: "tmpfs", target: "/scratch/t" },
    {
      type: "cache",
      id: "c1",
      target: "/var/cache/x",
      sharing: "shared",
      readOnly: false,
      mode: 0o755,
      uid: 0,
      gid: 0,
    },
    { type: "bind", target: "/src", source: "/", readWrite: false },
  ];
  const script =
    "echo t > /scratch/t/f; n=0; [ -f /var/cache/x/n ] && n=$(cat /var/cache/x/n); echo $((n + 1)) > /var/cache/x/n; cat /src/ctx.txt; touch /src/no 2>&1 || echo read-only"; // one stream: stdout and stderr pipes interleave in no fixed order
  const r1 = await runStepProcess(step(script, { mounts }), options);
  const r2 = await runStepProcess(step(script, { mounts }), options);
  const once = "from context\ntouch: /src/no: Read-only file system\nread-only\n";
  assert.equal(out(), once + once);
  assert.equal(readFileSync(join(options.caches, "c1", "n"), "utf8"), "2\n");
  for (const p of ["scratch", "var/cache/x", "src"]) assert.equal(existsSync(join(root, p)), false, p);
  const touched = [...new Set([...r1.touchedDirs, ...r2.touchedDirs])];
  assert.deepEqual(diffSnapshots(before, takeSnapshot(root), { ignoreTimes: touched }), []);
});

test("RUN --mount=type=secret: a private copy with the mount's mode and owner, absent after the step; required secrets must exist", async (t) => {
  const { root, options, out } = setup(t);
  writeFileSync(join(options.secrets, "tok"), "s3cr3t-value");
  const secret = {
    type: "secret" as const,
    id: "tok",
    target: "/run/secrets/tok",
    required: true,
    mode: 0o440,
    uid: 0,
    gid: 1000,
  };
  const before = takeSnapshot(root);
  await runStepProcess(
    step("stat -c '%a %u:%g' /run/secrets/tok; cat /run/secrets/tok | md5sum", { mounts: [secret] }),
    options,
  );
  assert.equal(out(), `440 0:1000\n${createHash("md5").update("s3cr3t-value").digest("hex")}  -\n`);
  assert.equal(existsSync(join(root, "run")), false);
  assert.deepEqual(diffSnapshots(before, takeSnapshot(root)), []);
  assert.equal(statSync(join(options.secrets, "tok")).isFile(), true);
  await assert.rejects(
    runStepProcess(step("true", { mounts: [{ ...secret, id: "missing" }] }), options),
    /secret missing is required/,
  );
});

test("resolveUser follows runc: passwd, group membership, numeric ids, home, errors for unknown names", (t) => {
  const root = busyboxRoot();
  const empty = emptyRoot();
  t.after(() => {
    for (const d of [root, empty]) rmSync(d, { recursive: true, force: true });
  });
  const u = (uid: number, gid: number, additionalGids: number[], home = "/") => ({
    uid,
    gid,
    additionalGids,
    home,
  });
  assert.deepEqual(resolveUser(root, ""), u(0, 0, [], "/root"));
  assert.deepEqual(resolveUser(root, "app"), u(1000, 1000, [10, 29], "/home/app"));
  assert.deepEqual(resolveUser(root, "1000"), u(1000, 1000, [10, 29], "/home/app"));
  assert.deepEqual(resolveUser(root, "nobody"), u(65534, 65534, [29], "/nonexistent"));
  assert.deepEqual(resolveUser(root, "app:wheel"), u(1000, 10, [], "/home/app"));
  assert.deepEqual(resolveUser(root, "5000"), u(5000, 0, []));
  assert.deepEqual(resolveUser(root, "5000:5001"), u(5000, 5001, []));
  assert.deepEqual(resolveUser(empty, "0:0"), u(0, 0, []));
  assert.deepEqual(resolveUser(empty, ""), u(0, 0, []));
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
  assert.deepEqual(resolveUser(root, "builder"), u(77, 88, []));
});
