import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { suite, type TestContext, test } from "node:test";
import { pullComparableImage } from "../helpers/image-tree.ts";
import { runKiln } from "../helpers/kiln-cli.ts";
import { startGitServer } from "../source/git-server.ts";
import {
  type Cluster,
  cluster,
  createImageBuild,
  createPushSecret,
  getImageBuild,
  listPods,
  namespace,
  registryDigest,
  startController,
  waitFor,
} from "./harness.ts";

// Dockerfile ImageBuilds on the test cluster: a plan pod compiles the Dockerfile against the registry, stages
// with RUN run in their own base image with kiln's runtime copied in, and the image is the one `kiln build`
// makes from the same Dockerfile on this machine.

async function started(t: TestContext) {
  const c = await cluster();
  const ns = await namespace(c, t);
  const r = c.env.KILN_TEST_REGISTRY;
  const ctl = startController(c, ns, t, ["--registry-mirror", `docker.io=${r}`, "--insecure-registry", r]);
  await ctl.reconciling;
  return { c, ns, ctl };
}

/** Two stages with RUN one after the other take a while on a busy two-core machine. */
async function finished(c: Cluster, ns: string, name: string) {
  return waitFor(
    `${ns}/${name} to finish`,
    async () => {
      const ib = await getImageBuild(c, ns, name);
      const phase = ib?.status?.phase;
      return phase === "Succeeded" || phase === "Failed" ? ib : undefined;
    },
    240_000,
  );
}

/** `kiln build` of the same files on this machine, pushed to `ref`; its digest. */
async function localBuild(c: Cluster, files: Record<string, string>, ref: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "kiln-df-"));
  try {
    for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
    const r = c.env.KILN_TEST_REGISTRY;
    const run = await runKiln([
      "build",
      "-f",
      join(dir, "Dockerfile"),
      "--registry-mirror",
      `docker.io=${r}`,
      "--insecure-registry",
      r,
      "--push",
      ref,
      dir,
    ]);
    assert.equal(run.code, 0, run.stderr);
    return run.stdout.trim();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const MULTI_STAGE = {
  Dockerfile: [
    "FROM busybox AS build",
    "WORKDIR /src",
    "COPY greet.sh .",
    "RUN sh greet.sh > /src/out.txt && chmod 0640 /src/out.txt && chown 1234:55 /src/out.txt",
    "",
    "FROM busybox",
    "ARG NAME=kiln",
    "COPY --from=build /src/out.txt /srv/out.txt",
    'RUN echo "second $NAME" >> /srv/out.txt && rm -rf /home',
    "USER 1234",
    'CMD ["cat", "/srv/out.txt"]',
    "",
  ].join("\n"),
  "greet.sh": "echo hello from a build pod\n",
};

suite("Dockerfile builds on the test cluster", { concurrency: true, timeout: 400_000 }, () => {
  test("a multi-stage Dockerfile with RUN builds in pods into the image kiln builds locally", async (t) => {
    const { c, ns } = await started(t);
    const secret = await createPushSecret(c, ns);
    const r = c.env.KILN_TEST_REGISTRY;
    const repo = `${r}/e2e/${ns}/multi`;
    await createImageBuild(c, ns, "multi", {
      source: { inline: { files: { "greet.sh": MULTI_STAGE["greet.sh"] } } },
      dockerfile: { inline: MULTI_STAGE.Dockerfile },
      output: { image: `${repo}:v1`, insecure: true, pushSecretRef: { name: secret } },
    });
    const ib = await finished(c, ns, "multi");
    assert.equal(ib.status?.phase, "Succeeded", JSON.stringify(ib.status?.failure));
    const digest = await registryDigest(`${repo}:v1`);
    assert.equal(ib.status?.digest, digest);
    assert.deepEqual(
      ib.status?.stages?.map((s) => [s.name, s.steps?.map((x) => [x.line, x.instruction])]),
      [
        [
          "build",
          [
            [2, "WORKDIR /src"],
            [3, "COPY greet.sh . # buildkit"],
            [
              4,
              "RUN /bin/sh -c sh greet.sh > /src/out.txt && chmod 0640 /src/out.txt && chown 1234:55 /src/out.txt # buildkit",
            ],
          ],
        ],
        [
          "1",
          [
            [7, "ARG NAME=kiln"],
            [8, "COPY --from=build /src/out.txt /srv/out.txt # buildkit"],
            [9, 'RUN /bin/sh -c echo "second $NAME" >> /srv/out.txt && rm -rf /home # buildkit'],
            [10, "USER 1234"],
            [11, 'CMD ["cat","/srv/out.txt"]'],
          ],
        ],
      ],
    );
    const image = await pullComparableImage(`${repo}@${digest}`);
    const out = image.tree.get("/srv/out.txt");
    const text = "hello from a build pod\nsecond kiln\n";
    assert.deepEqual(
      [out?.mode, out?.uid, out?.gid, out?.sha256],
      [0o640, 1234, 55, createHash("sha256").update(text).digest("hex")],
    );
    assert.equal(image.tree.has("/home"), false);
    assert.equal(image.config.User, "1234");
    // Nothing of kiln's or the kubelet's leaks into the image.
    for (const p of image.tree.keys())
      assert.doesNotMatch(p, /^\/(\.kiln|kiln-job|kiln-push-secret|dev\/termination-log)(\/|$)/);
    // The same Dockerfile built by kiln on this machine gives the same image, byte for byte.
    const local = await localBuild(c, MULTI_STAGE, `${r}/e2e/${ns}/multi-local:v1`);
    assert.equal(local, digest);
    const names = (await listPods(c, ns)).map((p) => p.metadata?.labels?.["kiln.dev/role"]).sort();
    assert.deepEqual(names, ["plan", "stage", "stage"]);
  });

  test("a second build takes its RUN steps from the cache repository; a build with the cache disabled runs them", async (t) => {
    const { c, ns } = await started(t);
    const r = c.env.KILN_TEST_REGISTRY;
    // Random bytes: only a layer taken from the cache can make the second image equal the first.
    const dockerfile = [
      "FROM busybox",
      "COPY seed.txt /seed.txt",
      "RUN head -c 32 /dev/urandom | od -An -tx1 > /random.txt",
      "RUN cat /seed.txt /random.txt > /both.txt",
      "",
    ].join("\n");
    const spec = (name: string, cache: object) => ({
      source: { inline: { files: { "seed.txt": "seed\n" } } },
      dockerfile: { inline: dockerfile },
      output: { image: `${r}/e2e/${ns}/${name}:v1`, insecure: true },
      cache,
    });
    const cacheRepo = `${r}/e2e/${ns}/step-cache`;
    const steps = (ib: Awaited<ReturnType<typeof finished>>) =>
      ib.status?.stages?.[0]?.steps?.map((s) => [s.line, s.cached, s.layerDigest]) ?? [];

    await createImageBuild(c, ns, "cold", spec("cold", { repository: cacheRepo }));
    const cold = await finished(c, ns, "cold");
    assert.equal(cold.status?.phase, "Succeeded", JSON.stringify(cold.status?.failure));
    const coldSteps = steps(cold);
    assert.deepEqual(
      coldSteps.map(([line, cached]) => [line, cached]),
      [
        [2, false],
        [3, false],
        [4, false],
      ],
    );
    // Each RUN's layer is stored under a tag of its own in the cache repository.
    const tags = JSON.parse(
      (await fetch(`http://${r}/v2/e2e/${ns}/step-cache/tags/list`).then((res) => res.text())) || "{}",
    ) as { tags?: string[] };
    assert.equal(tags.tags?.length, 2, JSON.stringify(tags));

    await createImageBuild(c, ns, "warm", spec("warm", { repository: cacheRepo }));
    await createImageBuild(c, ns, "nocache", spec("nocache", { repository: cacheRepo, disabled: true }));
    const warm = await finished(c, ns, "warm");
    assert.equal(warm.status?.phase, "Succeeded", JSON.stringify(warm.status?.failure));
    assert.deepEqual(
      steps(warm),
      coldSteps.map(([line, , digest], i) => [line, i > 0, digest]),
    );
    assert.equal(warm.status?.digest, cold.status?.digest);
    assert.equal(warm.status?.digest, await registryDigest(`${r}/e2e/${ns}/warm:v1`));

    const nocache = await finished(c, ns, "nocache");
    assert.equal(nocache.status?.phase, "Succeeded", JSON.stringify(nocache.status?.failure));
    assert.deepEqual(
      steps(nocache).map(([line, cached]) => [line, cached]),
      [
        [2, false],
        [3, false],
        [4, false],
      ],
    );
    assert.equal(steps(nocache)[0]?.[2], coldSteps[0]?.[2]); // the COPY's layer is the same
    assert.notEqual(steps(nocache)[1]?.[2], coldSteps[1]?.[2]); // the RUN ran again: other random bytes
  });

  test("a RUN that exits 1 ends Failed with its Dockerfile line and the step's output", async (t) => {
    const { c, ns } = await started(t);
    const r = c.env.KILN_TEST_REGISTRY;
    await createImageBuild(c, ns, "fails", {
      source: { inline: { files: { "x.txt": "x\n" } } },
      dockerfile: { inline: "FROM busybox\nCOPY x.txt /x.txt\nRUN echo about to fail && exit 3\n" },
      output: { image: `${r}/e2e/${ns}/fails:v1`, insecure: true },
    });
    const ib = await finished(c, ns, "fails");
    assert.equal(ib.status?.phase, "Failed");
    assert.equal(ib.status?.failure?.reason, "StepFailed");
    assert.equal(ib.status?.failure?.line, 3);
    assert.equal(ib.status?.failure?.stage, "0");
    assert.match(ib.status?.failure?.message ?? "", /exit.* 3|status 3|code 3/);
    assert.equal(ib.status?.failure?.logSnippet, "[line 3] about to fail");
  });

  test("a broken Dockerfile fails in the plan pod with its line; an unknown base fails with the image's name", async (t) => {
    const { c, ns } = await started(t);
    const r = c.env.KILN_TEST_REGISTRY;
    await createImageBuild(c, ns, "broken", {
      source: { inline: { files: { "x.txt": "x\n" } } },
      dockerfile: { inline: "FROM busybox\nCOPY x.txt /x.txt\nFROBNICATE now\n" },
      output: { image: `${r}/e2e/${ns}/broken:v1`, insecure: true },
    });
    await createImageBuild(c, ns, "nobase", {
      source: { inline: { files: { "x.txt": "x\n" } } },
      dockerfile: { inline: "FROM busybox:no-such-tag\nRUN true\n" },
      output: { image: `${r}/e2e/${ns}/nobase:v1`, insecure: true },
    });
    const broken = await finished(c, ns, "broken");
    assert.equal(broken.status?.phase, "Failed");
    assert.equal(broken.status?.failure?.line, 3);
    assert.equal(broken.status?.failure?.stage, "plan");
    assert.match(broken.status?.failure?.message ?? "", /FROBNICATE/i);
    const nobase = await finished(c, ns, "nobase");
    assert.equal(nobase.status?.phase, "Failed");
    assert.match(nobase.status?.failure?.message ?? "", /busybox:no-such-tag/);
  });

  test("a git source (basic auth, subPath) and an OCI-artifact source: fetched and pinned by the plan pod, built in pods", async (t) => {
    const { c, ns } = await started(t);
    const r = c.env.KILN_TEST_REGISTRY;
    const host = r.split(":")[0]!;
    const work = await mkdtemp(join(tmpdir(), "kiln-src-"));
    t.after(() => rm(work, { recursive: true, force: true }));
    const checkout = join(work, "checkout");
    const git = (...args: string[]) =>
      execFileSync("git", ["-C", checkout, ...args], {
        env: {
          ...process.env,
          GIT_AUTHOR_NAME: "k",
          GIT_AUTHOR_EMAIL: "k@k",
          GIT_COMMITTER_NAME: "k",
          GIT_COMMITTER_EMAIL: "k@k",
        },
      })
        .toString()
        .trim();
    await mkdir(join(checkout, "app"), { recursive: true });
    await writeFile(
      join(checkout, "app", "Dockerfile"),
      "FROM busybox\nCOPY msg.txt /msg.txt\nRUN cat /msg.txt > /copied.txt\n",
    );
    await writeFile(join(checkout, "app", "msg.txt"), "from git\n");
    await writeFile(join(checkout, "outside.txt"), "not in the context\n");
    git("init", "-q", "-b", "main");
    git("add", "-A");
    git("commit", "-q", "-m", "first");
    const commit = git("rev-parse", "HEAD");
    execFileSync("git", ["clone", "-q", "--bare", checkout, join(work, "repos", "app.git")]);
    // Pods reach the test host on the cluster bridge the test setup made.
    const server = await startGitServer({
      root: join(work, "repos"),
      host,
      login: { username: "u", password: "p" },
    });
    t.after(() => server.close());
    await c.client.request("POST", `/api/v1/namespaces/${ns}/secrets`, {
      body: {
        apiVersion: "v1",
        kind: "Secret",
        metadata: { name: "git", namespace: ns },
        type: "kubernetes.io/basic-auth",
        stringData: { username: "u", password: "p" },
      },
    });
    await createImageBuild(c, ns, "fromgit", {
      source: {
        git: { url: `${server.url}/app.git`, revision: "main", subPath: "app", secretRef: { name: "git" } },
      },
      dockerfile: {},
      output: { image: `${r}/e2e/${ns}/fromgit:v1`, insecure: true },
    });

    // A file-only stage fetches the source in its one container, which must get the git credentials too.
    await createImageBuild(c, ns, "fromgit-files", {
      source: {
        git: { url: `${server.url}/app.git`, revision: "main", subPath: "app", secretRef: { name: "git" } },
      },
      dockerfile: { inline: "FROM busybox\nCOPY msg.txt /msg.txt\n" },
      output: { image: `${r}/e2e/${ns}/fromgit-files:v1`, insecure: true },
    });

    const ctx = join(work, "ctx");
    await mkdir(ctx);
    await writeFile(join(ctx, "page.html"), "<p>from an artifact</p>\n");
    const pushed = await runKiln(["context", "push", "--insecure-registry", r, ctx, `${r}/e2e/${ns}/ctx:v1`]);
    assert.equal(pushed.code, 0, pushed.stderr);
    await createImageBuild(c, ns, "fromoci", {
      source: { oci: { image: pushed.stdout.trim() } },
      layers: {
        base: `${r}/library/busybox:latest`,
        layers: [{ files: [{ src: "page.html", dest: "/www/" }] }],
      },
      output: { image: `${r}/e2e/${ns}/fromoci:v1`, insecure: true },
    });

    const fromGit = await finished(c, ns, "fromgit");
    assert.equal(fromGit.status?.phase, "Succeeded", JSON.stringify(fromGit.status?.failure));
    const gitImage = await pullComparableImage(`${r}/e2e/${ns}/fromgit@${fromGit.status?.digest}`);
    const sha = (text: string) => createHash("sha256").update(text).digest("hex");
    assert.equal(gitImage.tree.get("/copied.txt")?.sha256, sha("from git\n"));
    // Every pod after the plan pod fetched the commit the plan pod pinned, not the branch again.
    const wants = server.uploadRequests.filter((b) => b.includes(`want ${commit}`));
    assert.ok(wants.length >= 2, `fetches of ${commit}: ${server.uploadRequests.length} upload requests`);

    const files = await finished(c, ns, "fromgit-files");
    assert.equal(files.status?.phase, "Succeeded", JSON.stringify(files.status?.failure));
    const filesImage = await pullComparableImage(`${r}/e2e/${ns}/fromgit-files@${files.status?.digest}`);
    assert.equal(filesImage.tree.get("/msg.txt")?.sha256, sha("from git\n"));

    const fromOci = await finished(c, ns, "fromoci");
    assert.equal(fromOci.status?.phase, "Succeeded", JSON.stringify(fromOci.status?.failure));
    const ociImage = await pullComparableImage(`${r}/e2e/${ns}/fromoci@${fromOci.status?.digest}`);
    assert.equal(ociImage.tree.get("/www/page.html")?.sha256, sha("<p>from an artifact</p>\n"));
  });
});
