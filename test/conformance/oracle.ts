import { createHash, randomUUID } from "node:crypto";
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from "node:fs/promises";
import { homedir, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { z } from "zod";
import { type Buildah, createBuildah } from "../helpers/buildah.ts";
import { runCommand } from "../helpers/command.ts";
import type { ComparableImage } from "../helpers/image-tree.ts";
import { readComparableImage } from "../helpers/image-tree.ts";
import { type RunningRegistry, startRegistry } from "../helpers/registry.ts";
import { skopeo, skopeoInspect } from "../helpers/skopeo.ts";
import { type CorpusCase, hashCase, stageCase } from "./corpus.ts";

/**
 * The conformance oracle: Debian's buildah builds each corpus case as the corpus README prescribes, from
 * base images served under their Docker Hub names by a local registry. Results are cached, keyed by the
 * case's files, buildah's version, the base images' digests and the parents' keys, so re-runs are fast.
 */

export const cacheRoot: string = resolve(process.env["KILN_CACHE"] ?? join(homedir(), ".cache", "kiln"));
const repoRoot = resolve(import.meta.dirname, "..", "..");

/** Bump when the way results are produced changes, so old cache entries are not used. */
const HARNESS_VERSION = "1";
/** The Docker Hub names test/images/build pushes, as the mirror serves them. */
const BASE_IMAGES = [
  "library/busybox:latest",
  "library/debian:bookworm-slim",
  "library/gcc:bookworm",
] as const;

export type OracleResult = OracleImage | OracleFailure;

export interface OracleImage {
  readonly kind: "image";
  /** OCI layout with the image under ref `latest`. */
  readonly layout: string;
  /** `dir:` export in Docker format (its config keeps Healthcheck, OnBuild and Shell). */
  readonly dockerDir: string;
  /** Wall time of `buildah bud` when the result was built. */
  readonly budSeconds: number;
  readonly cached: boolean;
  readonly key: string;
}

export interface OracleFailure {
  readonly kind: "failure";
  readonly exitCode: number;
  /** buildah's last `Error: ...` line. */
  readonly error: string;
  readonly budSeconds: number;
  readonly cached: boolean;
  readonly key: string;
}

const ResultJson = z.object({
  harness: z.literal(HARNESS_VERSION),
  buildah: z.string(),
  case: z.string(),
  dockerfile: z.string(),
  budSeconds: z.number(),
  exportSeconds: z.number(),
  outcome: z.discriminatedUnion("kind", [
    z.object({ kind: z.literal("image") }),
    z.object({ kind: z.literal("failure"), exitCode: z.number().int(), error: z.string() }),
  ]),
});
type ResultJson = z.infer<typeof ResultJson>;

export interface Oracle {
  /** `host:port` of the registry that serves Docker Hub names (a builder under test pulls through it too). */
  readonly mirror: string;
  readonly buildahVersion: string;
  /** Manifest digests of the base images, by Docker Hub name. */
  readonly baseDigests: Readonly<Record<string, string>>;
  /** Builds a case (its `oracleDockerfile` when it has one, unless `dockerfile` is given), or reads the cache. */
  build(c: CorpusCase, options?: { readonly dockerfile?: string }): Promise<OracleResult>;
  close(): Promise<void>;
}

/** Starts the mirror registry, pushes the base images into it (building them once) and prepares buildah. */
export async function startOracle(cases: readonly CorpusCase[]): Promise<Oracle> {
  const registry = await startRegistry();
  try {
    await runCommand(join(repoRoot, "test", "images", "build"), [registry.host]);
    const baseDigests: Record<string, string> = {};
    for (const name of BASE_IMAGES) {
      baseDigests[name] = (
        await skopeoInspect("--tls-verify=false", `docker://${registry.host}/${name}`)
      ).Digest;
    }
    const buildah = await createBuildah({
      storageDir: join(cacheRoot, "buildah"),
      dockerHubMirror: registry.host,
    });
    const buildahVersion = await buildah.version();
    return new CorpusOracle(registry, buildah, buildahVersion, baseDigests, cases);
  } catch (err) {
    await registry.close();
    throw err;
  }
}

class CorpusOracle implements Oracle {
  readonly #registry: RunningRegistry;
  readonly #buildah: Buildah;
  readonly #cases: ReadonlyMap<string, CorpusCase>;
  readonly #results = new Map<string, Promise<OracleResult>>();
  readonly #pushed = new Map<string, Promise<void>>();
  #pulled: Promise<void> | undefined;
  readonly buildahVersion: string;
  readonly baseDigests: Readonly<Record<string, string>>;

  constructor(
    registry: RunningRegistry,
    buildah: Buildah,
    buildahVersion: string,
    baseDigests: Readonly<Record<string, string>>,
    cases: readonly CorpusCase[],
  ) {
    this.#registry = registry;
    this.#buildah = buildah;
    this.buildahVersion = buildahVersion;
    this.baseDigests = baseDigests;
    this.#cases = new Map(cases.map((c) => [c.name, c]));
  }

  get mirror(): string {
    return this.#registry.host;
  }

  build(c: CorpusCase, options: { readonly dockerfile?: string } = {}): Promise<OracleResult> {
    const dockerfile = options.dockerfile ?? c.spec.oracleDockerfile ?? c.spec.dockerfile;
    const id = `${c.name}\0${dockerfile}`;
    let result = this.#results.get(id);
    if (result === undefined) {
      result = this.#build(c, dockerfile);
      this.#results.set(id, result);
    }
    return result;
  }

  async #build(c: CorpusCase, dockerfile: string): Promise<OracleResult> {
    const parentKeys: string[] = [];
    for (const name of c.spec.dependsOn ?? []) {
      const parent = this.#cases.get(name);
      if (parent === undefined) throw new Error(`case ${c.name} depends on unknown case ${name}`);
      const built = await this.build(parent);
      if (built.kind !== "image") throw new Error(`case ${c.name} depends on ${name}, which did not build`);
      await this.#pushParent(parent, built);
      parentKeys.push(built.key);
    }
    const key = createHash("sha256")
      .update(
        JSON.stringify([
          HARNESS_VERSION,
          this.buildahVersion,
          this.baseDigests,
          await hashCase(c),
          dockerfile,
          parentKeys,
        ]),
      )
      .digest("hex")
      .slice(0, 24);
    const dir = join(cacheRoot, "oracle", c.name, key);
    const cached = await readResult(dir);
    if (cached !== undefined) return toResult(dir, key, cached, true);
    const written = await this.#buildInto(c, dockerfile, dir);
    return toResult(dir, key, written, false);
  }

  /** Builds into a fresh folder and renames it into place, so a cache entry is complete or absent. */
  async #buildInto(c: CorpusCase, dockerfile: string, dir: string): Promise<ResultJson> {
    this.#pulled ??= this.#pullBases();
    await this.#pulled;
    const work = `${dir}.${randomUUID()}.tmp`;
    const stage = await mkdtemp(join(tmpdir(), `kiln-oracle-${c.name}-`));
    const tag = `localhost/kiln-oracle/${c.name}:${randomUUID().slice(0, 8)}`;
    try {
      await mkdir(work, { recursive: true });
      const staged = await stageCase(c, join(stage, c.name));
      const bud = await this.#buildah.bud({
        dockerfile: join(staged, dockerfile),
        context: join(staged, c.spec.context),
        tag,
        ...(c.spec.buildArgs ? { buildArgs: c.spec.buildArgs } : {}),
        ...(c.spec.target !== undefined ? { target: c.spec.target } : {}),
      });
      const started = performance.now();
      if (bud.ok) {
        await this.#buildah.push(tag, `oci:${join(work, "oci")}:latest`);
        await this.#buildah.push(tag, `dir:${join(work, "docker")}`, { format: "v2s2" });
        // Only a parent's Docker export is pushed again; the others are kept for their config.
        if (c.spec.pushedTo === undefined) await dropLayers(join(work, "docker"));
      }
      const result: ResultJson = {
        harness: HARNESS_VERSION,
        buildah: this.buildahVersion,
        case: c.name,
        dockerfile,
        budSeconds: round(bud.seconds),
        exportSeconds: round((performance.now() - started) / 1000),
        outcome: bud.ok
          ? { kind: "image" }
          : { kind: "failure", exitCode: bud.exitCode, error: bud.error || bud.output.slice(-2000) },
      };
      await writeFile(join(work, "result.json"), `${JSON.stringify(result, null, 1)}\n`);
      await rename(work, dir).catch(async (err: NodeJS.ErrnoException) => {
        // Another test process built the same key meanwhile; its entry is as good as this one.
        if (err.code !== "ENOTEMPTY" && err.code !== "EEXIST") throw err;
      });
      return result;
    } finally {
      await this.#buildah.remove(tag);
      await rm(work, { recursive: true, force: true });
      await rm(stage, { recursive: true, force: true });
    }
  }

  /** Pulls the bases before the first build, so `buildah bud` times measure builds, not downloads. */
  async #pullBases(): Promise<void> {
    for (const name of BASE_IMAGES) await this.#buildah.pull(`docker.io/${name}`);
  }

  /** Pushes a parent case's image (Docker format: OnBuild survives) to the Docker Hub name in its `pushedTo`. */
  #pushParent(parent: CorpusCase, built: OracleImage): Promise<void> {
    let pushed = this.#pushed.get(parent.name);
    if (pushed === undefined) {
      const to = parent.spec.pushedTo;
      if (to === undefined) throw new Error(`case ${parent.name} is a parent but has no pushedTo`);
      pushed = skopeo(
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        `dir:${built.dockerDir}`,
        `docker://${this.mirror}/${dockerHubPath(to)}`,
      ).then(() => undefined);
      this.#pushed.set(parent.name, pushed);
    }
    return pushed;
  }

  async close(): Promise<void> {
    await this.#registry.close();
  }
}

/** `x`, `docker.io/x:t`, `org/x` → the repository path and tag on the Docker Hub mirror (`library/x:latest`). */
export function dockerHubPath(name: string): string {
  let rest = name.replace(/^(docker\.io|index\.docker\.io)\//, "");
  const first = rest.split("/")[0]!;
  if (rest.includes("/") && (first.includes(".") || first.includes(":") || first === "localhost")) {
    throw new Error(`${name} is not a Docker Hub name; the oracle's mirror serves only those`);
  }
  if (!rest.includes("/")) rest = `library/${rest}`;
  const last = rest.slice(rest.lastIndexOf("/") + 1);
  return last.includes(":") || last.includes("@") ? rest : `${rest}:latest`;
}

async function dropLayers(dockerDir: string): Promise<void> {
  const manifest = JSON.parse(await readFile(join(dockerDir, "manifest.json"), "utf8")) as {
    layers: { digest: string }[];
  };
  for (const l of manifest.layers) await rm(join(dockerDir, l.digest.slice("sha256:".length)));
}

async function readResult(dir: string): Promise<ResultJson | undefined> {
  let text: string;
  try {
    text = await readFile(join(dir, "result.json"), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  const parsed = ResultJson.safeParse(JSON.parse(text));
  return parsed.success ? parsed.data : undefined;
}

function toResult(dir: string, key: string, r: ResultJson, cached: boolean): OracleResult {
  if (r.outcome.kind === "failure") {
    const { exitCode, error } = r.outcome;
    return { kind: "failure", exitCode, error, budSeconds: r.budSeconds, cached, key };
  }
  return {
    kind: "image",
    layout: join(dir, "oci"),
    dockerDir: join(dir, "docker"),
    budSeconds: r.budSeconds,
    cached,
    key,
  };
}

const round = (s: number) => Math.round(s * 1000) / 1000;

/** The oracle's image as comparable values, buildah's own additions removed (see the corpus README). */
export async function readOracleImage(result: OracleImage): Promise<ComparableImage> {
  const image = await readComparableImage(result.layout, {
    ref: "latest",
    dockerConfigDir: result.dockerDir,
  });
  return withoutBuildahStubs(image);
}

/**
 * Mount stubs buildah leaves in images whose base lacks them, which BuildKit removes after each RUN: an
 * empty /etc/hosts of mode 0755 (the busybox base's own /etc/hosts is empty 0644 and stays) and an
 * empty /run directory (busybox-based cases that ran a RUN).
 */
export function withoutBuildahStubs(image: ComparableImage): ComparableImage {
  const tree = new Map(image.tree);
  const hosts = tree.get("/etc/hosts");
  if (hosts?.type === "file" && hosts.size === 0 && hosts.mode === 0o755) tree.delete("/etc/hosts");
  const run = tree.get("/run");
  const runIsEmpty = ![...tree.keys()].some((p) => p.startsWith("/run/"));
  if (run?.type === "dir" && run.mode === 0o755 && run.uid === 0 && run.gid === 0 && runIsEmpty)
    tree.delete("/run");
  return { ...image, tree };
}
