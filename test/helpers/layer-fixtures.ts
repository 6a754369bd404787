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
