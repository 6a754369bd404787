import fs from "node:fs";
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import git, { type AuthCallback, type GitAuth, type HttpClient } from "isomorphic-git";
import { type Dispatcher, request } from "undici";
import { InvalidInputError, KilnError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { redactUrl } from "../registry/registry-error.ts";
import { type RetryPolicy, withRetry } from "../registry/retry.ts";
import type { FetchedSource, GitSource } from "./fetch-source.ts";
import { RevisionNotFoundError, SourceAuthError, SourceError } from "./source-error.ts";

export interface GitFetchOptions {
  /** The Secret's mounted folder: `username` and `password`, or `token` (with an optional `username`). */
  readonly gitSecretDir?: string;
  readonly retry: RetryPolicy;
  readonly dispatcher: Dispatcher;
  readonly logger?: Logger;
}

/** The username sent with a lone token: GitHub takes it for app and personal tokens, GitLab ignores it. */
const TOKEN_USERNAME = "x-access-token";
const FULL_SHA_RE = /^[0-9a-f]{40}$/;
const SHORT_SHA_RE = /^[0-9a-f]{4,39}$/;

/**
 * Checks the repository out into `dir` at one commit, without its `.git`, over smart HTTP(S) with
 * isomorphic-git (pure JavaScript: build pods run in bases that have no git). A branch, a tag or a full
 * SHA is fetched alone at depth 1; a short SHA, or a full one the server will not serve by itself, needs
 * the history and fetches every branch and tag.
 */
export async function fetchGit(
  spec: GitSource,
  dir: string,
  options: GitFetchOptions,
): Promise<FetchedSource> {
  if (!/^https?:\/\//.test(spec.url)) {
    throw new InvalidInputError(
      `git URL ${spec.url}: kiln clones over https:// or http:// only; ssh URLs are not supported`,
    );
  }
  const login = await readCredentials(options.gitSecretDir);
  const remote = {
    fs,
    http: undiciHttp(options.dispatcher),
    dir,
    url: spec.url,
    cache: {},
    ...(login !== undefined ? { onAuth: (() => login) as AuthCallback } : {}),
  };
  const url = redactUrl(spec.url);
  const commit = await withRetry(
    options.retry,
    async () => {
      await rm(join(dir, ".git"), { recursive: true, force: true });
      try {
        return await fetchCommit(remote, spec.revision, url);
      } catch (err) {
        throw gitError(err, url, login !== undefined);
      }
    },
    (err, attempt, delayMs) => options.logger?.warn({ err, attempt, delayMs }, "Retrying git fetch"),
  );
  try {
    await git.checkout({ ...remote, ref: commit, force: true });
  } catch (err) {
    throw new SourceError(`checking out ${commit} of ${url}: ${(err as Error).message}`, { cause: err });
  }
  await rm(join(dir, ".git"), { recursive: true, force: true });
  return { pinned: commit, source: { git: { ...spec, revision: commit } } };
}

type Remote = Parameters<typeof git.fetch>[0] & { readonly dir: string; readonly url: string };

/** Fetches what `revision` names and returns the commit it resolves to. */
async function fetchCommit(remote: Remote, revision: string | undefined, url: string): Promise<string> {
  await git.init({ fs, dir: remote.dir });
  await git.addRemote({ fs, dir: remote.dir, remote: "origin", url: remote.url });
  const refs = await git.listServerRefs({ ...remote, symrefs: true, peelTags: true });
  const named = namedRef(refs, revision);
  if (named !== undefined || (revision !== undefined && FULL_SHA_RE.test(revision))) {
    const want = named?.oid ?? (revision as string);
    try {
      await git.fetch({ ...remote, ref: want, singleBranch: true, depth: 1, tags: false });
      return await peelToCommit(remote, want, revision ?? "HEAD", url);
    } catch (err) {
      // A server may refuse to send a commit that is no branch or tag tip by itself ("not our ref").
      if (named !== undefined || err instanceof KilnError) throw err;
    }
  }
  if (revision === undefined || !(SHORT_SHA_RE.test(revision) || FULL_SHA_RE.test(revision))) {
    throw notFound(revision ?? "HEAD", url, refs);
  }
  const head = refs.find((r) => r.ref === "HEAD") ?? refs[0];
  if (head === undefined) throw notFound(revision, url, refs);
  await git.fetch({ ...remote, ref: head.ref, singleBranch: false, tags: true });
  let oid: string;
  try {
    oid = await git.expandOid({ fs, dir: remote.dir, oid: revision });
  } catch (err) {
    if ((err as { code?: string }).code === "AmbiguousError") {
      throw new InvalidInputError(
        `git revision ${revision} of ${url} names more than one object; give more digits`,
        {
          cause: err,
        },
      );
    }
    throw notFound(revision, url, refs, err);
  }
  return peelToCommit(remote, oid, revision, url);
}

type ServerRef = Awaited<ReturnType<typeof git.listServerRefs>>[number];

/** As `git rev-parse` looks a name up: the full ref, then a tag, then a branch; none is the remote's HEAD. */
function namedRef(refs: readonly ServerRef[], revision: string | undefined): ServerRef | undefined {
  const candidates =
    revision === undefined
      ? ["HEAD"]
      : revision.startsWith("refs/")
        ? [revision]
        : [`refs/tags/${revision}`, `refs/heads/${revision}`];
  for (const name of candidates) {
    const ref = refs.find((r) => r.ref === name);
    if (ref !== undefined) return ref;
  }
  return undefined;
}

/** An annotated tag is followed to the commit it tags; a tag of a tree or blob is no revision to build. */
async function peelToCommit(remote: Remote, oid: string, revision: string, url: string): Promise<string> {
  let current = oid;
  for (let depth = 0; depth < 10; depth++) {
    const { type, object } = await git.readObject({ fs, dir: remote.dir, oid: current, cache: remote.cache });
    if (type === "commit") return current;
    if (type !== "tag") break;
    current = (object as { object: string }).object;
  }
  throw new InvalidInputError(`git revision ${revision} of ${url} does not name a commit`);
}

function notFound(
  revision: string,
  url: string,
  refs: readonly ServerRef[],
  cause?: unknown,
): RevisionNotFoundError {
  const names = (prefix: string) =>
    refs
      .filter((r) => r.ref.startsWith(prefix))
      .map((r) => r.ref.slice(prefix.length))
      .slice(0, 10)
      .join(", ") || "none";
  return new RevisionNotFoundError(
    revision,
    `git revision ${revision} is no branch, tag or commit of ${url} (branches: ${names("refs/heads/")}; tags: ${names("refs/tags/")})`,
    { cause },
  );
}

/** isomorphic-git's errors as kiln's: which are the user's to fix, which a retry may cure. */
function gitError(err: unknown, url: string, hadLogin: boolean): unknown {
  if (err instanceof KilnError) return err;
  const e = err as { code?: string; message?: string; data?: { statusCode?: number; response?: string } };
  const status = e.data?.statusCode;
  if (e.code === "HttpError" && (status === 401 || status === 403)) {
    return new SourceAuthError(
      hadLogin
        ? `${url} refused the credentials of the git Secret (${status}); check its username and password or token`
        : `${url} asks for credentials (${status}); set source.git.secretRef to a Secret holding them`,
      { cause: err },
    );
  }
  if (e.code === "HttpError" && status === 404) {
    return new SourceError(`no git repository at ${url} (404)`, { cause: err });
  }
  if (e.code === "HttpError") {
    return new SourceError(`${url}: HTTP ${status}`, {
      cause: err,
      temporary: status === undefined || status >= 500 || status === 429 || status === 408,
    });
  }
  if (e.code === "NotFoundError") return new SourceError(`${url}: ${e.message}`, { cause: err });
  return new SourceError(`fetching ${url}: ${e.message ?? String(err)}`, {
    cause: err,
    temporary: isConnectionError(err),
  });
}

function isConnectionError(err: unknown): boolean {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && (code.startsWith("E") || code.startsWith("UND_ERR"))) return true;
  }
  return false;
}

async function readCredentials(dir: string | undefined): Promise<GitAuth | undefined> {
  if (dir === undefined) return undefined;
  const read = (name: string) =>
    readFile(join(dir, name), "utf8").then(
      (s) => s.replace(/\r?\n$/, ""),
      (err: NodeJS.ErrnoException) => {
        if (err.code === "ENOENT") return undefined;
        throw err;
      },
    );
  const [username, password, token] = await Promise.all([read("username"), read("password"), read("token")]);
  if (token !== undefined) return { username: username ?? TOKEN_USERNAME, password: token };
  if (username !== undefined && password !== undefined) return { username, password };
  throw new InvalidInputError(
    `the git Secret holds neither username and password nor token (files in ${dir}: need username+password or token)`,
  );
}

/** isomorphic-git's HTTP client on undici, kiln's one HTTP stack. */
function undiciHttp(dispatcher: Dispatcher): HttpClient {
  return {
    async request({ url, method = "GET", headers = {}, body }) {
      const res = await request(url, {
        dispatcher,
        method: method as Dispatcher.HttpMethod,
        headers,
        body: body === undefined ? null : Readable.from(body as AsyncIterable<Uint8Array>),
      });
      const flat: Record<string, string> = {};
      for (const [k, v] of Object.entries(res.headers)) {
        if (v !== undefined) flat[k] = Array.isArray(v) ? v.join(", ") : v;
      }
      return {
        url,
        method,
        statusCode: res.statusCode,
        statusMessage: String(res.statusCode),
        headers: flat,
        body: res.body as unknown as AsyncIterableIterator<Uint8Array>,
      };
    },
  };
}
