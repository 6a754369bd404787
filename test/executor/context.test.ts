import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { BuildContext, globComponentRegExp, parseIgnoreFile } from "../../src/executor/context.ts";

function makeContext(files: Record<string, string>, links: Record<string, string> = {}): string {
  const root = mkdtempSync(join(tmpdir(), "kiln-ctx-"));
  for (const [p, content] of Object.entries(files)) {
    mkdirSync(join(root, p, ".."), { recursive: true });
    writeFileSync(join(root, p), content);
  }
  for (const [p, target] of Object.entries(links)) {
    mkdirSync(join(root, p, ".."), { recursive: true });
    symlinkSync(target, join(root, p));
  }
  return root;
}

test("sources resolve inside the context; escapes are refused with the path named", (t) => {
  const root = makeContext(
    { "app/main.js": "x", "etc/passwd": "fake" },
    { "abs-link": "/etc/passwd", "up-link": "../.." },
  );
  t.after(() => rmSync(root, { recursive: true }));
  const ctx = new BuildContext(root);
  assert.deepEqual(ctx.match("app/main.js"), ["app/main.js"]);
  assert.deepEqual(ctx.match("./app/../app/main.js"), ["app/main.js"]);
  assert.throws(() => ctx.match("../outside"), /path "\.\.\/outside" escapes the build context/);
  assert.throws(() => ctx.match("abs-link"), /abs-link is a symlink to the absolute path \/etc\/passwd/);
  assert.throws(() => ctx.match("up-link/x"), /escapes the build context/);
  assert.throws(() => ctx.match("missing.txt"), /missing.txt: not found in the build context/);
});

test("wildcards match per path component as Go's filepath.Match", (t) => {
  const root = makeContext({
    "files1.txt": "",
    "files2.txt": "",
    "filesdir/inner.txt": "",
    "other.txt": "",
    "a/b/c.go": "",
  });
  t.after(() => rmSync(root, { recursive: true }));
  const ctx = new BuildContext(root);
  assert.deepEqual(ctx.match("files*"), ["files1.txt", "files2.txt", "filesdir"]);
  assert.deepEqual(ctx.match("files?.txt"), ["files1.txt", "files2.txt"]);
  assert.deepEqual(ctx.match("[!f]*.txt"), ["other.txt"]);
  assert.deepEqual(ctx.match("a/*/*.go"), ["a/b/c.go"]);
  assert.throws(() => ctx.match("*.md"), /\*\.md: no file in the build context matches/);
  assert.equal(globComponentRegExp("a\\*b").test("a*b"), true);
  assert.equal(globComponentRegExp("a\\*b").test("axb"), false);
});

test(".dockerignore hides paths, exceptions re-include them, last match wins", (t) => {
  const root = makeContext({
    "src/app.js": "",
    "src/app.test.js": "",
    "docs/a.md": "",
    "docs/keep.md": "",
    "README.md": "",
    "sub/README.md": "",
  });
  t.after(() => rmSync(root, { recursive: true }));
  const ctx = new BuildContext(
    root,
    parseIgnoreFile("# comment\n\n**/*.test.js\ndocs\n!docs/keep.md\n*.md\n"),
  );
  const walked = ctx.walk("").map((f) => f.path);
  assert.deepEqual(walked, ["", "docs/keep.md", "src", "src/app.js", "sub", "sub/README.md"]);
  assert.throws(() => ctx.match("README.md"), /not found/);
  assert.deepEqual(ctx.match("sub/*.md"), ["sub/README.md"]);
});

test("walk leaves out excluded paths relative to the walked directory", (t) => {
  const root = makeContext({
    "site/index.html": "",
    "site/app.js.map": "",
    "site/js/app.js": "",
    "site/js/app.js.map": "",
  });
  t.after(() => rmSync(root, { recursive: true }));
  const ctx = new BuildContext(root);
  assert.deepEqual(
    ctx.walk("site", ["**/*.map"]).map((f) => f.path),
    ["site", "site/index.html", "site/js", "site/js/app.js"],
  );
});

test(".dockerignore and exclude patterns match case-sensitively, as Docker on Linux", (t) => {
  const root = makeContext({ BUILD: "", "build/out.o": "", "README.MD": "", "notes.md": "" });
  t.after(() => rmSync(root, { recursive: true }));
  const ctx = new BuildContext(root, parseIgnoreFile("build\n*.md\n"));
  assert.deepEqual(
    ctx.walk("").map((f) => f.path),
    ["", "BUILD", "README.MD"],
  );
});
