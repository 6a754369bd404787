import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fetchSource } from "../../src/source/fetch-source.ts";
import { runKiln } from "../helpers/kiln-cli.ts";
import { type RunningRegistry, startRegistry } from "../helpers/registry.ts";
import { skopeo } from "../helpers/skopeo.ts";

const work = mkdtempSync(join(tmpdir(), "kiln-oci-source-"));
const context = join(work, "context");
let registry: RunningRegistry;

/** The image spec's empty descriptor, as its text gives it. */
const EMPTY = {
  mediaType: "application/vnd.oci.empty.v1+json",
  digest: "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
  size: 2,
};

before(async () => {
  registry = await startRegistry();
  mkdirSync(join(context, "app/conf"), { recursive: true });
  mkdirSync(join(context, "node_modules/dep"), { recursive: true });
  writeFileSync(join(context, "Dockerfile"), "FROM scratch\nCOPY app /app\n");
  writeFileSync(join(context, ".dockerignore"), "node_modules\n*.log\nDockerfile\n.dockerignore\n");
  writeFileSync(join(context, "app/run.sh"), "#!/bin/sh\n");
  chmodSync(join(context, "app/run.sh"), 0o755);
  writeFileSync(join(context, "app/conf/secret.conf"), "k=v\n");
  chmodSync(join(context, "app/conf/secret.conf"), 0o600);
  linkSync(join(context, "app/run.sh"), join(context, "app/start.sh"));
  symlinkSync("conf/secret.conf", join(context, "app/conf.link"));
  writeFileSync(join(context, "build.log"), "noise\n");
  writeFileSync(join(context, "node_modules/dep/index.js"), "\n");
});

after(async () => {
  await registry.close();
  rmSync(work, { recursive: true, force: true });
});

async function push(dir: string, ref: string): Promise<string> {
  const run = await runKiln(["context", "push", "--insecure-registry", registry.host, dir, ref]);
  assert.equal(run.code, 0, run.stderr);
  return run.stdout;
}

async function get(path: string, accept?: string): Promise<Buffer> {
  const res = await fetch(`${registry.url}/v2/${path}`, accept ? { headers: { accept } } : {});
  assert.equal(res.status, 200, path);
  return Buffer.from(await res.arrayBuffer());
}

const sha256 = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

test("kiln context push uploads an artifact: empty config, artifactType, one tar+gzip layer", async () => {
  const printed = await push(context, `${registry.host}/team/ctx:v1`);
  const manifestBytes = await get("team/ctx/manifests/v1", "application/vnd.oci.image.manifest.v1+json");
  assert.equal(printed, `${registry.host}/team/ctx:v1@${sha256(manifestBytes)}`);
  const manifest = JSON.parse(manifestBytes.toString());
  assert.equal(manifest.schemaVersion, 2);
  assert.equal(manifest.mediaType, "application/vnd.oci.image.manifest.v1+json");
  assert.equal(manifest.artifactType, "application/vnd.kiln.context.v1");
  assert.deepEqual(manifest.config, EMPTY);
  assert.equal(manifest.layers.length, 1);
  const layer = manifest.layers[0];
  assert.equal(layer.mediaType, "application/vnd.oci.image.layer.v1.tar+gzip");
  const blob = await get(`team/ctx/blobs/${layer.digest}`);
  assert.equal(sha256(blob), layer.digest);
  assert.equal(blob.length, layer.size);
  assert.equal((await get(`team/ctx/blobs/${EMPTY.digest}`)).toString(), "{}");

  // GNU tar reads the layer: .dockerignore applied but for the Dockerfile and itself, owners 0:0, mtime 0.
  writeFileSync(join(work, "layer.tar.gz"), blob);
  const listing = execFileSync("tar", ["--numeric-owner", "--full-time", "-tvzf", join(work, "layer.tar.gz")])
    .toString()
    .trim()
    .split("\n")
    .map((l) => l.replace(/\s+/g, " "));
  assert.deepEqual(listing, [
    "-rw-r--r-- 0/0 44 1970-01-01 00:00:00 .dockerignore",
    "-rw-r--r-- 0/0 27 1970-01-01 00:00:00 Dockerfile",
    "drwxr-xr-x 0/0 0 1970-01-01 00:00:00 app/",
    "drwxr-xr-x 0/0 0 1970-01-01 00:00:00 app/conf/",
    "-rw------- 0/0 4 1970-01-01 00:00:00 app/conf/secret.conf",
    "lrwxrwxrwx 0/0 0 1970-01-01 00:00:00 app/conf.link -> conf/secret.conf",
    "-rwxr-xr-x 0/0 10 1970-01-01 00:00:00 app/run.sh",
    "hrwxr-xr-x 0/0 0 1970-01-01 00:00:00 app/start.sh link to app/run.sh",
  ]);

  // skopeo reads the same manifest and the empty config.
  const raw = await skopeo("inspect", "--raw", "--tls-verify=false", `docker://${registry.host}/team/ctx:v1`);
  assert.equal(sha256(Buffer.from(raw)), sha256(manifestBytes));
  const config = await skopeo(
    "inspect",
    "--config",
    "--raw",
    "--tls-verify=false",
    `docker://${registry.host}/team/ctx:v1`,
  );
  assert.equal(config, "{}");
});

test("the same files give the same digest, wherever they are and whatever their mtimes", async () => {
  const first = await push(context, `${registry.host}/team/ctx:a`);
  const copy = join(work, "elsewhere");
  execFileSync("cp", ["-a", context, copy]); // hardlinks too
  utimesSync(join(copy, "app/run.sh"), new Date(1e12), new Date(1e12));
  const second = await push(copy, `${registry.host}/other:b`);
  assert.equal(first.split("@")[1], second.split("@")[1]);
});

test("an oci source fetches the pushed context with its modes, links and subPath", async () => {
  const image = await push(context, `${registry.host}/team/ctx:round-trip`);
  const digest = image.split("@")[1]!;
  const dir = join(work, "fetched", "context");
  const got = await fetchSource({ oci: { image } }, dir, { registry: { insecure: [registry.host] } });
  assert.equal(got.pinned, digest);
  assert.deepEqual(got.source, { oci: { image } });
  assert.deepEqual(readdirSync(dir).sort(), [".dockerignore", "Dockerfile", "app"]);
  assert.equal(lstatSync(join(dir, "app/run.sh")).mode & 0o7777, 0o755);
  assert.equal(lstatSync(join(dir, "app/conf/secret.conf")).mode & 0o7777, 0o600);
  assert.equal(lstatSync(join(dir, "app/start.sh")).ino, lstatSync(join(dir, "app/run.sh")).ino);
  assert.equal(readlinkSync(join(dir, "app/conf.link")), "conf/secret.conf");
  assert.equal(existsSync(join(dir, "build.log")), false);

  const byTag = join(work, "fetched-sub", "context");
  const sub = await fetchSource(
    { oci: { image: `${registry.host}/team/ctx:round-trip`, subPath: "app/conf" } },
    byTag,
    { registry: { insecure: [registry.host] } },
  );
  assert.equal(sub.pinned, digest);
  assert.deepEqual(sub.source, { oci: { image, subPath: "app/conf" } });
  assert.deepEqual(readdirSync(byTag), ["secret.conf"]);
  assert.equal(readFileSync(join(byTag, "secret.conf"), "utf8"), "k=v\n");
});

test("a subPath that leaves the artifact, or is missing, is refused", async () => {
  const image = `${registry.host}/team/ctx:v1`;
  const opts = { registry: { insecure: [registry.host] } };
  await assert.rejects(fetchSource({ oci: { image, subPath: "../x" } }, join(work, "bad1"), opts), {
    code: "KILN_ERR_PATH_ESCAPE",
  });
  await assert.rejects(fetchSource({ oci: { image, subPath: "/app" } }, join(work, "bad2"), opts), {
    code: "KILN_ERR_PATH_ESCAPE",
  });
  await assert.rejects(fetchSource({ oci: { image, subPath: "nope" } }, join(work, "bad3"), opts), {
    code: "KILN_ERR_NOT_FOUND",
    message: 'subPath "nope" is not a directory of the source',
  });
});

test("kiln context push refuses a digest reference and a missing folder", async () => {
  const digestRef = `${registry.host}/x@sha256:${"a".repeat(64)}`;
  const run = await runKiln(["context", "push", "--insecure-registry", registry.host, context, digestRef]);
  assert.equal(run.code, 1);
  assert.match(
    run.stderr,
    /a context is pushed to a tag or a repository, not to a digest \(KILN_ERR_INVALID_INPUT\)/,
  );
  const missing = await runKiln(["context", "push", join(work, "missing"), `${registry.host}/x:1`]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /is not a directory \(KILN_ERR_NOT_FOUND\)/);
});

test("an artifact with other than one tar layer is no build context", async () => {
  await push(context, `${registry.host}/team/ctx:v1`);
  const manifest = JSON.parse(
    (await get("team/ctx/manifests/v1", "application/vnd.oci.image.manifest.v1+json")).toString(),
  );
  const twoLayers = JSON.stringify({ ...manifest, layers: [manifest.layers[0], manifest.layers[0]] });
  const res = await fetch(`${registry.url}/v2/team/ctx/manifests/two`, {
    method: "PUT",
    headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" },
    body: twoLayers,
  });
  assert.equal(res.status, 201);
  await assert.rejects(
    fetchSource({ oci: { image: `${registry.host}/team/ctx:two` } }, join(work, "two"), {
      registry: { insecure: [registry.host] },
    }),
    {
      code: "KILN_ERR_SOURCE",
      message: `${registry.host}/team/ctx:two is no build context: it has 2 layers (application/vnd.oci.image.layer.v1.tar+gzip, application/vnd.oci.image.layer.v1.tar+gzip), a context artifact has one tar layer`,
    },
  );
});
