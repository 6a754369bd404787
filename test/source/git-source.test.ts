import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fetchSource } from "../../src/source/fetch-source.ts";
import { type GitServer, startGitServer } from "./git-server.ts";

const work = mkdtempSync(join(tmpdir(), "kiln-git-source-"));
const repos = join(work, "repos");
const checkout = join(work, "checkout");
const FAST_RETRY = { attempts: 3, baseDelayMs: 1, maxDelayMs: 5 };

function git(...args: string[]): string {
  return execFileSync("git", ["-C", checkout, ...args], {
    env: {
      ...process.env,
      GIT_AUTHOR_NAME: "kiln",
      GIT_AUTHOR_EMAIL: "kiln@example.com",
      GIT_COMMITTER_NAME: "kiln",
      GIT_COMMITTER_EMAIL: "kiln@example.com",
    },
  })
    .toString()
    .trim();
}

/** The commits the git CLI made, by what they hold. */
const commits = { first: "", second: "", dev: "", devTip: "" };

before(() => {
  mkdirSync(checkout, { recursive: true });
  git("init", "-q", "-b", "main");
  writeFileSync(join(checkout, "Dockerfile"), "FROM scratch\nCOPY . /\n");
  mkdirSync(join(checkout, "app/bin"), { recursive: true });
  writeFileSync(join(checkout, "app/bin/run.sh"), "#!/bin/sh\necho run\n");
  chmodSync(join(checkout, "app/bin/run.sh"), 0o755);
  writeFileSync(join(checkout, "app/version"), "1\n");
  symlinkSync("bin/run.sh", join(checkout, "app/start"));
  symlinkSync("/etc", join(checkout, "outside"));
  git("add", "-A");
  git("commit", "-q", "-m", "first");
  commits.first = git("rev-parse", "HEAD");
  git("tag", "-a", "v1", "-m", "release 1");
  git("tag", "light");
  writeFileSync(join(checkout, "app/version"), "2\n");
  git("commit", "-q", "-am", "second");
  commits.second = git("rev-parse", "HEAD");
  git("checkout", "-q", "-b", "dev");
  writeFileSync(join(checkout, "app/version"), "dev\n");
  git("commit", "-q", "-am", "on dev");
  commits.dev = git("rev-parse", "HEAD");
  writeFileSync(join(checkout, "app/version"), "dev2\n");
  git("commit", "-q", "-am", "on dev again");
  commits.devTip = git("rev-parse", "HEAD");
  git("checkout", "-q", "main");
  mkdirSync(repos);
  execFileSync("git", ["clone", "-q", "--bare", checkout, join(repos, "app.git")]);
});

after(() => rmSync(work, { recursive: true, force: true }));

let n = 0;
const dest = () => join(work, `out-${++n}`, "context");

describe("git source over git http-backend", () => {
  let server: GitServer;
  before(async () => {
    server = await startGitServer({ root: repos });
  });
  after(() => server.close());

  test("no revision checks out the remote's default branch, shallow, without .git", async () => {
    const dir = dest();
    const posts = server.uploadRequests.length;
    const got = await fetchSource({ git: { url: `${server.url}/app.git` } }, dir);
    assert.equal(got.pinned, commits.second);
    const upload = server.uploadRequests.slice(posts).find((b) => b.includes("want "));
    assert.match(upload ?? "", new RegExp(`want ${commits.second}`));
    assert.match(upload ?? "", /deepen 1/);
    assert.deepEqual(got.source, { git: { url: `${server.url}/app.git`, revision: commits.second } });
    assert.equal(readFileSync(join(dir, "app/version"), "utf8"), "2\n");
    assert.equal(lstatSync(join(dir, "app/bin/run.sh")).mode & 0o777, 0o755);
    assert.equal(lstatSync(join(dir, "Dockerfile")).mode & 0o777, 0o644);
    assert.equal(readlinkSync(join(dir, "app/start")), "bin/run.sh");
    assert.equal(existsSync(join(dir, ".git")), false);
  });

  test("a branch, an annotated tag, a lightweight tag, a full and a short SHA", async () => {
    const cases: Array<[string, string, string]> = [
      ["dev", commits.devTip, "dev2\n"],
      ["refs/heads/dev", commits.devTip, "dev2\n"],
      // No branch or tag ends there: git http-backend will not send it alone, so the history comes.
      [commits.dev, commits.dev, "dev\n"],
      ["v1", commits.first, "1\n"],
      ["light", commits.first, "1\n"],
      [commits.first, commits.first, "1\n"],
      [commits.dev.slice(0, 10), commits.dev, "dev\n"],
    ];
    for (const [revision, commit, version] of cases) {
      const dir = dest();
      const got = await fetchSource({ git: { url: `${server.url}/app.git`, revision } }, dir);
      assert.equal(got.pinned, commit, revision);
      assert.equal(readFileSync(join(dir, "app/version"), "utf8"), version, revision);
    }
  });

  test("subPath makes a folder of the repository the context", async () => {
    const dir = dest();
    await fetchSource({ git: { url: `${server.url}/app.git`, revision: "main", subPath: "app/bin" } }, dir);
    assert.equal(readFileSync(join(dir, "run.sh"), "utf8"), "#!/bin/sh\necho run\n");
    assert.equal(existsSync(join(dir, "version")), false);
  });

  test("a subPath through a symlink out of the repository is refused, and nothing is left", async () => {
    const dir = dest();
    await assert.rejects(
      fetchSource({ git: { url: `${server.url}/app.git`, subPath: "outside" } }, dir),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, "KILN_ERR_PATH_ESCAPE");
        assert.match(err.message, /outside is a symlink to the absolute path \/etc/);
        return true;
      },
    );
    assert.deepEqual(readdirSync(dirname(dir)), []);
  });

  test("an unknown revision names the branches and tags there are", async () => {
    await assert.rejects(fetchSource({ git: { url: `${server.url}/app.git`, revision: "nope" } }, dest()), {
      code: "KILN_ERR_REVISION_NOT_FOUND",
      message: `git revision nope is no branch, tag or commit of ${server.url}/app.git (branches: dev, main; tags: light, v1)`,
    });
    await assert.rejects(
      fetchSource({ git: { url: `${server.url}/app.git`, revision: "0123456789" } }, dest()),
      { code: "KILN_ERR_REVISION_NOT_FOUND" },
    );
  });

  test("a missing repository is a terminal error", async () => {
    await assert.rejects(fetchSource({ git: { url: `${server.url}/missing.git` } }, dest()), (err: Error) => {
      assert.equal((err as { code?: string }).code, "KILN_ERR_SOURCE");
      assert.equal((err as { temporary?: boolean }).temporary, false);
      return true;
    });
  });
});

describe("git source with basic auth", () => {
  let server: GitServer;
  const secrets = join(work, "secrets");
  before(async () => {
    server = await startGitServer({ root: repos, login: { username: "builder", password: "s3cret" } });
    for (const [name, files] of Object.entries({
      basic: { username: "builder", password: "s3cret\n" },
      token: { username: "builder", token: "s3cret" },
      wrong: { username: "builder", password: "nope" },
    })) {
      mkdirSync(join(secrets, name), { recursive: true });
      for (const [file, value] of Object.entries(files)) writeFileSync(join(secrets, name, file), value);
    }
  });
  after(() => server.close());

  test("username and password, or a token, from the Secret's files", async () => {
    for (const secret of ["basic", "token"]) {
      const dir = dest();
      const got = await fetchSource({ git: { url: `${server.url}/app.git`, revision: "v1" } }, dir, {
        gitSecretDir: join(secrets, secret),
      });
      assert.equal(got.pinned, commits.first, secret);
    }
  });

  test("no Secret, or a wrong one, says what to fix", async () => {
    await assert.rejects(fetchSource({ git: { url: `${server.url}/app.git` } }, dest()), {
      code: "KILN_ERR_SOURCE_AUTH",
      message: `${server.url}/app.git asks for credentials (401); set source.git.secretRef to a Secret holding them`,
    });
    await assert.rejects(
      fetchSource({ git: { url: `${server.url}/app.git` } }, dest(), {
        gitSecretDir: join(secrets, "wrong"),
      }),
      {
        code: "KILN_ERR_SOURCE_AUTH",
        message: `${server.url}/app.git refused the credentials of the git Secret (401); check its username and password or token`,
      },
    );
  });
});

test("a 503 is retried", async () => {
  const server = await startGitServer({ root: repos, failFirst: [503, 502] });
  try {
    const got = await fetchSource({ git: { url: `${server.url}/app.git`, revision: "dev" } }, dest(), {
      retry: FAST_RETRY,
    });
    assert.equal(got.pinned, commits.devTip);
    assert.deepEqual(server.requests.slice(0, 2), [
      "GET /app.git/info/refs?service=git-upload-pack",
      "GET /app.git/info/refs?service=git-upload-pack",
    ]);
  } finally {
    await server.close();
  }
});
