import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { runKiln } from "../helpers/kiln-cli.ts";
import { makePki, startRegistry } from "../helpers/registry.ts";
import { skopeo } from "../helpers/skopeo.ts";

function context(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), "kiln-push-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, "ctx/etc"), { recursive: true });
  writeFileSync(join(dir, "ctx/etc/motd"), "base\n");
  writeFileSync(join(dir, "ctx/app.txt"), "app\n");
  writeFileSync(
    join(dir, "base.yaml"),
    "platforms: [linux/amd64, linux/arm64]\nlayers:\n  - files: [{ src: etc, dest: /etc }]\n",
  );
  return dir;
}

test("--push stores the image in a registry under the digest kiln prints; bases come through a mirror", async (t) => {
  const registry = await startRegistry();
  t.after(() => registry.close());
  const dir = context(t);
  const insecure = ["--insecure-registry", registry.host];
  const base = await runKiln([
    "build",
    "--spec",
    join(dir, "base.yaml"),
    "--push",
    `${registry.host}/library/base:1`,
    ...insecure,
    join(dir, "ctx"),
  ]);
  assert.equal(base.code, 0, base.stderr);
  const rawIndex = await skopeo(
    "inspect",
    "--tls-verify=false",
    "--raw",
    `docker://${registry.host}/library/base:1`,
  );
  assert.equal(JSON.parse(rawIndex).manifests.length, 2);
  const inspected = JSON.parse(
    await skopeo("inspect", "--tls-verify=false", `docker://${registry.host}/library/base:1`),
  );
  assert.equal(inspected.Architecture, "amd64");

  // `base: base:1` means docker.io/library/base:1; the mirror serves it from the local registry.
  writeFileSync(
    join(dir, "app.yaml"),
    "base: base:1\nlayers:\n  - files: [{ src: app.txt, dest: /app.txt }]\n",
  );
  const app = await runKiln([
    "build",
    "--spec",
    join(dir, "app.yaml"),
    "--platform",
    "linux/arm64",
    "--registry-mirror",
    `docker.io=${registry.host}`,
    ...insecure,
    "--push",
    `${registry.host}/team/app:v1`,
    "--push",
    `${registry.host}/team/app:latest`,
    join(dir, "ctx"),
  ]);
  assert.equal(app.code, 0, app.stderr);
  const byDigest = await runKiln([
    "build",
    "--spec",
    join(dir, "app.yaml"),
    "--push",
    `${registry.host}/team/app@${app.stdout}`,
    join(dir, "ctx"),
  ]);
  assert.equal(byDigest.code, 1);
  assert.match(byDigest.stderr, /push to a tag; the digest is what the push produces/);
  for (const tag of ["v1", "latest"]) {
    const info = JSON.parse(
      await skopeo("inspect", "--tls-verify=false", `docker://${registry.host}/team/app:${tag}`),
    );
    assert.equal(info.Digest, app.stdout);
    assert.equal(info.Architecture, "arm64");
    assert.equal(info.Layers.length, 2);
  }
});

test("a TLS registry with basic auth: --ca-file and --authfile, and the password never reaches the logs", async (t) => {
  const pki = makePki();
  t.after(() => rmSync(pki.dir, { recursive: true, force: true }));
  const password = "s3cret-Pa55word";
  const registry = await startRegistry({ tls: pki, htpasswd: { username: "builder", password } });
  t.after(() => registry.close());
  const dir = context(t);
  const authfile = join(dir, "auth.json");
  const auth = Buffer.from(`builder:${password}`).toString("base64");
  writeFileSync(authfile, JSON.stringify({ auths: { [registry.host]: { auth } } }));
  const ref = `${registry.host}/private/base:1`;

  const denied = await runKiln([
    "build",
    "--spec",
    join(dir, "base.yaml"),
    "--push",
    ref,
    "--ca-file",
    pki.caFile,
    join(dir, "ctx"),
  ]);
  assert.equal(denied.code, 1);
  assert.match(denied.stderr, /401/);

  const ok = await runKiln(
    [
      "build",
      "--spec",
      join(dir, "base.yaml"),
      "--push",
      ref,
      "--ca-file",
      pki.caFile,
      "--authfile",
      authfile,
      join(dir, "ctx"),
    ],
    { env: { LOG_LEVEL: "debug" } },
  );
  assert.equal(ok.code, 0, ok.stderr);
  assert.doesNotMatch(ok.stderr + ok.stdout + denied.stderr, new RegExp(`${password}|${auth}`));
  const certDir = join(dir, "certs"); // skopeo reads every *.crt there as a CA and pairs *.key with *.cert
  mkdirSync(certDir);
  copyFileSync(pki.caFile, join(certDir, "ca.crt"));
  const raw = await skopeo(
    "inspect",
    "--raw",
    "--cert-dir",
    certDir,
    "--creds",
    `builder:${password}`,
    `docker://${ref}`,
  );
  assert.equal(JSON.parse(raw).mediaType, "application/vnd.oci.image.index.v1+json");
});
