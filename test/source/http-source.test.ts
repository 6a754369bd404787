import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fetchSource } from "../../src/source/fetch-source.ts";

const work = mkdtempSync(join(tmpdir(), "kiln-http-source-"));
const served = join(work, "served");
const FAST_RETRY = { attempts: 3, baseDelayMs: 1, maxDelayMs: 5 };

/** Statuses to answer before the file, per path. */
const failFirst = new Map<string, number[]>();
const requests: string[] = [];
let server: Server;
let base = "";

function sha256sum(file: string): string {
  return execFileSync("sha256sum", [file]).toString().split(" ")[0]!;
}

/** GNU tar of a small tree: a script, a nested file, a symlink, an empty directory. */
function makeTree(): string {
  const tree = join(work, "tree");
  mkdirSync(join(tree, "src/lib"), { recursive: true });
  mkdirSync(join(tree, "empty"));
  writeFileSync(join(tree, "build.sh"), "#!/bin/sh\n");
  chmodSync(join(tree, "build.sh"), 0o750);
  writeFileSync(join(tree, "src/lib/a.txt"), "a\n");
  chmodSync(join(tree, "src/lib/a.txt"), 0o600);
  symlinkSync("lib/a.txt", join(tree, "src/link"));
  return tree;
}

/** Tar entries no safe extraction may follow, written by python3's tarfile. */
function hostile(name: string, script: string): void {
  execFileSync("python3", [
    "-c",
    `import io, tarfile, sys
t = tarfile.open(sys.argv[1], "w")
def add(name, data=b"x", **kw):
    i = tarfile.TarInfo(name)
    for k, v in kw.items(): setattr(i, k, v)
    i.size = len(data) if i.type == tarfile.REGTYPE else 0
    t.addfile(i, io.BytesIO(data) if i.type == tarfile.REGTYPE else None)
${script}
t.close()`,
    join(served, name),
  ]);
}

const outside = join(work, "outside");

before(async () => {
  mkdirSync(served);
  mkdirSync(outside);
  const tree = makeTree();
  const tar = (file: string, ...flags: string[]) =>
    execFileSync("tar", [
      "--sort=name",
      "--owner=0",
      "--group=0",
      ...flags,
      "-cf",
      join(served, file),
      "-C",
      tree,
      ".",
    ]);
  tar("context.tar.gz", "-z");
  tar("context.tar.zst", "--zstd");
  tar("context.tar");
  hostile("dotdot.tar", `add("../evil")`);
  hostile("absolute.tar", `add("${outside}/evil")`);
  hostile(
    "through-symlink.tar",
    `add("up", type=tarfile.SYMTYPE, linkname="../../../../../../../..${outside}")\nadd("up/evil")`,
  );
  hostile("hardlink-out.tar", `add("h", type=tarfile.LNKTYPE, linkname="../../../../etc/passwd")`);
  server = createServer((req, res) => {
    requests.push(req.url ?? "");
    const path = (req.url ?? "/").slice(1);
    const fail = failFirst.get(path)?.shift();
    if (fail !== undefined) {
      res.writeHead(fail).end("try again");
      return;
    }
    if (!existsSync(join(served, path))) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": "application/octet-stream" }).end(readFileSync(join(served, path)));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});

after(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  rmSync(work, { recursive: true, force: true });
});

let n = 0;
const dest = () => join(work, `out-${++n}`, "context");

function assertTree(dir: string): void {
  assert.deepEqual(readdirSync(dir).sort(), ["build.sh", "empty", "src"]);
  assert.equal(lstatSync(join(dir, "build.sh")).mode & 0o7777, 0o750);
  assert.equal(lstatSync(join(dir, "src/lib/a.txt")).mode & 0o7777, 0o600);
  assert.equal(readFileSync(join(dir, "src/lib/a.txt"), "utf8"), "a\n");
  assert.equal(readlinkSync(join(dir, "src/link")), "lib/a.txt");
  assert.ok(lstatSync(join(dir, "empty")).isDirectory());
}

test("tar, tar.gz and tar.zst archives unpack with their modes; the sha256 is verified and pinned", async () => {
  for (const file of ["context.tar.gz", "context.tar.zst", "context.tar"]) {
    const sha256 = sha256sum(join(served, file));
    const dir = dest();
    const got = await fetchSource({ http: { url: `${base}/${file}`, sha256 } }, dir);
    assert.equal(got.pinned, sha256, file);
    assert.deepEqual(got.source, { http: { url: `${base}/${file}`, sha256 } });
    assertTree(dir);
  }
});

test("without a sha256 the download is pinned to the one computed", async () => {
  const got = await fetchSource({ http: { url: `${base}/context.tar.gz` } }, dest());
  assert.equal(got.pinned, sha256sum(join(served, "context.tar.gz")));
});

test("a wrong sha256 is a terminal error naming both digests, and nothing is unpacked", async () => {
  const wrong = "0".repeat(64);
  const actual = sha256sum(join(served, "context.tar.gz"));
  const dir = dest();
  const before = requests.length;
  await assert.rejects(
    fetchSource({ http: { url: `${base}/context.tar.gz`, sha256: wrong } }, dir),
    (err) => {
      assert.equal((err as { code?: string }).code, "KILN_ERR_DIGEST_MISMATCH");
      assert.equal((err as { temporary?: boolean }).temporary, false);
      assert.equal(
        (err as Error).message,
        `archive ${base}/context.tar.gz: content has digest sha256:${actual}, expected sha256:${wrong}`,
      );
      return true;
    },
  );
  assert.equal(requests.length - before, 1);
  assert.deepEqual(readdirSync(dirname(dir)), []);
});

test("503 and 502 are retried; 404 is not", async () => {
  failFirst.set("context.tar.gz", [503, 502]);
  const before = requests.length;
  const dir = dest();
  await fetchSource({ http: { url: `${base}/context.tar.gz` } }, dir, { retry: FAST_RETRY });
  assert.equal(requests.length - before, 3);
  assertTree(dir);

  const again = requests.length;
  await assert.rejects(fetchSource({ http: { url: `${base}/missing.tar` } }, dest(), { retry: FAST_RETRY }), {
    code: "KILN_ERR_NOT_FOUND",
    message: `GET ${base}/missing.tar: 404, no archive there`,
  });
  assert.equal(requests.length - again, 1);
});

test("hostile entries are refused and nothing is written outside the context", async () => {
  for (const file of ["dotdot.tar", "absolute.tar", "through-symlink.tar", "hardlink-out.tar"]) {
    const dir = dest();
    await assert.rejects(fetchSource({ http: { url: `${base}/${file}` } }, dir), (err) => {
      assert.equal((err as { code?: string }).code, "KILN_ERR_SOURCE", file);
      assert.equal(((err as Error).cause as { code?: string }).code, "KILN_ERR_PATH_ESCAPE", file);
      return true;
    });
    assert.deepEqual(readdirSync(dirname(dir)), [], file);
  }
  assert.deepEqual(readdirSync(outside), []);
  assert.equal(existsSync(join(work, "evil")), false);
});
