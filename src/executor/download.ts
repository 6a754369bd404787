import { createHash } from "node:crypto";
import { posix } from "node:path";
import { DigestMismatchError, KilnError, NotFoundError } from "../errors.ts";

/** An ADD source fetched over http(s). */
export interface Download {
  /** The file name it is saved as inside a directory destination. */
  readonly name: string;
  readonly content: Buffer;
}

/** A download that failed for a reason a retry may fix (connection reset, 5xx). */
export class DownloadError extends KilnError {
  override readonly code = "KILN_ERR_DOWNLOAD";
  readonly status: number | undefined;
  constructor(message: string, status: number | undefined, options?: ErrorOptions) {
    super(message, options);
    this.status = status;
  }
  override get temporary(): boolean {
    return this.status === undefined || this.status >= 500 || this.status === 429;
  }
}

/**
 * Fetches `url` for ADD. With `checksum` (`sha256:<hex>`, also sha384/sha512) the content must match it.
 * The name is the last segment of the URL's path, as Docker saves it, or `index.html` when there is none.
 */
export async function download(url: string, checksum?: string): Promise<Download> {
  let res: Response;
  try {
    res = await fetch(url, { redirect: "follow" });
  } catch (err) {
    throw new DownloadError(`ADD ${url}: ${(err as Error).message}`, undefined, { cause: err });
  }
  if (res.status === 404) throw new NotFoundError(`ADD ${url}: 404 Not Found`);
  if (!res.ok) throw new DownloadError(`ADD ${url}: ${res.status} ${res.statusText}`, res.status);
  const content = Buffer.from(await res.arrayBuffer());
  if (checksum !== undefined) {
    const [algorithm, expected] = checksum.split(":", 2) as [string, string];
    const actual = createHash(algorithm).update(content).digest("hex");
    if (actual !== expected) throw new DigestMismatchError(`ADD ${url}`, checksum, `${algorithm}:${actual}`);
  }
  const last = posix.basename(new URL(url).pathname);
  return { name: last === "" || last === "/" ? "index.html" : decodeURIComponent(last), content };
}
