import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { text } from "node:stream/consumers";
import { test } from "node:test";
import { gunzipSync } from "node:zlib";
import { DigestMismatchError, InvalidInputError, NotFoundError } from "../../src/errors.ts";
import type { Digest } from "../../src/oci/digest.ts";
import { digestHex } from "../../src/oci/digest.ts";
import type { Image, Layer } from "../../src/oci/image.ts";
import { appendLayers, canonicalBytes, manifestOf } from "../../src/oci/image.ts";
import {
  blobPath,
  readLayout,
  resolveImage,
  resolveRef,
  writeImage,
  writeIndex,
} from "../../src/oci/layout.ts";
import { MediaType } from "../../src/oci/media-type.ts";
import { hostPlatform, parsePlatform } from "../../src/oci/platform.ts";
import { runCommand } from "../helpers/command.ts";
import { skopeo, skopeoInspect } from "../helpers/skopeo.ts";
import { sha256sum, type TarLayer, tarLayer } from "../helpers/tar-layer.ts";

async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "kiln-layout-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function imageOf(layers: readonly Layer[], architecture = "amd64", variant?: string): Image {
  const base: Image = {
    config: {
      architecture,
      os: "linux",
      ...(variant ? { variant } : {}),
      config: { Env: ["PATH=/usr/bin:/bin"], Cmd: ["/bin/sh"], Labels: { "kiln.dev/test": "layout" } },
      rootfs: { type: "layers", diff_ids: [] },
      history: layers.map((_, i) => ({ created_by: `layer ${i}` })),
    },
    layers: [],
  };
  return appendLayers(base, ...layers);
}

async function twoLayers(compress = true): Promise<[TarLayer, TarLayer]> {
  return [
    await tarLayer({ "etc/motd": "hello from kiln\n", "usr/share/doc/a.txt": "a" }, compress),
    await tarLayer({ "app/main.sh": "#!/bin/sh\necho main\n" }, compress),
  ];
}

const layoutFiles = async (dir: string) => (await readdir(dir, { recursive: true })).sort();

test("writeImage writes blobs, oci-layout and index.json that skopeo reads with the same digests", async (t) => {
  const dir = await tempDir(t);
  const layers = await twoLayers();
  const image = imageOf(layers);
  const desc = await writeImage(dir, "v1", image);

  const manifestBytes = canonicalBytes(manifestOf(image));
  assert.equal(desc.digest, await sha256sum(manifestBytes));
  assert.deepEqual(desc, {
    mediaType: MediaType.ImageManifest,
    digest: desc.digest,
    size: manifestBytes.length,
    annotations: { "org.opencontainers.image.ref.name": "v1" },
  });
  assert.equal(await readFile(join(dir, "oci-layout"), "utf8"), '{"imageLayoutVersion":"1.0.0"}');
  assert.deepEqual(JSON.parse(await readFile(join(dir, "index.json"), "utf8")), {
    schemaVersion: 2,
    mediaType: MediaType.ImageIndex,
    manifests: [desc],
  });
  // Every blob is stored under the name of its own content's sha256, and nothing else is left behind.
  const blobs = await readdir(join(dir, "blobs", "sha256"));
  assert.equal(blobs.length, 4);
  for (const hex of blobs) {
    assert.equal(await sha256sum(await readFile(join(dir, "blobs", "sha256", hex))), `sha256:${hex}`);
  }
  assert.deepEqual(
    new Set(blobs),
    new Set([desc.digest, manifestOf(image).config.digest, ...layers.map((l) => l.digest)].map(digestHex)),
  );
  assert.deepEqual(await layoutFiles(dir), [
    "blobs",
    "blobs/sha256",
    ...blobs.map((b) => `blobs/sha256/${b}`).sort(),
    "index.json",
    "oci-layout",
  ]);

  const inspected = await skopeoInspect(`oci:${dir}:v1`);
  assert.equal(inspected.Digest, desc.digest);
  assert.equal(inspected.Architecture, "amd64");
  assert.deepEqual(
    inspected.Layers,
    layers.map((l) => l.digest),
  );
  assert.equal(await skopeo("inspect", "--raw", `oci:${dir}:v1`), manifestBytes.toString("utf8"));
  assert.equal(await skopeo("inspect", "--config", "--raw", `oci:${dir}:v1`), JSON.stringify(image.config));

  const other = await tempDir(t);
  await skopeo("copy", "--quiet", `oci:${dir}:v1`, `oci:${other}:copied`);
  assert.equal((await skopeoInspect(`oci:${other}:copied`)).Digest, desc.digest);
  const copied = await resolveImage(other, "copied");
  assert.equal(manifestOf(copied).config.digest, manifestOf(image).config.digest);
});

test("an image read back is the image written: same manifest digest, layers re-open and verify", async (t) => {
  const dir = await tempDir(t);
  const layers = await twoLayers();
  const image = imageOf(layers);
  const desc = await writeImage(dir, "v1", image);

  const read = await resolveImage(dir, "v1");
  assert.deepEqual(read.config, image.config);
  assert.equal(await sha256sum(canonicalBytes(manifestOf(read))), desc.digest);
  for (const [i, layer] of read.layers.entries()) {
    const want = layers[i]!;
    assert.deepEqual(
      { digest: layer.digest, diffId: layer.diffId, size: layer.size, mediaType: layer.mediaType },
      { digest: want.digest, diffId: want.diffId, size: want.size, mediaType: MediaType.LayerTarGzip },
    );
    // Twice: a blob re-opens from the start every time.
    for (let n = 0; n < 2; n++) assert.deepEqual(Buffer.concat(await layer.open().toArray()), want.bytes);
  }
  // Without a ref, the only entry is the one meant.
  assert.equal((await resolveRef(dir)).descriptor.digest, desc.digest);
});

test("a layout skopeo writes (recompressed layers, new digests) reads back verified", async (t) => {
  const src = await tempDir(t);
  const layers = await twoLayers(false);
  await writeImage(src, "plain", imageOf(layers));
  const dst = await tempDir(t);
  // skopeo compresses uncompressed layers when writing an OCI layout, so every layer and the manifest change.
  await skopeo("copy", "--quiet", `oci:${src}:plain`, `oci:${dst}:gz`);

  const raw = JSON.parse(await skopeo("inspect", "--raw", `oci:${dst}:gz`));
  const image = await resolveImage(dst, "gz");
  assert.equal(image.layers.length, 2);
  for (const [i, layer] of image.layers.entries()) {
    assert.equal(layer.mediaType, MediaType.LayerTarGzip);
    assert.equal(layer.digest, raw.layers[i].digest);
    assert.notEqual(layer.digest, layers[i]!.digest);
    assert.equal(layer.diffId, layers[i]!.diffId);
    const bytes = Buffer.concat(await layer.open().toArray());
    assert.equal(await sha256sum(bytes), layer.digest);
    assert.deepEqual(gunzipSync(bytes), layers[i]!.tar);
  }
  assert.deepEqual(
    image.config.rootfs.diff_ids,
    layers.map((l) => l.diffId),
  );
  const index = await readLayout(dst);
  assert.equal(index.manifests[0]!.digest, (await skopeoInspect(`oci:${dst}:gz`)).Digest);
});

test("Docker schema2 manifests written by skopeo are read", async (t) => {
  const src = await tempDir(t);
  await writeImage(src, "v1", imageOf(await twoLayers()));
  const dockerDir = await tempDir(t);
  await skopeo("copy", "--quiet", "--format", "v2s2", `oci:${src}:v1`, `dir:${dockerDir}`);

  // Turn skopeo's dir: output into an OCI layout whose index.json names a Docker manifest.
  const dst = await tempDir(t);
  await mkdir(join(dst, "blobs", "sha256"), { recursive: true });
  for (const name of await readdir(dockerDir)) {
    if (/^[a-f0-9]{64}$/.test(name))
      await copyFile(join(dockerDir, name), join(dst, "blobs", "sha256", name));
  }
  const manifestBytes = await readFile(join(dockerDir, "manifest.json"));
  const manifestDigest = await sha256sum(manifestBytes);
  await writeFile(join(dst, "blobs", "sha256", digestHex(manifestDigest)), manifestBytes);
  await writeFile(join(dst, "oci-layout"), '{"imageLayoutVersion":"1.0.0"}');
  const entry = { mediaType: MediaType.DockerManifest, digest: manifestDigest, size: manifestBytes.length };
  await writeFile(join(dst, "index.json"), JSON.stringify({ schemaVersion: 2, manifests: [entry] }));

  const manifest = JSON.parse(manifestBytes.toString());
  assert.equal(manifest.mediaType, MediaType.DockerManifest);
  const image = await resolveImage(dst);
  assert.deepEqual(
    image.layers.map((l) => [l.mediaType, l.digest]),
    manifest.layers.map((l: { mediaType: string; digest: string }) => [MediaType.DockerLayerGzip, l.digest]),
  );
  assert.equal(image.config.architecture, "amd64");
  assert.equal(image.config.config?.Cmd?.[0], "/bin/sh");
  assert.equal(Buffer.concat(await image.layers[1]!.open().toArray()).length, image.layers[1]!.size);
});

test("writeIndex writes a multi-platform index that skopeo resolves per architecture", async (t) => {
  const dir = await tempDir(t);
  const [a, b] = await twoLayers();
  const amd64 = imageOf([a, b], "amd64");
  const arm64 = imageOf([a], "arm64", "v8");
  const desc = await writeIndex(dir, "multi", [
    { platform: parsePlatform("linux/amd64"), image: amd64 },
    { platform: { os: "linux", architecture: "arm64", variant: "v8" }, image: arm64 },
  ]);
  assert.equal(desc.mediaType, MediaType.ImageIndex);

  const rawIndex = await skopeo("inspect", "--raw", `oci:${dir}:multi`);
  assert.equal(await sha256sum(Buffer.from(rawIndex)), desc.digest);
  const amd64Digest = await sha256sum(canonicalBytes(manifestOf(amd64)));
  const arm64Digest = await sha256sum(canonicalBytes(manifestOf(arm64)));
  assert.deepEqual(JSON.parse(rawIndex), {
    schemaVersion: 2,
    mediaType: MediaType.ImageIndex,
    manifests: [
      {
        mediaType: MediaType.ImageManifest,
        digest: amd64Digest,
        size: canonicalBytes(manifestOf(amd64)).length,
        platform: { architecture: "amd64", os: "linux" },
      },
      {
        mediaType: MediaType.ImageManifest,
        digest: arm64Digest,
        size: canonicalBytes(manifestOf(arm64)).length,
        platform: { architecture: "arm64", os: "linux", variant: "v8" },
      },
    ],
  });
  const onArm = await skopeoInspect(
    "--override-arch",
    "arm64",
    "--override-variant",
    "v8",
    `oci:${dir}:multi`,
  );
  // skopeo reports the index's digest, and the chosen image's architecture and layers.
  assert.equal(onArm.Digest, desc.digest);
  assert.equal(onArm.Architecture, "arm64");
  assert.deepEqual(onArm.Layers, [a.digest]);
  const onAmd = await skopeoInspect("--override-arch", "amd64", `oci:${dir}:multi`);
  assert.equal(onAmd.Architecture, "amd64");
  assert.deepEqual(onAmd.Layers, [a.digest, b.digest]);
  // Copying one platform out of the index copies exactly the manifest kiln wrote for it.
  const single = await tempDir(t);
  await skopeo("copy", "--quiet", "--override-arch", "arm64", `oci:${dir}:multi`, `oci:${single}:arm`);
  assert.equal((await readLayout(single)).manifests[0]!.digest, arm64Digest);

  const copy = await tempDir(t);
  await skopeo("copy", "--quiet", "--all", `oci:${dir}:multi`, `oci:${copy}:multi`);
  assert.equal((await readLayout(copy)).manifests[0]!.digest, desc.digest);

  assert.equal((await resolveImage(dir, "multi", parsePlatform("linux/arm64"))).config.architecture, "arm64");
  assert.equal((await resolveImage(dir, "multi")).config.architecture, hostPlatform().architecture);
  await assert.rejects(
    resolveImage(dir, "multi", parsePlatform("linux/s390x")),
    (e: unknown) =>
      e instanceof NotFoundError && /available: linux\/amd64, linux\/arm64\/v8$/.test(e.message),
  );
});

test("writeIndex refuses duplicate platforms and images whose config is for another platform", async (t) => {
  const dir = await tempDir(t);
  const img = imageOf([]);
  await assert.rejects(
    writeIndex(dir, "x", [
      { platform: parsePlatform("linux/amd64"), image: img },
      { platform: parsePlatform("linux/x86_64"), image: img },
    ]),
    /platform linux\/amd64 appears twice/,
  );
  await assert.rejects(
    writeIndex(dir, "x", [{ platform: parsePlatform("linux/arm64"), image: img }]),
    /the image listed for linux\/arm64 has a config for linux\/amd64/,
  );
  await assert.rejects(writeIndex(dir, "x", []), InvalidInputError);
  assert.deepEqual(await readdir(dir), []);
});

test("writing into an existing layout replaces the ref, keeps the others and does not rewrite blobs", async (t) => {
  const dir = await tempDir(t);
  const [a, b] = await twoLayers();
  let opens = 0;
  const counted: Layer = {
    ...a,
    open: () => {
      opens++;
      return a.open();
    },
  };
  const first = await writeImage(dir, "v1", imageOf([counted]));
  const second = await writeImage(dir, "v2", imageOf([counted, b]));
  const inode = (await stat(blobPath(dir, a.digest))).ino;
  const third = await writeImage(dir, "v1", imageOf([counted, b, await tarLayer({ x: "x" })]));
  assert.equal(opens, 1);
  assert.equal((await stat(blobPath(dir, a.digest))).ino, inode);

  const index = await readLayout(dir);
  assert.deepEqual(index.manifests, [second, third]);
  assert.notEqual(first.digest, third.digest);
  assert.equal((await skopeoInspect(`oci:${dir}:v1`)).Digest, third.digest);
  assert.equal((await skopeoInspect(`oci:${dir}:v2`)).Digest, second.digest);
  // Entries other tools added are kept too.
  await skopeo("copy", "--quiet", `oci:${dir}:v2`, `oci:${dir}:by-skopeo`);
  await writeImage(dir, "v2", imageOf([b]));
  assert.deepEqual(
    (await readLayout(dir)).manifests.map((d) => d.annotations?.["org.opencontainers.image.ref.name"]),
    ["v1", "by-skopeo", "v2"],
  );
});

function failingLayer(good: TarLayer, after: number): Layer {
  return {
    ...good,
    open: () =>
      Readable.from(
        (async function* () {
          yield good.bytes.subarray(0, after);
          throw new Error("connection reset while reading the layer");
        })(),
      ),
  };
}

test("an interrupted write leaves no index.json pointing at missing blobs, and no temporary files", async (t) => {
  const fresh = await tempDir(t);
  const [a, b] = await twoLayers();
  await assert.rejects(writeImage(fresh, "v1", imageOf([a, failingLayer(b, 10)])), /connection reset/);
  assert.deepEqual(await layoutFiles(fresh), [
    "blobs",
    "blobs/sha256",
    `blobs/sha256/${digestHex(a.digest)}`,
    "oci-layout",
  ]);
  await assert.rejects(readLayout(fresh), NotFoundError);

  const existing = await tempDir(t);
  await writeImage(existing, "v1", imageOf([a]));
  const before = await readFile(join(existing, "index.json"));
  await assert.rejects(
    writeIndex(existing, "v1", [
      { platform: parsePlatform("linux/amd64"), image: imageOf([failingLayer(b, 0)]) },
    ]),
  );
  assert.deepEqual(await readFile(join(existing, "index.json")), before);
  assert.ok(!(await readdir(join(existing, "blobs", "sha256"))).some((n) => n.endsWith(".tmp")));

  // A layer whose content is not what its digest says never lands under that digest.
  const lying: Layer = { ...a, digest: b.digest };
  await assert.rejects(
    writeImage(existing, "v2", imageOf([lying])),
    (e: unknown) => e instanceof DigestMismatchError && e.expected === b.digest && e.actual === a.digest,
  );
  await assert.rejects(stat(blobPath(existing, b.digest)), { code: "ENOENT" });
  assert.deepEqual(await readFile(join(existing, "index.json")), before);
});

test("reading verifies digests and names the blob that is wrong or missing", async (t) => {
  const dir = await tempDir(t);
  const [a, b] = await twoLayers();
  const image = imageOf([a, b]);
  const desc = await writeImage(dir, "v1", image);
  const flipLastByte = async (d: Digest) => {
    const path = blobPath(dir, d);
    const bytes = await readFile(path);
    bytes[bytes.length - 1]! ^= 0xff;
    await writeFile(path, bytes);
    return sha256sum(bytes);
  };

  // A corrupt layer of the right size is found when it is read, not before.
  const actual = await flipLastByte(b.digest);
  const read = await resolveImage(dir, "v1");
  await assert.rejects(
    text(read.layers[1]!.open()),
    (e: unknown) =>
      e instanceof DigestMismatchError &&
      e.expected === b.digest &&
      e.actual === actual &&
      e.message.includes(`layer ${b.digest}`),
  );
  assert.equal(Buffer.concat(await read.layers[0]!.open().toArray()).length, a.size);

  await truncate(blobPath(dir, a.digest), 3);
  await assert.rejects(
    resolveImage(dir, "v1"),
    (e: unknown) => e instanceof DigestMismatchError && e.expected === a.digest,
  );
  await rm(blobPath(dir, a.digest));
  await assert.rejects(
    resolveImage(dir, "v1"),
    (e: unknown) => e instanceof NotFoundError && e.message.startsWith(`blob ${a.digest} is missing from`),
  );

  const configDigest = manifestOf(image).config.digest;
  await flipLastByte(configDigest);
  await assert.rejects(
    resolveImage(dir, "v1"),
    (e: unknown) => e instanceof DigestMismatchError && e.expected === configDigest,
  );
  await flipLastByte(desc.digest);
  await assert.rejects(
    resolveRef(dir, "v1"),
    (e: unknown) => e instanceof DigestMismatchError && e.expected === desc.digest,
  );
});

test("refs: unknown, ambiguous and malformed names, and directories that are not layouts", async (t) => {
  const dir = await tempDir(t);
  const image = imageOf([]);
  await writeImage(dir, "v1", image);
  await writeImage(dir, "registry.example/app:v2", image);
  await assert.rejects(
    resolveRef(dir, "v3"),
    (e: unknown) =>
      e instanceof NotFoundError &&
      e.message.endsWith('has no ref "v3"; it has: v1, registry.example/app:v2'),
  );
  await assert.rejects(
    resolveRef(dir),
    (e: unknown) => e instanceof InvalidInputError && /holds 2 entries/.test(e.message),
  );
  assert.equal((await resolveRef(dir, "registry.example/app:v2")).kind, "manifest");
  for (const bad of ["", "a b", "-x", "x/", "x__y"]) {
    await assert.rejects(writeImage(dir, bad, image), InvalidInputError, bad);
  }
  await assert.rejects(
    resolveImage(dir, "v1", parsePlatform("linux/arm64")),
    /is for linux\/amd64, not linux\/arm64/,
  );

  const empty = await tempDir(t);
  await assert.rejects(
    readLayout(empty),
    (e: unknown) => e instanceof NotFoundError && /no oci-layout file/.test(e.message),
  );
  await writeFile(join(empty, "oci-layout"), '{"imageLayoutVersion":"2.0.0"}');
  await assert.rejects(readLayout(empty), /imageLayoutVersion "2.0.0"; kiln reads 1.0.0/);
  await assert.rejects(writeImage(empty, "v1", image), InvalidInputError);
  assert.deepEqual(await readdir(empty), ["oci-layout"]);
});

test("builds writing refs into one layout at once keep every ref", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "kiln-layout-race-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const refs = Array.from({ length: 12 }, (_, i) => `r${i}`);
  // Separate processes, as separate `kiln build` runs would be.
  const script = `import { writeImage } from ${JSON.stringify(new URL("../../src/oci/layout.ts", import.meta.url).href)};
    const image = { config: { architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] } }, layers: [] };
    await writeImage(process.argv[1], process.argv[2], image);`;
  await Promise.all(
    refs.map((ref) => runCommand(process.execPath, ["--input-type=module", "-e", script, dir, ref])),
  );
  const index = JSON.parse(readFileSync(join(dir, "index.json"), "utf8"));
  assert.deepEqual(
    index.manifests
      .map((m: { annotations: Record<string, string> }) => m.annotations["org.opencontainers.image.ref.name"])
      .sort(),
    [...refs].sort(),
  );
  assert.equal(existsSync(join(dir, ".index.json.lock")), false);
});
