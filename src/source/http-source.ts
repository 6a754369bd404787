import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { rm } from "node:fs/promises";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { type Dispatcher, request } from "undici";
import { DigestMismatchError, KilnError, NotFoundError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { applyLayer } from "../oci/layer-apply.ts";
import { redactUrl } from "../registry/registry-error.ts";
import { type RetryPolicy, withRetry } from "../registry/retry.ts";
import type { FetchedSource, HttpSource } from "./fetch-source.ts";
import { SourceError } from "./source-error.ts";

export interface HttpFetchOptions {
  readonly retry: RetryPolicy;
  readonly dispatcher: Dispatcher;
  readonly logger?: Logger;
}

/**
 * Downloads a tar archive (plain, gzip or zstd, told apart by its first bytes) and unpacks it into `dir`.
 * The bytes are hashed as they arrive and written to a file beside `dir`; nothing is unpacked before the
 * sha256 matches, and a broken download (connection lost, 5xx, 429) starts again, as a GET may.
 */
export async function fetchHttp(
  spec: HttpSource,
  dir: string,
  options: HttpFetchOptions,
): Promise<FetchedSource> {
  const url = redactUrl(spec.url);
  const file = `${dir}.archive`;
  try {
    const sha256 = await withRetry(
      options.retry,
      () => download(spec.url, file, options.dispatcher, url),
      (err, attempt, delayMs) => options.logger?.warn({ err, attempt, delayMs }, "Retrying download"),
    );
    if (spec.sha256 !== undefined && sha256 !== spec.sha256) {
      throw new DigestMismatchError(`archive ${url}`, `sha256:${spec.sha256}`, `sha256:${sha256}`);
    }
    try {
      await applyLayer(createReadStream(file), dir, { sameOwner: false });
    } catch (err) {
      throw new SourceError(`unpacking the archive from ${url}: ${(err as Error).message}`, { cause: err });
    }
    return { pinned: sha256, source: { http: { ...spec, sha256 } } };
  } finally {
    await rm(file, { force: true });
  }
}

/** One GET into `file`; returns the sha256 (hex) of what it wrote. */
async function download(rawUrl: string, file: string, dispatcher: Dispatcher, url: string): Promise<string> {
  let res: Dispatcher.ResponseData;
  try {
    res = await request(rawUrl, { dispatcher, method: "GET" });
  } catch (err) {
    throw new SourceError(`GET ${url}: ${(err as Error).message}`, { cause: err, temporary: true });
  }
  if (res.statusCode !== 200) {
    await res.body.dump();
    const status = res.statusCode;
    if (status === 404 || status === 410) throw new NotFoundError(`GET ${url}: ${status}, no archive there`);
    throw new SourceError(`GET ${url}: HTTP ${status}`, {
      temporary: status >= 500 || status === 429 || status === 408,
    });
  }
  const hash = createHash("sha256");
  const hashing = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      done(null, chunk);
    },
  });
  try {
    await pipeline(res.body, hashing, createWriteStream(file));
  } catch (err) {
    if (err instanceof KilnError) throw err;
    throw new SourceError(`GET ${url}: the download broke off: ${(err as Error).message}`, {
      cause: err,
      temporary: true,
    });
  }
  return hash.digest("hex");
}
