import assert from "node:assert/strict";
import {
  chmodSync,
  existsSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { runCommand } from "../helpers/command.ts";
import { REPO_ROOT, runKiln } from "../helpers/kiln-cli.ts";
import { skopeo, skopeoInspect } from "../helpers/skopeo.ts";

const FLATTEN = join(REPO_ROOT, "test/helpers/flatten-image.py");
const kiln = runKiln;

type Listing = Record<string, [string, string, number, number, number, string, string]>;

async function flatten(layout: string, ref: string, arch = "amd64"): Promise<Listing> {
  const dir = mkdtempSync(join(tmpdir(), "kiln-flat-"));
  try {
    await skopeo("--override-arch", arch, "copy", `oci:${layout}:${ref}`, `dir:${dir}`);
    return JSON.parse((await runCommand("python3", [FLATTEN, dir])).toString());
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function tempDir(t: { after(fn: () => void): void }): string {
  const d = mkdtempSync(join(tmpdir(), "kiln-cli-"));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

/** A context with every file type a layer carries, odd modes and long and UTF-8 names. */
function makeContext(dir: string): string {
  const ctx = join(dir, "ctx");
  const long = "d".repeat(120);
  mkdirSync(join(ctx, "app/bin"), { recursive: true });
  mkdirSync(join(ctx, `app/${long}`), { recursive: true });
  writeFileSync(join(ctx, "app/bin/tool"), "#!/bin/sh\necho tool\n");
  chmodSync(join(ctx, "app/bin/tool"), 0o4755);
  writeFileSync(join(ctx, "app/secret"), "no one reads me");
  chmodSync(join(ctx, "app/secret"), 0o000);
  writeFileSync(join(ctx, `app/${long}/naïve-résumé.txt`), "utf-8 name\n");
  linkSync(join(ctx, "app/bin/tool"), join(ctx, "app/bin/tool-alias"));
  symlinkSync("bin/tool", join(ctx, "app/current"));
  writeFileSync(join(ctx, "app/debug.log"), "left out\n");
  mkdirSync(join(ctx, "etc"));
  writeFileSync(join(ctx, "etc/motd"), "hello\n");
  writeFileSync(join(ctx, "etc/issue"), "kiln\n");
  return ctx;
}

const SPEC = `
base: scratch
layers:
  - files:
      - src: app
        dest: /opt/app/
        chown: "1000:2000"
        exclude: ["*.log"]
  - files:
      - src: etc/
        dest: /etc/
        chmod: "0640"
config:
  env: { APP_HOME: /opt/app }
  entrypoint: [/opt/app/bin/tool]
  workingDir: /opt/app
  user: "1000"
  labels: { org.example.team: platform }
  exposedPorts: ["8080", "53/udp"]
  volumes: [/data]
  stopSignal: SIGINT
`;

test("kiln build writes an image skopeo reads, with the tree and config the spec asks for", async (t) => {
  const dir = tempDir(t);
  const ctx = makeContext(dir);
  writeFileSync(join(dir, "spec.yaml"), SPEC);
  const layout = join(dir, "layout");
  const r = await kiln([
    "build",
    "--spec",
    join(dir, "spec.yaml"),
    "--output",
    `oci:${layout}:v1`,
    "--digest-file",
    join(dir, "digest"),
    ctx,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^sha256:[a-f0-9]{64}$/);
  assert.equal(readFileSync(join(dir, "digest"), "utf8"), `${r.stdout}\n`);

  const info = await skopeoInspect(`oci:${layout}:v1`);
  assert.equal(info.Digest, r.stdout);
  assert.equal(info.Layers.length, 2);
  const config = JSON.parse(await skopeo("inspect", "--config", `oci:${layout}:v1`));
  assert.deepEqual(config.config, {
    Env: ["APP_HOME=/opt/app"],
    Entrypoint: ["/opt/app/bin/tool"],
    WorkingDir: "/opt/app",
    User: "1000",
    Labels: { "org.example.team": "platform" },
    ExposedPorts: { "8080/tcp": {}, "53/udp": {} },
    Volumes: { "/data": {} },
    StopSignal: "SIGINT",
  });
  assert.equal(config.architecture, "amd64");
  assert.equal(config.created, "1970-01-01T00:00:00Z");
  assert.deepEqual(
    config.history.map((h: { created_by: string }) => h.created_by),
    ["COPY --chown=1000:2000 app /opt/app/", "COPY etc/ /etc/"],
  );

  const long = `opt/app/${"d".repeat(120)}`;
  const toolSha = (await runCommand("sha256sum", [join(ctx, "app/bin/tool")])).toString().split(" ")[0]!;
  const tree = await flatten(layout, "v1");
  assert.deepEqual(
    Object.fromEntries(
      Object.entries(tree).map(([p, [type, mode, uid, gid, , link]]) => [
        p,
        `${type} ${mode} ${uid}:${gid} ${link}`,
      ]),
    ),
    {
      etc: "dir 0o755 0:0 ", // created for the copy: --chmod applies to what is copied, not to it
      "etc/issue": "file 0o640 0:0 ",
      "etc/motd": "file 0o640 0:0 ",
      opt: "dir 0o755 1000:2000 ",
      "opt/app": "dir 0o755 1000:2000 ",
      "opt/app/bin": "dir 0o755 1000:2000 ",
      "opt/app/bin/tool": "file 0o4755 1000:2000 ",
      "opt/app/bin/tool-alias": "hardlink 0o4755 1000:2000 opt/app/bin/tool",
      "opt/app/current": "symlink 0o777 1000:2000 bin/tool",
      [long]: "dir 0o755 1000:2000 ",
      [`${long}/naïve-résumé.txt`]: "file 0o644 1000:2000 ",
      "opt/app/secret": "file 0o0 1000:2000 ",
    },
  );
  assert.equal(tree["opt/app/bin/tool"]![6], toolSha);
});

test("the same tree gives the same digest whatever its mtimes, creation order and the umask", async (t) => {
  const dir = tempDir(t);
  const ctx = makeContext(dir);
  const copy = join(dir, "copy");
  await runCommand("cp", ["-a", ctx, copy]); // GNU cp keeps hardlinks, which the layer must keep too
  utimesSync(join(copy, "app/bin/tool"), new Date("2001-01-01"), new Date("2001-01-01"));
  utimesSync(join(copy, "etc"), new Date("2011-01-01"), new Date("2011-01-01"));
  writeFileSync(join(dir, "spec.yaml"), SPEC);
  const a = await kiln(
    ["build", "--spec", join(dir, "spec.yaml"), "--output", `oci:${join(dir, "a")}:x`, ctx],
    {
      umask: "022",
    },
  );
  const b = await kiln(
    ["build", "--spec", join(dir, "spec.yaml"), "--output", `oci:${join(dir, "b")}:x`, copy],
    {
      umask: "077",
    },
  );
  assert.equal(a.code, 0, a.stderr);
  assert.equal(b.code, 0, b.stderr);
  assert.equal(a.stdout, b.stdout);
  const c = await kiln([
    "build",
    "--spec",
    join(dir, "spec.yaml"),
    "--output",
    `oci:${join(dir, "c")}:x`,
    "--timestamp",
    "1700000000",
    ctx,
  ]);
  assert.notEqual(c.stdout, a.stdout, "the timestamp is part of the image");
});

test("a base from an OCI layout: deletes become whiteouts and the merged tree loses the paths", async (t) => {
  const dir = tempDir(t);
  const ctx = makeContext(dir);
  writeFileSync(
    join(dir, "base.yaml"),
    "layers:\n  - files:\n      - { src: etc, dest: /etc }\n      - { src: app, dest: /opt/app }\n",
  );
  const layout = join(dir, "layout");
  assert.equal(
    (await kiln(["build", "--spec", join(dir, "base.yaml"), "--output", `oci:${layout}:base`, ctx])).code,
    0,
  );
  writeFileSync(
    join(dir, "app.yaml"),
    `base: oci:${layout}:base\nlayers:\n  - delete: [/etc/motd, /opt/app/bin]\n  - files:\n      - { src: etc/issue, dest: /etc/issue.net }\n`,
  );
  const r = await kiln(["build", "--spec", join(dir, "app.yaml"), "--output", `oci:${layout}:app`, ctx]);
  assert.equal(r.code, 0, r.stderr);
  const tree = await flatten(layout, "app");
  assert.deepEqual(
    Object.keys(tree).filter(
      (p) => p.startsWith("etc") || p.startsWith("opt/app/b") || p === "opt/app/current",
    ),
    ["etc", "etc/issue", "etc/issue.net", "opt/app/current"],
  );
  const info = await skopeoInspect(`oci:${layout}:app`);
  assert.equal(info.Layers.length, 3);
});

test("several platforms give an image index with one manifest each", async (t) => {
  const dir = tempDir(t);
  const ctx = makeContext(dir);
  writeFileSync(
    join(dir, "spec.yaml"),
    "platforms: [linux/amd64, linux/arm64, linux/arm/v7]\nlayers:\n  - files: [{ src: etc, dest: /etc }]\n",
  );
  const layout = join(dir, "layout");
  const r = await kiln(["build", "--spec", join(dir, "spec.yaml"), "--output", `oci:${layout}:multi`, ctx]);
  assert.equal(r.code, 0, r.stderr);
  const index = JSON.parse(await skopeo("inspect", "--raw", `oci:${layout}:multi`));
  assert.equal(index.mediaType, "application/vnd.oci.image.index.v1+json");
  assert.deepEqual(
    index.manifests.map(
      (m: { platform: { architecture: string; variant?: string } }) =>
        `${m.platform.architecture}${m.platform.variant ?? ""}`,
    ),
    ["amd64", "arm64", "armv7"],
  );
  const arm = await skopeoInspect(
    "--override-arch",
    "arm",
    "--override-variant",
    "v7",
    `oci:${layout}:multi`,
  );
  assert.equal(arm.Architecture, "arm");
  assert.equal(arm.Layers.length, 1);
});

test("bad input fails with one clear line and leaves no layout behind", async (t) => {
  const dir = tempDir(t);
  const ctx = makeContext(dir);
  const cases: [string, RegExp][] = [
    [
      "layers:\n  - files: [{ src: etc, dest: /etc }]\n    colour: blue\n",
      /layers\[0\]: Unrecognized key: "colour"/,
    ],
    ["layers:\n  - files: [{ src: nothere, dest: /x }]\n", /nothere: not found in the build context/],
    ["layers:\n  - files: [{ src: ../../etc/passwd, dest: /x }]\n", /escapes the build context/],
    ["layers:\n  - files: [{ src: etc, dest: relative }]\n", /dest: must be an absolute path/],
    ["layers:\n  - delete: [/etc/motd]\n", /cannot delete \/etc\/motd: it is not in the image/],
    ["platforms: [linux]\n", /platforms\[0\]: must be os\/arch/],
    ["layers:\n  - delete: [/]\n", /cannot delete \/: it names the image's root/],
  ];
  for (const [spec, message] of cases) {
    writeFileSync(join(dir, "spec.yaml"), spec);
    const layout = join(dir, "out");
    const r = await kiln(["build", "--spec", join(dir, "spec.yaml"), "--output", `oci:${layout}:x`, ctx]);
    assert.equal(r.code, 1, spec);
    assert.match(r.stderr, message);
    assert.match(r.stderr, /^kiln: /);
    assert.equal(existsSync(join(layout, "index.json")), false, `no index.json after: ${spec}`);
  }
  // An output folder holding something else is refused before anything is written into it.
  writeFileSync(join(dir, "spec.yaml"), "layers:\n  - files: [{ src: etc, dest: /etc }]\n");
  const project = join(dir, "project");
  mkdirSync(project);
  writeFileSync(join(project, "index.json"), '{"name":"my-node-project"}');
  const refused = await kiln([
    "build",
    "--spec",
    join(dir, "spec.yaml"),
    "--output",
    `oci:${project}:x`,
    ctx,
  ]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /is not empty and not an OCI image layout/);
  assert.deepEqual(readdirSync(project), ["index.json"]);
  const help = await kiln(["build", "--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^usage: kiln build \(--spec FILE \| -f Dockerfile\) \[options\] CONTEXT/);
  const typo = await kiln(["build", "--spec", join(dir, "spec.yaml"), "--outptu", "oci:x", ctx]);
  assert.equal(typo.code, 1);
  assert.equal(typo.stderr.split("\n").length, 1, "one line, not the whole usage");
  assert.match(typo.stderr, /Unknown option '--outptu'.*\(see kiln build --help\)/);
  const usage = await kiln(["build", "--spec", join(dir, "spec.yaml"), ctx]);
  assert.equal(usage.code, 1);
  assert.match(usage.stderr, /nothing to do: give --output/);
});
