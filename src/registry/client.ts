import { createHash } from "node:crypto";
import { type Readable, Transform } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { DigestMismatchError, isTemporary } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Descriptor } from "../oci/descriptor.ts";
import { type Digest, digestAlgorithm, isDigest, sha256 } from "../oci/digest.ts";
import type { Blob } from "../oci/image.ts";
import {
  type ImageIndex,
  ImageIndexSchema,
  type ImageManifest,
  ImageManifestSchema,
} from "../oci/manifest.ts";
import { isIndexMediaType, MediaType } from "../oci/media-type.ts";
import type { Reference } from "../oci/reference.ts";
import { Authenticator, repositoryScope, type Scope } from "./auth.ts";
import { type CredentialStore, loadDockerConfig, normaliseRegistryKey } from "./docker-config.ts";
import { type Endpoint, type Mirrors, pullEndpoints, registryHost } from "./mirrors.ts";
import {
  type EndpointFailure,
  EndpointsFailedError,
  RegistryProtocolError,
  redactUrl,
} from "./registry-error.ts";
import { DEFAULT_RETRY, type RetryPolicy, retryDelayMs, withRetry } from "./retry.ts";
import {
  type Headers,
  type HttpRequest,
  type HttpResponse,
  header,
  Transport,
  type TransportOptions,
  unexpected,
} from "./transport.ts";

export interface RegistryClientOptions extends TransportOptions {
  /** A `.dockerconfigjson` / `config.json` file with registry logins. */
  readonly authfile?: string;
  /** Logins already read (e.g. from a mounted secret); merged over the authfile's. */
  readonly credentials?: CredentialStore;
  readonly mirrors?: Mirrors;
  readonly retry?: Partial<RetryPolicy>;
  /** Blob transfers running at once within one push or pull. */
  readonly concurrency?: number;
  /**
   * `monolithic` (default): POST, then one streamed PUT. `chunked`: PATCH in `chunkSize` pieces, for
   * registries or proxies that cap request bodies.
   */
  readonly uploadMode?: "monolithic" | "chunked";
  readonly chunkSize?: number;
  readonly logger?: Logger;
}

/** A manifest or index as the registry holds it: its exact bytes and the descriptor naming them. */
export interface FetchedManifest {
  readonly descriptor: Descriptor;
  readonly bytes: Buffer;
  readonly manifest: ImageManifest | ImageIndex;
}

export type RepositoryRef = Pick<Reference, "registry" | "repository">;

/** Every manifest type kiln reads, OCI first. */
const MANIFEST_ACCEPT = [
  MediaType.ImageIndex,
  MediaType.ImageManifest,
  MediaType.DockerManifestList,
  MediaType.DockerManifest,
].join(", ");
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const MAX_REDIRECTS = 5;
const DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024;

/** Counts of what the client did, for tests and benchmarks. */
export interface TransferStats {
  blobsUploaded: number;
  blobsMounted: number;
  blobsSkipped: number;
}

/**
 * The OCI distribution API on undici: manifests, blobs, uploads and mounts, with auth, retries,
 * redirects and mirrors handled below these methods.
 */
export class RegistryClient {
  readonly concurrency: number;
  readonly stats: TransferStats = { blobsUploaded: 0, blobsMounted: 0, blobsSkipped: 0 };
  readonly #transport: Transport;
  readonly #auth: Authenticator;
  readonly #retry: RetryPolicy;
  readonly #mirrors: Mirrors;
  readonly #uploadMode: "monolithic" | "chunked";
  readonly #chunkSize: number;
  readonly #log: Logger | undefined;

  constructor(options: RegistryClientOptions = {}) {
    this.#transport = new Transport(options);
    this.#retry = { ...DEFAULT_RETRY, ...options.retry };
    const store = options.credentials ?? new Map();
    this.#auth = new Authenticator(this.#transport, (host) => store.get(normaliseRegistryKey(host)), {
      retry: this.#retry,
    });
    this.#mirrors = options.mirrors ?? {};
    this.#uploadMode = options.uploadMode ?? "monolithic";
    this.#chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
    this.concurrency = options.concurrency ?? 4;
    this.#log = options.logger;
  }

  /** The retry policy this client runs with, for callers that repeat whole transfers (pull.ts). */
  get retryPolicy(): RetryPolicy {
    return this.#retry;
  }

  close(): Promise<void> {
    return this.#transport.close();
  }

  /** Reads a manifest or index by tag or digest, from a mirror when one is configured. */
  async getManifest(ref: Reference): Promise<FetchedManifest> {
    const id = ref.digest ?? ref.tag ?? "latest";
    return this.#fromEndpoints(ref, `manifest ${id}`, async (ep) => {
      const url = `${this.#base(ep.host)}/v2/${ep.repository}/manifests/${id}`;
      const req: HttpRequest = { method: "GET", url, headers: { accept: MANIFEST_ACCEPT } };
      const res = await this.#call(ep.host, [repositoryScope(ep.repository, ["pull"])], () => req, {
        ok: [200],
        retry: true,
        redirects: true,
      });
      const bytes = await readCapped(res, MAX_MANIFEST_BYTES);
      const digest = sha256(bytes);
      const expected = ref.digest ?? header(res, "docker-content-digest");
      if (expected !== undefined && isDigest(expected)) {
        const actual = `${digestAlgorithm(expected)}:${createHash(digestAlgorithm(expected)).update(bytes).digest("hex")}`;
        if (actual !== expected)
          throw new DigestMismatchError(`manifest ${ep.repository}@${id}`, expected, actual);
      }
      return parseManifest(bytes, digest, header(res, "content-type"), `${ep.repository}@${id}`);
    });
  }

  /** Whether the repository holds the blob. A 401 counts as "no": the upload that follows will tell. */
  async hasBlob(
    repo: RepositoryRef,
    digest: Digest,
    scopes: readonly Scope[] = pushScopes(repo),
  ): Promise<boolean> {
    const host = registryHost(repo.registry);
    const url = `${this.#base(host)}/v2/${repo.repository}/blobs/${digest}`;
    const res = await this.#call(host, scopes, () => ({ method: "HEAD", url }), {
      ok: [200, 401, 403, 404],
      retry: true,
      redirects: true,
    });
    await res.body.dump();
    return res.status === 200;
  }

  /**
   * The blob's bytes, following redirects and mirrors. Not verified here: the caller hashes while it
   * reads (pull.ts writes to a temporary file and keeps it only on a matching digest).
   */
  async fetchBlob(ref: RepositoryRef, digest: Digest): Promise<Readable> {
    return this.#fromEndpoints(ref, `blob ${digest}`, async (ep) => {
      const url = `${this.#base(ep.host)}/v2/${ep.repository}/blobs/${digest}`;
      const res = await this.#call(
        ep.host,
        [repositoryScope(ep.repository, ["pull"])],
        () => ({ method: "GET", url }),
        { ok: [200], retry: true, redirects: true },
      );
      return res.body;
    });
  }

  /**
   * Makes `blob` present in `repo`: mounted from `mountFrom` (same registry) when the registry agrees,
   * otherwise uploaded. A dropped upload resumes from the offset the registry reports, or starts over.
   */
  async uploadBlob(
    repo: RepositoryRef,
    blob: Blob,
    options: { mountFrom?: string; scopes?: readonly Scope[] } = {},
  ): Promise<"mounted" | "uploaded"> {
    const host = registryHost(repo.registry);
    const scopes = options.scopes ?? pushScopes(repo, options.mountFrom);
    const uploads = `${this.#base(host)}/v2/${repo.repository}/blobs/uploads/`;
    let location: string | undefined;
    if (options.mountFrom !== undefined && options.mountFrom !== repo.repository) {
      const url = `${uploads}?mount=${blob.digest}&from=${encodeURIComponent(options.mountFrom)}`;
      const res = await this.#call(host, scopes, () => ({ method: "POST", url, headers: noBody() }), {
        ok: [201, 202, 401, 403, 404],
        retry: true,
      });
      await res.body.dump();
      if (res.status === 201) {
        this.#checkDigestHeader(res, blob.digest);
        this.stats.blobsMounted++;
        return "mounted";
      }
      // 202: the registry opened an ordinary upload instead; 401/403/404: the source is not readable.
      if (res.status === 202) location = this.#location(res);
    }

    // The session's latest Location: each PATCH answer moves it (its query carries the upload state).
    const session = { location, offset: 0 };
    for (let attempt = 1; ; attempt++) {
      try {
        session.location ??= await this.#startUpload(host, scopes, uploads);
        if (session.offset === 0 && this.#uploadMode === "monolithic") {
          await this.#putBlob(host, scopes, session.location, blob, openFrom(blob, 0));
        } else {
          await this.#patchFrom(host, scopes, session as { location: string; offset: number }, blob);
          await this.#putBlob(host, scopes, session.location, blob);
        }
        this.stats.blobsUploaded++;
        return "uploaded";
      } catch (err) {
        if (!isTemporary(err) || attempt >= this.#retry.attempts || session.location === undefined) throw err;
        const delayMs = retryDelayMs(this.#retry, attempt, (err as { retryAfterMs?: number }).retryAfterMs);
        this.#log?.debug({ digest: blob.digest, attempt, delayMs, err }, "Retrying blob upload");
        await sleep(delayMs);
        const status = await this.#uploadStatus(host, scopes, session.location);
        session.location = status?.location;
        session.offset = status?.offset ?? 0;
      }
    }
  }

  /**
   * Stores a manifest or index under each of `ids` (tags, or its digest). The registry must keep the
   * bytes as sent: a different Docker-Content-Digest means it rewrote them, which kiln refuses.
   */
  async putManifest(
    repo: RepositoryRef,
    bytes: Buffer,
    mediaType: string,
    ids: readonly string[],
    scopes: readonly Scope[] = pushScopes(repo),
  ): Promise<Descriptor> {
    const host = registryHost(repo.registry);
    const digest = sha256(bytes);
    for (const id of ids.length > 0 ? ids : [digest]) {
      const url = `${this.#base(host)}/v2/${repo.repository}/manifests/${id}`;
      const res = await this.#call(
        host,
        scopes,
        () => ({ method: "PUT", url, headers: { "content-type": mediaType }, body: bytes }),
        { ok: [201, 200], retry: true },
      );
      await res.body.dump();
      const echoed = header(res, "docker-content-digest");
      if (echoed !== undefined && echoed !== digest) {
        throw new RegistryProtocolError(
          `PUT ${redactUrl(url)}: the registry stored the manifest as ${echoed}, kiln sent ${digest}; it rewrote the manifest`,
        );
      }
    }
    return { mediaType, digest, size: bytes.length };
  }

  /** The Authorization-bearing exchange: auth on 401, redirects, then retries on temporary failures. */
  async #call(
    host: string,
    scopes: readonly Scope[],
    build: () => HttpRequest,
    o: { ok: readonly number[]; retry: boolean; redirects?: boolean },
  ): Promise<HttpResponse> {
    const once = async (): Promise<HttpResponse> => {
      let challenged = false;
      for (;;) {
        const req = build();
        const authorization = await this.#auth.authorization(host, scopes);
        let res = await this.#transport.send(withHeader(req, "authorization", authorization));
        if (res.status === 401 && !challenged) {
          challenged = true;
          if (await this.#auth.challenged(host, scopes, header(res, "www-authenticate"), authorization)) {
            await res.body.dump();
            if (req.body !== undefined && !Buffer.isBuffer(req.body)) req.body.destroy();
            continue;
          }
        }
        if (o.redirects) res = await this.#followRedirects(req, res, authorization);
        if (o.ok.includes(res.status)) return res;
        throw await unexpected(req, res);
      }
    };
    if (!o.retry) return once();
    return withRetry(this.#retry, once, (err, attempt, delayMs) =>
      this.#log?.debug({ err, attempt, delayMs }, "Retrying registry request"),
    );
  }

  /**
   * Follows 3xx answers to GET/HEAD. Authorization goes only to the registry's own origin: blob storage
   * on another host gets a signed URL and must never see the registry credentials.
   */
  async #followRedirects(
    first: HttpRequest,
    res: HttpResponse,
    authorization: string | undefined,
  ): Promise<HttpResponse> {
    const origin = new URL(first.url).origin;
    let current = res;
    for (let hop = 0; isRedirect(current.status); hop++) {
      const location = header(current, "location");
      if (location === undefined || hop >= MAX_REDIRECTS) return current;
      await current.body.dump();
      const url = new URL(location, current.url).toString();
      const sameOrigin = new URL(url).origin === origin;
      const headers = { ...first.headers };
      current = await this.#transport.send(
        withHeader(
          { method: first.method, url, headers },
          "authorization",
          sameOrigin ? authorization : undefined,
        ),
      );
    }
    return current;
  }

  async #startUpload(host: string, scopes: readonly Scope[], uploads: string): Promise<string> {
    const res = await this.#call(host, scopes, () => ({ method: "POST", url: uploads, headers: noBody() }), {
      ok: [202],
      retry: true,
    });
    await res.body.dump();
    return this.#location(res);
  }

  async #putBlob(
    host: string,
    scopes: readonly Scope[],
    location: string,
    blob: Blob,
    body?: () => Readable,
  ): Promise<void> {
    const url = withQuery(location, "digest", blob.digest);
    const size = body === undefined ? 0 : blob.size;
    const res = await this.#call(
      host,
      scopes,
      () => ({
        method: "PUT",
        url,
        headers: { "content-type": "application/octet-stream", "content-length": String(size) },
        ...(body !== undefined ? { body: body() } : {}),
      }),
      { ok: [201, 204], retry: false },
    );
    await res.body.dump();
    this.#checkDigestHeader(res, blob.digest);
  }

  /** Sends the blob from `session.offset` on as PATCH requests, moving the session along with each answer. */
  async #patchFrom(
    host: string,
    scopes: readonly Scope[],
    session: { location: string; offset: number },
    blob: Blob,
  ): Promise<void> {
    const pieceSize = this.#uploadMode === "chunked" ? this.#chunkSize : blob.size;
    while (session.offset < blob.size) {
      const start = session.offset;
      const length = Math.min(pieceSize, blob.size - start);
      const url = session.location;
      const res = await this.#call(
        host,
        scopes,
        () => ({
          method: "PATCH",
          url,
          headers: {
            "content-type": "application/octet-stream",
            "content-length": String(length),
            "content-range": `${start}-${start + length - 1}`,
          },
          body: openFrom(blob, start, length)(),
        }),
        { ok: [202, 204], retry: false },
      );
      await res.body.dump();
      session.location = this.#location(res, url);
      session.offset = start + length;
    }
  }

  /** Where an interrupted upload stands, or undefined when the registry has forgotten it. */
  async #uploadStatus(
    host: string,
    scopes: readonly Scope[],
    location: string,
  ): Promise<{ location: string; offset: number } | undefined> {
    try {
      const res = await this.#call(host, scopes, () => ({ method: "GET", url: location }), {
        ok: [204, 200],
        retry: true,
      });
      await res.body.dump();
      const range = /(\d+)-(\d+)/.exec(header(res, "range") ?? "");
      // "0-0" is what distribution says for both 0 and 1 byte received: start over rather than guess.
      if (range === null || range[2] === "0") return undefined;
      return { location: this.#location(res, location), offset: Number(range[2]) + 1 };
    } catch (err) {
      this.#log?.debug({ err }, "Upload session is gone, starting a new one");
      return undefined;
    }
  }

  #location(res: HttpResponse, fallback?: string): string {
    const location = header(res, "location");
    if (location === undefined) {
      if (fallback !== undefined) return fallback;
      throw new RegistryProtocolError(`${redactUrl(res.url)}: ${res.status} without a Location header`);
    }
    // Relative Locations resolve against the URL that answered; the query (upload state) is kept.
    return new URL(location, res.url).toString();
  }

  #checkDigestHeader(res: HttpResponse, digest: Digest): void {
    const echoed = header(res, "docker-content-digest");
    if (echoed !== undefined && echoed !== digest) {
      throw new DigestMismatchError(`blob stored at ${redactUrl(res.url)}`, digest, echoed);
    }
  }

  /**
   * Tries each place the repository can be read from, mirrors first. When all fail, each one's reason is
   * reported; a registry without mirrors fails with its own error.
   */
  async #fromEndpoints<T>(ref: RepositoryRef, what: string, read: (ep: Endpoint) => Promise<T>): Promise<T> {
    const endpoints = pullEndpoints(this.#mirrors, ref.registry, ref.repository);
    const failures: EndpointFailure[] = [];
    for (const ep of endpoints) {
      try {
        return await read(ep);
      } catch (err) {
        if (err instanceof DigestMismatchError) throw err;
        failures.push({ host: ep.host, mirror: ep.mirror, error: err });
        this.#log?.debug({ err, host: ep.host }, "Registry endpoint failed, trying the next one");
      }
    }
    if (failures.length === 1) throw failures[0]!.error;
    throw new EndpointsFailedError(`${what} of ${ref.registry}/${ref.repository}`, failures);
  }

  #base(host: string): string {
    return this.#transport.baseUrl(host);
  }
}

/** Reads the authfile, if any, and builds a client. */
export async function createRegistryClient(options: RegistryClientOptions = {}): Promise<RegistryClient> {
  const fromFile = options.authfile !== undefined ? await loadDockerConfig(options.authfile) : new Map();
  const credentials = new Map([...fromFile, ...(options.credentials ?? new Map())]);
  return new RegistryClient({ ...options, credentials });
}

/** Pull+push on the target and pull on the mount source, so one token serves a whole push. */
export function pushScopes(repo: RepositoryRef, mountFrom?: string): Scope[] {
  const scopes = [repositoryScope(repo.repository, ["pull", "push"])];
  if (mountFrom !== undefined && mountFrom !== repo.repository) {
    scopes.push(repositoryScope(mountFrom, ["pull"]));
  }
  return scopes;
}

function parseManifest(
  bytes: Buffer,
  digest: Digest,
  contentType: string | undefined,
  what: string,
): FetchedManifest {
  let json: { mediaType?: unknown };
  try {
    json = JSON.parse(bytes.toString("utf8"));
  } catch (err) {
    throw new RegistryProtocolError(`manifest ${what} is not JSON`, { cause: err });
  }
  const mediaType =
    typeof json.mediaType === "string" ? json.mediaType : (contentType?.split(";")[0]?.trim() ?? "");
  const isIndex = isIndexMediaType(mediaType) || (mediaType === "" && "manifests" in json);
  const parsed = (isIndex ? ImageIndexSchema : ImageManifestSchema).safeParse(json);
  if (!parsed.success) {
    throw new RegistryProtocolError(`manifest ${what} (${mediaType || "no media type"}) is not valid`, {
      cause: parsed.error,
    });
  }
  return {
    descriptor: {
      mediaType: mediaType || (isIndex ? MediaType.ImageIndex : MediaType.ImageManifest),
      digest,
      size: bytes.length,
    },
    bytes,
    manifest: parsed.data,
  };
}

async function readCapped(res: HttpResponse, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of res.body) {
    total += (chunk as Buffer).length;
    if (total > max) {
      res.body.destroy();
      throw new RegistryProtocolError(`${redactUrl(res.url)}: manifest larger than ${max} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

function isRedirect(status: number): boolean {
  return [301, 302, 303, 307, 308].includes(status);
}

function withHeader(req: HttpRequest, name: string, value: string | undefined): HttpRequest {
  if (value === undefined) return req;
  return { ...req, headers: { ...req.headers, [name]: value } };
}

function noBody(): Headers {
  return { "content-length": "0" };
}

/** Appends a query parameter without re-encoding the upload state the registry put in the URL. */
function withQuery(url: string, name: string, value: string): string {
  return `${url}${url.includes("?") ? "&" : "?"}${name}=${encodeURIComponent(value)}`;
}

/** A fresh stream of `length` bytes of the blob from `start`: blobs re-open, they never rewind. */
function openFrom(blob: Blob, start: number, length = blob.size - start): () => Readable {
  return () => {
    if (start === 0 && length === blob.size) return blob.open();
    let skip = start;
    let left = length;
    const source = blob.open();
    const slice = new Transform({
      transform(chunk: Buffer, _enc, done) {
        let c = chunk;
        if (skip > 0) {
          const n = Math.min(skip, c.length);
          skip -= n;
          c = c.subarray(n);
        }
        if (left > 0 && c.length > 0) {
          const piece = c.subarray(0, left);
          left -= piece.length;
          this.push(piece);
        }
        if (left === 0) {
          source.unpipe(this);
          source.destroy();
          this.push(null);
        }
        done();
      },
    });
    source.on("error", (err) => slice.destroy(err));
    return source.pipe(slice);
  };
}
