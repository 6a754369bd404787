import type { KubeConfig } from "@kubernetes/client-node";
import { Agent, request } from "undici";
import { KilnError } from "../errors.ts";

/**
 * A raw JSON client for the Kubernetes API on one keep-alive connection pool. client-node's generated APIs
 * build a new TLS agent per request and turn some objects into classes with Date fields while its watches
 * hand out plain JSON; kiln reads one shape everywhere, the API server's JSON, and parses what it needs.
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
}

export class KubeClient {
  readonly kubeConfig: KubeConfig;
  readonly server: string;
  /** Requests sent, by verb, for metrics and the benchmark's requests-per-build figure. */
  readonly requests = new Map<string, number>();
  #agent: Agent | undefined;

  constructor(kubeConfig: KubeConfig) {
    const cluster = kubeConfig.getCurrentCluster();
    if (cluster === null) throw new KilnError("the kubeconfig has no current cluster");
    this.kubeConfig = kubeConfig;
    this.server = cluster.server.replace(/\/$/, "");
  }

  get requestCount(): number {
    let n = 0;
    for (const v of this.requests.values()) n += v;
    return n;
  }

  async request<T = unknown>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    // Headers are fetched per request: a service-account token file is rotated under a running process.
    const opts: { headers?: Record<string, string>; ca?: Buffer; cert?: Buffer; key?: Buffer } = {};
    await this.kubeConfig.applyToHTTPSOptions(opts as never);
    this.#agent ??= new Agent({
      connect: {
        ...(opts.ca !== undefined ? { ca: opts.ca } : {}),
        ...(opts.cert !== undefined ? { cert: opts.cert } : {}),
        ...(opts.key !== undefined ? { key: opts.key } : {}),
        ...(this.kubeConfig.getCurrentCluster()?.skipTLSVerify ? { rejectUnauthorized: false } : {}),
      },
      keepAliveTimeout: 30_000,
      // A request the API server never answers must not stall a worker or a lease renewal for minutes.
      headersTimeout: 30_000,
      bodyTimeout: 30_000,
    });
    const url = new URL(this.server + path);
    for (const [k, v] of Object.entries(options.query ?? {})) if (v !== undefined) url.searchParams.set(k, v);
    const headers: Record<string, string> = { ...(opts.headers ?? {}), accept: "application/json" };
    if (options.body !== undefined) headers["content-type"] = options.contentType ?? "application/json";
    this.requests.set(method, (this.requests.get(method) ?? 0) + 1);
    let res: Awaited<ReturnType<typeof request>>;
    try {
      res = await request(url, {
        method: method as "GET",
        headers,
        dispatcher: this.#agent,
        ...(options.body !== undefined ? { body: JSON.stringify(options.body) } : {}),
      });
    } catch (err) {
      throw new KubeConnectionError(`${method} ${path}: ${(err as Error).message}`, { cause: err });
    }
    const text = await res.body.text();
    if (res.statusCode >= 300) {
      let status: { reason?: string; message?: string } = {};
      try {
        status = JSON.parse(text) as typeof status;
      } catch {
        status = { message: text.slice(0, 200) };
      }
      throw new KubeApiError(method, path, res.statusCode, status.reason, status.message ?? "");
    }
    if (options.text) return text as T;
    return (text === "" ? undefined : JSON.parse(text)) as T;
  }

  async close(): Promise<void> {
    await this.#agent?.close();
  }
}
