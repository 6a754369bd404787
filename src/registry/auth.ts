import { z } from "zod";
import type { Credentials } from "./docker-config.ts";
import { RegistryProtocolError } from "./registry-error.ts";
import { DEFAULT_RETRY, type RetryPolicy, withRetry } from "./retry.ts";
import { type HttpRequest, type Transport, unexpected } from "./transport.ts";
import { parseWwwAuthenticate } from "./www-authenticate.ts";

/** `repository:<name>:pull,push` — what a bearer token is asked to allow. */
export type Scope = string;

export function repositoryScope(repository: string, actions: readonly ("pull" | "push")[]): Scope {
  return `repository:${repository}:${actions.join(",")}`;
}

const TokenResponseSchema = z.looseObject({
  token: z.string().min(1).optional(),
  access_token: z.string().min(1).optional(),
  expires_in: z.number().positive().optional(),
  issued_at: z.string().optional(),
});

/** Token lifetime when the issuer names none (the distribution token spec's default). */
const DEFAULT_TOKEN_SECONDS = 60;

type HostState =
  | { readonly kind: "basic" }
  | { readonly kind: "bearer"; readonly realm: string; readonly service: string | undefined };

interface CachedToken {
  readonly value: string;
  readonly renewAt: number;
}

/**
 * Answers "what Authorization header goes with this request", learning each registry's scheme from its
 * first 401. Bearer tokens are cached per host and scope set until shortly before they expire.
 */
export class Authenticator {
  readonly #transport: Transport;
  readonly #credentials: (host: string) => Credentials | undefined;
  readonly #retry: RetryPolicy;
  readonly #hosts = new Map<string, HostState>();
  readonly #tokens = new Map<string, CachedToken>();
  readonly #inflight = new Map<string, Promise<string>>();
  readonly #now: () => number;

  constructor(
    transport: Transport,
    credentials: (host: string) => Credentials | undefined,
    options: { retry?: RetryPolicy; now?: () => number } = {},
  ) {
    this.#transport = transport;
    this.#credentials = credentials;
    this.#retry = options.retry ?? DEFAULT_RETRY;
    this.#now = options.now ?? Date.now;
  }

  /** The header for a request to `host` needing `scopes`, or undefined while the host's scheme is unknown. */
  async authorization(host: string, scopes: readonly Scope[]): Promise<string | undefined> {
    const state = this.#hosts.get(host);
    if (state === undefined) return undefined;
    if (state.kind === "basic") return basicHeader(this.#credentials(host));
    const key = tokenKey(host, scopes);
    const cached = this.#tokens.get(key);
    if (cached !== undefined && cached.renewAt > this.#now()) return `Bearer ${cached.value}`;
    return `Bearer ${await this.#fetchToken(host, state, scopes)}`;
  }

  /**
   * Learns from a 401's challenge. Returns true when a new try can carry different credentials: a new
   * scheme, or a fresh token in place of the `rejected` one (fetched once however many requests saw it).
   */
  async challenged(
    host: string,
    scopes: readonly Scope[],
    wwwAuthenticate: string | undefined,
    rejected: string | undefined,
  ): Promise<boolean> {
    const challenges = parseWwwAuthenticate(wwwAuthenticate ?? "");
    const bearer = challenges.find((c) => c.scheme === "bearer");
    if (bearer?.params["realm"]) {
      const key = tokenKey(host, scopes);
      const cached = this.#tokens.get(key);
      if (cached !== undefined && `Bearer ${cached.value}` !== rejected) return true;
      const state = {
        kind: "bearer",
        realm: bearer.params["realm"],
        service: bearer.params["service"],
      } as const;
      this.#hosts.set(host, state);
      this.#tokens.delete(key);
      const asked = bearer.params["scope"]?.split(" ").filter((s) => s !== "") ?? [];
      await this.#fetchToken(host, state, scopes, asked);
      return true;
    }
    const basic = basicHeader(this.#credentials(host));
    if (challenges.some((c) => c.scheme === "basic") && basic !== undefined) {
      this.#hosts.set(host, { kind: "basic" });
      return basic !== rejected;
    }
    return false;
  }

  /** Concurrent requests needing the same token share one fetch. */
  #fetchToken(
    host: string,
    state: Extract<HostState, { kind: "bearer" }>,
    scopes: readonly Scope[],
    extraScopes: readonly Scope[] = [],
  ): Promise<string> {
    const key = tokenKey(host, scopes);
    const running = this.#inflight.get(key);
    if (running !== undefined) return running;
    const fetching = this.#requestToken(host, state, scopes, extraScopes).finally(() =>
      this.#inflight.delete(key),
    );
    this.#inflight.set(key, fetching);
    return fetching;
  }

  async #requestToken(
    host: string,
    state: Extract<HostState, { kind: "bearer" }>,
    scopes: readonly Scope[],
    extraScopes: readonly Scope[] = [],
  ): Promise<string> {
    const creds = this.#credentials(host);
    const all = [...new Set([...scopes, ...extraScopes])].sort();
    const req = tokenRequest(state, all, creds);
    const body = await withRetry(this.#retry, async () => {
      const res = await this.#transport.send(req);
      if (res.status !== 200) throw await unexpected(req, res);
      return res.body.json();
    });
    const parsed = TokenResponseSchema.safeParse(body);
    const value = parsed.success ? (parsed.data.token ?? parsed.data.access_token) : undefined;
    if (!parsed.success || value === undefined) {
      throw new RegistryProtocolError(`token service for ${host} answered without a token`);
    }
    const issuedAt = parsed.data.issued_at ? Date.parse(parsed.data.issued_at) : Number.NaN;
    const start = Number.isNaN(issuedAt) ? this.#now() : Math.min(issuedAt, this.#now());
    const lifetimeMs = (parsed.data.expires_in ?? DEFAULT_TOKEN_SECONDS) * 1000;
    // Renew a little early so a token does not expire between being read here and reaching the registry.
    const renewAt = start + lifetimeMs - Math.min(10_000, lifetimeMs / 10);
    this.#tokens.set(tokenKey(host, scopes), { value, renewAt });
    return value;
  }
}

function tokenKey(host: string, scopes: readonly Scope[]): string {
  return `${host} ${[...scopes].sort().join(" ")}`;
}

function basicHeader(creds: Credentials | undefined): string | undefined {
  if (creds?.username === undefined) return undefined;
  return `Basic ${Buffer.from(`${creds.username}:${creds.password ?? ""}`).toString("base64")}`;
}

/** GET with basic credentials (docker token spec), or an OAuth2 refresh-token POST for identity tokens. */
function tokenRequest(
  state: Extract<HostState, { kind: "bearer" }>,
  scopes: readonly Scope[],
  creds: Credentials | undefined,
): HttpRequest {
  const url = new URL(state.realm);
  if (creds?.identityToken !== undefined) {
    const form = new URLSearchParams({
      grant_type: "refresh_token",
      refresh_token: creds.identityToken,
      client_id: "kiln",
      ...(state.service !== undefined ? { service: state.service } : {}),
      scope: scopes.join(" "),
    });
    return {
      method: "POST",
      url: url.toString(),
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: Buffer.from(form.toString()),
    };
  }
  if (state.service !== undefined) url.searchParams.set("service", state.service);
  for (const s of scopes) url.searchParams.append("scope", s);
  const auth = basicHeader(creds);
  return { method: "GET", url: url.toString(), headers: auth !== undefined ? { authorization: auth } : {} };
}
