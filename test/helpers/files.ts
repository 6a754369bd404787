import { readdir, readFile } from "node:fs/promises";
import { join, relative } from "node:path";

/** The files below `path` in a fixed order, or `path` itself when it is a file. */
export async function* filesBelow(path: string): AsyncGenerator<string> {
  const entries = await readdir(path, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOTDIR") return undefined;
    throw err;
  });
  if (entries === undefined) {
    yield path;
    return;
  }
  for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) yield* filesBelow(join(path, e.name));
}

/** The text of every file below `dir` by its path relative to `dir`, as `spec.source.inline.files` holds a context. */
export async function readTextFiles(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for await (const f of filesBelow(dir)) out[relative(dir, f)] = await readFile(f, "utf8");
  return out;
}
