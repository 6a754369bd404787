import assert from "node:assert/strict";
import { test } from "node:test";
import { PathEscapeError } from "../../src/errors.ts";
import { layerPath, resolveInRoot } from "../../src/oci/root-path.ts";

// A small tree: var/run -> /run (absolute, as in Debian), lib -> usr/lib, up -> ../.., loop -> loop
const LINKS: Record<string, string> = {
  "var/run": "/run",
  lib: "usr/lib",
  "usr/lib/up": "../..",
  loop: "loop",
  out: "../../etc",
};
const readlink = (p: string) => LINKS[p];

test("scoped resolution follows symlinks inside the root", () => {
  assert.equal(resolveInRoot("/var/run/mysqld", readlink, "scoped"), "run/mysqld");
  assert.equal(resolveInRoot("lib/x.so", readlink, "scoped"), "usr/lib/x.so");
  assert.equal(resolveInRoot("/lib/up/etc", readlink, "scoped"), "etc");
  assert.equal(resolveInRoot("../../../etc/passwd", readlink, "scoped"), "etc/passwd");
  assert.equal(resolveInRoot("/out/passwd", readlink, "scoped"), "etc/passwd");
  assert.equal(resolveInRoot("/", readlink, "scoped"), "");
});

test("the final component is kept when not following it", () => {
  assert.equal(resolveInRoot("/var/run", readlink, "scoped", false), "var/run");
  assert.equal(resolveInRoot("/var/run", readlink, "scoped", true), "run");
});

test("strict resolution refuses '..' above the root and absolute or escaping symlinks", () => {
  assert.throws(() => resolveInRoot("../secret", readlink, "strict", true, "the build context"), {
    name: "PathEscapeError",
    message: "path \"../secret\" escapes the build context: '..' leads outside it",
  });
  assert.throws(() => resolveInRoot("var/run/x", readlink, "strict"), PathEscapeError);
  assert.throws(() => resolveInRoot("out/passwd", readlink, "strict"), /'\.\.' leads outside it/);
  assert.equal(resolveInRoot("lib/up/lib", readlink, "strict"), "usr/lib");
});

test("symlink loops end with an error instead of hanging", () => {
  assert.throws(() => resolveInRoot("loop/x", readlink, "scoped"), /too many levels of symbolic links/);
});

test("layerPath gives the form paths take inside a layer", () => {
  assert.equal(layerPath("/usr/bin/"), "usr/bin");
  assert.equal(layerPath("a/./b/../c"), "a/c");
  assert.equal(layerPath("/"), "");
  assert.equal(layerPath("../../x"), "x");
});
