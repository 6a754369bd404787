import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { RegistryError, redactUrl } from "../../src/registry/registry-error.ts";
import { parseRetryAfter, retryDelayMs, withRetry } from "../../src/registry/retry.ts";

test("Retry-After as seconds or an HTTP date", () => {
  const now = Date.parse("2025-01-01T00:00:00Z");
  assert.equal(parseRetryAfter("7", now), 7000);
  assert.equal(parseRetryAfter("Wed, 01 Jan 2025 00:00:30 GMT", now), 30_000);
  assert.equal(parseRetryAfter("Tue, 31 Dec 2024 00:00:00 GMT", now), 0);
  assert.equal(parseRetryAfter(undefined, now), undefined);
  assert.equal(parseRetryAfter("soon", now), undefined);
});

test("backoff is jittered below an exponential ceiling; Retry-After wins", () => {
  const policy = { attempts: 5, baseDelayMs: 100, maxDelayMs: 1000, maxRetryAfterMs: 5000 };
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 20 }), (attempt) => {
      const d = retryDelayMs(policy, attempt);
      assert.ok(d >= 0 && d <= Math.min(1000, 100 * 2 ** (attempt - 1)));
    }),
  );
  assert.equal(retryDelayMs(policy, 3, 2500), 2500);
});

test("withRetry repeats temporary failures only, and gives up past maxRetryAfterMs", async () => {
  const policy = { attempts: 4, baseDelayMs: 1, maxDelayMs: 2, maxRetryAfterMs: 50 };
  let calls = 0;
  const result = await withRetry(policy, async () => {
    if (++calls < 3) throw new RegistryError("GET", "http://r/v2/", 503, []);
    return "ok";
  });
  assert.deepEqual([result, calls], ["ok", 3]);

  calls = 0;
  await assert.rejects(
    withRetry(policy, async () => {
      calls++;
      throw new RegistryError("GET", "http://r/v2/", 404, [{ code: "MANIFEST_UNKNOWN", message: "" }]);
    }),
    { status: 404 },
  );
  assert.equal(calls, 1);

  calls = 0;
  await assert.rejects(
    withRetry(policy, async () => {
      calls++;
      throw new RegistryError("GET", "http://r/v2/", 429, [], { retryAfterMs: 3_600_000 });
    }),
    { status: 429 },
  );
  assert.equal(calls, 1);
});

test("URLs in messages lose user info and query values", () => {
  assert.equal(
    redactUrl("https://user:pw@store.example/blob?X-Amz-Signature=abc&X-Amz-Credential=key&_state=s"),
    "https://store.example/blob?X-Amz-Signature=…&X-Amz-Credential=…&_state=…",
  );
  const err = new RegistryError("PUT", "http://r/v2/a/blobs/uploads/1?_state=SECRET", 400, []);
  assert.equal(err.message.includes("SECRET"), false);
});
