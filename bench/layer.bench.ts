/**
 * Layer writing: kiln's walk + tar + compression + both digests, against GNU tar piped into gzip, pigz and
 * zstd on the same tree. Trees: a Debian bookworm minbase root (about 200 MB, made once with debootstrap)
 * and 50,000 small generated files. Both are cached in bench/.work/, which git ignores.
 */
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { writeLayer } from "../src/oci/layer-writer.ts";
import type { Compression } from "../src/oci/media-type.ts";
import { walkTree } from "../src/oci/tree-walk.ts";
import { fastestOf, printRow, timeAsync, timeCommand } from "./run.ts";

const WORK = join(import.meta.dirname, ".work");
const RUNS = 5;

export default async function layerBench(): Promise<boolean> {
  mkdirSync(WORK, { recursive: true });
  let ok = true;
  for (const [name, tree] of [
    ["debian rootfs", await debianRootfs()],
    ["50k small files", smallFiles()],
  ] as const) {
    ok = (await benchTree(name, tree)) && ok;
  }
  return ok;
}

async function benchTree(name: string, tree: string): Promise<boolean> {
  const tar = `tar --sort=name -C '${tree}' -cf - .`;
  const out = (suffix: string) => join(WORK, `out.${suffix}`);
  await timeCommand(`${tar} > /dev/null`); // warm the page cache for whoever runs first
  const kiln = (compression: Compression) => () =>
    timeAsync(() => writeLayer(walkTree(tree), { file: out(`kiln.${compression}`), mtime: 0, compression }));
  const t = await fastestOf(RUNS, {
    kilnGzip: kiln("gzip"),
    gzip: () => timeCommand(`${tar} | gzip -6 -n | sha256sum > /dev/null`),
    pigz: () => timeCommand(`${tar} | pigz -p2 -6 > '${out("pigz")}'`),
    kilnZstd: kiln("zstd"),
    zstd: () => timeCommand(`${tar} | zstd -q -3 -T2 > '${out("zstd")}'`),
  });
  const uncompressed = (await writeLayer(walkTree(tree), { file: out("tar"), mtime: 0, compression: "none" }))
    .uncompressedSize;
  // CPU seconds of all kiln's threads for one more layer: unlike wall time, barely moved by other load.
  const cpu: Partial<Record<Compression, string>> = {};
  for (const compression of ["gzip", "zstd"] as const) {
    const before = process.cpuUsage();
    await kiln(compression)();
    const used = process.cpuUsage(before);
    cpu[compression] = `kiln CPU ${((used.user + used.system) / 1e6).toFixed(2)} s`;
  }
  const mbps = (s: number) => `${(uncompressed / 1e6 / s).toFixed(0)} MB/s of tar`;
  const sizes = (kilnFile: string, refFile: string) => `size ${mb(out(kilnFile))} vs ${mb(out(refFile))}`;
  const rows = [
    printRow({
      name: `${name}: gzip vs tar + pigz -p2 -6`,
      kiln: t.kilnGzip,
      reference: t.pigz,
      target: 0.8,
      note: `${mbps(t.kilnGzip)}, ${cpu.gzip}, ${sizes("kiln.gzip", "pigz")}`,
    }),
    printRow({ name: `${name}: gzip vs tar + gzip -6 -n + sha256sum`, kiln: t.kilnGzip, reference: t.gzip }),
    printRow({
      name: `${name}: zstd vs tar + zstd -3 -T2`,
      kiln: t.kilnZstd,
      reference: t.zstd,
      target: 1.0,
      note: `${mbps(t.kilnZstd)}, ${cpu.zstd}, ${sizes("kiln.zstd", "zstd")}`,
    }),
  ];
  for (const f of ["kiln.gzip", "kiln.zstd", "pigz", "zstd", "tar"]) rmSync(out(f), { force: true });
  return rows.every(Boolean);
}

function mb(file: string): string {
  return `${(statSync(file).size / 1e6).toFixed(1)} MB`;
}

/** A Debian bookworm minbase root, made once with debootstrap from the machine's own apt mirror. */
async function debianRootfs(): Promise<string> {
  const dir = join(WORK, "debian-rootfs");
  if (existsSync(dir)) return dir;
  const tmp = `${dir}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  const mirror = aptMirror();
  console.error(`building ${dir} with debootstrap${mirror ? ` from ${mirror}` : ""}`);
  await timeCommand(`debootstrap --variant=minbase bookworm '${tmp}' ${mirror ?? ""} >&2`);
  renameSync(tmp, dir);
  return dir;
}

/** The first Debian archive URI in /etc/apt's sources, so no mirror host is written down here. */
function aptMirror(): string | undefined {
  const files = ["/etc/apt/sources.list"];
  const d = "/etc/apt/sources.list.d";
  if (existsSync(d)) files.push(...readdirSync(d).map((f) => join(d, f)));
  for (const f of files.filter((f) => existsSync(f))) {
    for (const line of readFileSync(f, "utf8").split("\n")) {
      const m = /^(?:deb\s+(?:\[[^\]]*\]\s+)?|URIs:\s*)(\S+)/.exec(line.trim());
      if (m?.[1] && !m[1].includes("security")) return m[1];
    }
  }
  return undefined;
}

/** 50,000 files of 0–4 KiB text in 500 directories, the same on every machine. */
function smallFiles(): string {
  const dir = join(WORK, "small-files");
  if (existsSync(dir)) return dir;
  const tmp = `${dir}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  for (let d = 0; d < 500; d++) {
    const sub = join(tmp, `dir-${d}`);
    mkdirSync(sub, { recursive: true });
    for (let f = 0; f < 100; f++) {
      const n = ((d * 100 + f) * 2654435761) % 4096;
      writeFileSync(
        join(sub, `file-${f}.txt`),
        `line ${d}/${f} of a small generated file\n`.repeat(64).slice(0, n),
      );
    }
  }
  renameSync(tmp, dir);
  return dir;
}
