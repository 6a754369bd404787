import { spawnSync } from "node:child_process";
import fs from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestContext } from "node:test";
import { runCommand } from "./command.ts";

/** A fresh directory removed when the test ends. */
export async function tempDir(t: TestContext, name = "kiln-layer-"): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), name));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export const LONG_DIR = "d".repeat(60);
export const DEEP = `${LONG_DIR}/${LONG_DIR}/${LONG_DIR}/${LONG_DIR}/${LONG_DIR}`; // 304 bytes with its leaf
export const LONG_TARGET = `../${"t".repeat(150)}`;

/**
 * Every kind of entry a layer holds, with the modes, owners and names that need PAX headers: setuid,
 * setgid, sticky and 000 modes, uids above the ustar limit, names over 100 bytes and paths over 255,
 * UTF-8 names and link targets, hardlinks (one whose second name sorts first), devices and a FIFO.
 */
export function buildTree(root: string, bigContent: Buffer): void {
  const file = (p: string, content: string | Buffer, mode: number, uid = 0, gid = 0): void => {
    fs.writeFileSync(join(root, p), content);
    fs.chownSync(join(root, p), uid, gid); // before chmod: chown clears setuid
    fs.chmodSync(join(root, p), mode);
  };
  const dir = (p: string, mode: number): void => {
    fs.mkdirSync(join(root, p), { recursive: true });
    fs.chmodSync(join(root, p), mode);
  };
  dir("bin", 0o755);
  dir("tmp", 0o1777);
  dir("srv", 0o2775);
  dir("a", 0o755);
  dir(DEEP, 0o700);
  dir("données", 0o755);
  file("bin/tool", "#!/bin/sh\necho tool\n", 0o4755);
  file("bin/sg", "sg", 0o2711);
  file("a/x", "under a", 0o644);
  file("a-b", "dash", 0o640, 1000, 1000);
  file("a.b", "dot", 0o600, 3000000, 4000000);
  file("none", "unreadable by mode", 0o000);
  file("empty", "", 0o644);
  file("big.bin", bigContent, 0o644);
  file(`${"n".repeat(120)}.txt`, "long name", 0o644);
  file(`${DEEP}/leaf`, "deep", 0o644);
  file("données/résumé.txt", "utf-8", 0o644);
  file("日本語-🎉", "more utf-8", 0o644);
  fs.linkSync(join(root, "bin/tool"), join(root, "bin/tool-again"));
  file("z-original", "linked", 0o644);
  fs.linkSync(join(root, "z-original"), join(root, "0-first")); // sorts first, so it carries the content
  fs.symlinkSync("/usr/share/zoneinfo/UTC", join(root, "localtime"));
  fs.symlinkSync(LONG_TARGET, join(root, "long-link"));
  fs.symlinkSync("résumé", join(root, "utf8-link"));
  fs.chmodSync(join(root, LONG_DIR), 0o000);
  dir("dev", 0o755);
  run("mknod", join(root, "dev/null"), "c", "1", "3");
  run("mknod", join(root, "dev/loop0"), "b", "7", "0");
  run("mkfifo", join(root, "dev/fifo"));
}

/** A temp dir holding `tree/`, made by buildTree. */
export async function treeIn(t: TestContext, bigContent: Buffer): Promise<{ dir: string; tree: string }> {
  const dir = await tempDir(t);
  const tree = join(dir, "tree");
  fs.mkdirSync(tree);
  buildTree(tree, bigContent);
  return { dir, tree };
}

function run(cmd: string, ...args: string[]): void {
  const r = spawnSync(cmd, args);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.stderr}`);
}

/**
 * GNU tar's deterministic archive of a tree's contents: the options kiln's layers match byte for byte.
 * `-b 1` ends the archive after the two zero blocks instead of padding it to 10 KiB.
 */
export async function gnuTar(dir: string, mtime: number, extra: readonly string[] = []): Promise<Buffer> {
  const top = (await readdir(dir)).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  return runCommand("tar", [
    "--sort=name",
    "--numeric-owner",
    `--mtime=@${mtime}`,
    "--format=posix",
    "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
    "-b",
    "1",
    ...extra,
    "-C",
    dir,
    "-cf",
    "-",
    "--",
    ...top,
  ]);
}

/** One tar entry as Python's tarfile reads it. */
export interface PyEntry {
  readonly name: string;
  readonly type: string;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  readonly linkname: string;
  readonly mtime: number;
  readonly devmajor: number;
  readonly devminor: number;
  readonly uname: string;
  readonly gname: string;
  /** hex sha256 of a regular file's content, "" otherwise */
  readonly sha256: string;
  readonly xattrs: Record<string, string>;
}

const LIST_PY = `
import hashlib, json, sys, tarfile
types = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
         tarfile.LNKTYPE: "hardlink", tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo"}
out = []
with tarfile.open(fileobj=sys.stdin.buffer, mode="r|*") as tf:
    for m in tf:
        data = tf.extractfile(m).read() if m.isreg() else None
        out.append({"name": m.name, "type": types[m.type], "mode": m.mode, "uid": m.uid, "gid": m.gid,
                    "size": m.size, "linkname": m.linkname, "mtime": int(m.mtime), "devmajor": m.devmajor,
                    "devminor": m.devminor, "uname": m.uname, "gname": m.gname,
                    "sha256": hashlib.sha256(data).hexdigest() if data is not None else "",
                    "xattrs": {k[len("SCHILY.xattr."):]: v for k, v in m.pax_headers.items()
                               if k.startswith("SCHILY.xattr.")}})
json.dump(out, sys.stdout)
`;

/** The entries of a tar (gzip, bz2, xz or plain) as Python's tarfile module reads them. */
export async function pythonTarEntries(archive: Buffer): Promise<PyEntry[]> {
  return JSON.parse((await runCommand("python3", ["-c", LIST_PY], archive)).toString()) as PyEntry[];
}
