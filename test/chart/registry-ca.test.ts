import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { copyFile, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { runKiln } from "../helpers/kiln-cli.ts";
import { makePki, startRegistry } from "../helpers/registry.ts";
import { skopeo } from "../helpers/skopeo.ts";

// The chart's registryCA reaches build pods as a file named by NODE_EXTRA_CA_CERTS (pod-builder.ts). This
// is the other half: a kiln process given only that variable trusts the CA for its registry traffic.

test("kiln trusts the CA NODE_EXTRA_CA_CERTS names for a TLS registry, and refuses the registry without it", async (t) => {
  const pki = makePki();
  const registry = await startRegistry({ tls: pki });
  const dir = await mkdtemp(join(tmpdir(), "kiln-ca-"));
  t.after(async () => {
    await registry.close();
    await rm(pki.dir, { recursive: true, force: true });
    await rm(dir, { recursive: true, force: true });
  });
  await mkdir(join(dir, "context"));
  await writeFile(join(dir, "context", "a.txt"), "a\n");
  const ref = `${registry.host}/ctx:v1`;

  const refused = await runKiln(["context", "push", join(dir, "context"), ref]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /certificate/i);

  const pushed = await runKiln(["context", "push", join(dir, "context"), ref], {
    env: { NODE_EXTRA_CA_CERTS: pki.caFile },
  });
  assert.equal(pushed.code, 0, pushed.stderr);
  // skopeo reads the CA from a folder of its own (it would take the PKI folder's keys for client certs).
  const certDir = join(dir, "certs");
  await mkdir(certDir);
  await copyFile(pki.caFile, join(certDir, "ca.crt"));
  const raw = await skopeo("inspect", "--raw", "--cert-dir", certDir, `docker://${ref}`);
  assert.equal(pushed.stdout, `${ref}@sha256:${createHash("sha256").update(raw).digest("hex")}`);
});
