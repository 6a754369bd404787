import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip, createZstdDecompress } from "node:zlib";
import tar from "tar-stream";
import { z } from "zod";
import { skopeo } from "./skopeo.ts";

/**
 * Images made comparable: the merged file tree (layers applied in order, whiteouts and opaque directories
 * honoured) and the config fields a Dockerfile sets. Read with their own small OCI layout reader, not with
 * kiln's, so a bug in kiln's layout code cannot hide on both sides of a comparison.
 */

export type NodeType = "file" | "dir" | "symlink" | "char" | "block" | "fifo";

/** One path of a flattened image. Modes are the permission bits including setuid, setgid and sticky. */
export interface FileNode {
  readonly type: NodeType;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /** Files only. */
  readonly size?: number;
  readonly sha256?: string;
  /** Symlinks only. */
  readonly linkname?: string;
  /** Devices only. */
  readonly devmajor?: number;
  readonly devminor?: number;
  /** Hard-linked files: the smallest path of the group of paths sharing this file. */
  readonly linkGroup?: string;
  /** Extended attributes from PAX `SCHILY.xattr.*` records. */
  readonly xattrs?: Readonly<Record<string, string>>;
}

/** Path (absolute, no trailing slash, `/` itself left out) → node. */
export type FileTree = ReadonlyMap<string, FileNode>;

export interface HealthcheckConfig {
  readonly Test: readonly string[];
  readonly Interval?: number;
  readonly Timeout?: number;
  readonly StartPeriod?: number;
  readonly StartInterval?: number;
  readonly Retries?: number;
}

/** The config fields a Dockerfile decides. Empty values are left out, so `[]`, `{}`, `""` and absence compare equal. */
export interface ComparableConfig {
  readonly architecture: string;
  readonly os: string;
  readonly Env?: readonly string[];
  readonly Cmd?: readonly string[];
  readonly Entrypoint?: readonly string[];
  readonly WorkingDir?: string;
  readonly User?: string;
  /** Without `io.buildah.version`. */
  readonly Labels?: Readonly<Record<string, string>>;
  /** Sorted keys (`80/tcp`). */
  readonly ExposedPorts?: readonly string[];
  /** Sorted paths. */
  readonly Volumes?: readonly string[];
  readonly StopSignal?: string;
  readonly Healthcheck?: HealthcheckConfig;
  readonly OnBuild?: readonly string[];
  readonly Shell?: readonly string[];
}

export interface ComparableImage {
  readonly tree: FileTree;
  readonly config: ComparableConfig;
}

// --- reading an image -------------------------------------------------------------------------------------

const DescriptorJson = z.object({
  mediaType: z.string(),
  digest: z.string().regex(/^sha256:[a-f0-9]{64}$/),
  size: z.number(),
  platform: z.object({ architecture: z.string(), os: z.string() }).optional(),
  annotations: z.record(z.string(), z.string()).optional(),
});
type DescriptorJson = z.infer<typeof DescriptorJson>;
const IndexJson = z.object({ manifests: z.array(DescriptorJson) });
const ManifestJson = z.object({ config: DescriptorJson, layers: z.array(DescriptorJson) });

const RunConfigJson = z.object({
  Env: z.array(z.string()).nullish(),
  Cmd: z.array(z.string()).nullish(),
  Entrypoint: z.array(z.string()).nullish(),
  WorkingDir: z.string().nullish(),
  User: z.string().nullish(),
  Labels: z.record(z.string(), z.string()).nullish(),
  ExposedPorts: z.record(z.string(), z.unknown()).nullish(),
  Volumes: z.record(z.string(), z.unknown()).nullish(),
  StopSignal: z.string().nullish(),
  Healthcheck: z
    .object({
      Test: z.array(z.string()).nullish(),
      Interval: z.number().optional(),
      Timeout: z.number().optional(),
      StartPeriod: z.number().optional(),
      StartInterval: z.number().optional(),
      Retries: z.number().optional(),
    })
    .nullish(),
  OnBuild: z.array(z.string()).nullish(),
  Shell: z.array(z.string()).nullish(),
});
type RunConfigJson = z.infer<typeof RunConfigJson>;
const ConfigJson = z.object({
  architecture: z.string(),
  os: z.string(),
  config: RunConfigJson.nullish(),
  rootfs: z.object({ diff_ids: z.array(z.string()) }),
});

/** The manifest an OCI layout names (its only entry, or the `ref`), an index resolved to linux/amd64. */
async function layoutManifest(dir: string, ref?: string): Promise<z.infer<typeof ManifestJson>> {
  const index = IndexJson.parse(JSON.parse(await readFile(join(dir, "index.json"), "utf8")));
  const named =
    ref === undefined
      ? index.manifests
      : index.manifests.filter((d) => d.annotations?.["org.opencontainers.image.ref.name"] === ref);
  if (named.length !== 1) {
    throw new Error(
      `${dir}: expected one index.json entry${ref ? ` named ${ref}` : ""}, found ${named.length}`,
    );
  }
  let desc = named[0]!;
  for (let depth = 0; depth < 4; depth++) {
    const json: unknown = JSON.parse(await blobText(dir, desc));
    if (!desc.mediaType.includes("index") && !desc.mediaType.includes("manifest.list")) {
      return ManifestJson.parse(json);
    }
    const amd64 = IndexJson.parse(json).manifests.find(
      (d) => d.platform?.os === "linux" && d.platform.architecture === "amd64",
    );
    if (amd64 === undefined) throw new Error(`${dir}: image index ${desc.digest} has no linux/amd64 image`);
    desc = amd64;
  }
  throw new Error(`${dir}: image indexes nest too deep`);
}

const blobFile = (dir: string, digest: string) =>
  join(dir, "blobs", "sha256", digest.slice("sha256:".length));

async function blobText(dir: string, d: DescriptorJson): Promise<string> {
  const bytes = await readFile(blobFile(dir, d.digest));
  const actual = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
  if (actual !== d.digest) throw new Error(`${dir}: blob ${d.digest} has digest ${actual}`);
  return bytes.toString("utf8");
}

/**
 * Reads an image from an OCI layout: its flattened tree and its config. `dockerConfigDir`, a `dir:` export
 * in Docker format of the same image (`buildah push --format v2s2 TAG dir:DIR`), supplies Healthcheck,
 * OnBuild and Shell, which buildah leaves out of OCI configs.
 */
export async function readComparableImage(
  layout: string,
  options: { readonly ref?: string; readonly dockerConfigDir?: string } = {},
): Promise<ComparableImage> {
  const manifest = await layoutManifest(layout, options.ref);
  const config = ConfigJson.parse(JSON.parse(await blobText(layout, manifest.config)));
  const tree = await flattenLayers(
    manifest.layers.map((d) => ({
      mediaType: d.mediaType,
      open: () => createReadStream(blobFile(layout, d.digest)),
    })),
  );
  let run: RunConfigJson = config.config ?? {};
  if (options.dockerConfigDir !== undefined) {
    const docker = await readDockerDirConfig(options.dockerConfigDir);
    run = { ...run, Healthcheck: docker.Healthcheck, OnBuild: docker.OnBuild, Shell: docker.Shell };
  }
  return { tree, config: comparableConfig(config.architecture, config.os, run) };
}

/** An image of a plain-HTTP registry (`host:port/repo@sha256:…` or `:tag`), pulled with skopeo and read as above. */
export async function pullComparableImage(ref: string): Promise<ComparableImage> {
  const dir = await mkdtemp(join(tmpdir(), "kiln-pull-"));
  try {
    await skopeo("copy", "--quiet", "--src-tls-verify=false", `docker://${ref}`, `oci:${dir}:x`);
    return await readComparableImage(dir, { ref: "x" });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The run config of a `dir:` export (manifest.json names the config blob by its hex digest). */
export async function readDockerDirConfig(dir: string): Promise<RunConfigJson> {
  const manifest = ManifestJson.parse(JSON.parse(await readFile(join(dir, "manifest.json"), "utf8")));
  const text = await readFile(join(dir, manifest.config.digest.slice("sha256:".length)), "utf8");
  return ConfigJson.parse(JSON.parse(text)).config ?? {};
}

function comparableConfig(architecture: string, os: string, c: RunConfigJson): ComparableConfig {
  const nonEmpty = <T extends { length: number }>(v: T | null | undefined) =>
    v === null || v === undefined || v.length === 0 ? undefined : v;
  const labels = Object.entries(c.Labels ?? {}).filter(([k]) => k !== "io.buildah.version");
  const hc = c.Healthcheck;
  const healthcheck: HealthcheckConfig | undefined =
    hc?.Test && hc.Test.length > 0
      ? (Object.fromEntries(
          Object.entries({ ...hc, Test: hc.Test }).filter(
            ([, v]) => v !== undefined && v !== 0 && v !== null,
          ),
        ) as unknown as HealthcheckConfig)
      : undefined;
  const out = {
    architecture,
    os,
    Env: nonEmpty(c.Env),
    Cmd: nonEmpty(c.Cmd),
    Entrypoint: nonEmpty(c.Entrypoint),
    WorkingDir: nonEmpty(c.WorkingDir),
    User: nonEmpty(c.User),
    Labels: labels.length > 0 ? Object.fromEntries(labels) : undefined,
    ExposedPorts: nonEmpty(Object.keys(c.ExposedPorts ?? {}).sort()),
    Volumes: nonEmpty(Object.keys(c.Volumes ?? {}).sort()),
    StopSignal: nonEmpty(c.StopSignal),
    Healthcheck: healthcheck,
    OnBuild: nonEmpty(c.OnBuild),
    Shell: nonEmpty(c.Shell),
  };
  return Object.fromEntries(
    Object.entries(out).filter(([, v]) => v !== undefined),
  ) as unknown as ComparableConfig;
}

// --- flattening layers ------------------------------------------------------------------------------------

export interface LayerSource {
  readonly mediaType: string;
  open(): Readable;
}

interface MutableNode {
  type: NodeType;
  mode: number;
  uid: number;
  gid: number;
  size?: number;
  sha256?: string;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  xattrs?: Record<string, string>;
  /** Paths sharing one inode share this number. */
  inode: number;
}

type LayerEntry =
  | { readonly kind: "node"; readonly path: string; readonly node: MutableNode }
  | { readonly kind: "hardlink"; readonly path: string; readonly target: string }
  | { readonly kind: "whiteout"; readonly path: string }
  | { readonly kind: "opaque"; readonly dir: string };

/** `./a/b/`, `/a/b`, `a/b` → `/a/b`; the root is `/`. */
export function normalizePath(name: string): string {
  const parts = name.split("/").filter((p) => p !== "" && p !== ".");
  return `/${parts.join("/")}`;
}

function decompressor(mediaType: string): NodeJS.ReadWriteStream | undefined {
  if (mediaType.endsWith("gzip")) return createGunzip();
  if (mediaType.endsWith("zstd")) return createZstdDecompress();
  if (mediaType.endsWith(".tar") || mediaType.endsWith("tar.v1")) return undefined;
  throw new Error(`unsupported layer media type ${mediaType}`);
}

const TAR_TYPES: Readonly<Record<string, NodeType>> = {
  file: "file",
  "contiguous-file": "file",
  directory: "dir",
  symlink: "symlink",
  "character-device": "char",
  "block-device": "block",
  fifo: "fifo",
};

let nextInode = 1;

async function readLayer(layer: LayerSource): Promise<LayerEntry[]> {
  const entries: LayerEntry[] = [];
  const extract = tar.extract();
  const consume = (async () => {
    for await (const entry of extract) {
      const h = entry.header;
      const path = normalizePath(h.name);
      const slash = path.lastIndexOf("/");
      const base = path.slice(slash + 1);
      const parent = slash === 0 ? "/" : path.slice(0, slash);
      const hash = createHash("sha256");
      for await (const chunk of entry) hash.update(chunk as Buffer);
      if (base === ".wh..wh..opq") {
        entries.push({ kind: "opaque", dir: parent });
      } else if (base.startsWith(".wh.")) {
        entries.push({ kind: "whiteout", path: join(parent, base.slice(".wh.".length)) });
      } else if (h.type === "link") {
        entries.push({ kind: "hardlink", path, target: normalizePath(h.linkname ?? "") });
      } else if (path !== "/") {
        const type = TAR_TYPES[h.type ?? "file"];
        if (type === undefined) throw new Error(`layer entry ${h.name} has unsupported type ${h.type}`);
        const xattrs = Object.entries(h.pax ?? {})
          .filter(([k]) => k.startsWith("SCHILY.xattr."))
          .map(([k, v]) => [k.slice("SCHILY.xattr.".length), v] as const);
        const node: MutableNode = {
          type,
          mode: (h.mode ?? 0) & 0o7777,
          uid: h.uid ?? 0,
          gid: h.gid ?? 0,
          inode: nextInode++,
          ...(type === "file" ? { size: h.size ?? 0, sha256: hash.digest("hex") } : {}),
          ...(type === "symlink" ? { linkname: h.linkname ?? "" } : {}),
          ...(type === "char" || type === "block"
            ? { devmajor: h.devmajor ?? 0, devminor: h.devminor ?? 0 }
            : {}),
          ...(xattrs.length > 0 ? { xattrs: Object.fromEntries(xattrs.sort()) } : {}),
        };
        entries.push({ kind: "node", path, node });
      }
    }
  })();
  const unzip = decompressor(layer.mediaType);
  await Promise.all([
    unzip ? pipeline(layer.open(), unzip, extract) : pipeline(layer.open(), extract),
    consume,
  ]);
  return entries;
}

function removeBelow(tree: Map<string, MutableNode>, dir: string): void {
  const prefix = dir === "/" ? "/" : `${dir}/`;
  for (const k of tree.keys()) if (k.startsWith(prefix)) tree.delete(k);
}

function ensureParents(tree: Map<string, MutableNode>, path: string): void {
  for (let i = path.indexOf("/", 1); i > 0; i = path.indexOf("/", i + 1)) {
    const dir = path.slice(0, i);
    if (tree.get(dir)?.type !== "dir") {
      tree.set(dir, { type: "dir", mode: 0o755, uid: 0, gid: 0, inode: nextInode++ });
    }
  }
}

/**
 * Applies layers bottom to top. A layer's whiteouts hide only what lower layers hold (image-spec
 * layer.md), so they are applied before the layer's own entries, whatever their order in the tar.
 */
export async function flattenLayers(layers: readonly LayerSource[]): Promise<FileTree> {
  const tree = new Map<string, MutableNode>();
  for (const layer of layers) {
    const entries = await readLayer(layer);
    for (const e of entries) {
      if (e.kind === "opaque") removeBelow(tree, e.dir);
      if (e.kind === "whiteout") {
        tree.delete(e.path);
        removeBelow(tree, e.path);
      }
    }
    for (const e of entries) {
      if (e.kind !== "node" && e.kind !== "hardlink") continue;
      const node = e.kind === "node" ? e.node : linkTarget(tree, e.path, e.target);
      const prev = tree.get(e.path);
      if (prev?.type === "dir" && node.type !== "dir") removeBelow(tree, e.path);
      ensureParents(tree, e.path);
      // A directory entry over a directory changes its metadata and keeps its children.
      tree.set(e.path, node);
    }
  }
  return freeze(tree);
}

function linkTarget(tree: ReadonlyMap<string, MutableNode>, path: string, target: string): MutableNode {
  const node = tree.get(target);
  if (node?.type !== "file") {
    throw new Error(
      `hard link ${path} points at ${target}, which is ${node ? `a ${node.type}` : "in no layer"}`,
    );
  }
  return node;
}

function freeze(tree: ReadonlyMap<string, MutableNode>): FileTree {
  const groups = new Map<number, string[]>();
  for (const [path, n] of tree) {
    if (n.type === "file") groups.set(n.inode, [...(groups.get(n.inode) ?? []), path]);
  }
  const out = new Map<string, FileNode>();
  for (const path of [...tree.keys()].sort()) {
    const { inode, ...node } = tree.get(path)!;
    const group = groups.get(inode);
    out.set(path, group && group.length > 1 ? { ...node, linkGroup: group.sort()[0]! } : node);
  }
  return out;
}

// --- comparing --------------------------------------------------------------------------------------------

/** A place where two images differ: a path or a config field, and the value on each side (undefined = absent). */
export interface Difference {
  readonly where: string;
  readonly field: string;
  readonly actual: unknown;
  readonly expected: unknown;
}

/** A node the expected image requires to exist without knowing its metadata (see knownBuildahDivergences). */
export const ANY_NODE: FileNode = Object.freeze({ type: "file", mode: -1, uid: -1, gid: -1 });

const NODE_FIELDS = [
  "type",
  "mode",
  "uid",
  "gid",
  "size",
  "sha256",
  "linkname",
  "devmajor",
  "devminor",
  "linkGroup",
  "xattrs",
] as const;

/** Every difference between `actual` and `expected`, paths first (sorted), then config fields. */
export function diffImages(actual: ComparableImage, expected: ComparableImage): Difference[] {
  return [...diffTrees(actual.tree, expected.tree), ...diffConfigs(actual.config, expected.config)];
}

export function diffTrees(actual: FileTree, expected: FileTree): Difference[] {
  const out: Difference[] = [];
  const paths = [...new Set([...actual.keys(), ...expected.keys()])].sort();
  for (const path of paths) {
    const a = actual.get(path);
    const e = expected.get(path);
    if (a === undefined || e === undefined) {
      out.push({ where: path, field: "exists", actual: a !== undefined, expected: e !== undefined });
      continue;
    }
    if (e === ANY_NODE) continue;
    for (const f of NODE_FIELDS) {
      if (!sameValue(a[f], e[f])) out.push({ where: path, field: f, actual: a[f], expected: e[f] });
    }
  }
  return out;
}

export function diffConfigs(actual: ComparableConfig, expected: ComparableConfig): Difference[] {
  const out: Difference[] = [];
  const envMap = (env: readonly string[] | undefined) =>
    new Map((env ?? []).map((kv) => [kv.slice(0, kv.indexOf("=") >>> 0), kv.slice(kv.indexOf("=") + 1)]));
  const keyed = (field: string, a: ReadonlyMap<string, unknown>, e: ReadonlyMap<string, unknown>) => {
    for (const k of [...new Set([...a.keys(), ...e.keys()])].sort()) {
      if (!sameValue(a.get(k), e.get(k))) {
        out.push({ where: "config", field: `${field} ${k}`, actual: a.get(k), expected: e.get(k) });
      }
    }
  };
  const fields = new Set([...Object.keys(actual), ...Object.keys(expected)]) as Set<keyof ComparableConfig>;
  for (const f of [...fields].sort()) {
    if (f === "Env") {
      const a = envMap(actual.Env);
      const e = envMap(expected.Env);
      keyed("Env", a, e);
      if (
        sameValue([...(actual.Env ?? [])].sort(), [...(expected.Env ?? [])].sort()) &&
        !sameValue(actual.Env, expected.Env)
      ) {
        out.push({ where: "config", field: "Env (order)", actual: actual.Env, expected: expected.Env });
      }
    } else if (f === "Labels") {
      keyed(
        "Labels",
        new Map(Object.entries(actual.Labels ?? {})),
        new Map(Object.entries(expected.Labels ?? {})),
      );
    } else if (!sameValue(actual[f], expected[f])) {
      out.push({ where: "config", field: f, actual: actual[f], expected: expected[f] });
    }
  }
  return out;
}

function sameValue(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** One line per difference: `path: field kiln=X buildah=Y`; modes in octal. */
export function formatDifferences(
  diffs: readonly Difference[],
  names: { readonly actual: string; readonly expected: string } = { actual: "kiln", expected: "buildah" },
  limit = 200,
): string {
  const show = (field: string, v: unknown) =>
    v === undefined
      ? "(absent)"
      : field === "mode" && typeof v === "number"
        ? `0${v.toString(8)}`
        : JSON.stringify(v);
  const lines = diffs
    .slice(0, limit)
    .map(
      (d) =>
        `${d.where}: ${d.field} ${names.actual}=${show(d.field, d.actual)} ${names.expected}=${show(d.field, d.expected)}`,
    );
  if (diffs.length > limit) lines.push(`... and ${diffs.length - limit} more`);
  return lines.join("\n");
}
