import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { lstatSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fetchSource } from "../../src/source/fetch-source.ts";

const work = mkdtempSync(join(tmpdir(), "kiln-inline-source-"));
after(() => rmSync(work, { recursive: true, force: true }));

test("inline files are written 0644 under 0755 folders and pinned to their sorted list", async () => {
  const files = { "scripts/build.sh": "make\n", Dockerfile: "FROM scratch\n" };
  const dir = join(work, "ctx");
  const got = await fetchSource({ inline: { files } }, dir);
  const sorted = JSON.stringify([
    ["Dockerfile", "FROM scratch\n"],
    ["scripts/build.sh", "make\n"],
  ]);
  assert.equal(got.pinned, `sha256:${createHash("sha256").update(sorted).digest("hex")}`);
  assert.equal(readFileSync(join(dir, "scripts/build.sh"), "utf8"), "make\n");
  assert.equal(lstatSync(join(dir, "scripts/build.sh")).mode & 0o7777, 0o644);
  assert.equal(lstatSync(join(dir, "scripts")).mode & 0o7777, 0o755);
  assert.equal(lstatSync(dir).mode & 0o7777, 0o755);
});

test("an inline path that climbs out is refused", async () => {
  await assert.rejects(fetchSource({ inline: { files: { "../x": "" } } }, join(work, "bad")), {
    code: "KILN_ERR_PATH_ESCAPE",
  });
});

test("a folder that is not empty is refused before anything is fetched", async () => {
  const dir = join(work, "ctx");
  await assert.rejects(fetchSource({ inline: { files: { a: "" } } }, dir), {
    code: "KILN_ERR_INVALID_INPUT",
    message: `${dir} is not empty; a source is fetched into an empty folder`,
  });
});
