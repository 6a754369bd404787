import { parseArgs } from "node:util";
import { parseGoDuration } from "../dockerfile/go-duration.ts";
import { InvalidInputError } from "../errors.ts";

/** Where `kiln build` writes its result. */
export type Output = { readonly kind: "oci"; readonly dir: string; readonly ref: string };

export interface BuildOptions {
  readonly context: string;
  readonly spec?: string;
  readonly dockerfile?: string;
  readonly outputs: readonly Output[];
  readonly push: readonly string[];
  readonly digestFile?: string;
  readonly buildArgs: Readonly<Record<string, string>>;
  readonly target?: string;
  readonly platforms: readonly string[];
  readonly insecureRegistries: readonly string[];
  readonly mirrors: readonly string[];
  readonly authfile?: string;
  readonly caFiles: readonly string[];
  readonly timestamp?: number;
  /** RUN --mount=type=secret sources: id → file. */
  readonly secrets: Readonly<Record<string, string>>;
  /** Registry repository of the per-step cache. */
  readonly cacheRepo?: string;
  readonly cacheTtlMs: number;
}

/** A week: long enough for a day's rebuilds, short enough that base image fixes arrive. */
const DEFAULT_CACHE_TTL_MS = 7 * 24 * 3600 * 1000;

export const BUILD_USAGE = `usage: kiln build (--spec FILE | -f Dockerfile) [options] CONTEXT

  --spec FILE                 declarative layer spec (YAML)
  -f, --file FILE             Dockerfile
  --output oci:DIR[:REF]      write the image into an OCI image layout (REF defaults to latest)
  --digest-file FILE          write the image (or index) digest to FILE
  --push REF                  push the image to a registry (repeatable)
  --build-arg K=V             Dockerfile build argument (repeatable)
  --target STAGE              Dockerfile stage to build
  --platform P[,P...]         platforms to build (os/arch[/variant])
  --insecure-registry HOST    use plain HTTP for HOST (repeatable)
  --registry-mirror FROM=TO   pull FROM's images through the mirror TO (repeatable)
  --authfile FILE             registry credentials (a .dockerconfigjson / config.json)
  --ca-file FILE              trust this CA bundle for registries, besides the system's (repeatable)
  --timestamp SECONDS         file mtimes and creation time (default: SOURCE_DATE_EPOCH or 0)
  --secret id=ID,src=FILE     a secret for RUN --mount=type=secret (repeatable)
  --cache-repo REF            per-step cache of RUN layers in this registry repository
  --cache-ttl DURATION        cached steps older than this are run again (default 168h)`;

/** Parses `kiln build` arguments into options; bad input is an InvalidInputError that says what to fix. */
export function parseBuildOptions(args: readonly string[], sourceDateEpoch?: number): BuildOptions {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(args);
  } catch (err) {
    throw new InvalidInputError(`${(err as Error).message} (see kiln build --help)`, { cause: err });
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 1) {
    throw new InvalidInputError(
      `expected exactly one build context directory, got ${positionals.length} (see kiln build --help)`,
    );
  }
  if ((values.spec === undefined) === (values.file === undefined)) {
    throw new InvalidInputError("give exactly one of --spec FILE or -f Dockerfile (see kiln build --help)");
  }
  const timestamp = values.timestamp !== undefined ? parseTimestamp(values.timestamp) : sourceDateEpoch;
  return {
    context: positionals[0]!,
    ...(values.spec !== undefined ? { spec: values.spec } : {}),
    ...(values.file !== undefined ? { dockerfile: values.file } : {}),
    outputs: (values.output ?? []).map(parseOutput),
    push: values.push ?? [],
    ...(values["digest-file"] !== undefined ? { digestFile: values["digest-file"] } : {}),
    buildArgs: Object.fromEntries((values["build-arg"] ?? []).map((kv) => splitPair(kv, "--build-arg"))),
    ...(values.target !== undefined ? { target: values.target } : {}),
    platforms: (values.platform ?? []).flatMap((p) => p.split(",")).filter((p) => p !== ""),
    insecureRegistries: values["insecure-registry"] ?? [],
    mirrors: values["registry-mirror"] ?? [],
    ...(values.authfile !== undefined ? { authfile: values.authfile } : {}),
    caFiles: values["ca-file"] ?? [],
    ...(timestamp !== undefined ? { timestamp } : {}),
    secrets: Object.fromEntries((values.secret ?? []).map(parseSecret)),
    ...(values["cache-repo"] !== undefined ? { cacheRepo: values["cache-repo"] } : {}),
    cacheTtlMs: values["cache-ttl"] !== undefined ? parseTtl(values["cache-ttl"]) : DEFAULT_CACHE_TTL_MS,
  };
}

/** `id=ID,src=FILE` (also `source=`), as `docker build --secret` takes it. */
function parseSecret(s: string): [string, string] {
  const fields = new Map(s.split(",").map((kv) => splitPair(kv, "--secret")));
  const id = fields.get("id");
  const src = fields.get("src") ?? fields.get("source");
  if (id === undefined || src === undefined || id === "" || src === "" || id.includes("/")) {
    throw new InvalidInputError(`--secret ${JSON.stringify(s)}: expected id=ID,src=FILE`);
  }
  return [id, src];
}

function parseTtl(s: string): number {
  const ns = parseGoDuration(s);
  if (typeof ns === "string" || ns <= 0) {
    throw new InvalidInputError(`--cache-ttl ${JSON.stringify(s)}: expected a positive duration like 24h`);
  }
  return ns / 1e6;
}

function parse(args: readonly string[]) {
  return parseArgs({
    args: [...args],
    allowPositionals: true,
    strict: true,
    options: {
      spec: { type: "string" },
      file: { type: "string", short: "f" },
      output: { type: "string", short: "o", multiple: true },
      "digest-file": { type: "string" },
      push: { type: "string", multiple: true },
      "build-arg": { type: "string", multiple: true },
      target: { type: "string" },
      platform: { type: "string", multiple: true },
      "insecure-registry": { type: "string", multiple: true },
      "registry-mirror": { type: "string", multiple: true },
      authfile: { type: "string" },
      "ca-file": { type: "string", multiple: true },
      timestamp: { type: "string" },
      secret: { type: "string", multiple: true },
      "cache-repo": { type: "string" },
      "cache-ttl": { type: "string" },
    },
  });
}

/** `oci:DIR[:REF]`, as skopeo and buildah spell an OCI layout destination. */
export function parseOutput(s: string): Output {
  const m = /^oci:([^:]+)(?::(.+))?$/.exec(s);
  if (!m) throw new InvalidInputError(`--output ${JSON.stringify(s)}: expected oci:DIR[:REF]`);
  return { kind: "oci", dir: m[1]!, ref: m[2] ?? "latest" };
}

function splitPair(kv: string, flag: string): [string, string] {
  const i = kv.indexOf("=");
  if (i <= 0) throw new InvalidInputError(`${flag} ${JSON.stringify(kv)}: expected KEY=VALUE`);
  return [kv.slice(0, i), kv.slice(i + 1)];
}

function parseTimestamp(s: string): number {
  if (!/^\d+$/.test(s))
    throw new InvalidInputError(`--timestamp ${JSON.stringify(s)}: expected seconds since the epoch`);
  return Number(s);
}
