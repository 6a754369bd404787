import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { describeError } from "../../src/errors.ts";
import { createLogger } from "../../src/log.ts";
import { parseReference } from "../../src/oci/reference.ts";
import { createRegistryClient } from "../../src/registry/client.ts";
import { pullImage } from "../../src/registry/pull.ts";
import { pushImage } from "../../src/registry/push.ts";
import { RegistryConnectionError, RegistryError } from "../../src/registry/registry-error.ts";
import {
  makePki,
  type RunningRegistry,
  startRegistry,
  startTokenIssuer,
  type TestPki,
  type TokenIssuer,
} from "../helpers/registry.ts";
import { makeImage, makeLayer, skopeo, skopeoDigest } from "./fixtures.ts";

const USER = "builder";
const PASSWORD = "s3cret-Pa55word";

function logSink(): { stream: Writable; text: () => string } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  return { stream, text: () => lines.join("") };
}

describe("TLS registry with htpasswd basic auth", () => {
  let pki: TestPki;
  let registry: RunningRegistry;
  let work: string;
  before(async () => {
    pki = makePki();
    registry = await startRegistry({ tls: pki, htpasswd: { username: USER, password: PASSWORD } });
    work = mkdtempSync(join(tmpdir(), "kiln-auth-"));
  });
  after(async () => {
    await registry.close();
    rmSync(pki.dir, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  });

  const image = makeImage([makeLayer({ "srv/index.html": "<h1>tls</h1>\n" })]);

  test("credentials from a .dockerconfigjson `auth` entry push and pull over TLS with the test CA", async () => {
    const authfile = join(work, "config.json");
    const auth = Buffer.from(`${USER}:${PASSWORD}`).toString("base64");
    writeFileSync(authfile, JSON.stringify({ auths: { [registry.host]: { auth } } }));
    const reg = await createRegistryClient({ authfile, caFiles: [pki.caFile] });
    try {
      const ref = parseReference(`${registry.host}/secure/app:v1`);
      const desc = await pushImage(image, ref, reg);
      const certDir = join(work, "certs");
      mkdirSync(certDir, { recursive: true });
      copyFileSync(pki.caFile, join(certDir, "ca.crt"));
      const seen = await skopeoDigest(
        `${registry.host}/secure/app:v1`,
        `--creds=${USER}:${PASSWORD}`,
        `--cert-dir=${certDir}`,
      );
      assert.equal(seen, desc.digest);
      const pulled = await pullImage(ref, reg, { blobDir: join(work, "cache") });
      assert.equal(pulled.manifest.digest, desc.digest);
    } finally {
      await reg.close();
    }
  });

  test("a wrong password is a 401 RegistryError; neither errors nor debug logs carry the secret", async () => {
    const wrong = "Wr0ng-Secret-Value";
    const sink = logSink();
    const reg = await createRegistryClient({
      credentials: new Map([[registry.host, { username: USER, password: wrong }]]),
      caFiles: [pki.caFile],
      logger: createLogger("debug", sink.stream),
      retry: { attempts: 2, baseDelayMs: 1 },
    });
    try {
      const err = await pushImage(image, parseReference(`${registry.host}/secure/denied:v1`), reg).catch(
        (e) => e,
      );
      assert.ok(err instanceof RegistryError, String(err));
      assert.equal(err.status, 401);
      assert.deepEqual(err.ociCodes, ["UNAUTHORIZED"]);
      const everything = `${describeError(err)} ${JSON.stringify(err)} ${err.stack} ${sink.text()}`;
      for (const secret of [wrong, Buffer.from(`${USER}:${wrong}`).toString("base64")]) {
        assert.equal(everything.includes(secret), false, `secret leaked: ${secret}`);
      }
    } finally {
      await reg.close();
    }
  });

  test("without the CA the TLS handshake fails as a connection error", async () => {
    const reg = await createRegistryClient({ retry: { attempts: 1 } });
    try {
      await assert.rejects(
        reg.getManifest(parseReference(`${registry.host}/secure/app:v1`)),
        (err: unknown) => err instanceof RegistryConnectionError && /certificate/i.test(describeError(err)),
      );
    } finally {
      await reg.close();
    }
  });
});

test("a registry requiring mutual TLS accepts kiln's client certificate and refuses a client without one", async (t) => {
  const pki = makePki();
  const registry = await startRegistry({ tls: { ...pki, clientCaFile: pki.caFile } });
  t.after(async () => {
    await registry.close();
    rmSync(pki.dir, { recursive: true, force: true });
  });
  const image = makeImage([makeLayer({ "mtls.txt": "client certificates\n" })]);
  const ref = parseReference(`${registry.host}/mtls/app:v1`);
  const withCert = await createRegistryClient({
    caFiles: [pki.caFile],
    clientCert: { certFile: pki.clientCertFile, keyFile: pki.clientKeyFile },
  });
  const without = await createRegistryClient({ caFiles: [pki.caFile], retry: { attempts: 1 } });
  try {
    const desc = await pushImage(image, ref, withCert);
    assert.equal((await withCert.getManifest(ref)).descriptor.digest, desc.digest);
    await assert.rejects(without.getManifest(ref), RegistryConnectionError);
  } finally {
    await withCert.close();
    await without.close();
  }
});

describe("registry with token auth", () => {
  const service = "kiln-test-registry";
  let issuer: TokenIssuer;
  let registry: RunningRegistry;
  let work: string;
  before(async () => {
    issuer = await startTokenIssuer({
      service,
      username: USER,
      password: PASSWORD,
      refreshToken: "refresh-xyz",
    });
    registry = await startRegistry({
      token: { realm: issuer.realm, service, issuer: issuer.issuer, rootCertBundle: issuer.rootCertBundle },
    });
    work = mkdtempSync(join(tmpdir(), "kiln-token-auth-"));
  });
  after(async () => {
    await registry.close();
    await issuer.close();
    rmSync(work, { recursive: true, force: true });
  });

  const credentials = () => new Map([[registry.host, { username: USER, password: PASSWORD }]]);
  const image = makeImage([
    makeLayer({ "lib/a.txt": "layer a\n".repeat(50) }),
    makeLayer({ "lib/b.txt": "layer b\n".repeat(50) }),
  ]);

  test("one token carries pull, push and mount scopes; the second repository gets its layers by mount", async () => {
    const reg = await createRegistryClient({ insecure: [registry.host], credentials: credentials() });
    try {
      const first = parseReference(`${registry.host}/team/base:v1`);
      await pushImage(image, first, reg);
      const pulled = await pullImage(first, reg, { blobDir: join(work, "cache") });

      issuer.requests.length = 0;
      const statsBefore = { ...reg.stats };
      const second = parseReference(`${registry.host}/team/app:v1`);
      const desc = await pushImage(pulled, second, reg);
      assert.equal(reg.stats.blobsMounted - statsBefore.blobsMounted, 2);
      assert.equal(reg.stats.blobsUploaded - statsBefore.blobsUploaded, 1, "only the re-serialised config");
      assert.deepEqual(
        issuer.requests.map((r) => r.scopes),
        [["repository:team/app:pull,push", "repository:team/base:pull"]],
      );
      assert.equal(issuer.requests[0]?.service, service);
      const seen = await skopeoDigest(
        `${registry.host}/team/app:v1`,
        "--tls-verify=false",
        `--creds=${USER}:${PASSWORD}`,
      );
      assert.equal(seen, desc.digest);
    } finally {
      await reg.close();
    }
  });

  test("tokens and passwords stay out of debug logs and error messages", async () => {
    const sink = logSink();
    const reg = await createRegistryClient({
      insecure: [registry.host],
      credentials: credentials(),
      logger: createLogger("debug", sink.stream),
      retry: { attempts: 2, baseDelayMs: 1 },
    });
    try {
      await pushImage(image, parseReference(`${registry.host}/team/logged:v1`), reg);
      const err = await reg
        .getManifest(parseReference(`${registry.host}/team/logged:missing`))
        .catch((e) => e);
      assert.ok(err instanceof RegistryError);
      assert.equal(err.status, 404);
      const everything = `${describeError(err)} ${err.stack} ${JSON.stringify(err)} ${sink.text()}`;
      assert.ok(issuer.issued.length > 0);
      for (const secret of [PASSWORD, ...issuer.issued]) {
        assert.equal(everything.includes(secret), false, "a secret reached a log or an error");
      }
    } finally {
      await reg.close();
    }
  });

  test("`access_token` answers work; a cached token is reused until it expires, then renewed", async () => {
    issuer.options.field = "access_token";
    issuer.options.expiresIn = 2;
    const reg = await createRegistryClient({ insecure: [registry.host], credentials: credentials() });
    try {
      const ref = parseReference(`${registry.host}/team/base:v1`);
      issuer.requests.length = 0;
      await reg.getManifest(ref);
      await reg.getManifest(ref);
      assert.equal(issuer.requests.length, 1);
      await sleep(2100);
      await reg.getManifest(ref);
      assert.equal(issuer.requests.length, 2);
    } finally {
      issuer.options.field = "token";
      issuer.options.expiresIn = 300;
      await reg.close();
    }
  });

  test("a token the registry stops accepting is replaced on its 401", async () => {
    // distribution allows 60 s of clock skew; this token's exp passes that in about one second.
    issuer.options.jwtLifetimeSeconds = -59;
    const reg = await createRegistryClient({ insecure: [registry.host], credentials: credentials() });
    try {
      const ref = parseReference(`${registry.host}/team/base:v1`);
      issuer.requests.length = 0;
      await reg.getManifest(ref);
      issuer.options.jwtLifetimeSeconds = undefined;
      await sleep(1500);
      const again = await reg.getManifest(ref);
      assert.equal(again.descriptor.mediaType, "application/vnd.oci.image.manifest.v1+json");
      assert.equal(issuer.requests.length, 2);
    } finally {
      issuer.options.jwtLifetimeSeconds = undefined;
      await reg.close();
    }
  });

  test("an identitytoken is exchanged as an OAuth2 refresh token", async () => {
    const authfile = join(work, "identity.json");
    writeFileSync(
      authfile,
      JSON.stringify({ auths: { [`http://${registry.host}/v2/`]: { identitytoken: "refresh-xyz" } } }),
    );
    const reg = await createRegistryClient({ insecure: [registry.host], authfile });
    try {
      issuer.requests.length = 0;
      await reg.getManifest(parseReference(`${registry.host}/team/base:v1`));
      assert.equal(issuer.requests[0]?.method, "POST");
      assert.equal(issuer.requests[0]?.form["grant_type"], "refresh_token");
      assert.deepEqual(issuer.requests[0]?.scopes, ["repository:team/base:pull"]);
    } finally {
      await reg.close();
    }
  });

  test("skopeo pushes with a token, kiln pulls with the same login", async () => {
    await skopeo(
      "copy",
      "--src-tls-verify=false",
      "--dest-tls-verify=false",
      `--src-creds=${USER}:${PASSWORD}`,
      `--dest-creds=${USER}:${PASSWORD}`,
      `docker://${registry.host}/team/base:v1`,
      `docker://${registry.host}/copied/by-skopeo:v1`,
    );
    const reg = await createRegistryClient({ insecure: [registry.host], credentials: credentials() });
    try {
      const pulled = await pullImage(parseReference(`${registry.host}/copied/by-skopeo:v1`), reg, {
        blobDir: join(work, "cache-skopeo"),
      });
      const seen = await skopeoDigest(
        `${registry.host}/copied/by-skopeo:v1`,
        "--tls-verify=false",
        `--creds=${USER}:${PASSWORD}`,
      );
      assert.equal(pulled.manifest.digest, seen);
    } finally {
      await reg.close();
    }
  });
});
