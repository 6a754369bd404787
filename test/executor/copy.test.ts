import assert from "node:assert/strict";
import { chmodSync, linkSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { BuildContext } from "../../src/executor/context.ts";
import { planBytesCopy, planContextCopy, planMkdir } from "../../src/executor/copy.ts";
import { ImageTree } from "../../src/executor/image-tree.ts";
import type { CopyOp } from "../../src/plan/plan.ts";

const dir = (mode = 0o755) => ({ type: "dir" as const, mode, uid: 0, gid: 0, size: 0 });

function baseTree(): ImageTree {
  const t = new ImageTree();
  t.apply("etc", dir());
  t.apply(
    "etc/passwd",
    { type: "file", mode: 0o644, uid: 0, gid: 0, size: 0 },
    "root:x:0:0::/root:/bin/sh\nbin:x:2:2::/bin:/usr/sbin/nologin\nmyuser:x:1001:100::/home/myuser:/bin/sh\n",
  );
  t.apply(
    "etc/group",
    { type: "file", mode: 0o644, uid: 0, gid: 0, size: 0 },
    "root:x:0:\nusers:x:100:\nmygroup:x:55:\n",
  );
  t.apply("var", dir());
  t.apply("run", dir());
  t.apply("var/run", { type: "symlink", mode: 0o777, uid: 0, gid: 0, size: 0, linkTarget: "/run" });
  t.apply("app", dir(0o700));
  return t;
}

function context(): string {
  const root = mkdtempSync(join(tmpdir(), "kiln-copy-"));
  mkdirSync(join(root, "site/js"), { recursive: true });
  writeFileSync(join(root, "site/index.html"), "<h1>hi</h1>");
  writeFileSync(join(root, "site/js/app.js"), "x");
  chmodSync(join(root, "site/js"), 0o750);
  linkSync(join(root, "site/index.html"), join(root, "site/index2.html"));
  symlinkSync("index.html", join(root, "site/current"));
  writeFileSync(join(root, "run.sh"), "#!/bin/sh\n");
  chmodSync(join(root, "run.sh"), 0o755);
  return root;
}

const op = (o: Partial<CopyOp> & Pick<CopyOp, "sources" | "dest">): CopyOp => ({
  from: { kind: "context" },
  exclude: [],
  extract: false,
  parents: false,
  ...o,
});

const summary = (es: ReturnType<typeof planContextCopy>) =>
  es.map(
    (e) =>
      `${e.path} ${e.type} ${e.mode.toString(8)} ${e.uid}:${e.gid}${e.linkTarget ? ` -> ${e.linkTarget}` : ""}`,
  );

test("a directory source copies its contents; parents are created; links stay links", (t) => {
  const root = context();
  t.after(() => rmSync(root, { recursive: true }));
  const es = planContextCopy(
    op({ sources: ["site"], dest: "/usr/share/html/" }),
    new BuildContext(root),
    baseTree(),
  );
  assert.deepEqual(summary(es), [
    "usr dir 755 0:0",
    "usr/share dir 755 0:0",
    "usr/share/html dir 755 0:0",
    "usr/share/html/current symlink 777 0:0 -> index.html",
    "usr/share/html/index.html file 644 0:0",
    "usr/share/html/index2.html hardlink 644 0:0 -> usr/share/html/index.html",
    "usr/share/html/js dir 750 0:0",
    "usr/share/html/js/app.js file 644 0:0",
  ]);
});

test("--chown resolves names through the image; a user name alone takes its primary group; --chmod applies to all", (t) => {
  const root = context();
  t.after(() => rmSync(root, { recursive: true }));
  const ctx = new BuildContext(root);
  const tree = baseTree();
  assert.deepEqual(
    summary(
      planContextCopy(op({ sources: ["run.sh"], dest: "/app/", chown: { user: "myuser" } }), ctx, tree),
    ),
    ["app/run.sh file 755 1001:100"],
  );
  assert.deepEqual(
    summary(
      planContextCopy(
        op({
          sources: ["run.sh"],
          dest: "/opt/tool",
          chown: { user: "55", group: "mygroup" },
          chmod: "0700",
        }),
        ctx,
        tree,
      ),
    ),
    ["opt dir 755 55:55", "opt/tool file 700 55:55"],
  );
  assert.throws(
    () => planContextCopy(op({ sources: ["run.sh"], dest: "/x", chown: { user: "nobody" } }), ctx, tree),
    /unable to find user nobody in \/etc\/passwd/,
  );
});

test("destinations resolve through the image's own symlinks; an existing directory takes the file inside", (t) => {
  const root = context();
  t.after(() => rmSync(root, { recursive: true }));
  const ctx = new BuildContext(root);
  assert.deepEqual(
    summary(planContextCopy(op({ sources: ["run.sh"], dest: "/var/run/app.sh" }), ctx, baseTree())),
    ["run/app.sh file 755 0:0"],
  );
  assert.deepEqual(summary(planContextCopy(op({ sources: ["run.sh"], dest: "/app" }), ctx, baseTree())), [
    "app/run.sh file 755 0:0",
  ]);
  assert.throws(
    () => planContextCopy(op({ sources: ["run.sh", "site"], dest: "/app/x" }), ctx, baseTree()),
    /the destination must be a directory and end with a \//,
  );
});

test("exclude patterns leave paths out of a directory copy", (t) => {
  const root = context();
  t.after(() => rmSync(root, { recursive: true }));
  const es = planContextCopy(
    op({ sources: ["site"], dest: "/srv/", exclude: ["js", "current"] }),
    new BuildContext(root),
    baseTree(),
  );
  assert.deepEqual(
    es.map((e) => e.path),
    ["srv", "srv/index.html", "srv/index2.html"],
  );
});

test("numeric --chown ids beyond what the kernel takes are refused", (t) => {
  const root = context();
  t.after(() => rmSync(root, { recursive: true }));
  const ctx = new BuildContext(root);
  assert.throws(
    () =>
      planContextCopy(
        op({ sources: ["run.sh"], dest: "/x", chown: { user: "99999999999" } }),
        ctx,
        baseTree(),
      ),
    /user id 99999999999 is out of range \(0 to 4294967294\)/,
  );
  assert.throws(
    () =>
      planContextCopy(
        op({ sources: ["run.sh"], dest: "/x", chown: { user: "1", group: "4294967295" } }),
        ctx,
        baseTree(),
      ),
    /group id 4294967295 is out of range/,
  );
});

test("COPY, heredoc copies and WORKDIR below a file of the image fail with not a directory", (t) => {
  const root = context();
  t.after(() => rmSync(root, { recursive: true }));
  mkdirSync(join(root, "etc-over/passwd"), { recursive: true });
  writeFileSync(join(root, "etc-over/passwd/x"), "");
  const ctx = new BuildContext(root);
  const tree = baseTree();
  const refused: readonly [() => unknown, string][] = [
    [
      () => planContextCopy(op({ sources: ["run.sh"], dest: "/etc/passwd/x" }), ctx, tree),
      "/etc/passwd/x: /etc/passwd is not a directory",
    ],
    [
      () => planContextCopy(op({ sources: ["run.sh"], dest: "/etc/passwd/" }), ctx, tree),
      "/etc/passwd/run.sh: /etc/passwd is not a directory",
    ],
    [
      () => planContextCopy(op({ sources: ["site"], dest: "/etc/passwd" }), ctx, tree),
      "/etc/passwd is not a directory",
    ],
    // a directory of the copy whose path is a file in the image: its contents would land below the file
    [
      () => planContextCopy(op({ sources: ["etc-over"], dest: "/etc/" }), ctx, tree),
      "/etc/passwd is not a directory",
    ],
    [
      () =>
        planBytesCopy(
          op({ sources: ["x"], dest: "/etc/group/x/" }),
          [{ name: "f", content: Buffer.from(""), mode: 0o644 }],
          tree,
        ),
      "/etc/group/x/f: /etc/group is not a directory",
    ],
    [
      () => planMkdir("/etc/passwd/sub", { uid: 0, gid: 0 }, tree),
      "/etc/passwd/sub: /etc/passwd is not a directory",
    ],
    // resolved through the image's symlinks first: /var/run/x is /run/x
    [
      () => planMkdir("/var/run/../../etc/passwd", { uid: 0, gid: 0 }, tree),
      "/etc/passwd is not a directory",
    ],
  ];
  for (const [plan, message] of refused) assert.throws(plan, { message });
  // Replacing the file itself is a plain copy.
  assert.deepEqual(summary(planContextCopy(op({ sources: ["run.sh"], dest: "/etc/passwd" }), ctx, tree)), [
    "etc/passwd file 755 0:0",
  ]);
});
