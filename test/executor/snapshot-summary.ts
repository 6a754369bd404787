import type { LayerEntry } from "../../src/oci/layer-entry.ts";

/**
 * One line per entry: path, type, octal mode, owner, then the size and the content file (relative to
 * `root`), the link target, or the device numbers.
 */
export function summarizeEntries(entries: readonly LayerEntry[], root: string): string[] {
  return entries.map((e) => {
    const what =
      e.type === "file"
        ? ` ${e.size}${e.content === undefined ? "" : ` <${String(e.content).replace(`${root}/`, "")}>`}`
        : e.linkTarget !== undefined
          ? ` -> ${e.linkTarget}`
          : e.devMajor !== undefined
            ? ` ${e.devMajor},${e.devMinor}`
            : "";
    return `${e.path} ${e.type} ${e.mode.toString(8)} ${e.uid}:${e.gid}${what}`;
  });
}
