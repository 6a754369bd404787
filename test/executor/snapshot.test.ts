import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  linkSync,
  mkdirSync,
  renameSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { diffSnapshots, mountPointsBelow, takeSnapshot } from "../../src/executor/snapshot.ts";
import { tempDir } from "../runtime/roots.ts";
import { summarizeEntries } from "./snapshot-summary.ts";

/** A root made by `setup`, snapshotted, changed by `change`, snapshotted again; returns the diff's summary. */
async function diffOf(
  setup: (at: (p: string) => string) => void,
  change: (at: (p: string) => string) => void,
  options: { exclude?: string[]; mountInfo?: string; ignoreTimes?: string[] } = {},
  root = tempDir("snapshot"),
): Promise<string[]> {
  try {
    const at = (p: string) => join(root, p);
    setup(at);
    const before = takeSnapshot(root, options);
    // File times come from the kernel's coarse clock: a change in the same tick as the setup would not show.
    await sleep(15);
    change(at);
    return summarizeEntries(diffSnapshots(before, takeSnapshot(root, options), options), root);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

const tree = (at: (p: string) => string) => {
  for (const d of ["etc", "usr/bin", "usr/lib/x", "var/log"])
    mkdirSync(at(d), { recursive: true, mode: 0o755 });
  writeFileSync(at("etc/motd"), "welcome\n");
  writeFileSync(at("etc/passwd"), "root:x:0:0::/root:/bin/sh\n");
  writeFileSync(at("usr/bin/tool"), "#!/bin/sh\n", { mode: 0o755 });
  writeFileSync(at("usr/lib/x/a.so"), "aaaa");
  writeFileSync(at("usr/lib/x/b.so"), "bbbb");
  writeFileSync(at("var/log/old.log"), "log\n");
  symlinkSync("tool", at("usr/bin/alias"));
};

test("nothing changed, nothing in the layer", async () => {
  assert.deepEqual(await diffOf(tree, () => {}), []);
});

test("new, changed, chmod, chown and retargeted paths come with their parents; deletions become whiteouts", async () => {
  const got = await diffOf(tree, (at) => {
    writeFileSync(at("x"), "hi\n");
    writeFileSync(at("etc/passwd"), "root:x:0:0::/root:/bin/bash\n");
    chmodSync(at("usr/bin/tool"), 0o4755);
    chownSync(at("usr/lib/x/a.so"), 1000, 100);
    unlinkSync(at("usr/bin/alias"));
    symlinkSync("/bin/other", at("usr/bin/alias"));
    rmSync(at("etc/motd"));
    rmSync(at("var/log"), { recursive: true });
  });
  assert.deepEqual(got, [
    "etc dir 755 0:0",
    "etc/.wh.motd file 644 0:0 0",
    "etc/passwd file 644 0:0 28 <etc/passwd>",
    "usr dir 755 0:0",
    "usr/bin dir 755 0:0",
    "usr/bin/alias symlink 777 0:0 -> /bin/other",
    "usr/bin/tool file 4755 0:0 10 <usr/bin/tool>",
    "usr/lib dir 755 0:0",
    "usr/lib/x dir 755 0:0",
    "usr/lib/x/a.so file 644 1000:100 4 <usr/lib/x/a.so>",
    "var dir 755 0:0",
    "var/.wh.log file 644 0:0 0",
    "x file 644 0:0 3 <x>",
  ]);
});

test("a directory deleted and made again is opaque and holds all it has now", async () => {
  const got = await diffOf(tree, (at) => {
    rmSync(at("usr/lib"), { recursive: true });
    mkdirSync(at("usr/lib/x"), { recursive: true });
    writeFileSync(at("usr/lib/x/a.so"), "aaaa");
    writeFileSync(at("usr/lib/new"), "n");
  });
  assert.deepEqual(got, [
    "usr dir 755 0:0",
    "usr/lib dir 755 0:0",
    "usr/lib/.wh..wh..opq file 644 0:0 0",
    "usr/lib/new file 644 0:0 1 <usr/lib/new>",
    "usr/lib/x dir 755 0:0",
    "usr/lib/x/a.so file 644 0:0 4 <usr/lib/x/a.so>",
  ]);
});

test("type changes: file to dir, dir to symlink, symlink to dir, dir to file, dir to file and back to dir", async () => {
  const got = await diffOf(tree, (at) => {
    rmSync(at("etc/motd"));
    mkdirSync(at("etc/motd"));
    writeFileSync(at("etc/motd/today"), "t");
    rmSync(at("usr/lib"), { recursive: true });
    symlinkSync("/lib", at("usr/lib"));
    unlinkSync(at("usr/bin/alias"));
    mkdirSync(at("usr/bin/alias"));
    rmSync(at("var/log"), { recursive: true });
    writeFileSync(at("var/log"), "now a file");
    renameSync(at("etc"), at("etc.old"));
    writeFileSync(at("etc"), "");
    rmSync(at("etc"));
    renameSync(at("etc.old"), at("etc2"));
    mkdirSync(at("etc"));
    writeFileSync(at("etc/passwd"), "p");
  });
  assert.deepEqual(got, [
    "etc dir 755 0:0",
    "etc/.wh..wh..opq file 644 0:0 0",
    "etc/passwd file 644 0:0 1 <etc/passwd>",
    "etc2 dir 755 0:0",
    "etc2/motd dir 755 0:0",
    "etc2/motd/today file 644 0:0 1 <etc2/motd/today>",
    "etc2/passwd file 644 0:0 26 <etc2/passwd>",
    "usr dir 755 0:0",
    "usr/bin dir 755 0:0",
    "usr/bin/alias dir 755 0:0",
    "usr/lib symlink 777 0:0 -> /lib",
    "var dir 755 0:0",
    "var/log file 644 0:0 10 <var/log>",
  ]);
});

test("a new link to an untouched file brings that file along; removing one link leaves the other out", async () => {
  const got = await diffOf(
    (at) => {
      tree(at);
      linkSync(at("usr/lib/x/b.so"), at("usr/lib/x/b2.so"));
    },
    (at) => {
      linkSync(at("usr/lib/x/a.so"), at("usr/bin/a-link"));
      writeFileSync(at("new"), "n");
      linkSync(at("new"), at("etc/new2"));
      unlinkSync(at("usr/lib/x/b2.so"));
    },
  );
  assert.deepEqual(got, [
    "etc dir 755 0:0",
    "etc/new2 file 644 0:0 1 <etc/new2>",
    "new hardlink 644 0:0 -> etc/new2",
    "usr dir 755 0:0",
    "usr/bin dir 755 0:0",
    "usr/bin/a-link file 644 0:0 4 <usr/bin/a-link>",
    "usr/lib dir 755 0:0",
    "usr/lib/x dir 755 0:0",
    "usr/lib/x/.wh.b2.so file 644 0:0 0",
    "usr/lib/x/a.so hardlink 644 0:0 -> usr/bin/a-link",
  ]);
});

test("devices, FIFOs and sockets: the first two are entries, sockets are left out", async () => {
  const got = await diffOf(tree, (at) => {
    execFileSync("mknod", ["-m", "600", at("etc/null"), "c", "1", "3"]);
    execFileSync("mknod", ["-m", "640", at("etc/disk"), "b", "259", "1048575"]);
    execFileSync("mkfifo", ["-m", "620", at("etc/pipe")]);
    execFileSync("python3", [
      "-c",
      `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(at("etc/sock"))})`,
    ]);
  });
  assert.deepEqual(got, [
    "etc dir 755 0:0",
    "etc/disk block 640 0:0 259,1048575",
    "etc/null char 600 0:0 1,3",
    "etc/pipe fifo 620 0:0",
  ]);
});

test("excluded paths, mount points and directories whose times are to be ignored", async () => {
  const root = tempDir("snapshot-mounts");
  const mountInfo = join(root, "..", `${root.split("/").pop()}-mountinfo`);
  try {
    writeFileSync(
      mountInfo,
      [
        `22 27 0:21 / ${root}/proc rw,relatime - proc proc rw`,
        `23 27 0:22 / ${root}/mnt/with\\040space rw - tmpfs tmpfs rw`,
        `24 27 0:22 / ${root}-sibling rw - tmpfs tmpfs rw`,
        `25 27 0:22 / / rw - ext4 /dev/vda rw`,
        "",
      ].join("\n"),
    );
    assert.deepEqual(mountPointsBelow(root, mountInfo), ["proc", "mnt/with space"]);
    assert.deepEqual(mountPointsBelow("/", mountInfo).slice(0, 1), [`${root.slice(1)}/proc`]);
    const got = await diffOf(
      (at) => {
        tree(at);
        mkdirSync(at("mnt/with space"), { recursive: true });
        mkdirSync(at("proc"));
        mkdirSync(at("kiln"));
      },
      (at) => {
        writeFileSync(at("proc/1"), "");
        writeFileSync(at("mnt/with space/f"), "");
        writeFileSync(at("kiln/node"), "");
        writeFileSync(at("etc/stub"), "");
        rmSync(at("etc/stub"));
        chmodSync(at("var"), 0o700);
        writeFileSync(at("var/log/new.log"), "");
      },
      { exclude: ["/kiln"], mountInfo, ignoreTimes: ["etc", "var"] },
      root,
    );
    assert.deepEqual(got, [
      "var dir 700 0:0",
      "var/log dir 755 0:0",
      "var/log/new.log file 644 0:0 0 <var/log/new.log>",
    ]);
  } finally {
    rmSync(root, { recursive: true, force: true });
    rmSync(mountInfo, { force: true });
  }
});
