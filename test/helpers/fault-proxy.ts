import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  request,
  type Server,
  type ServerResponse,
} from "node:http";
import { request as httpsRequest } from "node:https";

/** What the proxy does to one request that matches a rule. */
export type FaultAction =
  /** Answer with this status without asking the registry. */
  | { readonly kind: "status"; readonly status: number; readonly retryAfter?: string }
  /** Forward the request, then cut both connections once this many body bytes went through. */
  | { readonly kind: "drop"; readonly afterBytes: number }
  /** Answer a blob GET with a 307 to a signed-looking URL on another loopback host serving the bytes. */
  | { readonly kind: "redirect-blob" }
  /** Cut the connection before anything reaches the registry. */
  | { readonly kind: "reset" }
  /** Forward the whole request, then cut the connection instead of relaying the answer. */
  | { readonly kind: "lose-response" }
  /** Forward, but claim the registry stored other bytes (a registry that rewrote a manifest). */
  | { readonly kind: "wrong-digest" };

export interface FaultRule {
  readonly method?: string;
  readonly path: RegExp;
  /** How many matching requests get the action; afterwards they pass through. */
  times: number;
  /** Matching requests to let through before the action starts. */
  skip?: number;
  readonly action: FaultAction;
}

export interface FaultProxyOptions {
  /** `http://127.0.0.1:5000` or `https://…` (then `caFile` is its CA). */
  readonly upstream: string;
  readonly caFile?: string;
  /** Turn absolute Location headers into path+query. */
  readonly relativeLocations?: boolean;
  /** Drop Docker-Content-Digest from every answer. */
  readonly stripDigestHeader?: boolean;
}

export interface ProxiedRequest {
  readonly method: string;
  readonly path: string;
  readonly status: number;
  readonly fault?: FaultAction["kind"];
  readonly hadAuthorization: boolean;
}

export interface FaultProxy {
  readonly host: string;
  readonly rules: FaultRule[];
  readonly log: ProxiedRequest[];
  /** Requests that reached the blob host a redirect pointed at, with their headers. */
  readonly blobHostRequests: { readonly url: string; readonly headers: IncomingHttpHeaders }[];
  /** Request body bytes sent upstream to `/blobs/uploads/` URLs: what uploading layers cost. */
  uploadBytes: number;
  close(): Promise<void>;
}

/** A real HTTP proxy on loopback in front of a registry that misbehaves when a rule says so. */
export async function startFaultProxy(options: FaultProxyOptions): Promise<FaultProxy> {
  const upstream = new URL(options.upstream);
  const ca = options.caFile ? readFileSync(options.caFile) : undefined;
  const stored = new Map<string, Buffer>();
  const proxy: FaultProxy = {
    host: "",
    rules: [],
    log: [],
    blobHostRequests: [],
    uploadBytes: 0,
    close: async () => {},
  };

  // "Blob storage": another loopback address, as S3 or a CDN would be another host.
  const blobHost = createServer((req, res) => {
    proxy.blobHostRequests.push({ url: req.url ?? "", headers: req.headers });
    const id = new URL(req.url ?? "/", "http://x").pathname.split("/").at(-1) ?? "";
    const bytes = stored.get(id);
    res.writeHead(bytes ? 200 : 404, { "content-length": String(bytes?.length ?? 0) });
    res.end(bytes);
  });
  await listen(blobHost, "127.0.0.2");
  const blobOrigin = `http://127.0.0.2:${(blobHost.address() as { port: number }).port}`;

  const forward = (req: IncomingMessage, res: ServerResponse, action: FaultAction | undefined) => {
    const path = req.url ?? "/";
    const headers = { ...req.headers, "x-forwarded-proto": "http" };
    const send = upstream.protocol === "https:" ? httpsRequest : request;
    const up = send(
      {
        hostname: upstream.hostname,
        port: upstream.port,
        method: req.method,
        path,
        headers,
        ...(ca ? { ca } : {}),
      },
      (upRes) => {
        if (action?.kind === "lose-response") {
          record(req, upRes.statusCode ?? 0, action);
          upRes.resume();
          req.socket.destroy();
          return;
        }
        const out: Record<string, string | string[]> = {};
        for (const [k, v] of Object.entries(upRes.headers)) if (v !== undefined) out[k] = v;
        if (options.stripDigestHeader) delete out["docker-content-digest"];
        if (action?.kind === "wrong-digest") out["docker-content-digest"] = `sha256:${"0".repeat(64)}`;
        const location = out["location"];
        if (options.relativeLocations && typeof location === "string" && /^https?:\/\//.test(location)) {
          const u = new URL(location);
          out["location"] = `${u.pathname}${u.search}`;
        }
        record(req, upRes.statusCode ?? 0, action);
        res.writeHead(upRes.statusCode ?? 502, out);
        upRes.pipe(res);
      },
    );
    up.on("error", () => res.destroy());
    const counts = /\/blobs\/uploads\//.test(path);
    let sent = 0;
    req.on("data", (chunk: Buffer) => {
      if (action?.kind === "drop" && sent + chunk.length >= action.afterBytes) {
        const part = chunk.subarray(0, Math.max(0, action.afterBytes - sent));
        up.write(part);
        if (counts) proxy.uploadBytes += part.length;
        record(req, 0, action);
        req.pause();
        // Let the partial body reach the registry before the cut, as a dying connection would.
        setTimeout(() => {
          up.destroy();
          req.socket.destroy();
        }, 50);
        sent = Number.POSITIVE_INFINITY;
        return;
      }
      if (sent === Number.POSITIVE_INFINITY) return;
      sent += chunk.length;
      if (counts) proxy.uploadBytes += chunk.length;
      up.write(chunk);
    });
    req.on("end", () => {
      if (sent !== Number.POSITIVE_INFINITY) up.end();
    });
  };

  const record = (req: IncomingMessage, status: number, action: FaultAction | undefined) => {
    proxy.log.push({
      method: req.method ?? "",
      path: req.url ?? "",
      status,
      ...(action ? { fault: action.kind } : {}),
      hadAuthorization: req.headers.authorization !== undefined,
    });
  };

  const redirectBlob = (req: IncomingMessage, res: ServerResponse) => {
    const send = upstream.protocol === "https:" ? httpsRequest : request;
    const up = send(
      {
        hostname: upstream.hostname,
        port: upstream.port,
        method: "GET",
        path: req.url,
        headers: req.headers,
        ...(ca ? { ca } : {}),
      },
      (upRes) => {
        const chunks: Buffer[] = [];
        upRes.on("data", (c: Buffer) => chunks.push(c));
        upRes.on("end", () => {
          if (upRes.statusCode !== 200) {
            record(req, upRes.statusCode ?? 0, undefined);
            res.writeHead(upRes.statusCode ?? 502, upRes.headers);
            res.end(Buffer.concat(chunks));
            return;
          }
          const id = randomUUID();
          stored.set(id, Buffer.concat(chunks));
          record(req, 307, { kind: "redirect-blob" });
          res.writeHead(307, { location: `${blobOrigin}/storage/${id}?X-Signature=${randomUUID()}` });
          res.end();
        });
      },
    );
    up.on("error", () => res.destroy());
    up.end();
  };

  const server = createServer((req, res) => {
    const rule = proxy.rules.find(
      (r) => r.times > 0 && (r.method === undefined || r.method === req.method) && r.path.test(req.url ?? ""),
    );
    let action: FaultAction | undefined;
    if (rule !== undefined && (rule.skip ?? 0) > 0) {
      rule.skip = (rule.skip ?? 0) - 1;
    } else if (rule !== undefined) {
      rule.times--;
      action = rule.action;
    }
    if (action?.kind === "status") {
      record(req, action.status, action);
      req.resume();
      res.writeHead(action.status, {
        "content-type": "application/json",
        ...(action.retryAfter !== undefined ? { "retry-after": action.retryAfter } : {}),
      });
      res.end(
        JSON.stringify({
          errors: [{ code: action.status === 429 ? "TOOMANYREQUESTS" : "UNAVAILABLE", message: "injected" }],
        }),
      );
      return;
    }
    if (action?.kind === "reset") {
      record(req, 0, action);
      req.socket.destroy();
      return;
    }
    if (action?.kind === "redirect-blob") {
      redirectBlob(req, res);
      return;
    }
    forward(req, res, action);
  });
  await listen(server, "127.0.0.1");
  const port = (server.address() as { port: number }).port;
  return Object.assign(proxy, {
    host: `127.0.0.1:${port}`,
    close: async () => {
      for (const s of [server, blobHost]) {
        s.closeAllConnections();
        await new Promise((resolve) => s.close(resolve));
      }
    },
  });
}

function listen(server: Server, address: string): Promise<void> {
  return new Promise((resolve) => server.listen(0, address, resolve));
}
