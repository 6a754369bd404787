import type { ComparableConfig, ComparableImage, FileNode } from "../helpers/image-tree.ts";
import { ANY_NODE } from "../helpers/image-tree.ts";
import type { KnownDivergence } from "./corpus.ts";

/**
 * The image Docker/BuildKit would give: buildah's image with the Docker value put in at each place a case's
 * `knownBuildahDivergences` names. kiln follows Docker, so it is compared with this. Each place must hold
 * buildah's recorded value first, so a stale entry fails loudly instead of hiding a real difference.
 *
 * Places: `/path` (value `"present"`: must exist, metadata unknown; `null`: must be absent; an object: the
 * node, or the fields of buildah's node that differ, such as `{ "sha256": …, "size": … }`), `Env NAME`,
 * `Label KEY`, a config field (`Entrypoint`, ...; for the sets `ExposedPorts` and `Volumes` only the keys
 * that differ), and `COPY destination` (the subtree at buildah's path moves to Docker's path).
 */
export function dockerExpectation(
  oracle: ComparableImage,
  divergences: readonly KnownDivergence[],
): ComparableImage {
  const tree = new Map(oracle.tree);
  let config: Record<string, unknown> = { ...oracle.config };
  for (const { affects } of divergences) {
    for (const [place, values] of Object.entries(affects ?? {})) {
      const docker = "docker" in values ? values.docker : values.buildkit;
      const fail = (why: string): never => {
        throw new Error(`knownBuildahDivergences ${JSON.stringify(place)}: ${why}`);
      };
      if (place.startsWith("/")) {
        const has = tree.has(place);
        if (has !== (values.buildah !== null)) fail(`buildah's image ${has ? "has" : "lacks"} the path`);
        if (docker === null) tree.delete(place);
        else if (docker === "present") tree.set(place, ANY_NODE);
        else if (typeof docker === "object") tree.set(place, { ...tree.get(place), ...docker } as FileNode);
        else fail(`expected "present", null or the fields that differ, got ${JSON.stringify(docker)}`);
      } else if (place === "COPY destination") {
        if (typeof values.buildah !== "string" || typeof docker !== "string") fail("expected two paths");
        moveSubtree(tree, values.buildah as string, docker as string, fail);
      } else if (place.startsWith("Env ")) {
        const name = place.slice("Env ".length);
        const env = (config["Env"] as string[] | undefined) ?? [];
        const i = env.findIndex((kv) => kv.startsWith(`${name}=`));
        const current = i < 0 ? null : env[i]!.slice(name.length + 1);
        if (current !== values.buildah) fail(`buildah's image has ${JSON.stringify(current)}`);
        const next = docker === null ? [] : [`${name}=${docker as string}`];
        config = { ...config, Env: i < 0 ? [...env, ...next] : env.toSpliced(i, 1, ...next) };
      } else if (place.startsWith("Label ")) {
        const key = place.slice("Label ".length);
        const labels = { ...((config["Labels"] as Record<string, string> | undefined) ?? {}) };
        if ((labels[key] ?? null) !== values.buildah)
          fail(`buildah's image has ${JSON.stringify(labels[key])}`);
        if (docker === null) delete labels[key];
        else labels[key] = docker as string;
        config = { ...config, Labels: labels };
      } else if (place === "ExposedPorts" || place === "Volumes") {
        // Sets: the entry names only the keys that differ.
        const keys = (config[place] as string[] | undefined) ?? [];
        const removed = values.buildah as string[];
        const missing = removed.filter((k) => !keys.includes(k));
        if (missing.length > 0) fail(`buildah's image lacks ${missing.join(", ")}`);
        const kept = keys.filter((k) => !removed.includes(k));
        config = { ...config, [place]: [...kept, ...(docker as string[])].sort() };
      } else if (place in config || values.buildah === null) {
        const current = config[place] ?? null;
        if (JSON.stringify(current) !== JSON.stringify(values.buildah))
          fail(`buildah's image has ${JSON.stringify(current)}`);
        config = { ...config, [place]: docker };
      } else {
        fail("unknown kind of place");
      }
    }
  }
  return { tree, config: config as unknown as ComparableConfig };
}

function moveSubtree(
  tree: Map<string, FileNode>,
  from: string,
  to: string,
  fail: (why: string) => never,
): void {
  const moved = [...tree.entries()].filter(([p]) => p === from || p.startsWith(`${from}/`));
  if (moved.length === 0) fail(`buildah's image has no ${from}`);
  for (const [p] of moved) tree.delete(p);
  for (const [p, node] of moved) tree.set(to + p.slice(from.length), node);
}
