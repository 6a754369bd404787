import { describeError, isTemporary, KilnError } from "../errors.ts";

/** Distribution-spec error body: `{"errors":[{"code":"BLOB_UNKNOWN","message":"…","detail":…}]}`. */
export interface DistributionError {
  readonly code: string;
  readonly message: string;
}

const TEMPORARY_STATUS = new Set([408, 429, 500, 502, 503, 504]);

/** A registry answered with a status kiln cannot go on from. The URL is redacted; no header is kept. */
export class RegistryError extends KilnError {
  override readonly code = "KILN_ERR_REGISTRY";
  readonly status: number;
  readonly ociCodes: readonly string[];
  /** From the answer's `Retry-After`, when it had one. */
  readonly retryAfterMs: number | undefined;
  constructor(
    method: string,
    url: string,
    status: number,
    errors: readonly DistributionError[],
    options?: ErrorOptions & { retryAfterMs?: number | undefined },
  ) {
    const detail = errors.map((e) => (e.message ? `${e.code}: ${e.message}` : e.code)).join("; ");
    super(`${method} ${redactUrl(url)}: ${status} ${detail || "(no error body)"}`, options);
    this.status = status;
    this.ociCodes = errors.map((e) => e.code);
    this.retryAfterMs = options?.retryAfterMs;
  }
  override get temporary(): boolean {
    return TEMPORARY_STATUS.has(this.status) || this.ociCodes.includes("TOOMANYREQUESTS");
  }
}

/** The connection failed, timed out or was reset before a whole answer arrived. */
export class RegistryConnectionError extends KilnError {
  override readonly code = "KILN_ERR_REGISTRY_CONNECTION";
  constructor(method: string, url: string, options: ErrorOptions) {
    super(`${method} ${redactUrl(url)}: ${connectionReason(options.cause)}`, options);
  }
  override get temporary(): boolean {
    return true;
  }
}

/** Why one place a repository is read from failed. */
export interface EndpointFailure {
  readonly host: string;
  /** A mirror, or (false) the registry itself. */
  readonly mirror: boolean;
  readonly error: unknown;
}

/**
 * Every place a repository is read from failed: its mirrors, then the registry itself unless the mirror
 * rule says not to fall back. Each one's reason is in the message, so a broken mirror is not hidden behind
 * the registry's own answer.
 */
export class EndpointsFailedError extends KilnError {
  override readonly code = "KILN_ERR_REGISTRY_ENDPOINTS";
  readonly failures: readonly EndpointFailure[];
  constructor(what: string, failures: readonly EndpointFailure[]) {
    const mirrors = failures.filter((f) => f.mirror).length === 1 ? "its mirror" : "its mirrors";
    const tried = failures.some((f) => !f.mirror) ? `${mirrors} or its origin` : mirrors;
    const reasons = failures.map(
      (f) => `${f.mirror ? "mirror" : "origin"} ${f.host}: ${describeError(f.error)}`,
    );
    super(`cannot read ${what} from ${tried}: ${reasons.join("; ")}`, { cause: failures.at(-1)?.error });
    this.failures = failures;
  }
  /** As the last place tried: a repeat ends there too. */
  override get temporary(): boolean {
    return isTemporary(this.failures.at(-1)?.error);
  }
}

/** The registry stored something other than what kiln sent (e.g. it rewrote a manifest). */
export class RegistryProtocolError extends KilnError {
  override readonly code = "KILN_ERR_REGISTRY_PROTOCOL";
}

function connectionReason(cause: unknown): string {
  const c = cause as { code?: unknown; message?: unknown } | undefined;
  return [c?.code, c?.message].filter((x) => typeof x === "string").join(" ") || "connection failed";
}

/**
 * A URL fit for messages and logs: no user info, and query values dropped, since signed blob-storage
 * redirects and upload `_state` tokens carry secrets there.
 */
export function redactUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return "(unparsable URL)";
  }
  u.username = "";
  u.password = "";
  const keys = [...new Set(u.searchParams.keys())];
  u.search = "";
  return keys.length > 0 ? `${u.toString()}?${keys.map((k) => `${k}=…`).join("&")}` : u.toString();
}

/** Reads the distribution error list from a response body; anything else yields no codes. */
export function parseDistributionErrors(text: string): DistributionError[] {
  try {
    const body = JSON.parse(text) as { errors?: unknown };
    if (!Array.isArray(body.errors)) return [];
    return body.errors.flatMap((e: unknown) => {
      const { code, message } = (e ?? {}) as { code?: unknown; message?: unknown };
      if (typeof code !== "string") return [];
      return [{ code, message: typeof message === "string" ? message.slice(0, 300) : "" }];
    });
  } catch {
    return [];
  }
}
