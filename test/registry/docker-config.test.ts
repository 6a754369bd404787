import assert from "node:assert/strict";
import { test } from "node:test";
import { describeError } from "../../src/errors.ts";
import { parseDockerConfig } from "../../src/registry/docker-config.ts";

const b64 = (s: string) => Buffer.from(s).toString("base64");

test("Docker Hub's keys, host:port keys, auth / username+password / identitytoken entries", () => {
  const store = parseDockerConfig(
    JSON.stringify({
      auths: {
        "https://index.docker.io/v1/": { auth: b64("hubuser:hub:pass:with:colons") },
        "registry.example.com:5000": { username: "u", password: "p" },
        "https://ghcr.example.io/v2/": { identitytoken: "refresh-token" },
      },
      credsStore: "desktop",
    }),
  );
  assert.deepEqual(store.get("docker.io"), { username: "hubuser", password: "hub:pass:with:colons" });
  assert.deepEqual(store.get("registry.example.com:5000"), { username: "u", password: "p" });
  assert.deepEqual(store.get("ghcr.example.io"), { identityToken: "refresh-token" });
  assert.equal(store.size, 3);
});

test("`docker.io` as a key and a bare host key win over URL-shaped keys for the same host", () => {
  const store = parseDockerConfig(
    JSON.stringify({
      auths: {
        "docker.io": { auth: b64("plain:one") },
        "https://index.docker.io/v1/": { auth: b64("url:two") },
      },
    }),
  );
  assert.deepEqual(store.get("docker.io"), { username: "plain", password: "one" });
});

test("the older .dockercfg shape (no `auths` wrapper) is read too", () => {
  const store = parseDockerConfig(JSON.stringify({ "quay.example": { auth: b64("a:b") } }));
  assert.deepEqual(store.get("quay.example"), { username: "a", password: "b" });
});

test("a malformed file is an InvalidInputError that does not quote its secrets", () => {
  const secret = "TopSecretValue";
  for (const text of [
    `{"auths": {"h": {"auth": 42, "password": "${secret}"}}}`,
    `{"auths": {"h": {"auth": "${b64(secret)}"}}}`,
    `{"auths": ${secret}`,
  ]) {
    assert.throws(
      () => parseDockerConfig(text, "pull-secret"),
      (err: unknown) => {
        assert.equal((err as { code?: string }).code, "KILN_ERR_INVALID_INPUT");
        const text = `${describeError(err)} ${(err as Error).stack}`;
        assert.equal(text.includes(secret), false, text);
        assert.equal(text.includes(b64(secret)), false, text);
        return true;
      },
    );
  }
});
