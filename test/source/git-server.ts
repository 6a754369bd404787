import { spawn } from "node:child_process";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";

export interface GitServer {
  /** `http://<host>:<port>`; repositories are at `<url>/<name>.git`. */
  readonly url: string;
  /** Requests seen, as `METHOD path`, for tests that check what was fetched. */
  readonly requests: string[];
  /** Bodies of the POSTs to git-upload-pack: the client's wants, haves and `deepen`. */
  readonly uploadRequests: string[];
  close(): Promise<void>;
}

export interface GitServerOptions {
  /** Bare repositories live here, as `<name>.git`. */
  readonly root: string;
  /** Basic auth every request must carry. */
  readonly login?: { readonly username: string; readonly password: string };
  /** Statuses answered before the real answers, one a request, to test retries. */
  readonly failFirst?: number[];
  /** Address to listen on: loopback, or the test cluster's bridge for pods to reach. */
  readonly host?: string;
}

/**
 * Git's own smart HTTP server: `git http-backend` run as CGI for each request, as Apache or nginx run it,
 * on a loopback port. Protocol v2 is passed on through GIT_PROTOCOL as those servers do.
 */
export async function startGitServer(options: GitServerOptions): Promise<GitServer> {
  const requests: string[] = [];
  const uploadRequests: string[] = [];
  const failures = [...(options.failFirst ?? [])];
  const expected =
    options.login &&
    `Basic ${Buffer.from(`${options.login.username}:${options.login.password}`).toString("base64")}`;
  const server = createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    const fail = failures.shift();
    if (fail !== undefined) {
      res.writeHead(fail).end();
      return;
    }
    if (expected !== undefined && req.headers.authorization !== expected) {
      res.writeHead(401, { "www-authenticate": 'Basic realm="git"' }).end();
      return;
    }
    serveCgi(req, res, options.root, options.login?.username, (body) => uploadRequests.push(body));
  });
  await new Promise<void>((resolve) => server.listen(0, options.host ?? "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `http://${options.host ?? "127.0.0.1"}:${port}`,
    requests,
    uploadRequests,
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

function serveCgi(
  req: IncomingMessage,
  res: ServerResponse,
  root: string,
  user: string | undefined,
  onBody: (body: string) => void,
): void {
  const url = new URL(req.url ?? "/", "http://x");
  const child = spawn("git", ["http-backend"], {
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      GIT_PROJECT_ROOT: root,
      GIT_HTTP_EXPORT_ALL: "1",
      REQUEST_METHOD: req.method ?? "GET",
      PATH_INFO: decodeURIComponent(url.pathname),
      QUERY_STRING: url.search.slice(1),
      CONTENT_TYPE: req.headers["content-type"] ?? "",
      ...(req.headers["content-length"] ? { CONTENT_LENGTH: req.headers["content-length"] } : {}),
      ...(req.headers["git-protocol"] ? { GIT_PROTOCOL: String(req.headers["git-protocol"]) } : {}),
      ...(user !== undefined ? { REMOTE_USER: user } : {}),
    },
    stdio: ["pipe", "pipe", "ignore"],
  });
  const body: Buffer[] = [];
  req.on("data", (c: Buffer) => body.push(c));
  req.on("end", () => {
    if (req.method === "POST") onBody(Buffer.concat(body).toString("latin1"));
  });
  req.pipe(child.stdin);
  let head = Buffer.alloc(0);
  let headersDone = false;
  child.stdout.on("data", (chunk: Buffer) => {
    if (headersDone) {
      res.write(chunk);
      return;
    }
    head = Buffer.concat([head, chunk]);
    const end = head.indexOf("\r\n\r\n");
    if (end < 0) return;
    headersDone = true;
    let status = 200;
    for (const line of head.subarray(0, end).toString("latin1").split("\r\n")) {
      const i = line.indexOf(":");
      const name = line.slice(0, i).trim();
      const value = line.slice(i + 1).trim();
      if (name.toLowerCase() === "status") status = Number.parseInt(value, 10);
      else res.setHeader(name, value);
    }
    res.writeHead(status);
    res.write(head.subarray(end + 4));
  });
  child.on("close", () => res.end());
}
