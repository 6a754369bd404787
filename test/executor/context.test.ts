import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
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
  // docs is left out, but listed as the parent of what is re-included below it.
  assert.deepEqual(walked, ["", "docs", "docs/keep.md", "src", "src/app.js", "sub", "sub/README.md"]);
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

test("an excluded directory is entered when a wildcard exception may match below it, as BuildKit's walker does", (t) => {
  const root = makeContext({
    "scripts/build.py": "",
    "scripts/stray.pyc": "",
    "scripts/__pycache__/c.pyc": "",
    "scripts/__pycache__/keep-me.pyc": "",
    "pkg/__pycache__/a.pyc": "",
    "node_modules/x/index.js": "",
  });
  t.after(() => rmSync(root, { recursive: true }));
  chmodSync(join(root, "scripts/__pycache__"), 0o700);
  const ctx = new BuildContext(
    root,
    parseIgnoreFile("node_modules\n**/__pycache__\n**/*.pyc\n!scripts/**/keep*.pyc\n"),
  );
  const walked = ctx.walk("");
  assert.deepEqual(
    walked.map((f) => f.path),
    ["", "pkg", "scripts", "scripts/__pycache__", "scripts/__pycache__/keep-me.pyc", "scripts/build.py"],
  );
  // The excluded parent comes with its own metadata, not a made-up directory.
  assert.equal(walked[3]!.stats.mode & 0o7777, 0o700);
  assert.equal(ctx.lstat("scripts/__pycache__")?.isDirectory(), true);
  assert.equal(ctx.lstat("pkg/__pycache__"), undefined);
  assert.equal(ctx.lstat("node_modules"), undefined);
  assert.deepEqual(ctx.match("scripts/*"), ["scripts/__pycache__", "scripts/build.py"]);
  assert.deepEqual(
    ctx.walk("scripts/__pycache__").map((f) => f.path),
    ["scripts/__pycache__", "scripts/__pycache__/keep-me.pyc"],
  );
});

test("without wildcards, an excluded directory is entered only when an exception lies below it", (t) => {
  const root = makeContext({
    "docs/a.md": "",
    "docs/api/keep.md": "",
    "docs/api/b.md": "",
    "build/out.o": "",
  });
  t.after(() => rmSync(root, { recursive: true }));
  const ctx = new BuildContext(root, parseIgnoreFile("docs\nbuild\n!docs/api/keep.md\n"));
  assert.deepEqual(
    ctx.walk("").map((f) => f.path),
    ["", "docs", "docs/api", "docs/api/keep.md"],
  );
  // A source naming the excluded directory copies what is re-included in it.
  assert.deepEqual(ctx.match("docs"), ["docs"]);
  assert.throws(() => ctx.match("build"), /build: not found in the build context/);
});

test("exceptions in exclude patterns re-include paths inside an excluded directory", (t) => {
  const root = makeContext({
    "site/docs/index.md": "",
    "site/docs/keep.md": "",
    "site/docs/deep/keep.md": "",
    "site/index.html": "",
  });
  t.after(() => rmSync(root, { recursive: true }));
  chmodSync(join(root, "site/docs"), 0o750);
  const ctx = new BuildContext(root);
  const walked = ctx.walk("site", ["docs", "!docs/keep.md"]);
  assert.deepEqual(
    walked.map((f) => `${f.path} ${(f.stats.mode & 0o7777).toString(8)}`),
    ["site 755", "site/docs 750", "site/docs/keep.md 644", "site/index.html 644"],
  );
  assert.deepEqual(
    ctx.walk("site", ["docs", "!**/keep.md"]).map((f) => f.path),
    ["site", "site/docs", "site/docs/deep", "site/docs/deep/keep.md", "site/docs/keep.md", "site/index.html"],
  );
});
