import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { Readable } from "node:stream";
import type { Digest } from "../../src/oci/digest.ts";
import type { Layer } from "../../src/oci/image.ts";
import { MediaType } from "../../src/oci/media-type.ts";
import { runCommand } from "./command.ts";

export type TarLayer = Layer & { readonly bytes: Buffer; readonly tar: Buffer };

/** sha256 by coreutils, so tests do not check kiln's digests with kiln's own code. */
export async function sha256sum(bytes: Buffer): Promise<Digest> {
  const out = await runCommand("sha256sum", ["-"], bytes);
  return `sha256:${out.toString().slice(0, 64)}` as Digest;
}

/**
 * A layer built by GNU tar (and `gzip -n` unless `compress` is false) from `files`, path → content, with
 * fixed owners and mtime so the same files always give the same digests.
 */
export async function tarLayer(files: Record<string, string>, compress = true): Promise<TarLayer> {
  const root = await mkdtemp(join(tmpdir(), "kiln-layer-"));
  try {
    for (const [path, content] of Object.entries(files)) {
      await mkdir(dirname(join(root, path)), { recursive: true });
      await writeFile(join(root, path), content, { mode: 0o644 });
    }
    const tar = await runCommand("tar", [
      "--sort=name",
      "--mtime=@0",
      "--owner=0",
      "--group=0",
      "--numeric-owner",
      "--format=gnu",
      "-C",
      root,
      "-cf",
      "-",
      ".",
    ]);
    const bytes = compress ? await runCommand("gzip", ["-n", "-c"], tar) : tar;
    return {
      bytes,
      tar,
      digest: await sha256sum(bytes),
      diffId: await sha256sum(tar),
      size: bytes.length,
      mediaType: compress ? MediaType.LayerTarGzip : MediaType.LayerTar,
      open: () => Readable.from([bytes]),
    };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}
