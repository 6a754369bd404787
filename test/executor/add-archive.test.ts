import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { ArchiveBreakoutError } from "../../src/executor/archive.ts";
import { BuildContext } from "../../src/executor/context.ts";
import { planAddCopy } from "../../src/executor/copy.ts";
import { ImageTree } from "../../src/executor/image-tree.ts";
import type { LayerEntry } from "../../src/oci/layer-entry.ts";
import type { CopyOp } from "../../src/plan/plan.ts";

/** One archive member as Python's tarfile writes it: `[name, "file" | "dir" | "symlink" | "hardlink", link?]`. */
type Member = readonly [string, "file" | "dir" | "symlink" | "hardlink", string?];

/** Writes `members` into `<context>/<name>` with Python's tarfile, which keeps names exactly as given. */
function writeTar(dir: string, name: string, members: readonly Member[]): void {
  const script = `
import io, json, sys, tarfile
kinds = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}
with tarfile.open(sys.argv[1], "w", format=tarfile.GNU_FORMAT) as t:
    for name, kind, link in json.loads(sys.argv[2]):
        ti = tarfile.TarInfo(name)
        ti.type = kinds[kind]
        ti.mode = 0o755 if kind == "dir" else 0o644
        if link is not None:
            ti.linkname = link
        data = name.encode() if kind == "file" else b""
        ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))
`;
  const list = members.map(([n, k, l]) => [n, k, l ?? null]);
  execFileSync("python3", ["-c", script, join(dir, name), JSON.stringify(list)]);
}

const node = (type: "dir" | "file" | "symlink", linkTarget?: string) => ({
  type,
  mode: type === "symlink" ? 0o777 : type === "dir" ? 0o755 : 0o644,
  uid: 0,
  gid: 0,
  size: 0,
  ...(linkTarget !== undefined ? { linkTarget } : {}),
});

/** busybox-like: /etc/passwd a file, /var/run -> /run, /opt/app/link -> /lib (absolute, inside /opt/app). */
function imageTree(): ImageTree {
  const t = new ImageTree();
  for (const d of ["etc", "run", "var", "opt", "opt/app", "opt/app/lib"]) t.apply(d, node("dir"));
  t.apply("etc/passwd", node("file"));
  t.apply("var/run", node("symlink", "/run"));
  t.apply("opt/app/link", node("symlink", "/lib"));
  return t;
}

const add = (sources: string[], dest: string): CopyOp => ({
  from: { kind: "context" },
  sources,
  dest,
  exclude: [],
  extract: true,
  parents: false,
});

const summary = (es: readonly LayerEntry[]) =>
  es.map((e) => `${e.path} ${e.type}${e.linkTarget !== undefined ? ` -> ${e.linkTarget}` : ""}`);

function withContext(t: { after(fn: () => void): void }): string {
  const root = mkdtempSync(join(tmpdir(), "kiln-add-"));
  t.after(() => rmSync(root, { recursive: true }));
  return root;
}

test("ADD places an archive's entries inside the destination, symlinks resolving with it as the root", async (t) => {
  const root = withContext(t);
  writeTar(root, "inside.tar", [
    ["/etc/abs.conf", "file"],
    ["/../../top.txt", "file"],
    ["./a//b/../c.txt", "file"],
    ["data", "dir"],
    ["current", "symlink", "/data"],
    ["current/through-absolute.txt", "file"],
    ["data/sub/up", "symlink", "../.."],
    ["data/sub/up/through-up.txt", "file"],
    ["link/through-image-link.txt", "file"],
    ["hard", "hardlink", "/current/through-absolute.txt"],
  ]);
  const es = await planAddCopy(add(["inside.tar"], "/opt/app/"), new BuildContext(root), imageTree());
  assert.deepEqual(summary(es), [
    "opt/app/a dir",
    "opt/app/a/c.txt file",
    "opt/app/current symlink -> /data",
    "opt/app/data dir",
    "opt/app/data/sub dir",
    "opt/app/data/sub/up symlink -> ../..",
    "opt/app/data/through-absolute.txt file",
    "opt/app/etc dir",
    "opt/app/etc/abs.conf file",
    "opt/app/hard hardlink -> opt/app/data/through-absolute.txt",
    "opt/app/lib/through-image-link.txt file",
    "opt/app/through-up.txt file",
    "opt/app/top.txt file",
  ]);
  // The image's own /var/run -> /run is followed too when the destination is the root.
  writeTar(root, "pid.tar", [["var/run/app.pid", "file"]]);
  const atRoot = await planAddCopy(add(["pid.tar"], "/"), new BuildContext(root), imageTree());
  assert.deepEqual(summary(atRoot), ["run/app.pid file"]);
});

test("ADD refuses an archive entry that breaks out of the destination, naming the archive and the entry", async (t) => {
  const root = withContext(t);
  const cases: readonly [string, readonly Member[], string, string][] = [
    [
      "dotdot.tar",
      [
        ["ok.txt", "file"],
        ["../../etc/cron.d/evil", "file"],
      ],
      "../../etc/cron.d/evil",
      'dotdot.tar: entry "../../etc/cron.d/evil" is outside the destination /opt/app',
    ],
    [
      "inner-dotdot.tar",
      [["a/../../escape.txt", "file"]],
      "a/../../escape.txt",
      'inner-dotdot.tar: entry "a/../../escape.txt" is outside the destination /opt/app',
    ],
    [
      "symlink.tar",
      [
        ["up", "symlink", "../../.."],
        ["up/etc/passwd", "file"],
      ],
      "up",
      'symlink.tar: symlink "up" -> "../../.." points outside the destination /opt/app',
    ],
    [
      "nested-symlink.tar",
      [["a/b/up", "symlink", "../../../x"]],
      "a/b/up",
      'nested-symlink.tar: symlink "a/b/up" -> "../../../x" points outside the destination /opt/app',
    ],
    [
      "hardlink.tar",
      [["shadow", "hardlink", "../../../etc/shadow"]],
      "shadow",
      'hardlink.tar: hardlink "shadow" -> "../../../etc/shadow" points outside the destination /opt/app',
    ],
  ];
  for (const [name, members, entry, message] of cases) {
    writeTar(root, name, members);
    await assert.rejects(
      planAddCopy(add([name], "/opt/app/"), new BuildContext(root), imageTree()),
      (err) => {
        assert.ok(err instanceof ArchiveBreakoutError, String(err));
        assert.equal(err.message, message);
        assert.equal(err.archive, name);
        assert.equal(err.entry, entry);
        assert.equal(err.code, "KILN_ERR_ARCHIVE_BREAKOUT");
        return true;
      },
    );
  }
});

test("ADD of an archive below a file of the image fails with not a directory", async (t) => {
  const root = withContext(t);
  writeTar(root, "app.tar", [["x.txt", "file"]]);
  writeTar(root, "file-then-below.tar", [
    ["a", "file"],
    ["a/b", "file"],
  ]);
  const ctx = new BuildContext(root);
  await assert.rejects(planAddCopy(add(["app.tar"], "/etc/passwd/"), ctx, imageTree()), {
    message: "/etc/passwd is not a directory",
  });
  await assert.rejects(planAddCopy(add(["app.tar"], "/etc/passwd/sub/"), ctx, imageTree()), {
    message: "/etc/passwd/sub: /etc/passwd is not a directory",
  });
  await assert.rejects(planAddCopy(add(["file-then-below.tar"], "/srv/"), ctx, imageTree()), {
    message: "/srv/a/b: /srv/a is not a directory",
  });
  // An archive's own directory replaces a file, as Docker's unpack removes what is in the way.
  writeTar(root, "dir-over-file.tar", [
    ["passwd", "dir"],
    ["passwd/x", "file"],
  ]);
  const es = await planAddCopy(add(["dir-over-file.tar"], "/etc/"), ctx, imageTree());
  assert.deepEqual(summary(es), ["etc/passwd dir", "etc/passwd/x file"]);
  writeFileSync(join(root, "plain.txt"), "not an archive\n");
  await assert.rejects(planAddCopy(add(["plain.txt"], "/etc/passwd/"), ctx, imageTree()), {
    message: "/etc/passwd/plain.txt: /etc/passwd is not a directory",
  });
});
