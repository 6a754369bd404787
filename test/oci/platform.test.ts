import assert from "node:assert/strict";
import { test } from "node:test";
import { InvalidInputError, NotFoundError } from "../../src/errors.ts";
import type { Digest } from "../../src/oci/digest.ts";
import type { ImageIndex } from "../../src/oci/manifest.ts";
import { MediaType } from "../../src/oci/media-type.ts";
import type { Platform } from "../../src/oci/platform.ts";
import {
  formatPlatform,
  hostPlatform,
  normalizePlatform,
  parsePlatform,
  platformMatches,
  selectManifest,
} from "../../src/oci/platform.ts";
import { runCommand } from "../helpers/command.ts";

// containerd's platforms.Parse + Normalize, as `ctr pull --platform` sees it.
const PARSED: readonly [string, Platform][] = [
  ["linux/amd64", { os: "linux", architecture: "amd64" }],
  ["linux/x86_64", { os: "linux", architecture: "amd64" }],
  ["linux/x86-64", { os: "linux", architecture: "amd64" }],
  ["linux/amd64/v1", { os: "linux", architecture: "amd64" }],
  ["linux/amd64/v3", { os: "linux", architecture: "amd64", variant: "v3" }],
  ["Linux/AMD64", { os: "linux", architecture: "amd64" }],
  ["linux/arm64", { os: "linux", architecture: "arm64" }],
  ["linux/arm64/v8", { os: "linux", architecture: "arm64" }],
  ["linux/aarch64", { os: "linux", architecture: "arm64" }],
  ["linux/aarch64/8", { os: "linux", architecture: "arm64" }],
  ["linux/arm64/v9.0", { os: "linux", architecture: "arm64", variant: "v9" }],
  ["linux/arm", { os: "linux", architecture: "arm", variant: "v7" }],
  ["linux/arm/7", { os: "linux", architecture: "arm", variant: "v7" }],
  ["linux/arm/v6", { os: "linux", architecture: "arm", variant: "v6" }],
  ["linux/arm/5", { os: "linux", architecture: "arm", variant: "v5" }],
  ["linux/armhf", { os: "linux", architecture: "arm", variant: "v7" }],
  ["linux/armel", { os: "linux", architecture: "arm", variant: "v6" }],
  ["linux/i386", { os: "linux", architecture: "386" }],
  ["macos/arm64", { os: "darwin", architecture: "arm64" }],
  ["windows/amd64", { os: "windows", architecture: "amd64" }],
  ["linux/s390x", { os: "linux", architecture: "s390x" }],
  ["linux/riscv64", { os: "linux", architecture: "riscv64" }],
];

test("parsePlatform normalises as containerd does", () => {
  for (const [input, want] of PARSED) assert.deepEqual(parsePlatform(input), want, input);
});

test("hostPlatform is the machine's, as uname names it", async () => {
  const machine = (await runCommand("uname", ["-m"])).toString().trim();
  assert.deepEqual(hostPlatform(), parsePlatform(`linux/${machine}`));
});

test("a lone OS or architecture is completed from the host", { skip: process.arch !== "x64" }, () => {
  assert.deepEqual(parsePlatform("linux"), { os: "linux", architecture: "amd64" });
  assert.deepEqual(parsePlatform("arm64"), { os: "linux", architecture: "arm64" });
  assert.deepEqual(parsePlatform("aarch64"), { os: "linux", architecture: "arm64" });
  assert.deepEqual(parsePlatform("windows"), { os: "windows", architecture: "amd64" });
});

test("parsePlatform rejects malformed specifiers", () => {
  for (const bad of ["", "linux/", "/amd64", "linux/amd64/v8/x", "linux/am d64", "plan10", "linux//v7"]) {
    assert.throws(
      () => parsePlatform(bad),
      (e: unknown) => e instanceof InvalidInputError && e.message.includes(JSON.stringify(bad)),
      bad,
    );
  }
});

test("formatPlatform writes os/arch[/variant]", () => {
  assert.equal(formatPlatform({ os: "linux", architecture: "arm64", variant: "v8" }), "linux/arm64/v8");
  assert.equal(formatPlatform({ os: "linux", architecture: "amd64" }), "linux/amd64");
  assert.equal(formatPlatform(parsePlatform("linux/armhf")), "linux/arm/v7");
  for (const [input] of PARSED) {
    const p = parsePlatform(input);
    assert.deepEqual(parsePlatform(formatPlatform(p)), p, input);
  }
});

test("platformMatches compares normalised platforms", () => {
  const m = (want: string, have: Platform) => platformMatches(parsePlatform(want), have);
  assert.ok(m("linux/arm64", { os: "linux", architecture: "arm64", variant: "v8" }));
  assert.ok(m("linux/arm64/v8", { os: "linux", architecture: "arm64" }));
  assert.ok(m("linux/arm", { os: "linux", architecture: "arm", variant: "v7" }));
  assert.ok(m("linux/x86_64", { os: "linux", architecture: "amd64" }));
  assert.ok(!m("linux/arm/v6", { os: "linux", architecture: "arm", variant: "v7" }));
  assert.ok(!m("linux/arm", { os: "linux", architecture: "arm", variant: "v6" }));
  assert.ok(!m("linux/amd64", { os: "linux", architecture: "arm64" }));
  assert.ok(!m("linux/amd64", { os: "windows", architecture: "amd64" }));
  assert.ok(!m("linux/amd64", { os: "linux", architecture: "amd64", variant: "v3" }));
  const win = { os: "windows", architecture: "amd64", "os.version": "10.0.17763.1" };
  assert.ok(platformMatches({ os: "windows", architecture: "amd64" }, win));
  assert.ok(platformMatches(win, win));
  assert.ok(!platformMatches({ ...win, "os.version": "10.0.20348.1" }, win));
});

function digest(n: number): Digest {
  return `sha256:${n.toString(16).padStart(64, "0")}` as Digest;
}
const entry = (n: number, platform?: Platform, annotations?: Record<string, string>) => ({
  mediaType: MediaType.ImageManifest,
  digest: digest(n),
  size: 500 + n,
  ...(platform ? { platform } : {}),
  ...(annotations ? { annotations } : {}),
});

// The shape BuildKit pushes: images plus one attestation manifest per image.
const INDEX: ImageIndex = {
  schemaVersion: 2,
  mediaType: MediaType.ImageIndex,
  manifests: [
    entry(1, { os: "unknown", architecture: "unknown" }),
    entry(2, { os: "linux", architecture: "amd64" }),
    entry(3, { os: "linux", architecture: "arm64", variant: "v8" }),
    entry(4, { os: "linux", architecture: "arm", variant: "v7" }),
    entry(5, undefined, { "vnd.docker.reference.type": "attestation-manifest" }),
    entry(6, { os: "linux", architecture: "arm64" }, { "vnd.docker.reference.type": "attestation-manifest" }),
    entry(7, { os: "linux", architecture: "arm", variant: "v6" }),
  ],
};

test("selectManifest picks the image for the platform and skips attestations", () => {
  assert.equal(selectManifest(INDEX, parsePlatform("linux/amd64")).digest, digest(2));
  assert.equal(selectManifest(INDEX, parsePlatform("linux/arm64")).digest, digest(3));
  assert.equal(selectManifest(INDEX, parsePlatform("linux/aarch64/v8")).digest, digest(3));
  assert.equal(selectManifest(INDEX, parsePlatform("linux/arm")).digest, digest(4));
  assert.equal(selectManifest(INDEX, parsePlatform("linux/arm/v6")).digest, digest(7));
  assert.equal(selectManifest(INDEX, hostPlatform()).digest, digest(2));
  // An attestation is never chosen even when it claims the wanted platform.
  const onlyAttestation: ImageIndex = { ...INDEX, manifests: [INDEX.manifests[5]!] };
  assert.throws(() => selectManifest(onlyAttestation, parsePlatform("linux/arm64")), NotFoundError);
});

test("selectManifest reads Docker manifest lists", () => {
  const list: ImageIndex = {
    schemaVersion: 2,
    mediaType: MediaType.DockerManifestList,
    manifests: [
      { ...entry(8, { os: "linux", architecture: "amd64" }), mediaType: MediaType.DockerManifest },
      { ...entry(9, { os: "linux", architecture: "ppc64le" }), mediaType: MediaType.DockerManifest },
    ],
  };
  assert.equal(selectManifest(list, parsePlatform("linux/ppc64le")).digest, digest(9));
});

test("selectManifest names the available platforms when none matches", () => {
  assert.throws(
    () => selectManifest(INDEX, parsePlatform("linux/s390x")),
    (e: unknown) =>
      e instanceof NotFoundError &&
      e.code === "KILN_ERR_NOT_FOUND" &&
      e.message ===
        "no image for platform linux/s390x in the index; available: linux/amd64, linux/arm64/v8, linux/arm/v7, linux/arm/v6",
  );
  assert.throws(
    () => selectManifest({ schemaVersion: 2, manifests: [] }, parsePlatform("linux/amd64")),
    /available: none$/,
  );
});

test("normalizePlatform keeps os.version and is idempotent", () => {
  const p = { os: "Windows", architecture: "x86_64", "os.version": "10.0.17763.1" };
  const n = normalizePlatform(p);
  assert.deepEqual(n, { os: "windows", architecture: "amd64", "os.version": "10.0.17763.1" });
  assert.deepEqual(normalizePlatform(n), n);
});
