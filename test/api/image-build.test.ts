import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import {
  IMAGE_NAME_RE,
  IMAGE_REFERENCE_RE,
  ImageBuildSchema,
  ImageBuildSpecSchema,
} from "../../src/api/image-build.ts";
import { parseReference } from "../../src/oci/reference.ts";
import { BAD_CASES, GOOD_SOURCES, GOOD_SPEC, GOOD_SPEC_DEFAULTED, specOf } from "./cases.ts";

/** A zod issue path written as the API server writes field paths. */
function fieldOf(path: readonly PropertyKey[]): string {
  return path
    .map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`))
    .join("");
}

test("a minimal spec gets every default", () => {
  assert.deepEqual(ImageBuildSpecSchema.parse(GOOD_SPEC), GOOD_SPEC_DEFAULTED);
});

test("a layers spec gets the layer spec's defaults, without its platforms", () => {
  const spec = ImageBuildSpecSchema.parse({
    source: { inline: { files: { "bin/app": "#!/bin/sh\necho hi\n" } } },
    layers: { layers: [{ files: [{ src: "bin", dest: "/usr/local/bin/", chmod: "0755" }] }] },
    output: { image: "registry:5000/app:v1", tags: ["latest", "v1.2.3"] },
    platforms: ["linux/amd64", "linux/arm64", "linux/arm/v7"],
    timeout: "1h30m",
  });
  assert.deepEqual(spec.layers, {
    base: "scratch",
    layers: [{ files: [{ src: "bin", dest: "/usr/local/bin/", chmod: "0755", exclude: [] }] }],
    config: {},
  });
  assert.deepEqual(spec.platforms, ["linux/amd64", "linux/arm64", "linux/arm/v7"]);
  assert.equal(
    ImageBuildSpecSchema.safeParse({ ...GOOD_SPEC, layers: { platforms: ["linux/amd64"] } }).success,
    false,
  );
});

test("every good source parses", () => {
  for (const source of GOOD_SOURCES) {
    const r = ImageBuildSpecSchema.safeParse({ ...GOOD_SPEC, source });
    assert.ok(r.success, `${JSON.stringify(source)}: ${r.error?.message}`);
  }
});

for (const c of BAD_CASES) {
  test(`zod refuses: ${c.name}`, () => {
    const r = ImageBuildSpecSchema.safeParse(specOf(c));
    assert.equal(r.success, false, "accepted");
    const issues = r.error!.issues.map((i) => `${fieldOf(i.path)}: ${i.message}`);
    assert.ok(issues.includes(`${c.field}: ${c.message ?? c.zodMessage}`), issues.join("\n"));
  });
}

test("an ImageBuild object parses with its metadata kept", () => {
  const ib = ImageBuildSchema.parse({
    apiVersion: "kiln.dev/v1alpha1",
    kind: "ImageBuild",
    metadata: { name: "app", namespace: "team", generation: 3, uid: "u-1", managedFields: [] },
    spec: GOOD_SPEC,
    status: { phase: "Building", observedGeneration: 2 },
  });
  assert.deepEqual(ib.metadata, {
    name: "app",
    namespace: "team",
    generation: 3,
    uid: "u-1",
    managedFields: [],
  });
  assert.equal(ib.status?.phase, "Building");
});

// The API server needs the reference grammar as one regex; parseReference is the grammar kiln uses.
const refChars = fc.constantFrom(..."ab0:/.-_@A".split(""), "sha256:", "a".repeat(64), "localhost", "[::1]");
// Short enough that parseReference's 255-character name limit (counted after normalising) never applies.
const refs = fc
  .array(refChars, { maxLength: 12 })
  .map((parts) => parts.join(""))
  .filter((s) => s.length <= 200);

function parses(s: string): boolean {
  try {
    parseReference(s);
    return true;
  } catch {
    return false;
  }
}

test("the CEL image reference regex accepts what parseReference accepts", () => {
  fc.assert(
    fc.property(refs, (s) => {
      const isId = /^[a-f0-9]{64}$/.test(s);
      assert.equal(IMAGE_REFERENCE_RE.test(s) && !isId, parses(s), s);
      assert.equal(IMAGE_NAME_RE.test(s) && !isId, parses(s) && !s.includes("@"), s);
    }),
    { numRuns: 20000 },
  );
  for (const s of [
    "busybox",
    "localhost:5000/a/b:v1",
    "[::1]:5000/app",
    `reg.io/x@sha256:${"a".repeat(64)}`,
  ]) {
    assert.ok(IMAGE_REFERENCE_RE.test(s) && parses(s), s);
  }
});

test("a misspelt field is refused, not silently dropped", () => {
  const r = ImageBuildSpecSchema.safeParse({ ...GOOD_SPEC, platform: ["linux/arm64"] });
  assert.deepEqual(
    r.error?.issues.map((i) => i.message),
    ['Unrecognized key: "platform"'],
  );
});
