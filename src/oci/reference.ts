import { InvalidInputError } from "../errors.ts";
import type { Digest } from "./digest.ts";
import { isDigest } from "./digest.ts";

/**
 * An image reference, normalised the way Docker's distribution/reference does it: the registry is always
 * present (`docker.io` when none is named) and official Docker Hub images carry their `library/` prefix.
 */
export interface Reference {
  readonly registry: string;
  readonly repository: string;
  readonly tag?: string;
  readonly digest?: Digest;
}

export const DEFAULT_REGISTRY = "docker.io";
export const DEFAULT_TAG = "latest";
/** Docker Hub's other names; a reference using them means the same images as `docker.io`. */
const DOCKER_HUB_ALIASES = new Set(["index.docker.io", "registry-1.docker.io"]);
const NAME_TOTAL_LENGTH_MAX = 255;

// The grammar of distribution/reference's regexp.go, anchored.
const PATH_COMPONENT = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
const REPOSITORY_RE = new RegExp(`^${PATH_COMPONENT}(?:/${PATH_COMPONENT})*$`);
const DOMAIN_COMPONENT = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const REGISTRY_RE = new RegExp(
  `^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?$`,
);
const TAG_RE = /^\w[\w.-]{0,127}$/;
const DIGEST_LIKE_RE = /^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$/;
const IDENTIFIER_RE = /^[a-f0-9]{64}$/;

function invalid(s: string, why: string): InvalidInputError {
  return new InvalidInputError(`invalid reference ${JSON.stringify(s)}: ${why}`);
}

/**
 * Parses `[registry/]repository[:tag][@digest]`. A name without tag or digest gets the tag `latest`;
 * a name with a digest and no tag keeps no tag. The first path component is a registry only if it holds
 * `.` or `:`, is `localhost`, or has upper-case letters (a repository never does).
 */
export function parseReference(s: string): Reference {
  if (s === "") throw invalid(s, "empty");
  if (IDENTIFIER_RE.test(s)) throw invalid(s, "a 64-character hex string is an image ID, not a name");

  let rest = s;
  let digest: Digest | undefined;
  const at = rest.indexOf("@");
  if (at !== -1) {
    const d = rest.slice(at + 1);
    if (!DIGEST_LIKE_RE.test(d)) throw invalid(s, `digest ${JSON.stringify(d)} is not algorithm:hex`);
    if (!isDigest(d))
      throw invalid(s, `digest ${JSON.stringify(d)} must be sha256:<64 hex> or sha512:<128 hex>`);
    digest = d;
    rest = rest.slice(0, at);
  }

  let tag: string | undefined;
  const colon = rest.lastIndexOf(":");
  if (colon > rest.lastIndexOf("/")) {
    tag = rest.slice(colon + 1);
    if (!TAG_RE.test(tag)) {
      throw invalid(
        s,
        `tag ${JSON.stringify(tag)} must be 1-128 of [A-Za-z0-9_.-], not starting with . or -`,
      );
    }
    rest = rest.slice(0, colon);
  }

  const { registry, repository } = splitName(s, rest);
  if (!REGISTRY_RE.test(registry))
    throw invalid(s, `registry ${JSON.stringify(registry)} is not a host[:port]`);
  if (repository.toLowerCase() !== repository) throw invalid(s, "repository must be lowercase");
  if (!REPOSITORY_RE.test(repository)) {
    throw invalid(
      s,
      `repository ${JSON.stringify(repository)} must be /-separated components of [a-z0-9] joined by ".", "_", "__" or "-"`,
    );
  }
  const nameLength = registry.length + 1 + repository.length;
  if (nameLength > NAME_TOTAL_LENGTH_MAX) {
    throw invalid(s, `name is ${nameLength} characters, longer than ${NAME_TOTAL_LENGTH_MAX}`);
  }

  if (tag === undefined && digest === undefined) tag = DEFAULT_TAG;
  return build(registry, repository, tag, digest);
}

function splitName(s: string, name: string): { registry: string; repository: string } {
  if (name === "") throw invalid(s, "repository is empty");
  const slash = name.indexOf("/");
  const first = name.slice(0, slash);
  const isRegistry =
    slash !== -1 && (/[.:]/.test(first) || first === "localhost" || first.toLowerCase() !== first);
  let registry = isRegistry ? first : DEFAULT_REGISTRY;
  let repository = isRegistry ? name.slice(slash + 1) : name;
  if (DOCKER_HUB_ALIASES.has(registry)) registry = DEFAULT_REGISTRY;
  if (registry === DEFAULT_REGISTRY && !repository.includes("/")) repository = `library/${repository}`;
  return { registry, repository };
}

function build(registry: string, repository: string, tag?: string, digest?: Digest): Reference {
  return Object.freeze({
    registry,
    repository,
    ...(tag !== undefined ? { tag } : {}),
    ...(digest !== undefined ? { digest } : {}),
  });
}

/** The canonical form `registry/repository[:tag][@digest]`, which parseReference reads back unchanged. */
export function formatReference(r: Reference): string {
  let s = `${r.registry}/${r.repository}`;
  if (r.tag !== undefined) s += `:${r.tag}`;
  if (r.digest !== undefined) s += `@${r.digest}`;
  return s;
}

export function withTag(r: Reference, tag: string): Reference {
  if (!TAG_RE.test(tag)) throw invalid(formatReference(r), `tag ${JSON.stringify(tag)} is not a valid tag`);
  return build(r.registry, r.repository, tag, r.digest);
}

/** Pins the reference to a digest; the tag stays as a note of where the digest came from. */
export function withDigest(r: Reference, d: Digest): Reference {
  return build(r.registry, r.repository, r.tag, d);
}
