import { chmod, mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { sha256 } from "../oci/digest.ts";
import { canonicalBytes } from "../oci/image.ts";
import { resolveInRoot } from "../oci/root-path.ts";
import type { FetchedSource, InlineSource } from "./fetch-source.ts";

/**
 * Writes the files of an inline source (0644, parents 0755). Paths resolve strictly inside `dir`; there is
 * nothing to pin but the files themselves, so `pinned` is the sha256 of their sorted list.
 */
export async function writeInline(spec: InlineSource, dir: string): Promise<FetchedSource> {
  const paths = Object.keys(spec.files).sort();
  for (const path of paths) {
    const rel = resolveInRoot(path, () => undefined, "strict", false, "the inline source");
    const abs = join(dir, rel);
    await mkdir(dirname(abs), { recursive: true });
    await writeFile(abs, spec.files[path] ?? "", { flag: "wx" });
    await chmod(abs, 0o644);
    // Modes as the spec says, whatever the umask: a folder's mode is part of the image COPY makes.
    for (let p = dirname(rel); p !== "."; p = dirname(p)) await chmod(join(dir, p), 0o755);
  }
  const pinned = sha256(canonicalBytes(paths.map((p) => [p, spec.files[p]])));
  return { pinned, source: { inline: spec } };
}
