import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import type { Image } from "../../src/oci/image.ts";
import { parseReference } from "../../src/oci/reference.ts";
import { createRegistryClient, type RegistryClientOptions } from "../../src/registry/client.ts";
import { pullImage } from "../../src/registry/pull.ts";
import { pushImage } from "../../src/registry/push.ts";
import { RegistryProtocolError } from "../../src/registry/registry-error.ts";
import { type FaultProxy, type FaultProxyOptions, startFaultProxy } from "../helpers/fault-proxy.ts";
import { type RunningRegistry, startRegistry } from "../helpers/registry.ts";
import { makeImage, makeLayer, skopeoDigest } from "./fixtures.ts";

const FAST_RETRY = { attempts: 5, baseDelayMs: 20, maxDelayMs: 200 };
const USER = "pusher";
const PASSWORD = "fault-proxy-Secret";

/** Two ~1 MiB incompressible layers and a small one: big enough for a cut to land mid-body. */
function bigImage(): Image {
  return makeImage([
    makeLayer({ "data/one.bin": randomBytes(1 << 20) }),
    makeLayer({ "data/two.bin": randomBytes(1 << 20) }),
    makeLayer({ "etc/small": "small\n" }),
  ]);
}

describe("pushes and pulls through a misbehaving proxy", () => {
  let registry: RunningRegistry;
  let proxy: FaultProxy | undefined;
  let work: string;
  before(async () => {
    registry = await startRegistry({ htpasswd: { username: USER, password: PASSWORD } });
    work = mkdtempSync(join(tmpdir(), "kiln-faults-"));
  });
  afterEach(async () => {
    await proxy?.close();
    proxy = undefined;
  });
  after(async () => {
    await registry.close();
    rmSync(work, { recursive: true, force: true });
  });

  async function through(
    options: Omit<FaultProxyOptions, "upstream"> = {},
    client: RegistryClientOptions = {},
  ) {
    proxy = await startFaultProxy({ upstream: registry.url, ...options });
    const reg = await createRegistryClient({
      insecure: [proxy.host],
      credentials: new Map([[proxy.host, { username: USER, password: PASSWORD }]]),
      retry: FAST_RETRY,
      ...client,
    });
    return { proxy, reg };
  }

  /** Chunked uploads in 256 KiB pieces, one at a time; the second PATCH overall meets `kind`. */
  async function chunkedWithSecondPatch(kind: "reset" | "lose-response") {
    const t = await through({}, { uploadMode: "chunked", chunkSize: 256 * 1024, concurrency: 1 });
    t.proxy.rules.push({ method: "PATCH", path: /\/blobs\/uploads\//, skip: 1, times: 1, action: { kind } });
    return t;
  }

  const creds = `--creds=${USER}:${PASSWORD}`;
  const readBack = (repo: string) => skopeoDigest(`${registry.host}/${repo}`, "--tls-verify=false", creds);

  test("a connection dropped mid-PUT resumes or restarts, and the push completes", async () => {
    const { proxy, reg } = await through();
    proxy.rules.push({
      method: "PUT",
      path: /\/blobs\/uploads\//,
      times: 2,
      action: { kind: "drop", afterBytes: 300_000 },
    });
    try {
      const desc = await pushImage(bigImage(), parseReference(`${proxy.host}/faults/dropped:v1`), reg);
      assert.equal(proxy.rules[0]?.times, 0, "both drops happened");
      assert.equal(proxy.log.filter((r) => r.fault === "drop").length, 2);
      assert.equal(await readBack("faults/dropped:v1"), desc.digest);
    } finally {
      await reg.close();
    }
  });

  test("chunked uploads resume from the registry's Range when a PATCH never arrived", async () => {
    const { proxy, reg } = await chunkedWithSecondPatch("reset");
    try {
      const image = bigImage();
      const desc = await pushImage(image, parseReference(`${proxy.host}/faults/chunked:v1`), reg);
      assert.equal(await readBack("faults/chunked:v1"), desc.digest);
      const status = proxy.log.filter((r) => r.method === "GET" && /\/blobs\/uploads\//.test(r.path));
      assert.deepEqual(
        status.map((r) => r.status),
        [204],
      );
      // Every piece is sent once, the reset one again after the status check; no upload starts over.
      const layerPieces = image.layers.reduce((n, l) => n + Math.ceil(l.size / (256 * 1024)), 0);
      const patches = proxy.log.filter((r) => r.method === "PATCH");
      assert.equal(patches.length, layerPieces + 1 + 1);
      assert.equal(proxy.log.filter((r) => r.method === "POST").length, image.layers.length + 1);
    } finally {
      await reg.close();
    }
  });

  test("a lost PATCH answer on a registry that then forgets the upload starts it over", async () => {
    const { proxy, reg } = await chunkedWithSecondPatch("lose-response");
    try {
      const desc = await pushImage(bigImage(), parseReference(`${proxy.host}/faults/restarted:v1`), reg);
      assert.equal(await readBack("faults/restarted:v1"), desc.digest);
      assert.ok(
        proxy.log.some((r) => r.method === "GET" && /\/blobs\/uploads\//.test(r.path) && r.status === 404),
      );
    } finally {
      await reg.close();
    }
  });

  test("503 and 429 with Retry-After are retried, waiting as long as the registry asks", async () => {
    const { proxy, reg } = await through();
    proxy.rules.push(
      { method: "HEAD", path: /\/blobs\//, times: 2, action: { kind: "status", status: 503 } },
      {
        method: "PUT",
        path: /\/manifests\//,
        times: 1,
        action: { kind: "status", status: 429, retryAfter: "1" },
      },
      { method: "POST", path: /\/blobs\/uploads\//, times: 1, action: { kind: "status", status: 503 } },
    );
    try {
      const started = Date.now();
      const desc = await pushImage(bigImage(), parseReference(`${proxy.host}/faults/throttled:v1`), reg);
      const elapsed = Date.now() - started;
      assert.ok(elapsed >= 1000, `Retry-After: 1 honoured (took ${elapsed} ms)`);
      assert.deepEqual(
        proxy.rules.map((r) => r.times),
        [0, 0, 0],
      );
      const puts = proxy.log.filter((r) => r.method === "PUT" && /\/manifests\//.test(r.path));
      assert.deepEqual(
        puts.map((r) => r.status),
        [429, 201],
      );
      assert.equal(await readBack("faults/throttled:v1"), desc.digest);
    } finally {
      await reg.close();
    }
  });

  test("blob HEADs answering 401 count as unknown: every blob is uploaded and the push completes", async () => {
    const { proxy, reg } = await through();
    proxy.rules.push({
      method: "HEAD",
      path: /\/blobs\//,
      times: 1000,
      action: { kind: "status", status: 401 },
    });
    try {
      const image = bigImage();
      const desc = await pushImage(image, parseReference(`${proxy.host}/faults/head-401:v1`), reg);
      assert.equal(
        proxy.log.filter((r) => r.method === "HEAD" && r.status === 401).length,
        image.layers.length + 1,
      );
      assert.equal(
        proxy.log.filter((r) => r.method === "PUT" && /\/blobs\/uploads\//.test(r.path)).length,
        4,
      );
      assert.equal(await readBack("faults/head-401:v1"), desc.digest);
    } finally {
      await reg.close();
    }
  });

  test("relative Locations and answers without Docker-Content-Digest still push what skopeo reads", async () => {
    const { proxy, reg } = await through({ relativeLocations: true, stripDigestHeader: true });
    try {
      const desc = await pushImage(bigImage(), parseReference(`${proxy.host}/faults/relative:v1`), reg);
      assert.equal(await readBack("faults/relative:v1"), desc.digest);
      const pulled = await pullImage(parseReference(`${proxy.host}/faults/relative:v1`), reg, {
        blobDir: join(work, "cache-relative"),
      });
      assert.equal(pulled.manifest.digest, desc.digest);
    } finally {
      await reg.close();
    }
  });

  test("a registry that answers a manifest PUT with another digest is an error", async () => {
    const { proxy, reg } = await through();
    proxy.rules.push({ method: "PUT", path: /\/manifests\//, times: 1, action: { kind: "wrong-digest" } });
    try {
      await assert.rejects(
        pushImage(bigImage(), parseReference(`${proxy.host}/faults/rewritten:v1`), reg),
        (err: unknown) => err instanceof RegistryProtocolError && /rewrote the manifest/.test(err.message),
      );
    } finally {
      await reg.close();
    }
  });

  test("a blob GET redirected to another host is followed without Authorization", async () => {
    const { proxy, reg } = await through();
    try {
      const image = bigImage();
      const desc = await pushImage(image, parseReference(`${proxy.host}/faults/redirected:v1`), reg);
      proxy.rules.push({
        method: "GET",
        path: /\/blobs\/sha256:/,
        times: 100,
        action: { kind: "redirect-blob" },
      });
      const pulled = await pullImage(parseReference(`${proxy.host}/faults/redirected:v1`), reg, {
        blobDir: join(work, "cache-redirect"),
      });
      assert.equal(pulled.manifest.digest, desc.digest);
      // config + 3 layers went through blob storage, which never saw the registry login.
      assert.equal(proxy.blobHostRequests.length, 4);
      assert.deepEqual(
        proxy.blobHostRequests.map((r) => r.headers.authorization),
        [undefined, undefined, undefined, undefined],
      );
      // …while the registry itself did get it for each redirected GET.
      const redirected = proxy.log.filter((r) => r.fault === "redirect-blob");
      assert.equal(redirected.length, 4);
      assert.ok(redirected.every((r) => r.hadAuthorization));
    } finally {
      await reg.close();
    }
  });

  test("a push to a second repository mounts every layer: no layer byte crosses the wire", async () => {
    const { proxy, reg } = await through();
    try {
      const image = bigImage();
      await pushImage(image, parseReference(`${proxy.host}/faults/mount-source:v1`), reg);
      const firstPushBytes = proxy.uploadBytes;
      const layerBytes = image.layers.reduce((n, l) => n + l.size, 0);
      assert.ok(firstPushBytes > layerBytes, "the first push uploads the layers");

      proxy.uploadBytes = 0;
      const desc = await pushImage(image, parseReference(`${proxy.host}/faults/mount-target:v1`), reg, {
        mountFrom: "faults/mount-source",
      });
      assert.equal(proxy.uploadBytes, 0);
      assert.equal(
        proxy.log.filter((r) => r.method === "POST" && /mount=/.test(r.path) && r.status === 201).length,
        4,
      );
      assert.equal(await readBack("faults/mount-target:v1"), desc.digest);

      // A source that lacks the blobs makes the registry open an ordinary upload (202); the push still completes.
      proxy.uploadBytes = 0;
      const other = bigImage();
      const d2 = await pushImage(other, parseReference(`${proxy.host}/faults/mount-miss:v1`), reg, {
        mountFrom: "faults/mount-source",
      });
      assert.ok(proxy.uploadBytes >= other.layers.reduce((n, l) => n + l.size, 0));
      assert.equal(await readBack("faults/mount-miss:v1"), d2.digest);
    } finally {
      await reg.close();
    }
  });
});
