import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { parse } from "yaml";
import { z } from "zod";
import { withRule } from "../../src/api/cel.ts";
import { CRD_FILE, imageBuildCrd, imageBuildCrdYaml } from "../../src/api/crd.ts";
import { structuralSchemaOf, UnrepresentableSchemaError } from "../../src/api/openapi.ts";
import { structuralViolations } from "./structural.ts";

const ROOT = resolve(import.meta.dirname, "../..");
type Schema = { [key: string]: unknown };

function openApiSchema(crd: Schema): Schema {
  const versions = (crd["spec"] as { versions: { schema: { openAPIV3Schema: Schema } }[] }).versions;
  return versions[0]!.schema.openAPIV3Schema;
}

/** The schema node at a dotted path of property names, as `kubectl explain` walks it. */
function nodeAt(root: Schema, path: string): Schema {
  let node = root;
  for (const name of path.split(".")) {
    while (node["type"] === "array") node = node["items"] as Schema;
    node = (node["properties"] as Record<string, Schema>)[name]!;
    assert.ok(node, `${path}: no field ${name}`);
  }
  return node;
}

test("the checked-in CRD is the one generated from src/api", async () => {
  const checkedIn = await readFile(join(ROOT, "crds", CRD_FILE), "utf8");
  assert.ok(checkedIn === imageBuildCrdYaml(), `crds/${CRD_FILE} is stale: run ./bin/kiln crd`);
  assert.deepEqual(parse(checkedIn), imageBuildCrd());
});

test("kiln crd --output writes the CRD file", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "kiln-crd-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const { stdout } = await promisify(execFile)(join(ROOT, "bin/kiln"), ["crd", "--output", dir]);
  assert.equal(stdout, `${join(dir, CRD_FILE)}\n`);
  assert.equal(await readFile(join(dir, CRD_FILE), "utf8"), imageBuildCrdYaml());
});

test("the generated schema is structural", () => {
  assert.deepEqual(structuralViolations(openApiSchema(imageBuildCrd())), []);
});

test("the structural checker finds what the API server refuses", () => {
  const bad = {
    type: "object",
    properties: {
      metadata: { type: "object", properties: { labels: { type: "object" } } },
      a: { description: "a", properties: { b: { type: "string", description: "b" } } },
      c: { type: "string" },
      d: {
        type: "object",
        description: "d",
        additionalProperties: false,
        properties: { e: { $ref: "#/x", type: "string", description: "e" } },
      },
      f: { type: "array", description: "f", uniqueItems: true, items: { type: "string" } },
      g: { type: "string", description: "g", anyOf: [{ type: "string", description: "h" }] },
      i: { type: "integer", description: "i", default: "1", enum: [1, "2"] },
      j: {
        type: "array",
        description: "j",
        "x-kubernetes-list-type": "map",
        items: { type: "object", properties: { k: { type: "string", description: "k" } } },
      },
      l: {
        type: "string",
        description: "l",
        "x-kubernetes-validations": [{ rule: "true", message: "two\nlines" }],
      },
    },
  };
  assert.deepEqual(structuralViolations(bad), [
    "metadata: only name and generateName may be restricted; kiln restricts nothing",
    "metadata.labels: description is missing",
    "metadata.labels: an object needs properties or additionalProperties (or x-kubernetes-preserve-unknown-fields)",
    "a: type is missing",
    "c: description is missing",
    "d: additionalProperties: false is not allowed",
    "d: properties and additionalProperties are mutually exclusive",
    "d.e: $ref is not allowed",
    "f: uniqueItems: true is forbidden (quadratic)",
    "g: anyOf must not set description",
    "g: anyOf must not set type",
    'i: enum value "2" is not a integer',
    'i: default "1" is not a integer',
    "j: a map list needs x-kubernetes-list-map-keys",
    'l: validation "true" needs a one-line message',
  ]);
});

test("explain finds a description on every field a user writes", () => {
  const schema = openApiSchema(imageBuildCrd());
  assert.equal(
    nodeAt(schema, "spec.source.git")["description"],
    "Build context cloned from a Git repository at one revision, without history.",
  );
  assert.equal(
    nodeAt(schema, "spec.layers.layers.files.chown")["description"],
    "Owner of the copied files as USER[:GROUP], numeric or names from the base image's /etc/passwd and /etc/group. Default 0:0.",
  );
  assert.deepEqual(nodeAt(schema, "spec.platforms")["default"], ["linux/amd64"]);
  assert.deepEqual(nodeAt(schema, "spec.cache")["default"], {});
  assert.equal(nodeAt(schema, "spec.cache.ttl")["default"], "168h");
  assert.deepEqual(nodeAt(schema, "status.conditions.status")["enum"], ["True", "False", "Unknown"]);
});

test("messages of regex checks become CEL rules on bounded strings and stay patterns on unbounded ones", () => {
  const schema = openApiSchema(imageBuildCrd());
  assert.deepEqual(nodeAt(schema, "spec.output.tags")["items"], {
    type: "string",
    maxLength: 128,
    "x-kubernetes-validations": [
      {
        rule: 'self.matches("^\\\\w[\\\\w.-]{0,127}$")',
        message: "must be a tag: 1-128 of letters, digits, '_', '.' and '-', not starting with . or -",
      },
    ],
  });
  const chmod = nodeAt(schema, "spec.layers.layers.files.chmod");
  assert.equal(chmod["pattern"], "^[0-7]{3,4}$");
  assert.equal(chmod["x-kubernetes-validations"], undefined);
});

test("the version has a status subresource, printer columns and the short name ib", () => {
  const spec = imageBuildCrd()["spec"] as Schema;
  assert.deepEqual((spec["names"] as Schema)["shortNames"], ["ib"]);
  const version = (spec["versions"] as Schema[])[0]!;
  assert.deepEqual(version["subresources"], { status: {} });
  assert.deepEqual(
    (version["additionalPrinterColumns"] as Schema[]).map((c) => [c["name"], c["jsonPath"]]),
    [
      ["Phase", ".status.phase"],
      ["Image", ".spec.output.image"],
      ["Digest", ".status.digest"],
      ["Age", ".metadata.creationTimestamp"],
      ["Reason", '.status.conditions[?(@.type=="Succeeded")].reason'],
    ],
  );
});

test("a refinement without a CEL rule, or a union, cannot become a CRD", () => {
  const refined = z.object({ a: z.string().refine((s) => s !== "x") });
  assert.throws(() => structuralSchemaOf(refined), UnrepresentableSchemaError);
  assert.throws(
    () => structuralSchemaOf(z.object({ u: z.union([z.string(), z.boolean()]) })),
    UnrepresentableSchemaError,
  );
  const ruled = withRule(
    z.string().max(9),
    { rule: "self != 'x'", message: "must not be x" },
    (s) => s !== "x",
  );
  assert.deepEqual(structuralSchemaOf(z.object({ a: ruled })).properties, {
    a: {
      type: "string",
      maxLength: 9,
      "x-kubernetes-validations": [{ rule: "self != 'x'", message: "must not be x" }],
    },
  });
});
