import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { firstRun } from "../../src/build/local-build.ts";
import { compileDockerfile } from "../../src/dockerfile/compile.ts";
import { DockerfileError } from "../../src/errors.ts";
import { resolveImage } from "../../src/oci/layout.ts";
import { parsePlatform } from "../../src/oci/platform.ts";
import { parseReference } from "../../src/oci/reference.ts";
import type { Step } from "../../src/plan/plan.ts";
import { createRegistryClient } from "../../src/registry/client.ts";
import { parseMirrors } from "../../src/registry/mirrors.ts";
import { pullImage } from "../../src/registry/pull.ts";
import { type CorpusCase, stageCase } from "./corpus.ts";

/**
 * kiln as a builder under test for the conformance corpus: `bin/kiln build -f` on a staged copy of the
 * case (the oracle builds the same staged files), pulling Docker Hub names through the oracle's mirror.
 * Stages with RUN run under runc, so this needs root on Linux.
 */

const repoRoot = resolve(import.meta.dirname, "..", "..");
const KILN = join(repoRoot, "bin", "kiln");

export type KilnOutcome =
  | { readonly kind: "image"; readonly layout: string; readonly seconds: number; readonly stderr: string }
  | {
      readonly kind: "failure";
      readonly stderr: string;
      readonly line: number | undefined;
      readonly seconds: number;
    };

export interface KilnBuildOptions {
  /** More `kiln build` arguments (`--cache-repo`, `--push`). */
  readonly args?: readonly string[];
}

export interface KilnBuilder {
  /** Compiles the case: its first RUN in the stages built, or the error at its line. */
  plan(c: CorpusCase): Promise<{ run: Step | undefined } | { error: DockerfileError }>;
  build(c: CorpusCase, options?: KilnBuildOptions): Promise<KilnOutcome>;
  close(): Promise<void>;
}

export async function createKilnBuilder(mirror: string): Promise<KilnBuilder> {
  const work = await mkdtemp(join(tmpdir(), "kiln-conformance-"));
  const registry = await createRegistryClient({
    insecure: [mirror],
    mirrors: parseMirrors([`docker.io=${mirror}`]),
  });
  const plan: KilnBuilder["plan"] = async (c) => {
    const text = await readFile(join(c.dir, c.spec.dockerfile), "utf8");
    try {
      const p = await compileDockerfile(text, {
        buildArgs: c.spec.buildArgs ?? {},
        ...(c.spec.target !== undefined ? { target: c.spec.target } : {}),
        platforms: ["linux/amd64"],
        resolveImageConfig: async (ref, platform) => {
          const layout = /^oci:([^:]+)(?::(.+))?$/.exec(ref);
          if (layout) return (await resolveImage(layout[1]!, layout[2], parsePlatform(platform))).config;
          const img = await pullImage(parseReference(ref), registry, {
            platform: parsePlatform(platform),
            blobDir: join(work, "blobs"),
          });
          return img.config;
        },
      });
      return { run: firstRun(p) };
    } catch (err) {
      if (err instanceof DockerfileError) return { error: err };
      throw err;
    }
  };
  return {
    plan,
    build: async (c, options = {}) => {
      const dir = await mkdtemp(join(work, `${c.name}-`));
      const staged = await stageCase(c, join(dir, "case"));
      const layout = join(dir, "oci");
      const args = [
        "build",
        "-f",
        join(staged, c.spec.dockerfile),
        "--registry-mirror",
        `docker.io=${mirror}`,
        "--insecure-registry",
        mirror,
        "--platform",
        "linux/amd64",
        "--output",
        `oci:${layout}:latest`,
        ...(options.args ?? []),
      ];
      for (const [k, v] of Object.entries(c.spec.buildArgs ?? {})) args.push("--build-arg", `${k}=${v}`);
      if (c.spec.target !== undefined) args.push("--target", c.spec.target);
      args.push(join(staged, c.spec.context));
      const started = performance.now();
      const r = await runKiln(args);
      const seconds = (performance.now() - started) / 1000;
      if (r.code === 0) return { kind: "image", layout, seconds, stderr: r.stderr };
      const m = /Dockerfile:(\d+):/.exec(r.stderr);
      return { kind: "failure", stderr: r.stderr, line: m ? Number(m[1]) : undefined, seconds };
    },
    close: async () => {
      await rm(work, { recursive: true, force: true });
    },
  };
}

function runKiln(args: readonly string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(KILN, args, {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, SOURCE_DATE_EPOCH: "0" },
    });
    const err: Buffer[] = [];
    child.stderr.on("data", (c: Buffer) => err.push(c));
    child.on("error", reject);
    child.on("close", (code) => resolvePromise({ code: code ?? 1, stderr: Buffer.concat(err).toString() }));
  });
}
