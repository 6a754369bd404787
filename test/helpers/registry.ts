import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { createPrivateKey, randomUUID, sign } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { createServer as createNetServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

/** A certificate authority and a server certificate for 127.0.0.1 / localhost, made with openssl. */
export interface TestPki {
  readonly dir: string;
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
  /** A client certificate signed by the same CA, for registries that require mutual TLS. */
  readonly clientCertFile: string;
  readonly clientKeyFile: string;
}

function selfSigned(subject: string, keyFile: string, certFile: string): void {
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-days",
      "2",
      "-subj",
      subject,
      "-keyout",
      keyFile,
      "-out",
      certFile,
    ],
    { stdio: "pipe" },
  );
}

export function makePki(dir = mkdtempSync(join(tmpdir(), "kiln-pki-"))): TestPki {
  const p = (f: string) => join(dir, f);
  const openssl = (...args: string[]) => execFileSync("openssl", args, { stdio: "pipe" });
  selfSigned("/CN=kiln test CA", p("ca.key"), p("ca.crt"));

  const signed = (name: string, subject: string, extensions: string) => {
    openssl(
      "req",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-subj",
      subject,
      "-keyout",
      p(`${name}.key`),
      "-out",
      p(`${name}.csr`),
    );
    writeFileSync(p(`${name}.cnf`), extensions);
    openssl(
      "x509",
      "-req",
      "-in",
      p(`${name}.csr`),
      "-CA",
      p("ca.crt"),
      "-CAkey",
      p("ca.key"),
      "-CAcreateserial",
      "-days",
      "2",
      "-extfile",
      p(`${name}.cnf`),
      "-out",
      p(`${name}.crt`),
    );
  };
  signed("server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  signed("client", "/CN=kiln client", "extendedKeyUsage=clientAuth\n");
  return {
    dir,
    caFile: p("ca.crt"),
    certFile: p("server.crt"),
    keyFile: p("server.key"),
    clientCertFile: p("client.crt"),
    clientKeyFile: p("client.key"),
  };
}
export async function freePort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export interface RegistryOptions {
  readonly tls?: Pick<TestPki, "certFile" | "keyFile"> & { readonly clientCaFile?: string };
  /** One htpasswd user (bcrypt, via apache2-utils' htpasswd). */
  readonly htpasswd?: { readonly username: string; readonly password: string };
  readonly token?: {
    readonly realm: string;
    readonly service: string;
    readonly issuer: string;
    readonly rootCertBundle: string;
  };
}

export interface RunningRegistry {
  /** `127.0.0.1:<port>` */
  readonly host: string;
  readonly url: string;
  /** The storage root, for tests that tamper with stored blobs. */
  readonly root: string;
  blobPath(digest: string): string;
  close(): Promise<void>;
}

/** Debian's docker-registry (distribution 2.8) on a free loopback port, storage in a temp dir. */
export async function startRegistry(options: RegistryOptions = {}): Promise<RunningRegistry> {
  const dir = mkdtempSync(join(tmpdir(), "kiln-registry-"));
  const root = join(dir, "storage");
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const lines = [
    "version: 0.1",
    "log: { level: error, accesslog: { disabled: true } }",
    `storage: { filesystem: { rootdirectory: ${JSON.stringify(root)} }, delete: { enabled: true } }`,
    "http:",
    `  addr: ${host}`,
    `  secret: ${randomUUID()}`,
  ];
  if (options.tls) {
    lines.push(
      `  tls: { certificate: ${JSON.stringify(options.tls.certFile)}, key: ${JSON.stringify(options.tls.keyFile)}${
        options.tls.clientCaFile ? `, clientcas: [${JSON.stringify(options.tls.clientCaFile)}]` : ""
      } }`,
    );
  }
  if (options.htpasswd) {
    const file = join(dir, "htpasswd");
    const line = execFileSync("htpasswd", ["-Bbn", options.htpasswd.username, options.htpasswd.password]);
    writeFileSync(file, line);
    lines.push(`auth: { htpasswd: { realm: kiln-test, path: ${JSON.stringify(file)} } }`);
  }
  if (options.token) {
    const t = options.token;
    lines.push(
      "auth:",
      "  token:",
      `    realm: ${JSON.stringify(t.realm)}`,
      `    service: ${JSON.stringify(t.service)}`,
      `    issuer: ${JSON.stringify(t.issuer)}`,
      `    rootcertbundle: ${JSON.stringify(t.rootCertBundle)}`,
    );
  }
  writeFileSync(join(dir, "config.yml"), `${lines.join("\n")}\n`);
  const child = spawn("docker-registry", ["serve", join(dir, "config.yml")], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  const url = `${options.tls ? "https" : "http"}://${host}`;
  await waitForPort(port, child, () => stderr);
  return {
    host,
    url,
    root,
    blobPath: (digest: string) => {
      const hex = digest.slice("sha256:".length);
      return join(root, "docker/registry/v2/blobs/sha256", hex.slice(0, 2), hex, "data");
    },
    close: async () => {
      await stop(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function waitForPort(port: number, child: ChildProcess, stderr: () => string): Promise<void> {
  const { connect } = await import("node:net");
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited: ${stderr()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, "127.0.0.1", () => {
        s.destroy();
        resolve(true);
      });
      s.on("error", () => resolve(false));
    });
    if (ok) return;
    await sleep(25);
  }
  throw new Error(`docker-registry did not listen on ${port}: ${stderr()}`);
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  await exited;
}

export interface TokenRequestRecord {
  readonly scopes: readonly string[];
  readonly service: string | undefined;
  readonly authorization: string | undefined;
  readonly method: string;
  readonly form: Readonly<Record<string, string>>;
}

export interface TokenIssuerOptions {
  readonly service: string;
  /** Accepted basic login; requests without it get 401. */
  readonly username: string;
  readonly password: string;
  /** An OAuth2 refresh token accepted in place of the password (docker's `identitytoken`). */
  readonly refreshToken?: string;
  /** Which field carries the token in the answer. */
  field?: "token" | "access_token";
  /** `expires_in` the issuer announces. */
  expiresIn?: number;
  /** Lifetime written into the JWT itself; shorter than expiresIn to make the registry reject it early. */
  jwtLifetimeSeconds?: number;
}

export interface TokenIssuer {
  readonly realm: string;
  readonly issuer: string;
  readonly rootCertBundle: string;
  readonly requests: TokenRequestRecord[];
  /** Every token handed out, for asserting none of them leaks. */
  readonly issued: string[];
  readonly options: TokenIssuerOptions;
  close(): Promise<void>;
}

/**
 * A docker token service (distribution's token auth spec): checks the login, grants the asked scopes,
 * and signs an RS256 JWT whose x5c certificate is the registry's rootcertbundle.
 */
export async function startTokenIssuer(options: TokenIssuerOptions): Promise<TokenIssuer> {
  const dir = mkdtempSync(join(tmpdir(), "kiln-token-"));
  const keyFile = join(dir, "token.key");
  const certFile = join(dir, "token.crt");
  selfSigned("/CN=kiln token issuer", keyFile, certFile);

  const key = createPrivateKey(readFileSync(keyFile));
  const certDer = Buffer.from(
    readFileSync(certFile, "utf8")
      .replace(/-----[A-Z ]+-----/g, "")
      .replace(/\s+/g, ""),
    "base64",
  );
  const issuer = "kiln-test-issuer";
  const requests: TokenRequestRecord[] = [];
  const issued: string[] = [];
  const expected = `Basic ${Buffer.from(`${options.username}:${options.password}`).toString("base64")}`;

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const url = new URL(req.url ?? "/", "http://x");
      const form = Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString()));
      const scopes =
        req.method === "POST"
          ? (form["scope"] ?? "").split(" ").filter(Boolean)
          : url.searchParams.getAll("scope");
      requests.push({
        scopes,
        service: url.searchParams.get("service") ?? form["service"],
        authorization: req.headers.authorization,
        method: req.method ?? "",
        form,
      });
      const authorized =
        req.method === "POST"
          ? form["grant_type"] === "refresh_token" && form["refresh_token"] === options.refreshToken
          : req.headers.authorization === expected;
      if (!authorized) {
        res.writeHead(401, { "content-type": "application/json" });
        res.end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "bad login" }] }));
        return;
      }
      const now = Math.floor(Date.now() / 1000);
      const access = scopes.map((s) => {
        const [type, name, actions] = s.split(":");
        return { type, name, actions: (actions ?? "").split(",") };
      });
      const claims = {
        iss: issuer,
        sub: options.username,
        aud: options.service,
        iat: now - 5,
        nbf: now - 5,
        exp: now + (options.jwtLifetimeSeconds ?? options.expiresIn ?? 300),
        jti: randomUUID(),
        access,
      };
      const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
      const signingInput = `${b64({ typ: "JWT", alg: "RS256", x5c: [certDer.toString("base64")] })}.${b64(claims)}`;
      const jwt = `${signingInput}.${sign("sha256", Buffer.from(signingInput), key).toString("base64url")}`;
      issued.push(jwt);
      res.writeHead(200, { "content-type": "application/json" });
      res.end(
        JSON.stringify({
          [options.field ?? "token"]: jwt,
          expires_in: options.expiresIn ?? 300,
          issued_at: new Date().toISOString(),
        }),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return {
    realm: `http://127.0.0.1:${port}/token`,
    issuer,
    rootCertBundle: certFile,
    requests,
    issued,
    options,
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
