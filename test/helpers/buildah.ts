import { spawn } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";

/**
 * Debian's buildah with its own storage (vfs, under a cache folder) and its own registries.conf, so it
 * never touches the machine's image store and pulls Docker Hub names from a local mirror.
 */
export interface Buildah {
  /** The first line of `buildah version`, e.g. `Version:         1.28.2`. */
  version(): Promise<string>;
  /** `buildah bud`; resolves with the outcome, also when the build fails. */
  bud(build: BudOptions): Promise<BudResult>;
  /** `buildah push [--format v2s2] TAG DEST`, DEST e.g. `oci:DIR:REF`, `dir:DIR` or `docker://HOST/REPO:TAG`. */
  push(tag: string, dest: string, options?: { readonly format?: "oci" | "v2s2" }): Promise<void>;
  /** `buildah pull` (by the mirror, for names like `busybox:latest`). */
  pull(image: string): Promise<void>;
  /** `buildah rmi` of tags; unknown tags are not an error. */
  remove(...tags: string[]): Promise<void>;
  /** Removes intermediate stage images left without a name. */
  prune(): Promise<void>;
}

export interface BuildahOptions {
  /** Storage root; `<dir>/root` and `<dir>/runroot` are used. */
  readonly storageDir: string;
  /** `host:port` of a plain-HTTP registry that serves Docker Hub names (`library/busybox`, ...). */
  readonly dockerHubMirror: string;
}

export interface BudOptions {
  readonly dockerfile: string;
  readonly context: string;
  readonly tag: string;
  readonly buildArgs?: Readonly<Record<string, string>>;
  readonly target?: string;
  /** `--layers`: reuse and keep intermediate images, buildah's step cache. */
  readonly layers?: boolean;
}

export type BudResult =
  | { readonly ok: true; readonly seconds: number }
  | {
      readonly ok: false;
      readonly seconds: number;
      readonly exitCode: number;
      /** The `Error: ...` line buildah prints last. */
      readonly error: string;
      readonly output: string;
    };

export async function createBuildah(options: BuildahOptions): Promise<Buildah> {
  await mkdir(options.storageDir, { recursive: true });
  const registriesConf = join(
    options.storageDir,
    `registries-${options.dockerHubMirror.replace(":", "-")}.conf`,
  );
  await writeFile(
    registriesConf,
    [
      'unqualified-search-registries = ["docker.io"]',
      'short-name-mode = "permissive"',
      "[[registry]]",
      'prefix = "docker.io"',
      `location = "${options.dockerHubMirror}"`,
      "insecure = true",
      "",
    ].join("\n"),
  );
  const global = [
    "--root",
    join(options.storageDir, "root"),
    "--runroot",
    join(options.storageDir, "runroot"),
    "--storage-driver",
    "vfs",
  ];
  const env = { ...process.env, CONTAINERS_REGISTRIES_CONF: registriesConf };
  const run = (args: readonly string[]) => runBuildah([...global, ...args], env);
  const must = async (args: readonly string[]) => {
    const r = await run(args);
    if (r.exitCode !== 0)
      throw new Error(`buildah ${args.join(" ")} exited ${r.exitCode}: ${r.output.trim()}`);
    return r.stdout;
  };
  return {
    version: async () => (await must(["version"])).split("\n")[0]!.trim(),
    bud: async (b) => {
      const args = ["bud", "--isolation", "chroot", "--format", "docker", "-f", b.dockerfile];
      for (const [k, v] of Object.entries(b.buildArgs ?? {})) args.push("--build-arg", `${k}=${v}`);
      if (b.target !== undefined) args.push("--target", b.target);
      if (b.layers === true) args.push("--layers");
      args.push("-t", b.tag, b.context);
      const started = performance.now();
      const r = await run(args);
      const seconds = (performance.now() - started) / 1000;
      if (r.exitCode === 0) return { ok: true, seconds };
      const error = r.output.split("\n").findLast((l) => l.startsWith("Error: ")) ?? "";
      return { ok: false, seconds, exitCode: r.exitCode, error, output: r.output };
    },
    push: async (tag, dest, o) => {
      await must(["push", ...(o?.format ? ["--format", o.format] : []), "--tls-verify=false", tag, dest]);
    },
    pull: async (image) => {
      await must(["pull", "--quiet", image]);
    },
    remove: async (...tags) => {
      for (const tag of tags) {
        const r = await run(["rmi", "--force", tag]);
        if (r.exitCode !== 0 && !/image not known|not found/i.test(r.output)) {
          throw new Error(`buildah rmi ${tag} exited ${r.exitCode}: ${r.output.trim()}`);
        }
      }
    },
    prune: async () => {
      await must(["rmi", "--prune", "--force"]);
    },
  };
}

interface RunResult {
  readonly exitCode: number;
  readonly stdout: string;
  /** stdout and stderr interleaved as buildah wrote them. */
  readonly output: string;
}

function runBuildah(args: readonly string[], env: NodeJS.ProcessEnv): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn("buildah", args, { stdio: ["ignore", "pipe", "pipe"], env });
    const out: Buffer[] = [];
    const all: Buffer[] = [];
    child.stdout.on("data", (c: Buffer) => {
      out.push(c);
      all.push(c);
    });
    child.stderr.on("data", (c: Buffer) => all.push(c));
    child.on("error", reject);
    child.on("close", (code, signal) => {
      resolve({
        exitCode: code ?? (signal ? 128 : 1),
        stdout: Buffer.concat(out).toString("utf8"),
        output: Buffer.concat(all).toString("utf8"),
      });
    });
  });
}
