import { createInterface } from "node:readline";
import { Agent, request } from "undici";
import { KilnError } from "../errors.ts";
import type { KubeEndpoint } from "./kubeconfig.ts";

/**
 * A raw JSON client for the Kubernetes API on one keep-alive connection pool. client-node's generated APIs
 * build a new TLS agent per request, turn some objects into classes with Date fields while its watches hand
 * out plain JSON, and cost ~85 MiB of memory once loaded; kiln reads the API server's JSON and parses what
 * it needs. client-node's types are used, as types only.
 */

export const PatchType = {
  Merge: "application/merge-patch+json",
  Json: "application/json-patch+json",
} as const;
export type PatchType = (typeof PatchType)[keyof typeof PatchType];

/** A request the API server answered with an error status; `reason` is the Status object's reason. */
export class KubeApiError extends KilnError {
  override readonly code = "KILN_ERR_KUBE_API";
  readonly status: number;
  readonly reason: string | undefined;
  constructor(method: string, path: string, status: number, reason: string | undefined, message: string) {
    super(`${method} ${path}: ${status} ${reason ?? ""} ${message}`.trim());
    this.status = status;
    this.reason = reason;
  }
  override get temporary(): boolean {
    return this.status === 429 || this.status >= 500;
  }
}

/** The API server could not be reached, or the connection broke. */
export class KubeConnectionError extends KilnError {
  override readonly code = "KILN_ERR_KUBE_CONNECTION";
  override get temporary(): boolean {
    return true;
  }
}

export const isNotFound = (err: unknown): boolean => err instanceof KubeApiError && err.status === 404;
export const isConflict = (err: unknown): boolean => err instanceof KubeApiError && err.status === 409;

export interface RequestOptions {
  readonly body?: unknown;
  readonly contentType?: string;
  readonly query?: Readonly<Record<string, string | undefined>>;
  /** Return the body as text (pod logs) instead of parsing JSON. */
  readonly text?: boolean;
  /**
   * Skip the answer of a write whose caller does not read it (a created pod or event comes back whole):
   * no JSON parse, no garbage. Errors are read and thrown as always.
   */
  readonly discard?: boolean;
}

export interface KubeClientOptions {
  /**
   * Connections for requests (watches have their own). Requests beyond it wait for a free connection:
   * every TLS connection costs both ends a handshake and buffers, and hundreds of them at once cost the
   * API server more than the requests they carry.
   */
  readonly maxConnections?: number;
}

export class KubeClient {
  readonly endpoint: KubeEndpoint;
  readonly server: string;
  /** Requests sent, by verb, for metrics and the benchmark's requests-per-build figure. */
  readonly requests = new Map<string, number>();
  readonly #agent: Agent;
  readonly #watchAgent: Agent;

  constructor(endpoint: KubeEndpoint, options: KubeClientOptions = {}) {
    this.endpoint = endpoint;
    this.server = endpoint.server.replace(/\/$/, "");
    const base = {
      connect: {
        ...(endpoint.ca !== undefined ? { ca: endpoint.ca } : {}),
        ...(endpoint.cert !== undefined ? { cert: endpoint.cert } : {}),
        ...(endpoint.key !== undefined ? { key: endpoint.key } : {}),
        ...(endpoint.skipTLSVerify ? { rejectUnauthorized: false } : {}),
      },
      keepAliveTimeout: 30_000,
      // HTTP/1.1: one connection per request in flight. Over HTTP/2 every watch and request shares one
      // connection's flow-control window, and at a thousand builds a watch stalled it for all of them.
      allowH2: false,
      // A request the API server never answers must not stall a worker or a lease renewal for minutes.
      headersTimeout: 30_000,
    };
    this.#agent = new Agent({
      ...base,
      connections: options.maxConnections ?? 32,
      bodyTimeout: 30_000,
    });
    // Watches hold their connection for minutes: they must never wait behind requests, nor requests
    // behind them.
    this.#watchAgent = new Agent(base);
  }

  get requestCount(): number {
    let n = 0;
    for (const v of this.requests.values()) n += v;
    return n;
  }

  #url(path: string, query: RequestOptions["query"]): URL {
    const url = new URL(this.server + path);
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) url.searchParams.set(k, v);
    return url;
  }

  #headers(contentType?: string): Record<string, string> {
    const token = this.endpoint.token?.();
    return {
      accept: "application/json",
      ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}),
      ...(contentType !== undefined ? { "content-type": contentType } : {}),
    };
  }

  async request<T = unknown>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    this.requests.set(method, (this.requests.get(method) ?? 0) + 1);
    let res: Awaited<ReturnType<typeof request>>;
    try {
      res = await request(this.#url(path, options.query), {
        method: method as "GET",
        headers: this.#headers(
          options.body !== undefined ? (options.contentType ?? "application/json") : undefined,
        ),
        dispatcher: this.#agent,
        ...(options.body !== undefined ? { body: JSON.stringify(options.body) } : {}),
      });
    } catch (err) {
      throw new KubeConnectionError(`${method} ${path}: ${(err as Error).message}`, { cause: err });
    }
    if (res.statusCode < 300 && options.discard) {
      await res.body.dump({ limit: Number.POSITIVE_INFINITY });
      return undefined as T;
    }
    const text = await res.body.text();
    if (res.statusCode >= 300) throw apiError(method, path, res.statusCode, text);
    if (options.text) return text as T;
    return (text === "" ? undefined : JSON.parse(text)) as T;
  }

  /**
   * A watch: calls `onEvent` for each line of the stream until the server ends it (resolves) or it fails
   * (rejects). Without data for `idleMs` the connection is dropped, as a half-open one would never end.
   */
  async watch(
    path: string,
    query: RequestOptions["query"],
    onEvent: (event: { type: string; object: unknown }) => void,
    signal: AbortSignal,
    idleMs = 60_000,
  ): Promise<void> {
    this.requests.set("WATCH", (this.requests.get("WATCH") ?? 0) + 1);
    let res: Awaited<ReturnType<typeof request>>;
    try {
      res = await request(this.#url(path, { ...query, watch: "true" }), {
        method: "GET",
        headers: this.#headers(),
        dispatcher: this.#watchAgent,
        signal,
        bodyTimeout: idleMs,
      });
    } catch (err) {
      throw new KubeConnectionError(`WATCH ${path}: ${(err as Error).message}`, { cause: err });
    }
    if (res.statusCode >= 300) throw apiError("WATCH", path, res.statusCode, await res.body.text());
    try {
      for await (const line of createInterface({ input: res.body, crlfDelay: Number.POSITIVE_INFINITY })) {
        if (line !== "") onEvent(JSON.parse(line) as { type: string; object: unknown });
      }
    } catch (err) {
      if (signal.aborted) return;
      throw new KubeConnectionError(`WATCH ${path}: ${(err as Error).message}`, { cause: err });
    }
  }

  async close(): Promise<void> {
    await Promise.all([this.#agent.close(), this.#watchAgent.close()]);
  }
}

function apiError(method: string, path: string, status: number, text: string): KubeApiError {
  let body: { reason?: string; message?: string } = {};
  try {
    body = JSON.parse(text) as typeof body;
  } catch {
    body = { message: text.slice(0, 200) };
  }
  return new KubeApiError(method, path, status, body.reason, body.message ?? "");
}
