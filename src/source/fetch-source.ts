import { lstatSync, readlinkSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readdir, rename, rm, rmdir } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import type { Source } from "../api/image-build.ts";
import { InvalidInputError, NotFoundError, PathEscapeError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { resolveInRoot } from "../oci/root-path.ts";
import type { RegistryClientOptions } from "../registry/client.ts";
import { DEFAULT_RETRY, type RetryPolicy } from "../registry/retry.ts";
import { fetchGit } from "./git-source.ts";
import { newHttpAgent } from "./http-agent.ts";
import { fetchHttp } from "./http-source.ts";
import { writeInline } from "./inline-source.ts";
import { fetchOci } from "./oci-source.ts";

export interface FetchSourceOptions {
  /** The mounted folder of `git.secretRef`'s Secret: `username` + `password`, or `token`. */
  readonly gitSecretDir?: string;
  /** How `oci` sources are pulled: authfile or credentials, insecure registries, CAs. */
  readonly registry?: RegistryClientOptions;
  /** Tries for git and http fetches that fail for a temporary reason (connection, 5xx, 429). */
  readonly retry?: Partial<RetryPolicy>;
  readonly logger?: Logger;
}

/** What a fetch resolved: the one value that makes every later fetch identical, and the source with it. */
export interface FetchedSource {
  /**
   * git: the commit SHA the revision resolved to; http: the archive's sha256 (64 hex, as `http.sha256`);
   * oci: the manifest digest; inline: the sha256 of the files.
   */
  readonly pinned: string;
  /** The source pinned: `git.revision` the commit, `http.sha256` set, `oci.image` by digest. */
  readonly source: Source;
}

export type GitSource = NonNullable<Source["git"]>;
export type HttpSource = NonNullable<Source["http"]>;
export type OciSource = NonNullable<Source["oci"]>;
export type InlineSource = NonNullable<Source["inline"]>;

/**
 * Materialises `source` into `dir` (absent or empty): the whole source is fetched into a scratch folder
 * beside `dir`, then its `subPath` (which must stay inside it, symlinks included) becomes `dir`. Nothing is
 * left behind on failure.
 */
export async function fetchSource(
  source: Source,
  dir: string,
  options: FetchSourceOptions = {},
): Promise<FetchedSource> {
  const target = resolve(dir);
  await requireEmpty(target);
  await mkdir(dirname(target), { recursive: true });
  const scratch = await mkdtemp(`${target}.fetch-`);
  const retry = { ...DEFAULT_RETRY, ...options.retry };
  const dispatcher = newHttpAgent();
  try {
    let fetched: FetchedSource;
    let subPath: string | undefined;
    if (source.git) {
      fetched = await fetchGit(source.git, scratch, { ...options, retry, dispatcher });
      subPath = source.git.subPath;
    } else if (source.http) {
      fetched = await fetchHttp(source.http, scratch, { ...options, retry, dispatcher });
    } else if (source.oci) {
      fetched = await fetchOci(source.oci, scratch, options.registry ?? {});
      subPath = source.oci.subPath;
    } else if (source.inline) {
      fetched = await writeInline(source.inline, scratch);
    } else {
      throw new InvalidInputError("the source names none of git, oci, http or inline");
    }
    const rel = subPathIn(scratch, subPath);
    // mkdtemp made the scratch folder 0700; as the context's root it is an ordinary folder.
    if (rel === "") await chmod(scratch, 0o755);
    const root = join(scratch, rel);
    await rmdir(target).catch(() => {});
    await rename(root, target);
    options.logger?.info({ pinned: fetched.pinned }, "Fetched build context");
    return fetched;
  } finally {
    await dispatcher.close();
    await rm(scratch, { recursive: true, force: true });
  }
}

/** The folder `subPath` names inside the fetched tree, relative to it; it may not lead out. */
function subPathIn(root: string, subPath: string | undefined): string {
  if (subPath === undefined || subPath === "" || subPath === ".") return "";
  if (subPath.startsWith("/")) throw new PathEscapeError(subPath, "the source", "subPath must be relative");
  const readlink = (rel: string): string | undefined => {
    const abs = join(root, rel);
    return lstatSync(abs, { throwIfNoEntry: false })?.isSymbolicLink()
      ? readlinkSync(abs, "utf8")
      : undefined;
  };
  const rel = resolveInRoot(subPath, readlink, "strict", true, "the source");
  if (!lstatSync(join(root, rel), { throwIfNoEntry: false })?.isDirectory()) {
    throw new NotFoundError(`subPath ${JSON.stringify(subPath)} is not a directory of the source`);
  }
  return rel;
}

async function requireEmpty(dir: string): Promise<void> {
  const names = await readdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return [];
    throw err;
  });
  if (names.length > 0)
    throw new InvalidInputError(`${dir} is not empty; a source is fetched into an empty folder`);
}
