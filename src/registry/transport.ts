import { readFileSync } from "node:fs";
import type { Readable } from "node:stream";
import { rootCertificates } from "node:tls";
import { Agent, type Dispatcher, request } from "undici";
import { parseDistributionErrors, RegistryConnectionError, RegistryError } from "./registry-error.ts";
import { parseRetryAfter } from "./retry.ts";

export interface TransportOptions {
  /** PEM files of extra certificate authorities, trusted next to the system's. */
  readonly caFiles?: readonly string[];
  /** PEM client certificate and key, for registries that ask for mutual TLS. */
  readonly clientCert?: { readonly certFile: string; readonly keyFile: string };
  /** `host[:port]` of registries spoken to over plain HTTP. Nothing else ever is. */
  readonly insecure?: readonly string[];
  readonly connectTimeoutMs?: number;
  /** Longest wait for a response's headers, e.g. while a registry commits a large blob. */
  readonly headersTimeoutMs?: number;
  /** Longest pause between two body chunks. */
  readonly bodyTimeoutMs?: number;
  /** Sockets per registry origin. */
  readonly connectionsPerOrigin?: number;
}

export type Headers = Record<string, string>;

export interface HttpRequest {
  readonly method: "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE";
  readonly url: string;
  readonly headers?: Headers;
  /** Bytes, or a stream made fresh for this one try. */
  readonly body?: Buffer | Readable;
}

export interface HttpResponse {
  readonly status: number;
  readonly url: string;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body: Dispatcher.ResponseData["body"];
}

/** The HTTP layer under the registry client: TLS settings, timeouts and one connection pool. */
export class Transport {
  readonly #agent: Agent;
  readonly #insecure: ReadonlySet<string>;

  constructor(options: TransportOptions = {}) {
    const extraCas = (options.caFiles ?? []).map((f) => readFileSync(f, "utf8"));
    const tls = {
      ...(extraCas.length > 0 ? { ca: [...rootCertificates, ...extraCas] } : {}),
      ...(options.clientCert
        ? { cert: readFileSync(options.clientCert.certFile), key: readFileSync(options.clientCert.keyFile) }
        : {}),
    };
    this.#agent = new Agent({
      connect: { timeout: options.connectTimeoutMs ?? 30_000, ...tls },
      headersTimeout: options.headersTimeoutMs ?? 300_000,
      bodyTimeout: options.bodyTimeoutMs ?? 120_000,
      connections: options.connectionsPerOrigin ?? 16,
    });
    this.#insecure = new Set(options.insecure ?? []);
  }

  /** `https://host`, or `http://host` for a registry listed as insecure. */
  baseUrl(host: string): string {
    return `${this.#insecure.has(host) ? "http" : "https"}://${host}`;
  }

  /** One try, no redirects followed. A failed connection becomes a temporary RegistryConnectionError. */
  async send(req: HttpRequest): Promise<HttpResponse> {
    try {
      const res = await request(req.url, {
        dispatcher: this.#agent,
        method: req.method,
        headers: req.headers ?? {},
        body: req.body ?? null,
      });
      return { status: res.statusCode, url: req.url, headers: res.headers, body: res.body };
    } catch (err) {
      if (req.body !== undefined && !Buffer.isBuffer(req.body)) req.body.destroy();
      throw new RegistryConnectionError(req.method, req.url, { cause: err });
    }
  }

  close(): Promise<void> {
    return this.#agent.close();
  }
}

export function header(res: HttpResponse, name: string): string | undefined {
  const v = res.headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

/** Reads the error body and turns an unexpected answer into a RegistryError (temporary for 429/5xx). */
export async function unexpected(req: HttpRequest, res: HttpResponse): Promise<RegistryError> {
  let text = "";
  try {
    text = req.method === "HEAD" ? "" : (await res.body.text()).slice(0, 64 * 1024);
  } catch {
    // A body that breaks off still leaves the status to report.
  }
  return new RegistryError(req.method, res.url, res.status, parseDistributionErrors(text), {
    retryAfterMs: parseRetryAfter(header(res, "retry-after")),
  });
}
