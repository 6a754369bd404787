import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { DigestMismatchError } from "../../src/errors.ts";
import { parseReference } from "../../src/oci/reference.ts";
import { createRegistryClient, type RegistryClient } from "../../src/registry/client.ts";
import { parseMirrors } from "../../src/registry/mirrors.ts";
import { cachedBlobPath, pullImage } from "../../src/registry/pull.ts";
import { pushImage, pushIndex, putIndex } from "../../src/registry/push.ts";
import { freePort, type RunningRegistry, startRegistry } from "../helpers/registry.ts";
import { makeImage, makeLayer, sha256Of, skopeo, skopeoDigest, skopeoRaw } from "./fixtures.ts";

const NO_TLS = "--src-tls-verify=false";
const TLS_OFF = "--tls-verify=false";

describe("push and pull against a plain-HTTP registry", () => {
  let registry: RunningRegistry;
  let reg: RegistryClient;
  let work: string;
  before(async () => {
    registry = await startRegistry();
    reg = await createRegistryClient({ insecure: [registry.host] });
    work = mkdtempSync(join(tmpdir(), "kiln-pushpull-"));
  });
  after(async () => {
    await reg.close();
    await registry.close();
    rmSync(work, { recursive: true, force: true });
  });

  const base = makeLayer({ "etc/os-release": "ID=kiln\n", "bin/hello": "#!/bin/sh\necho hello\n" });
  const app = makeLayer({ "app/main.js": "console.log('hi')\n".repeat(100) });
  const image = makeImage([base, app]);

  test("pushImage stores what skopeo reads back, under every tag", async () => {
    const ref = parseReference(`${registry.host}/demo/app:v1`);
    const desc = await pushImage(image, ref, reg, { tags: ["v1.0", "latest"] });
    for (const tag of ["v1", "v1.0", "latest"]) {
      const raw = await skopeoRaw(`${registry.host}/demo/app:${tag}`, TLS_OFF);
      assert.equal(raw.digest, desc.digest);
      assert.equal(raw.bytes.length, desc.size);
    }
    const manifest = JSON.parse((await skopeoRaw(`${registry.host}/demo/app:v1`, TLS_OFF)).bytes.toString());
    assert.equal(manifest.mediaType, "application/vnd.oci.image.manifest.v1+json");
    assert.deepEqual(
      manifest.layers.map((l: { digest: string; size: number }) => [l.digest, l.size]),
      [
        [base.digest, base.bytes.length],
        [app.digest, app.bytes.length],
      ],
    );
    // skopeo copies the image to a directory, verifying every blob against the manifest.
    const out = join(work, "copied");
    await skopeo("copy", NO_TLS, `docker://${registry.host}/demo/app:v1`, `dir:${out}`);
    assert.deepEqual(readFileSync(join(out, base.digest.slice(7))), base.bytes);
    assert.deepEqual(readFileSync(join(out, app.digest.slice(7))), app.bytes);
  });

  test("a second push of the same image uploads nothing", async () => {
    const ref = parseReference(`${registry.host}/demo/again:v1`);
    await pushImage(image, ref, reg);
    const before = { ...reg.stats };
    const desc = await pushImage(image, ref, reg);
    assert.equal(reg.stats.blobsUploaded, before.blobsUploaded);
    assert.equal(reg.stats.blobsSkipped - before.blobsSkipped, 3);
    assert.equal(await skopeoDigest(`${registry.host}/demo/again:v1`, TLS_OFF), desc.digest);
  });

  test("pullImage reads what skopeo pushed, verified and cached, layers re-open", async () => {
    const src = join(work, "oci-src");
    const blobs = join(src, "blobs/sha256");
    execFileSync("mkdir", ["-p", blobs]);
    const config = Buffer.from(JSON.stringify(image.config));
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: {
          mediaType: "application/vnd.oci.image.config.v1+json",
          digest: sha256Of(config),
          size: config.length,
        },
        layers: [base, app].map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
      }),
    );
    for (const b of [config, manifest, base.bytes, app.bytes])
      writeFileSync(join(blobs, sha256Of(b).slice(7)), b);
    writeFileSync(join(src, "oci-layout"), '{"imageLayoutVersion":"1.0.0"}');
    writeFileSync(
      join(src, "index.json"),
      JSON.stringify({
        schemaVersion: 2,
        manifests: [
          {
            mediaType: "application/vnd.oci.image.manifest.v1+json",
            digest: sha256Of(manifest),
            size: manifest.length,
            annotations: { "org.opencontainers.image.ref.name": "v2" },
          },
        ],
      }),
    );
    await skopeo(
      "copy",
      "--dest-tls-verify=false",
      `oci:${src}:v2`,
      `docker://${registry.host}/skopeo/pushed:v2`,
    );

    const blobDir = join(work, "cache");
    const pulled = await pullImage(parseReference(`${registry.host}/skopeo/pushed:v2`), reg, { blobDir });
    assert.equal(pulled.manifest.digest, sha256Of(manifest));
    assert.deepEqual(pulled.config.rootfs.diff_ids, [base.diffId, app.diffId]);
    assert.deepEqual(
      pulled.layers.map((l) => [l.digest, l.diffId, l.size]),
      [base, app].map((l) => [l.digest, l.diffId, l.size]),
    );
    for (const layer of pulled.layers) {
      for (let i = 0; i < 2; i++) {
        const chunks: Buffer[] = [];
        for await (const c of layer.open()) chunks.push(c as Buffer);
        assert.equal(sha256Of(Buffer.concat(chunks)), layer.digest);
      }
    }
    assert.deepEqual(
      readdirSync(join(blobDir, "sha256")).sort(),
      [config, base.bytes, app.bytes].map((b) => sha256Of(b).slice(7)).sort(),
    );
  });

  test("a blob whose stored bytes were altered fails with DigestMismatchError and leaves nothing cached", async () => {
    const evil = makeLayer({ "x/evil.txt": "original content\n" });
    const ref = parseReference(`${registry.host}/demo/tampered:v1`);
    await pushImage(makeImage([evil]), ref, reg);
    const stored = registry.blobPath(evil.digest);
    const altered = Buffer.from(readFileSync(stored));
    altered[altered.length - 10] = altered[altered.length - 10]! ^ 0xff;
    writeFileSync(stored, altered);

    const blobDir = join(work, "cache-tampered");
    await assert.rejects(pullImage(ref, reg, { blobDir }), (err: unknown) => {
      assert.ok(err instanceof DigestMismatchError);
      assert.equal(err.expected, evil.digest);
      assert.equal(err.actual, sha256Of(altered));
      assert.match(err.message, new RegExp(evil.digest));
      return true;
    });
    assert.equal(existsSync(cachedBlobPath(blobDir, evil.digest)), false);
    assert.deepEqual(
      readdirSync(join(blobDir, "sha256")).filter((f) => f.startsWith(evil.digest.slice(7))),
      [],
    );
  });

  test("pushIndex writes an OCI index of OCI manifests; pull picks the platform", async () => {
    const amd = makeImage([base], "amd64");
    const arm = makeImage([makeLayer({ "arch.txt": "arm64\n" })], "arm64");
    const ref = parseReference(`${registry.host}/demo/multi:v1`);
    const desc = await pushIndex([amd, arm], ref, reg);
    const raw = await skopeoRaw(`${registry.host}/demo/multi:v1`, TLS_OFF);
    assert.equal(raw.digest, desc.digest);
    const index = JSON.parse(raw.bytes.toString());
    assert.equal(index.mediaType, "application/vnd.oci.image.index.v1+json");
    assert.deepEqual(
      index.manifests.map((m: { mediaType: string; platform: unknown }) => [m.mediaType, m.platform]),
      [
        ["application/vnd.oci.image.manifest.v1+json", { architecture: "amd64", os: "linux" }],
        ["application/vnd.oci.image.manifest.v1+json", { architecture: "arm64", os: "linux" }],
      ],
    );
    const blobDir = join(work, "cache-multi");
    const pulledArm = await pullImage(ref, reg, {
      blobDir,
      platform: { os: "linux", architecture: "arm64" },
    });
    assert.equal(pulledArm.manifest.digest, index.manifests[1].digest);
    assert.equal(pulledArm.config.architecture, "arm64");
    const armDir = join(work, "arm-copy");
    await skopeo(
      "--override-arch=arm64",
      "copy",
      NO_TLS,
      `docker://${registry.host}/demo/multi:v1`,
      `dir:${armDir}`,
    );
    assert.equal(sha256Of(readFileSync(join(armDir, "manifest.json"))), pulledArm.manifest.digest);
  });

  test("a single-platform image pulled for another platform is refused before its layers are fetched", async () => {
    const ref = parseReference(`${registry.host}/demo/amd-only:v1`);
    await pushImage(makeImage([makeLayer({ "a.txt": "amd64\n" })]), ref, reg);
    const blobDir = join(work, "cache-amd-only");
    await assert.rejects(pullImage(ref, reg, { blobDir, platform: { os: "linux", architecture: "arm64" } }), {
      code: "KILN_ERR_NOT_FOUND",
      message: `${registry.host}/demo/amd-only:v1 is for linux/amd64, not linux/arm64`,
    });
    assert.equal(readdirSync(join(blobDir, "sha256")).length, 1, "only the config was fetched");
  });

  test("an index naming a Docker manifest is refused before anything is sent", async () => {
    const ref = parseReference(`${registry.host}/demo/mixed:v1`);
    const docker = {
      mediaType: "application/vnd.docker.distribution.manifest.v2+json",
      digest: sha256Of("x"),
      size: 1,
    };
    await assert.rejects(
      putIndex(
        { schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: [docker] },
        ref,
        reg,
      ),
      /may only name OCI manifests/,
    );
  });

  test("a docker.io pull goes to the mirror's library/ repository, never to Docker Hub", async () => {
    const busybox = makeImage([makeLayer({ "bin/busybox": "not really busybox\n" })]);
    const onMirror = await pushImage(busybox, parseReference(`${registry.host}/library/busybox:1.36`), reg);
    const mirrored = await createRegistryClient({
      insecure: [registry.host],
      mirrors: parseMirrors([`docker.io=${registry.host}`], { fallbackToOrigin: false }),
      // Anything reaching the real Docker Hub would fail here: no network, and one try.
      retry: { attempts: 1 },
    });
    try {
      const pulled = await pullImage(parseReference("busybox:1.36"), mirrored, {
        blobDir: join(work, "cache-mirror"),
      });
      assert.equal(pulled.manifest.digest, onMirror.digest);
      await assert.rejects(
        pullImage(parseReference("busybox:missing"), mirrored, { blobDir: join(work, "cm2") }),
        {
          name: "RegistryError",
          status: 404,
        },
      );
    } finally {
      await mirrored.close();
    }
  });

  test("a mirror that is down is skipped for the registry itself unless fallback is off", async () => {
    const dead = `127.0.0.1:${await freePort()}`;
    const ref = parseReference(`${registry.host}/demo/app:v1`);
    const expected = (await reg.getManifest(ref)).descriptor.digest;
    const options = { insecure: [registry.host, dead], retry: { attempts: 1 } };
    const fallback = await createRegistryClient({
      ...options,
      mirrors: parseMirrors([`${registry.host}=${dead}`]),
    });
    const strict = await createRegistryClient({
      ...options,
      mirrors: parseMirrors([`${registry.host}=${dead}`], { fallbackToOrigin: false }),
    });
    try {
      assert.equal((await fallback.getManifest(ref)).descriptor.digest, expected);
      await assert.rejects(strict.getManifest(ref), { code: "KILN_ERR_REGISTRY_CONNECTION" });
    } finally {
      await fallback.close();
      await strict.close();
    }
  });
});
