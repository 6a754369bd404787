import { InvalidInputError } from "../errors.ts";

/** Where pulls of one registry's images go first. */
export interface MirrorRule {
  /** `host[:port][/path-prefix]`, tried in order. */
  readonly mirrors: readonly string[];
  /** When every mirror fails, try the registry itself (the default), or fail. */
  readonly fallbackToOrigin: boolean;
}

/** Keyed by the registry as references name it (`docker.io`, `quay.io`, `host:port`). */
export type Mirrors = Readonly<Record<string, MirrorRule>>;

/** A place a repository can be read from: a host and the repository's name there. */
export interface Endpoint {
  readonly host: string;
  readonly repository: string;
  /** A mirror of the registry, or (false) the registry itself. */
  readonly mirror: boolean;
}

/** Docker Hub's API lives on another host than the name references use. */
export function registryHost(registry: string): string {
  return registry === "docker.io" ? "registry-1.docker.io" : registry;
}

/**
 * Reads `registry=mirror[,mirror…]` specs, e.g. `docker.io=127.0.0.1:5000`. Specs for the same registry
 * append their mirrors in order.
 */
export function parseMirrors(
  specs: readonly string[],
  options: { fallbackToOrigin?: boolean } = {},
): Mirrors {
  const rules: Record<string, MirrorRule> = {};
  for (const spec of specs) {
    const eq = spec.indexOf("=");
    const registry = spec.slice(0, eq).trim();
    const mirrors = spec
      .slice(eq + 1)
      .split(",")
      .map((m) => m.trim().replace(/\/+$/, ""))
      .filter((m) => m !== "");
    if (eq <= 0 || mirrors.length === 0 || mirrors.some((m) => /^[a-z]+:\/\//i.test(m))) {
      throw new InvalidInputError(
        `mirror ${JSON.stringify(spec)} must look like registry=host[:port][/prefix][,…]`,
      );
    }
    rules[registry] = {
      mirrors: [...(rules[registry]?.mirrors ?? []), ...mirrors],
      fallbackToOrigin: options.fallbackToOrigin ?? true,
    };
  }
  return rules;
}

/** Where to read `registry/repository` from, in order: its mirrors, then (unless told not to) the origin. */
export function pullEndpoints(mirrors: Mirrors, registry: string, repository: string): Endpoint[] {
  const rule = mirrors[registry];
  const viaMirrors = (rule?.mirrors ?? []).map((m) => {
    const slash = m.indexOf("/");
    return slash === -1
      ? { host: m, repository, mirror: true }
      : { host: m.slice(0, slash), repository: `${m.slice(slash + 1)}/${repository}`, mirror: true };
  });
  const origin = { host: registryHost(registry), repository, mirror: false };
  return rule === undefined || rule.fallbackToOrigin ? [...viaMirrors, origin] : viaMirrors;
}
