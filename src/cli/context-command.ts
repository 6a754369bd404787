import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { InvalidInputError } from "../errors.ts";
import { BuildContext, parseIgnoreFile } from "../executor/context.ts";
import { planContextCopy } from "../executor/copy.ts";
import { ImageTree } from "../executor/image-tree.ts";
import type { Logger } from "../log.ts";
import type { LayerEntry } from "../oci/layer-entry.ts";
import { formatReference, parseReference, withDigest } from "../oci/reference.ts";
import { createRegistryClient } from "../registry/client.ts";
import { pushContext } from "../source/context-artifact.ts";

export const CONTEXT_USAGE = `usage: kiln context push [options] DIR REF

Uploads DIR, less what its .dockerignore excludes, as an OCI artifact an ImageBuild can build from
(spec.source.oci.image), and prints REF@sha256:… . The same files give the same digest.

  --insecure-registry HOST    use plain HTTP for HOST (repeatable)
  --authfile FILE             registry credentials (a .dockerconfigjson / config.json)
  --ca-file FILE              trust this CA bundle for the registry, besides the system's (repeatable)`;

/** `kiln context push DIR REF`. */
export async function runContextCommand(args: readonly string[], log: Logger): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === "--help" || sub === "-h" || rest.includes("--help") || rest.includes("-h")) {
    process.stdout.write(`${CONTEXT_USAGE}\n`);
    return 0;
  }
  if (sub !== "push") {
    throw new InvalidInputError(
      `${sub === undefined ? "no subcommand" : `unknown subcommand ${JSON.stringify(sub)}`}; usage: kiln context push [options] DIR REF (see kiln context --help)`,
    );
  }
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(rest);
  } catch (err) {
    throw new InvalidInputError(`${(err as Error).message} (see kiln context --help)`, { cause: err });
  }
  const { values, positionals } = parsed;
  const [dir, target] = positionals;
  if (positionals.length !== 2 || dir === undefined || target === undefined) {
    throw new InvalidInputError("expected a folder and a reference: kiln context push DIR REF");
  }
  const ref = parseReference(target);
  const entries = contextEntries(dir);
  const reg = await createRegistryClient({
    insecure: values["insecure-registry"] ?? [],
    caFiles: values["ca-file"] ?? [],
    ...(values.authfile !== undefined ? { authfile: values.authfile } : {}),
    logger: log,
  });
  try {
    const pushed = await pushContext(entries, ref, reg);
    log.info({ digest: pushed.digest, size: pushed.size, files: entries.length }, "Pushed build context");
    process.stdout.write(`${formatReference(withDigest(ref, pushed.digest))}\n`);
    return 0;
  } finally {
    await reg.close();
  }
}

/**
 * The context's files as a build reads them, through the same `COPY . /` that a build of them would plan:
 * .dockerignore applied, modes kept, owners 0:0, symlinks and hardlinks as they are. The Dockerfile and
 * .dockerignore go along even when excluded, as the docker CLI sends them: the build needs both.
 */
export function contextEntries(dir: string): LayerEntry[] {
  const ignoreFile = join(dir, ".dockerignore");
  const patterns = existsSync(ignoreFile) ? parseIgnoreFile(readFileSync(ignoreFile, "utf8")) : [];
  const ctx = new BuildContext(dir, [...patterns, "!.dockerignore", "!Dockerfile"]);
  const op = {
    from: { kind: "context" as const },
    sources: ["."],
    dest: "/",
    exclude: [],
    extract: false,
    parents: false,
  };
  return planContextCopy(op, ctx, new ImageTree());
}

function parse(args: readonly string[]) {
  return parseArgs({
    args: [...args],
    allowPositionals: true,
    strict: true,
    options: {
      "insecure-registry": { type: "string", multiple: true },
      authfile: { type: "string" },
      "ca-file": { type: "string", multiple: true },
    },
  });
}
