import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Digest } from "../../src/oci/digest.ts";
import { parseReference } from "../../src/oci/reference.ts";
import { createRegistryClient, type RegistryClient } from "../../src/registry/client.ts";
import { parseMirrors } from "../../src/registry/mirrors.ts";
import { pullImage } from "../../src/registry/pull.ts";
import { pushImage } from "../../src/registry/push.ts";
import {
  EndpointsFailedError,
  RegistryConnectionError,
  RegistryError,
} from "../../src/registry/registry-error.ts";
import { type FaultProxy, startFaultProxy } from "../helpers/fault-proxy.ts";
import { freePort, type RunningRegistry, startRegistry } from "../helpers/registry.ts";
import { makeImage, makeLayer } from "./fixtures.ts";

/** A real registry's answer to a manifest it does not have (distribution's MANIFEST_UNKNOWN). */
const manifestUnknown = (host: string, repo: string, tag: string) =>
  `GET http://${host}/v2/${repo}/manifests/${tag}: 404 MANIFEST_UNKNOWN: manifest unknown`;
const refused = (host: string, path: string) =>
  `GET http://${host}${path}: ECONNREFUSED connect ECONNREFUSED ${host}`;

describe("a failing mirror and a failing origin are both reported", () => {
  let origin: RunningRegistry;
  let empty: RunningRegistry;
  let broken: FaultProxy;
  let dead: string;
  let work: string;
  const clients: RegistryClient[] = [];
  const client = async (mirrors: string[], hosts: string[]) => {
    const c = await createRegistryClient({
      insecure: hosts,
      mirrors: parseMirrors(mirrors),
      retry: { attempts: 1 },
    });
    clients.push(c);
    return c;
  };
  before(async () => {
    origin = await startRegistry();
    empty = await startRegistry();
    // A mirror that answers every request with a 503 (distribution code UNAVAILABLE, message "injected").
    broken = await startFaultProxy({ upstream: origin.url });
    broken.rules.push({
      path: /^\/v2\//,
      times: Number.MAX_SAFE_INTEGER,
      action: { kind: "status", status: 503 },
    });
    dead = `127.0.0.1:${await freePort()}`;
    work = mkdtempSync(join(tmpdir(), "kiln-mirror-failures-"));
    const reg = await client([], [origin.host]);
    await pushImage(
      makeImage([makeLayer({ "etc/demo": "demo\n" })]),
      parseReference(`${origin.host}/demo/app:v1`),
      reg,
    );
  });
  after(async () => {
    for (const c of clients) await c.close();
    await broken.close();
    await empty.close();
    await origin.close();
    rmSync(work, { recursive: true, force: true });
  });

  test("an unreachable mirror, then the origin's 404", async () => {
    const reg = await client([`${origin.host}=${dead}`], [origin.host, dead]);
    await assert.rejects(reg.getManifest(parseReference(`${origin.host}/demo/app:missing`)), (err) => {
      assert.ok(err instanceof EndpointsFailedError);
      assert.equal(
        err.message,
        `cannot read manifest missing of ${origin.host}/demo/app from its mirror or its origin: ` +
          `mirror ${dead}: ${refused(dead, "/v2/demo/app/manifests/missing")}; ` +
          `origin ${origin.host}: ${manifestUnknown(origin.host, "demo/app", "missing")}`,
      );
      assert.deepEqual(
        err.failures.map((f) => [f.host, f.mirror, (f.error as { code?: string }).code]),
        [
          [dead, true, "KILN_ERR_REGISTRY_CONNECTION"],
          [origin.host, false, "KILN_ERR_REGISTRY"],
        ],
      );
      assert.ok(err.failures[0]!.error instanceof RegistryConnectionError);
      // The origin's answer is final, so repeating the pull would not help.
      assert.equal(err.temporary, false);
      assert.equal(err.code, "KILN_ERR_REGISTRY_ENDPOINTS");
      return true;
    });
  });

  test("a mirror answering 503, then the origin's 404, for a manifest and for a blob", async () => {
    const reg = await client([`${origin.host}=${broken.host}`], [origin.host, broken.host]);
    await assert.rejects(reg.getManifest(parseReference(`${origin.host}/demo/app:missing`)), {
      message:
        `cannot read manifest missing of ${origin.host}/demo/app from its mirror or its origin: ` +
        `mirror ${broken.host}: GET http://${broken.host}/v2/demo/app/manifests/missing: 503 UNAVAILABLE: injected; ` +
        `origin ${origin.host}: ${manifestUnknown(origin.host, "demo/app", "missing")}`,
    });
    const digest = `sha256:${"0".repeat(64)}` as Digest;
    await assert.rejects(reg.fetchBlob({ registry: origin.host, repository: "demo/app" }, digest), {
      message:
        `cannot read blob ${digest} of ${origin.host}/demo/app from its mirror or its origin: ` +
        `mirror ${broken.host}: GET http://${broken.host}/v2/demo/app/blobs/${digest}: 503 UNAVAILABLE: injected; ` +
        `origin ${origin.host}: GET http://${origin.host}/v2/demo/app/blobs/${digest}: 404 BLOB_UNKNOWN: blob unknown to registry`,
    });
    // The image itself is still pulled from the origin past the broken mirror.
    const pulled = await pullImage(parseReference(`${origin.host}/demo/app:v1`), reg, {
      blobDir: join(work, "b1"),
    });
    assert.equal(pulled.layers.length, 1);
  });

  test("two mirrors without the image, then an unreachable origin", async () => {
    const reg = await client([`${dead}=${empty.host},${broken.host}`], [dead, empty.host, broken.host]);
    await assert.rejects(reg.getManifest(parseReference(`${dead}/demo/app:v1`)), (err) => {
      assert.ok(err instanceof EndpointsFailedError);
      assert.equal(
        err.message,
        `cannot read manifest v1 of ${dead}/demo/app from its mirrors or its origin: ` +
          `mirror ${empty.host}: ${manifestUnknown(empty.host, "demo/app", "v1")}; ` +
          `mirror ${broken.host}: GET http://${broken.host}/v2/demo/app/manifests/v1: 503 UNAVAILABLE: injected; ` +
          `origin ${dead}: ${refused(dead, "/v2/demo/app/manifests/v1")}`,
      );
      // The origin could not be reached: a later try may get through.
      assert.equal(err.temporary, true);
      return true;
    });
  });

  test("without fallback to the origin, mirrors alone are named; one endpoint fails with its own error", async () => {
    const two = await createRegistryClient({
      insecure: [empty.host, dead],
      mirrors: parseMirrors([`${origin.host}=${empty.host},${dead}`], { fallbackToOrigin: false }),
      retry: { attempts: 1 },
    });
    clients.push(two);
    await assert.rejects(two.getManifest(parseReference(`${origin.host}/demo/app:v1`)), {
      message:
        `cannot read manifest v1 of ${origin.host}/demo/app from its mirrors: ` +
        `mirror ${empty.host}: ${manifestUnknown(empty.host, "demo/app", "v1")}; ` +
        `mirror ${dead}: ${refused(dead, "/v2/demo/app/manifests/v1")}`,
    });
    const one = await createRegistryClient({
      insecure: [empty.host],
      mirrors: parseMirrors([`${origin.host}=${empty.host}`], { fallbackToOrigin: false }),
      retry: { attempts: 1 },
    });
    clients.push(one);
    await assert.rejects(one.getManifest(parseReference(`${origin.host}/demo/app:v1`)), (err) => {
      assert.ok(err instanceof RegistryError);
      assert.equal(err.status, 404);
      return true;
    });
  });
});
