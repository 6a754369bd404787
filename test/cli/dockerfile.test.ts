import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { test } from "node:test";
import { readComparableImage } from "../helpers/image-tree.ts";

const KILN = join(resolve(import.meta.dirname, "../.."), "bin/kiln");
const sha = (s: string | Buffer) => createHash("sha256").update(s).digest("hex");

/** Runs kiln without blocking the event loop: the test's HTTP server answers meanwhile. */
function kiln(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((done, fail) => {
    const child = spawn(KILN, args, {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, SOURCE_DATE_EPOCH: "0" },
    });
    const err: Buffer[] = [];
    child.stderr.on("data", (c: Buffer) => err.push(c));
    child.on("error", fail);
    child.on("close", (code) => done({ code, stderr: Buffer.concat(err).toString().trim() }));
  });
}

function workspace(
  t: { after(fn: () => void): void },
  dockerfile: string,
  files: Record<string, string> = {},
) {
  const dir = mkdtempSync(join(tmpdir(), "kiln-df-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const ctx = join(dir, "ctx");
  mkdirSync(ctx);
  for (const [p, content] of Object.entries(files)) {
    mkdirSync(join(ctx, p, ".."), { recursive: true });
    writeFileSync(join(ctx, p), content);
  }
  writeFileSync(join(dir, "Dockerfile"), dockerfile);
  return { dir, ctx, dockerfile: join(dir, "Dockerfile"), layout: join(dir, "oci") };
}

/** A loopback HTTP server with fixed files; closed when the test ends. */
async function serve(t: { after(fn: () => void): void }, files: Record<string, string>): Promise<string> {
  const server = createServer((req, res) => {
    const body = files[req.url ?? ""];
    res.writeHead(body === undefined ? 404 : 200).end(body);
  });
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  t.after(() => server.close());
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

test("kiln build -f: ADD of a URL (checksum verified, mode 0600), heredoc files (0644 before --chmod), WORKDIR", async (t) => {
  const tool = "#!/bin/sh\necho tool\n";
  const url = await serve(t, { "/dl/tool.sh": tool, "/dl/other": "other\n" });
  const w = workspace(
    t,
    [
      "FROM scratch",
      "WORKDIR /opt/app",
      `ADD --checksum=sha256:${sha(tool)} ${url}/dl/tool.sh ./bin/`,
      `ADD --chmod=0755 ${url}/dl/other /opt/other-tool`,
      "ARG GREETING=hello",
      "COPY <<EOF <<'RAW' conf/",
      "greeting=$GREETING",
      "EOF",
      "literal $GREETING",
      "RAW",
      "COPY --chmod=0700 <<EOF /entry.sh",
      "#!/bin/sh",
      "EOF",
      'ENTRYPOINT ["/entry.sh"]',
    ].join("\n"),
  );
  const r = await kiln(["build", "-f", w.dockerfile, "--output", `oci:${w.layout}:v1`, w.ctx]);
  assert.equal(r.code, 0, r.stderr);
  const { tree, config } = await readComparableImage(w.layout, { ref: "v1" });
  const show = (p: string) => {
    const n = tree.get(p);
    return n && `${n.type} 0${n.mode.toString(8)} ${n.uid}:${n.gid} ${n.sha256 ?? ""}`;
  };
  assert.equal(show("/opt/app/bin/tool.sh"), `file 0600 0:0 ${sha(tool)}`);
  assert.equal(show("/opt/other-tool"), `file 0755 0:0 ${sha("other\n")}`);
  assert.equal(show("/opt/app/conf/EOF"), `file 0644 0:0 ${sha("greeting=hello\n")}`);
  assert.equal(show("/opt/app/conf/RAW"), `file 0644 0:0 ${sha("literal $GREETING\n")}`);
  assert.equal(show("/entry.sh"), `file 0700 0:0 ${sha("#!/bin/sh\n")}`);
  assert.equal(show("/opt/app"), "dir 0755 0:0 ");
  assert.equal(config.WorkingDir, "/opt/app");
  assert.deepEqual(config.Entrypoint, ["/entry.sh"]);
});

test("kiln build -f: a wrong checksum, a missing source and a RUN fail with their Dockerfile line", async (t) => {
  const url = await serve(t, { "/f": "content\n" });
  const wrong = workspace(t, `FROM scratch\n\nADD --checksum=sha256:${"0".repeat(64)} ${url}/f /f\n`);
  let r = await kiln(["build", "-f", wrong.dockerfile, "--output", `oci:${wrong.layout}`, wrong.ctx]);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    new RegExp(
      `Dockerfile:3: ADD: ADD ${url}/f: content has digest sha256:${sha("content\n")}, expected sha256:0{64}`,
    ),
  );

  const missing = workspace(t, "FROM scratch\nCOPY here.txt /\nCOPY missing.txt /\n", { "here.txt": "x" });
  r = await kiln(["build", "-f", missing.dockerfile, "--output", `oci:${missing.layout}`, missing.ctx]);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /Dockerfile:3: COPY: missing.txt: not found in the build context \(KILN_ERR_DOCKERFILE\)/,
  );

  const run = workspace(
    t,
    "FROM scratch AS unused\nRUN never\nFROM scratch\nCOPY here.txt /\nRUN make\nRUN make install\n",
    { "here.txt": "x" },
  );
  r = await kiln(["build", "-f", run.dockerfile, "--output", `oci:${run.layout}`, run.ctx]);
  assert.equal(r.code, 1);
  // The unused stage's RUN never runs; the first RUN of the target fails there: a scratch root has no shell.
  assert.equal(
    r.stderr,
    '[line 5] kiln-run: exec /bin/sh: No such file or directory\nkiln: Dockerfile:5: RUN: process "/bin/sh -c make" did not complete successfully: exit code: 127 (KILN_ERR_DOCKERFILE)',
  );

  const parse = workspace(t, "FROM scratch\nCOPY a /\nNOPE x\n");
  r = await kiln(["build", "-f", parse.dockerfile, "--output", `oci:${parse.layout}`, parse.ctx]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /Dockerfile:3: unknown instruction: NOPE/);
});
