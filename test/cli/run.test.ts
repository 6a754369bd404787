import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { gunzipSync } from "node:zlib";
import { readComparableImage } from "../helpers/image-tree.ts";
import { REPO_ROOT, runKiln } from "../helpers/kiln-cli.ts";
import { type RunningRegistry, startRegistry } from "../helpers/registry.ts";
import { skopeo } from "../helpers/skopeo.ts";

/**
 * `kiln build` with RUN: stages run in runc containers on this machine (root, Linux), the executor inside,
 * the credentials and secrets kept out of the steps, their layers, history, config and log.
 */

let registry: RunningRegistry;
let work: string;
let mirror: string[];

before(async () => {
  registry = await startRegistry();
  work = mkdtempSync(join(tmpdir(), "kiln-run-cli-"));
  const images = execFileSync(join(REPO_ROOT, "test/images/build"), { encoding: "utf8" }).trim();
  await pushBusybox(join(images, "busybox"));
  mirror = ["--registry-mirror", `docker.io=${registry.host}`, "--insecure-registry", registry.host];
});
after(async () => {
  await registry?.close();
  rmSync(work, { recursive: true, force: true });
});

async function pushBusybox(layout: string): Promise<void> {
  await skopeo(
    "copy",
    "--dest-tls-verify=false",
    `oci:${layout}`,
    `docker://${registry.host}/library/busybox:latest`,
  );
}

/** A case folder: the Dockerfile and a context with `files`. */
function project(name: string, dockerfile: string, files: Record<string, string> = {}): string {
  const dir = join(work, name);
  mkdirSync(join(dir, "ctx"), { recursive: true });
  writeFileSync(join(dir, "Dockerfile"), dockerfile);
  for (const [f, text] of Object.entries(files)) writeFileSync(join(dir, "ctx", f), text);
  return dir;
}

function build(dir: string, ...args: string[]) {
  return runKiln([
    "build",
    "-f",
    join(dir, "Dockerfile"),
    ...mirror,
    "--output",
    `oci:${join(dir, "out")}`,
    ...args,
    join(dir, "ctx"),
  ]);
}

/** Every blob of a layout (layers decompressed), as text, for searching. */
function layoutText(layout: string): string {
  const dir = join(layout, "blobs", "sha256");
  return readdirSync(dir)
    .map((f) => {
      const bytes = readFileSync(join(dir, f));
      return bytes[0] === 0x1f && bytes[1] === 0x8b
        ? gunzipSync(bytes).toString("latin1")
        : bytes.toString("latin1");
    })
    .join("\n");
}

function fileSha(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

test("a RUN cannot read the push credentials: not in files, its environment, nor other processes' /proc", async () => {
  const password = `pw-${randomBytes(12).toString("hex")}`;
  const authfile = join(work, "auth.json");
  writeFileSync(
    authfile,
    JSON.stringify({
      auths: { [registry.host]: { auth: Buffer.from(`kiln:${password}`).toString("base64") } },
    }),
  );
  const dir = project(
    "credentials",
    `FROM busybox
RUN for d in /*; do case $d in /proc|/sys|/dev) ;; *) grep -rl '"auths"' "$d" ;; esac; done > /auth-files; \\
    cat /proc/*/environ /proc/*/cmdline > /proc-text; env > /env-text; \\
    true
`,
  );
  const r = await build(dir, "--authfile", authfile, "--push", `${registry.host}/creds:1`);
  assert.equal(r.code, 0, r.stderr);
  const image = await readComparableImage(join(dir, "out"), { ref: "latest" });
  assert.equal(image.tree.get("/auth-files")?.size, 0);
  const text = layoutText(join(dir, "out"));
  assert.ok(text.includes("PATH=/bin"), "the layer holds the step's environment dump");
  assert.equal(text.includes(password), false, "the password is in the image");
  assert.equal(text.includes(Buffer.from(`kiln:${password}`).toString("base64")), false);
  assert.equal(r.stderr.includes(password), false);
  const pushed = JSON.parse(
    await skopeo("inspect", "--tls-verify=false", "--raw", `docker://${registry.host}/creds:1`),
  );
  assert.equal(pushed.layers.length, image.config === undefined ? 0 : pushed.layers.length);
});

test("a build secret is in the step and in no layer, history, config or log; no /run/secrets stub is left", async () => {
  const secret = `secret-${randomBytes(16).toString("hex")}`;
  const file = join(work, "secret.txt");
  writeFileSync(file, secret);
  const dir = project(
    "secret",
    `FROM busybox
RUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -d' ' -f1 > /tok.sha; \\
    ls /.kiln/secrets > /store-listing 2>&1; stat -c '%a %u:%g' /run/secrets/tok > /tok.mode
RUN --mount=type=secret,id=tok,env=TOK,required=true echo "\${#TOK}" > /tok.len
`,
  );
  const r = await build(dir, "--secret", `id=tok,src=${file}`);
  assert.equal(r.code, 0, r.stderr);
  const image = await readComparableImage(join(dir, "out"), { ref: "latest" });
  assert.equal(image.tree.get("/tok.sha")?.sha256, fileSha(`${fileSha(secret)}\n`));
  assert.equal(image.tree.get("/tok.len")?.sha256, fileSha(`${secret.length}\n`));
  assert.equal(image.tree.get("/tok.mode")?.sha256, fileSha("400 0:0\n"));
  // The secret store is hidden from steps: its mount point is an empty directory to them.
  assert.equal(image.tree.get("/store-listing")?.size, 0);
  assert.equal(
    [...image.tree.keys()].some(
      (p) => p.startsWith("/run") || p.startsWith("/kiln") || p.startsWith("/.kiln"),
    ),
    false,
  );
  assert.equal(layoutText(join(dir, "out")).includes(secret), false);
  assert.equal(r.stderr.includes(secret), false);
  // Without the secret, a mount that is not required is left out (the step fails here), a required one is an error.
  const missing = await build(dir);
  assert.equal(missing.code, 1);
  assert.match(
    missing.stderr,
    /kiln: Dockerfile:2: RUN: process ".*" did not complete successfully: exit code: 1 \(KILN_ERR_DOCKERFILE\)$/,
  );
  const required = project("secret-required", "FROM busybox\nRUN --mount=type=secret,id=tok,required true\n");
  const r2 = await build(required);
  assert.equal(r2.code, 1);
  assert.match(r2.stderr, /kiln: Dockerfile:2: RUN: secret tok is required but was not given/);
});

test("RUN writing through symlinks to an absolute host path stays in the root; so does a COPY after it", async () => {
  const host = mkdtempSync(join(tmpdir(), "kiln-escape-"));
  try {
    const dir = project(
      "escape",
      `FROM busybox
RUN mkdir -p ${host} && ln -s ${host} /evil && echo run > /evil/by-run && ln -s ../../../../../../..${host} /rel && echo rel > /rel/by-rel
COPY a.txt /evil/
COPY a.txt /rel/b.txt
`,
      { "a.txt": "copied\n" },
    );
    const r = await build(dir);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(readdirSync(host), []);
    const image = await readComparableImage(join(dir, "out"), { ref: "latest" });
    for (const f of ["by-run", "by-rel", "a.txt", "b.txt"])
      assert.equal(image.tree.get(`${host}/${f}`)?.type, "file", f);
  } finally {
    rmSync(host, { recursive: true, force: true });
  }
});

test("step cache: a second build runs no RUN step and uploads no blob; a new base digest runs every step again", async () => {
  const dir = project(
    "cache",
    `FROM busybox
COPY a.txt /a.txt
RUN head -c 16 /dev/urandom | od -An -tx1 > /random
RUN cat /a.txt /random > /both
`,
    { "a.txt": "a\n" },
  );
  const args = ["--cache-repo", `${registry.host}/kiln-cache`, "--push", `${registry.host}/cached:1`];
  const first = await build(dir, ...args);
  assert.equal(first.code, 0, first.stderr);
  assert.match(first.stderr, /runSteps=2 cachedSteps=0/);
  const second = await build(dir, ...args);
  assert.equal(second.code, 0, second.stderr);
  assert.match(second.stderr, /runSteps=0 cachedSteps=2/);
  assert.match(second.stderr, /Pushed image .*blobsUploaded=0/);
  assert.equal(second.stdout, first.stdout, "the same image digest");

  // Another busybox under the same name: every RUN of the stage runs again.
  const base = project("other-base", "FROM busybox\nCOPY b.txt /b.txt\n", { "b.txt": "b\n" });
  const rebuilt = await runKiln([
    "build",
    "-f",
    join(base, "Dockerfile"),
    ...mirror,
    "--push",
    `${registry.host}/library/busybox:latest`,
    join(base, "ctx"),
  ]);
  assert.equal(rebuilt.code, 0, rebuilt.stderr);
  const third = await build(dir, ...args);
  assert.equal(third.code, 0, third.stderr);
  assert.match(third.stderr, /runSteps=2 cachedSteps=0/);
  assert.notEqual(third.stdout, first.stdout);
});
