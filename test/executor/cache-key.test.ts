import assert from "node:assert/strict";
import { test } from "node:test";
import { nextCacheKey, stageCacheKey } from "../../src/plan/cache-key.ts";
import { type Step, StepSchema } from "../../src/plan/plan.ts";

const run: Step = {
  kind: "run",
  line: 3,
  createdBy: "RUN make",
  argv: ["/bin/sh", "-c", "make"],
  env: ["PATH=/bin", "V=1"],
  user: "",
  workdir: "/src",
  mounts: [],
  network: "default",
  usedArgs: { V: "1" },
};

test("cache keys chain from the base config digest; lines, history text and key order do not count", () => {
  const base = stageCacheKey("sha256:aaaa");
  assert.match(base, /^[0-9a-f]{64}$/);
  assert.notEqual(stageCacheKey("sha256:bbbb"), base, "another base, other keys");
  const key = nextCacheKey(base, run);
  assert.equal(nextCacheKey(base, { ...run, line: 9, createdBy: "RUN make # moved" }), key);
  // A step read back from a job file: zod defaults filled in, keys in another order.
  const reparsed = StepSchema.parse(
    JSON.parse(JSON.stringify(Object.fromEntries(Object.entries(run).reverse()))),
  );
  assert.equal(nextCacheKey(base, reparsed), key);
  assert.notEqual(
    nextCacheKey(base, { ...run, env: ["PATH=/bin", "V=2"] }),
    key,
    "a build arg's value counts",
  );
  assert.notEqual(nextCacheKey(nextCacheKey(base, run), run), key, "each key names the steps before it");
  const copy: Step = {
    kind: "copy",
    createdBy: "COPY a /a",
    ops: [
      { from: { kind: "context" }, sources: ["a"], dest: "/a", exclude: [], extract: false, parents: false },
    ],
  };
  assert.notEqual(
    nextCacheKey(base, copy, "sha256:1"),
    nextCacheKey(base, copy, "sha256:2"),
    "the copied content counts",
  );
  assert.equal(nextCacheKey(base, { kind: "config", createdBy: "LABEL a=b" }), base);
});
