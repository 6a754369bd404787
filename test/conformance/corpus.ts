import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, copyFile, lstat, mkdir, readdir, readFile, readlink, symlink } from "node:fs/promises";
import { join, relative, resolve } from "node:path";
import { z } from "zod";

/**
 * The Dockerfile conformance corpus: one folder per case with a Dockerfile, a build context and a case.json.
 * It lives outside the repository: KILN_CORPUS names it, else `../shared/corpus` next to the checkout, else
 * next to the repository this checkout was cloned from (a CI clone in a temporary folder).
 */
export const corpusDir: string = findCorpus();

/** kiln's own cases (test/conformance/cases), in the corpus's layout. */
export const ownCasesDir: string = join(import.meta.dirname, "cases");

function findCorpus(): string {
  const explicit = process.env["KILN_CORPUS"];
  if (explicit !== undefined) return resolve(explicit);
  const repo = resolve(import.meta.dirname, "..", "..");
  const candidates = [join(repo, "..", "shared", "corpus")];
  try {
    const origin = execFileSync("git", ["-C", repo, "config", "--get", "remote.origin.url"], {
      encoding: "utf8",
    }).trim();
    const local = origin.startsWith("file://") ? origin.slice("file://".length) : origin;
    if (local.startsWith("/")) candidates.push(join(local, "..", "shared", "corpus"));
  } catch {
    // not a git checkout, or no origin: only the first candidate
  }
  return candidates.find((c) => existsSync(c)) ?? candidates[0]!;
}

/** `affects` of a known divergence: a place (`Env X`, `Label X`, a config field, a path) → the values there. */
const Affects = z.record(
  z.string(),
  z.object({
    buildah: z.unknown().optional(),
    docker: z.unknown().optional(),
    buildkit: z.unknown().optional(),
  }),
);

export const KnownDivergence = z.object({ what: z.string(), affects: Affects.optional() });
export type KnownDivergence = z.infer<typeof KnownDivergence>;

export const CaseSpec = z.object({
  source: z.string(),
  covers: z.array(z.string()),
  context: z.string(),
  dockerfile: z.string(),
  buildArgs: z.record(z.string(), z.string()).optional(),
  target: z.string().optional(),
  expectFailure: z.object({ reason: z.string(), line: z.number().int().positive() }).optional(),
  dependsOn: z.array(z.string()).optional(),
  pushedTo: z.string().optional(),
  oracleDockerfile: z.string().optional(),
  knownBuildahDivergences: z.array(KnownDivergence).optional(),
  notes: z.array(z.string()).optional(),
  ociExportDrops: z.array(z.string()).optional(),
  buildahError: z.string().optional(),
  buildahExitCode: z.number().int().optional(),
  buildahBuildsDockerfile: z.boolean().optional(),
});
export type CaseSpec = z.infer<typeof CaseSpec>;

export interface CorpusCase {
  readonly name: string;
  /** The case folder in the corpus (read-only; build from a staged copy). */
  readonly dir: string;
  readonly spec: CaseSpec;
}

/** Every case of the corpus, parents (`dependsOn`) before the cases that need them, else by name. */
export async function loadCorpus(dir: string = corpusDir): Promise<CorpusCase[]> {
  const names = (await readdir(dir, { withFileTypes: true }))
    .filter((e) => e.isDirectory())
    .map((e) => e.name)
    .sort();
  const cases = new Map<string, CorpusCase>();
  for (const name of names) {
    const text = await readFile(join(dir, name, "case.json"), "utf8");
    cases.set(name, { name, dir: join(dir, name), spec: CaseSpec.parse(JSON.parse(text)) });
  }
  const ordered: CorpusCase[] = [];
  const visit = (c: CorpusCase, path: readonly string[]) => {
    if (ordered.includes(c)) return;
    if (path.includes(c.name)) throw new Error(`dependsOn cycle: ${[...path, c.name].join(" -> ")}`);
    for (const parent of c.spec.dependsOn ?? []) {
      const p = cases.get(parent);
      if (p === undefined) throw new Error(`case ${c.name} depends on ${parent}, which is not in ${dir}`);
      visit(p, [...path, c.name]);
    }
    ordered.push(c);
  };
  for (const c of cases.values()) visit(c, []);
  return ordered;
}

/**
 * The mode git gives a checked-out file (0755 when any execute bit is set, else 0644; folders 0755). The
 * corpus may be mounted read-only with other modes, and COPY keeps the mode, so builders see this one.
 */
function checkoutMode(mode: number, isDir: boolean): number {
  return isDir || (mode & 0o111) !== 0 ? 0o755 : 0o644;
}

/** Copies a case folder to `dest` with checkout modes; a builder under test and the oracle both build from it. */
export async function stageCase(c: CorpusCase, dest: string): Promise<string> {
  await copyTree(c.dir, dest);
  return dest;
}

async function copyTree(from: string, to: string): Promise<void> {
  const st = await lstat(from);
  if (st.isSymbolicLink()) {
    await symlink(await readlink(from), to);
  } else if (st.isDirectory()) {
    await mkdir(to);
    for (const name of await readdir(from)) await copyTree(join(from, name), join(to, name));
    await chmod(to, checkoutMode(st.mode, true));
  } else {
    await copyFile(from, to);
    await chmod(to, checkoutMode(st.mode, false));
  }
}

/** sha256 over a case folder as staged: relative paths, checkout modes, contents and link targets. */
export async function hashCase(c: CorpusCase): Promise<string> {
  const hash = createHash("sha256");
  const walk = async (path: string): Promise<void> => {
    const st = await lstat(path);
    const rel = relative(c.dir, path);
    if (st.isSymbolicLink()) {
      hash.update(`L ${rel}\0${await readlink(path)}\0`);
    } else if (st.isDirectory()) {
      hash.update(`D ${rel}\0`);
      for (const name of (await readdir(path)).sort()) await walk(join(path, name));
    } else {
      const content = await readFile(path);
      hash.update(`F ${rel}\0${checkoutMode(st.mode, false).toString(8)} ${content.length}\0`);
      hash.update(content);
    }
  };
  await walk(c.dir);
  return hash.digest("hex");
}
