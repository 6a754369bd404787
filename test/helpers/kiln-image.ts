import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { promisify } from "node:util";
import { builtRuntime } from "../../src/build/local-runtime.ts";

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, "../..");

async function* files(dir: string): AsyncGenerator<string> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* files(p);
    else yield p;
  }
}

/** A hash over what goes into the image: kiln's sources, the runtime's folder name and the base's reference. */
async function contentHash(base: string, runtime: string): Promise<string> {
  const h = createHash("sha256").update(base).update(runtime);
  for (const f of ["package.json", "package-lock.json"]) h.update(f).update(await readFile(join(ROOT, f)));
  const srcFiles: string[] = [];
  for await (const f of files(join(ROOT, "src"))) srcFiles.push(f);
  for (const f of srcFiles.sort()) h.update(relative(ROOT, f)).update(await readFile(f));
  return h.digest("hex").slice(0, 16);
}

async function exists(registry: string, repository: string, tag: string): Promise<boolean> {
  const res = await fetch(`http://${registry}/v2/${repository}/manifests/${tag}`, {
    method: "HEAD",
    headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
  });
  return res.ok;
}

/**
 * The kiln image build pods run in the test cluster: Debian (from the test registry) plus kiln's
 * self-contained runtime at /kiln (scripts/runtime/build) with this checkout's src/, started as
 * `/kiln/bin/kiln`; stage pods copy that /kiln into their stage containers. Built
 * with `kiln build --spec` itself and pushed to `registry` under a tag that is the content hash, so every
 * test (and run) with the same sources reuses one image. Returns the reference pinned by digest.
 */
export async function kilnImage(registry: string): Promise<string> {
  const base = `${registry}/library/debian:bookworm-slim`;
  const repository = "kiln/kiln";
  const runtime = await builtRuntime();
  const tag = await contentHash(base, runtime);
  const ref = `${registry}/${repository}:${tag}`;
  if (!(await exists(registry, repository, tag))) {
    const dir = await mkdtemp(join(tmpdir(), "kiln-image-"));
    try {
      const spec = {
        base,
        layers: [
          {
            comment: "kiln runtime",
            files: [{ src: `${relative(ROOT, runtime)}/`, dest: "/kiln/", exclude: ["src"] }],
          },
          { comment: "kiln", files: [{ src: "src", dest: "/kiln/src/" }] },
        ],
        config: {
          entrypoint: ["/kiln/bin/kiln"],
          workingDir: "/kiln",
          env: { NODE_ENV: "production" },
        },
      };
      await writeFile(join(dir, "spec.json"), JSON.stringify(spec));
      await run(
        join(ROOT, "bin/kiln"),
        ["build", "--spec", join(dir, "spec.json"), "--insecure-registry", registry, "--push", ref, ROOT],
        { maxBuffer: 16 << 20 },
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  const res = await fetch(`http://${registry}/v2/${repository}/manifests/${tag}`, {
    method: "HEAD",
    headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
  });
  const digest = res.headers.get("docker-content-digest");
  if (!res.ok || digest === null) throw new Error(`kiln image ${ref} is not in the registry after the build`);
  return `${registry}/${repository}@${digest}`;
}
