import { execFile, execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { Readable } from "node:stream";
import { promisify } from "node:util";
import { gunzipSync } from "node:zlib";
import type { Digest } from "../../src/oci/digest.ts";
import type { Image, Layer } from "../../src/oci/image.ts";

const execFileAsync = promisify(execFile);

export function sha256Of(bytes: Buffer | string): Digest {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}` as Digest;
}

/** A tar+gzip layer made by GNU tar and gzip from the given files; digests computed here with node:crypto. */
export function makeLayer(files: Readonly<Record<string, string | Buffer>>): Layer & { bytes: Buffer } {
  const dir = mkdtempSync(join(tmpdir(), "kiln-layer-"));
  try {
    const root = join(dir, "root");
    mkdirSync(root);
    for (const [name, content] of Object.entries(files)) {
      mkdirSync(dirname(join(root, name)), { recursive: true });
      writeFileSync(join(root, name), content);
    }
    const tar = execFileSync(
      "tar",
      ["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner", "-C", root, "-cf", "-", "."],
      { maxBuffer: 1 << 30 },
    );
    const bytes = execFileSync("gzip", ["-n", "-c"], { input: tar, maxBuffer: 1 << 30 });
    return layerOf(bytes);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function layerOf(bytes: Buffer): Layer & { bytes: Buffer } {
  return {
    bytes,
    digest: sha256Of(bytes),
    diffId: sha256Of(gunzipSync(bytes)),
    size: bytes.length,
    mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
    open: () => Readable.from([bytes]),
  };
}

export function makeImage(layers: readonly Layer[], architecture = "amd64"): Image {
  return {
    config: {
      architecture,
      os: "linux",
      config: { Env: ["PATH=/usr/bin:/bin"], Cmd: ["/bin/sh"] },
      rootfs: { type: "layers", diff_ids: layers.map((l) => l.diffId) },
    },
    layers,
  };
}

/**
 * Runs skopeo without blocking the event loop: a token issuer or fault proxy serving it may live in this
 * very process.
 */
export async function skopeo(...args: string[]): Promise<Buffer> {
  const { stdout } = await execFileAsync("skopeo", args, { encoding: "buffer", maxBuffer: 1 << 26 });
  return stdout;
}

/** `skopeo inspect --raw` output and its digest, as an independent reader of what the registry holds. */
export async function skopeoRaw(ref: string, ...flags: string[]): Promise<{ bytes: Buffer; digest: Digest }> {
  const bytes = await skopeo("inspect", "--raw", ...flags, `docker://${ref}`);
  return { bytes, digest: sha256Of(bytes) };
}

export async function skopeoDigest(ref: string, ...flags: string[]): Promise<string> {
  return (await skopeo("inspect", "--format", "{{.Digest}}", ...flags, `docker://${ref}`)).toString().trim();
}
