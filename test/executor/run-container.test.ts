import assert from "node:assert/strict";
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import {
  type Container,
  ContainerError,
  DEFAULT_CAPABILITIES,
  runContainer,
  runtimeSpec,
} from "../../src/executor/container.ts";
import { busyboxRoot, emptyRoot, tempDir } from "../runtime/roots.ts";

const base = (rootfs: string, argv: string[], more: Partial<Container> = {}): Container => ({
  rootfs,
  argv,
  env: ["PATH=/bin"],
  cwd: "/",
  uid: 0,
  gid: 0,
  additionalGids: [],
  mounts: [],
  network: "none",
  hostname: "kiln-test",
  ...more,
});

async function run(
  c: Container,
): Promise<{ exitCode: number; stdout: string; stderr: string; touched: readonly string[] }> {
  const work = tempDir("bundles");
  const out = { stdout: "", stderr: "" };
  try {
    const exit = await runContainer(c, { workDir: work, onOutput: (s, b) => (out[s] += b.toString()) });
    assert.deepEqual(readdirSync(work), [], "the bundle is removed");
    return { exitCode: exit.exitCode, ...out, touched: exit.touchedDirs };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

test("the runtime spec: namespaces by network mode, Docker's capabilities for root only, runc's masks", () => {
  const none = runtimeSpec(base("/r", ["true"]), "kiln-1", new Map([["/etc/hosts", "/b/hosts"]]));
  assert.deepEqual(
    none.linux.namespaces.map((n) => n.type),
    ["pid", "ipc", "uts", "mount", "network"],
  );
  assert.deepEqual(
    runtimeSpec(base("/r", ["true"], { network: "default" }), "k", new Map()).linux.namespaces.map(
      (n) => n.type,
    ),
    ["pid", "ipc", "uts", "mount", "network"],
  );
  assert.deepEqual(
    runtimeSpec(base("/r", ["true"], { network: "host" }), "k", new Map()).linux.namespaces.map(
      (n) => n.type,
    ),
    ["pid", "ipc", "uts", "mount"],
  );
  assert.equal(none.linux.cgroupsPath, "/kiln/kiln-1");
  assert.deepEqual(none.process.capabilities.effective, [...DEFAULT_CAPABILITIES]);
  assert.equal(DEFAULT_CAPABILITIES.length, 14);
  const user = runtimeSpec(base("/r", ["true"], { uid: 1000, gid: 1000 }), "k", new Map());
  assert.deepEqual(user.process.capabilities.effective, []);
  assert.deepEqual(user.process.capabilities.bounding, [...DEFAULT_CAPABILITIES]);
  assert.equal(none.process.noNewPrivileges, false);
  assert.ok(none.linux.maskedPaths.includes("/proc/kcore"));
  assert.ok(none.linux.readonlyPaths.includes("/proc/sys"));
  assert.deepEqual(
    none.mounts.map((m) => m.destination),
    ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup", "/etc/hosts"],
  );
});

test("runs as root in its own namespaces with only lo, generated /etc/hosts, Docker's capabilities", async (t) => {
  const root = busyboxRoot();
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const before = readdirSync(root).sort();
  const r = await run(
    base(root, [
      "sh",
      "-c",
      "id; hostname; ls /sys/class/net; cat /sys/class/net/lo/operstate; grep CapEff /proc/self/status; cat /etc/hosts; echo $$; echo err >&2",
    ]),
  );
  assert.equal(r.exitCode, 0, r.stderr);
  assert.equal(
    r.stdout,
    [
      "uid=0(root) gid=0(root)",
      "kiln-test",
      "lo",
      "unknown",
      "CapEff:\t00000000a80425fb",
      "127.0.0.1\tlocalhost",
      "::1\tlocalhost ip6-localhost ip6-loopback",
      "127.0.1.1\tkiln-test",
      "1",
      "",
    ].join("\n"),
  );
  assert.equal(r.stderr, "err\n");
  // /proc, /dev and /sys were mount points made for the run and are gone; /etc/hosts kept its (empty) content.
  assert.deepEqual(readdirSync(root).sort(), before);
  assert.equal(readFileSync(join(root, "etc/hosts"), "utf8"), "");
  assert.deepEqual(r.touched, [""]);
});

test("a user with supplementary groups runs without capabilities; the exit status comes back", async (t) => {
  const root = busyboxRoot();
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const r = await run(
    base(root, ["sh", "-c", "id; grep CapEff /proc/self/status; touch /etc/x; exit 3"], {
      uid: 1000,
      gid: 1000,
      additionalGids: [10, 29],
      cwd: "/home/app",
    }),
  );
  assert.equal(r.exitCode, 3);
  assert.equal(
    r.stdout,
    "uid=1000(app) gid=1000(app) groups=10(wheel),29(audio)\nCapEff:\t0000000000000000\n",
  );
  assert.equal(r.stderr, "touch: /etc/x: Permission denied\n");
});

test("bind and tmpfs mounts; an empty root ends up empty again", async (t) => {
  const root = emptyRoot();
  const data = tempDir("bind-data");
  writeFileSync(join(data, "in.txt"), "from the host\n");
  t.after(() => {
    for (const d of [root, data]) rmSync(d, { recursive: true, force: true });
  });
  const mtime = statSync(root).mtimeMs;
  const r = await run(
    base(
      root,
      [
        "/opt/busybox",
        "sh",
        "-c",
        "cat /data/in.txt; echo hi > /scratch/x; cat /scratch/x; echo no > /data/y",
      ],
      {
        env: [],
        mounts: [
          { type: "bind", source: "/bin/busybox", target: "/opt/busybox", readOnly: true },
          { type: "bind", source: data, target: "/data", readOnly: true },
          { type: "tmpfs", target: "/scratch" },
        ],
      },
    ),
  );
  assert.equal(r.exitCode, 1);
  assert.equal(r.stdout, "from the host\nhi\n");
  assert.equal(r.stderr, "sh: can't create /data/y: Read-only file system\n");
  assert.deepEqual(readdirSync(root), []);
  assert.deepEqual(readdirSync(data), ["in.txt"]);
  assert.notEqual(statSync(root).mtimeMs, mtime, "the root directory held the mount points");
  assert.deepEqual(r.touched, [""]);
});

test("a program that does not exist is a ContainerError with runc's reason", async (t) => {
  const root = busyboxRoot();
  t.after(() => rmSync(root, { recursive: true, force: true }));
  await assert.rejects(run(base(root, ["/no/such/program"])), (err: Error) => {
    assert.ok(err instanceof ContainerError);
    assert.match(
      err.message,
      /^runc run kiln-[0-9a-f]{16}: .*\/no\/such\/program.*no such file or directory/,
    );
    return true;
  });
  assert.deepEqual(readdirSync(root).sort(), ["bin", "etc", "home", "root", "tmp"]);
});
