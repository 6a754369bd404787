import { readFile } from "node:fs/promises";
import { z } from "zod";
import { InvalidInputError } from "../errors.ts";

/** What a registry login holds. Never logged: every field is a secret or next to one. */
export interface Credentials {
  readonly username?: string;
  readonly password?: string;
  /** An OAuth2 refresh token (`identitytoken`), exchanged at the token realm for access tokens. */
  readonly identityToken?: string;
}

const AuthEntrySchema = z.looseObject({
  auth: z.string().optional(),
  username: z.string().optional(),
  password: z.string().optional(),
  identitytoken: z.string().optional(),
});
const AuthsSchema = z.record(z.string(), AuthEntrySchema);
const DockerConfigSchema = z.looseObject({ auths: AuthsSchema });

/** Logins keyed by normalised registry host (`docker.io`, `host:port`). */
export type CredentialStore = ReadonlyMap<string, Credentials>;

const DOCKER_HUB_KEYS = new Set(["index.docker.io", "registry-1.docker.io", "docker.io"]);

/** `https://index.docker.io/v1/` → `docker.io`; `http://host:5000/v2` → `host:5000`. */
export function normaliseRegistryKey(key: string): string {
  const host = key
    .replace(/^[a-z]+:\/\//i, "")
    .replace(/\/.*$/, "")
    .toLowerCase();
  return DOCKER_HUB_KEYS.has(host) ? "docker.io" : host;
}

export function parseDockerConfig(json: string, source = "docker config"): CredentialStore {
  let auths: z.infer<typeof AuthsSchema>;
  try {
    const value: unknown = JSON.parse(json);
    // `.dockerconfigjson` wraps the logins in `auths`; the older `.dockercfg` is the map itself.
    const wrapped = typeof value === "object" && value !== null && "auths" in value;
    auths = wrapped ? DockerConfigSchema.parse(value).auths : AuthsSchema.parse(value);
  } catch (err) {
    // The message names the file only: zod's text could quote the secrets it failed on.
    throw new InvalidInputError(`${source} is not a docker config JSON`, { cause: redactedCause(err) });
  }
  const store = new Map<string, Credentials>();
  for (const [key, entry] of Object.entries(auths)) {
    const creds = credentialsOf(entry, key, source);
    const host = normaliseRegistryKey(key);
    // An exact `host` key wins over a URL-shaped one for the same host (docker does the same).
    if (!store.has(host) || !/^[a-z]+:\/\//i.test(key)) store.set(host, creds);
  }
  return store;
}

export async function loadDockerConfig(path: string): Promise<CredentialStore> {
  return parseDockerConfig(await readFile(path, "utf8"), path);
}

function credentialsOf(entry: z.infer<typeof AuthEntrySchema>, key: string, source: string): Credentials {
  let { username, password } = entry;
  if (entry.auth) {
    const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon === -1)
      throw new InvalidInputError(`${source}: "auth" of ${key} is not base64 of user:password`);
    username = decoded.slice(0, colon);
    password = decoded.slice(colon + 1);
  }
  return {
    ...(username !== undefined ? { username } : {}),
    ...(password !== undefined ? { password } : {}),
    ...(entry.identitytoken ? { identityToken: entry.identitytoken } : {}),
  };
}

function redactedCause(err: unknown): Error {
  if (err instanceof z.ZodError) {
    return new Error(err.issues.map((i) => `${i.path.join(".")}: ${i.code}`).join("; "));
  }
  return new Error(err instanceof SyntaxError ? "invalid JSON" : "unreadable");
}
