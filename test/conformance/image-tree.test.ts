import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { test } from "node:test";
import { runCommand } from "../helpers/command.ts";
import {
  type ComparableImage,
  diffImages,
  type FileNode,
  flattenLayers,
  formatDifferences,
} from "../helpers/image-tree.ts";
import { dockerExpectation } from "./divergences.ts";

/**
 * Each layer is written by Python's tarfile from a list of entries, so the flattener is checked against
 * archives it did not make. Entry: [name, type, mode, uid, gid, content-or-linkname].
 */
type Entry = readonly [string, "f" | "d" | "l" | "h", number, number, number, string?];

async function pythonTar(entries: readonly Entry[], gzip: boolean): Promise<Buffer> {
  const script = `
import io, json, sys, tarfile
out = io.BytesIO()
with tarfile.open(fileobj=out, mode="w:gz" if ${gzip ? "True" : "False"} else "w", format=tarfile.PAX_FORMAT) as t:
    for name, kind, mode, uid, gid, *rest in json.load(sys.stdin):
        i = tarfile.TarInfo(name)
        i.mode, i.uid, i.gid, i.mtime = mode, uid, gid, 1700000000
        data = None
        if kind == "f":
            data = rest[0].encode()
            i.size = len(data)
        elif kind == "d":
            i.type = tarfile.DIRTYPE
        elif kind == "l":
            i.type, i.linkname = tarfile.SYMTYPE, rest[0]
        elif kind == "h":
            i.type, i.linkname = tarfile.LNKTYPE, rest[0]
        t.addfile(i, io.BytesIO(data) if data is not None else None)
sys.stdout.buffer.write(out.getvalue())
`;
  return runCommand("python3", ["-c", script], Buffer.from(JSON.stringify(entries)));
}

const layer = async (entries: readonly Entry[], gzip = true) => {
  const bytes = await pythonTar(entries, gzip);
  return {
    mediaType: gzip
      ? "application/vnd.oci.image.layer.v1.tar+gzip"
      : "application/vnd.oci.image.layer.v1.tar",
    open: () => Readable.from([bytes]),
  };
};

const sha = (s: string) => createHash("sha256").update(s).digest("hex");
const dir = (mode = 0o755, uid = 0, gid = 0): FileNode => ({ type: "dir", mode, uid, gid });
const file = (content: string, mode = 0o644, uid = 0, gid = 0): FileNode => ({
  type: "file",
  mode,
  uid,
  gid,
  size: Buffer.byteLength(content),
  sha256: sha(content),
});

test("flattenLayers applies whiteouts and opaque markers to lower layers only, and keeps modes, owners and links", async () => {
  const longTarget = `/opt/${"x".repeat(120)}`;
  const tree = await flattenLayers([
    await layer([
      ["./", "d", 0o755, 0, 0],
      ["./etc/", "d", 0o755, 0, 0],
      ["./etc/motd", "f", 0o644, 0, 0, "hello\n"],
      ["./etc/apt/", "d", 0o755, 0, 0],
      ["./etc/apt/old.conf", "f", 0o644, 0, 0, "old"],
      ["./usr/share/man/man1/ls.1", "f", 0o644, 0, 0, "ls"],
      ["./bin/busybox", "f", 0o4755, 0, 0, "bb"],
      ["./bin/sh", "h", 0, 0, 0, "bin/busybox"],
      ["./etc/debian_version", "f", 0o644, 0, 0, "12.4\n"],
    ]),
    await layer(
      [
        // Same-layer content listed before the opaque marker stays.
        ["etc/apt/new.conf", "f", 0o600, 5, 6, "new"],
        ["etc/apt/.wh..wh..opq", "f", 0, 0, 0, ""],
        ["etc/.wh.motd", "f", 0, 0, 0, ""],
        ["usr/share/.wh.man", "f", 0, 0, 0, ""],
        ["etc/debian_version/", "d", 0o1777, 0, 0],
        ["bin/ls", "h", 0, 0, 0, "/bin/busybox"],
        ["link", "l", 0o777, 0, 0, longTarget],
      ],
      false,
    ),
  ]);
  const bb = { ...file("bb", 0o4755), linkGroup: "/bin/busybox" };
  assert.deepEqual(
    tree,
    new Map<string, FileNode>([
      ["/bin", dir()],
      ["/bin/busybox", bb],
      ["/bin/ls", bb],
      ["/bin/sh", bb],
      ["/etc", dir()],
      ["/etc/apt", dir()],
      ["/etc/apt/new.conf", file("new", 0o600, 5, 6)],
      ["/etc/debian_version", dir(0o1777)],
      ["/link", { type: "symlink", mode: 0o777, uid: 0, gid: 0, linkname: longTarget }],
      ["/usr", dir()],
      ["/usr/share", dir()],
    ]),
  );
});

const image = (
  tree: [string, FileNode][],
  config: Partial<ComparableImage["config"]> = {},
): ComparableImage => ({
  tree: new Map(tree),
  config: { architecture: "amd64", os: "linux", ...config },
});

test("diffImages lists each differing path and field, and formatDifferences prints them in octal where modes", () => {
  const kiln = image(
    [
      ["/hello", file("hi", 0o755)],
      ["/extra", dir()],
    ],
    { Env: ["PATH=/", "A=1"], Labels: { a: "1" }, ExposedPorts: ["80/tcp"] },
  );
  const buildah = image(
    [
      ["/hello", file("hi", 0o700, 0, 1)],
      ["/missing", file("")],
    ],
    { Env: ["PATH=/bin", "A=1"], Labels: { a: "1", b: "2" }, ExposedPorts: ["80/tcp"], Cmd: ["/hi"] },
  );
  assert.equal(
    formatDifferences(diffImages(kiln, buildah)),
    [
      "/extra: exists kiln=true buildah=false",
      "/hello: mode kiln=0755 buildah=0700",
      "/hello: gid kiln=0 buildah=1",
      "/missing: exists kiln=false buildah=true",
      'config: Cmd kiln=(absent) buildah=["/hi"]',
      'config: Env PATH kiln="/" buildah="/bin"',
      'config: Labels b kiln=(absent) buildah="2"',
    ].join("\n"),
  );
  assert.deepEqual(diffImages(buildah, buildah), []);
});

test("diffImages reports an Env that differs only in order", () => {
  const a = image([], { Env: ["A=1", "B=2"] });
  const b = image([], { Env: ["B=2", "A=1"] });
  assert.equal(
    formatDifferences(diffImages(a, b)),
    'config: Env (order) kiln=["A=1","B=2"] buildah=["B=2","A=1"]',
  );
});

test("dockerExpectation puts Docker's values where buildah is known to differ, and rejects stale entries", () => {
  const oracle = image(
    [
      ["/C:\\Program FilesPowerShell", dir()],
      ["/C:\\Program FilesPowerShell/pwsh", file("x", 0o755)],
    ],
    {
      Env: ["PATH=/bin", "T=C:"],
      Labels: { u: "\\servershare" },
      ExposedPorts: ["7000-7002/udp", "80/tcp"],
      Entrypoint: ["/bin/sh", "-c", "x"],
    },
  );
  const expected = dockerExpectation(oracle, [
    {
      what: "escape",
      affects: {
        "COPY destination": {
          buildah: "/C:\\Program FilesPowerShell",
          docker: "/C:\\Program Files\\PowerShell",
        },
        "Env T": { buildah: "C:", docker: "C:\\" },
        "Label u": { buildah: "\\servershare", docker: "\\\\server\\share" },
        Entrypoint: { buildah: ["/bin/sh", "-c", "x"], docker: ["/bin/sh", "-e", "-c", "x"] },
      },
    },
    { what: "note without affects" },
    {
      what: "volume",
      affects: {
        "/data/after-volume.txt": { buildah: null, buildkit: "present" },
        ExposedPorts: { buildah: ["7000-7002/udp"], docker: ["7000/udp", "7001/udp", "7002/udp"] },
      },
    },
  ]);
  assert.deepEqual(
    [...expected.tree.keys()],
    ["/C:\\Program Files\\PowerShell", "/C:\\Program Files\\PowerShell/pwsh", "/data/after-volume.txt"],
  );
  assert.deepEqual(expected.config, {
    architecture: "amd64",
    os: "linux",
    Env: ["PATH=/bin", "T=C:\\"],
    Labels: { u: "\\\\server\\share" },
    ExposedPorts: ["7000/udp", "7001/udp", "7002/udp", "80/tcp"],
    Entrypoint: ["/bin/sh", "-e", "-c", "x"],
  });
  // Any node satisfies a "present" expectation; its absence does not.
  const kiln = image(
    [
      ["/C:\\Program Files\\PowerShell", dir()],
      ["/C:\\Program Files\\PowerShell/pwsh", file("x", 0o755)],
      ["/data/after-volume.txt", file("written after VOLUME\n")],
    ],
    expected.config,
  );
  assert.deepEqual(diffImages(kiln, expected), []);
  assert.equal(
    formatDifferences(diffImages({ ...kiln, tree: new Map([...kiln.tree].slice(0, 2)) }, expected)),
    "/data/after-volume.txt: exists kiln=false buildah=true",
  );
  assert.throws(
    () =>
      dockerExpectation(oracle, [{ what: "stale", affects: { "Env T": { buildah: "D:", docker: "D:\\" } } }]),
    /knownBuildahDivergences "Env T": buildah's image has "C:"/,
  );
});
