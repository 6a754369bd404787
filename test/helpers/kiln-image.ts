import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join, relative, resolve } from "node:path";
import { promisify } from "node:util";
import { filesBelow } from "./files.ts";

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, "../..");
export const DOCKERFILE: string = join(ROOT, "Dockerfile");
const REPOSITORY = "kiln/kiln";

/** What the Dockerfile reads from the context, besides node_modules (package-lock.json stands for it). */
const INPUTS = ["Dockerfile", ".dockerignore", "package.json", "package-lock.json", "scripts/runtime", "src"];

/**
 * kiln's image as build pods run it in the test cluster, built by kiln itself from the repository's Dockerfile
 * (`kiln build -f Dockerfile`, its RUN step under runc) with `registry` as the Docker Hub mirror, and pushed
 * there under a tag that is a hash of the Dockerfile's inputs and bases, so every test (and run) with the same
 * sources reuses one image. Returns the reference pinned by digest.
 */
export async function kilnImage(registry: string): Promise<string> {
  const buildArgs = await dockerfileBases(registry);
  const tag = await contentHash(buildArgs);
  const ref = `${registry}/${REPOSITORY}:${tag}`;
  if ((await manifestDigest(registry, REPOSITORY, tag)) === undefined) {
    const args = ["build", "-f", DOCKERFILE, "--registry-mirror", `docker.io=${registry}`];
    args.push("--insecure-registry", registry, "--push", ref);
    for (const [k, v] of Object.entries(buildArgs)) args.push("--build-arg", `${k}=${v}`);
    await run(join(ROOT, "bin/kiln"), [...args, ROOT], { maxBuffer: 16 << 20 });
  }
  const digest = await manifestDigest(registry, REPOSITORY, tag);
  if (digest === undefined) throw new Error(`kiln image ${ref} is not in the registry after the build`);
  return `${registry}/${REPOSITORY}@${digest}`;
}

/**
 * Build arguments pinning the Dockerfile's bases (its `ARG …_IMAGE=name:tag` defaults) to the digests
 * `registry` serves under their Docker Hub names, e.g. `NODE_IMAGE=node:24.22.3-bookworm-slim@sha256:…`.
 * test/images/build pushes them first when the registry lacks one.
 */
export async function dockerfileBases(registry: string): Promise<Record<string, string>> {
  const dockerfile = await readFile(DOCKERFILE, "utf8");
  const bases = [...dockerfile.matchAll(/^ARG (\w+_IMAGE)=([^\s:@/]+):(\S+)$/gm)].map(
    ([, arg, name, tag]) => ({
      arg: arg!,
      image: `${name}:${tag}`,
      digest: () => manifestDigest(registry, `library/${name}`, tag!),
    }),
  );
  if (bases.length === 0) throw new Error("the Dockerfile has no ARG …_IMAGE=name:tag bases");
  let digests = await Promise.all(bases.map((b) => b.digest()));
  if (digests.includes(undefined)) {
    await run(join(ROOT, "test/images/build"), [registry], { maxBuffer: 16 << 20 });
    digests = await Promise.all(bases.map((b) => b.digest()));
  }
  return Object.fromEntries(
    bases.map((b, i) => {
      const digest = digests[i];
      if (digest === undefined) throw new Error(`${registry} serves no library/${b.image}`);
      return [b.arg, `${b.image}@${digest}`];
    }),
  );
}

/** A hash over what goes into the image: the Dockerfile's inputs from the checkout and its pinned bases. */
export async function contentHash(buildArgs: Readonly<Record<string, string>>): Promise<string> {
  const h = createHash("sha256").update(JSON.stringify(buildArgs));
  for (const input of INPUTS) {
    for await (const f of filesBelow(join(ROOT, input)))
      h.update(relative(ROOT, f)).update(await readFile(f));
  }
  return h.digest("hex").slice(0, 16);
}

async function manifestDigest(
  registry: string,
  repository: string,
  tag: string,
): Promise<string | undefined> {
  const res = await fetch(`http://${registry}/v2/${repository}/manifests/${tag}`, {
    method: "HEAD",
    headers: {
      accept:
        "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
    },
  });
  return res.ok ? (res.headers.get("docker-content-digest") ?? undefined) : undefined;
}
