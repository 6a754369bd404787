/**
 * Dockerfile builds with RUN: every corpus case whose stages run commands, built by `kiln build -f` (stages
 * in runc containers, the executor inside) and by `buildah bud --isolation chroot`, same staged files, same
 * bases from one local mirror, in the same run.
 *
 * - cold: nothing cached (kiln without a step cache, buildah without --layers);
 * - warm: the same build again with each tool's step cache filled by a first build (kiln --cache-repo,
 *   buildah --layers), nothing changed in between.
 */
import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { type CorpusCase, loadCorpus, stageCase } from "../test/conformance/corpus.ts";
import { createKilnBuilder, type KilnBuilder } from "../test/conformance/corpus-kiln.ts";
import { cacheRoot, startOracle } from "../test/conformance/oracle.ts";
import { type Buildah, createBuildah } from "../test/helpers/buildah.ts";
import { fastestOf, printRow } from "./run.ts";

const WORK = join(import.meta.dirname, ".work", "run-steps");
const RUNS = 2;

export default async function runStepsBench(): Promise<boolean> {
  rmSync(WORK, { recursive: true, force: true });
  mkdirSync(WORK, { recursive: true });
  const cases = (await loadCorpus()).filter(
    (c) =>
      c.spec.expectFailure === undefined &&
      c.spec.dependsOn === undefined &&
      c.spec.oracleDockerfile === undefined &&
      /^RUN\b/m.test(readDockerfile(c)),
  );
  const oracle = await startOracle(cases);
  const kiln = await createKilnBuilder(oracle.mirror);
  const buildah = await createBuildah({
    storageDir: join(cacheRoot, "buildah"),
    dockerHubMirror: oracle.mirror,
  });
  let ok = true;
  const totals = { cold: { kiln: 0, reference: 0 }, warm: { kiln: 0, reference: 0 } };
  try {
    for (const name of ["busybox:latest", "debian:bookworm-slim", "gcc:bookworm"])
      await buildah.pull(`docker.io/library/${name}`);
    for (const c of cases) {
      const staged = await stageCase(c, join(WORK, `${c.name}-${Date.now()}`));
      const bud = budOf(buildah, c, staged);
      let round = 0;
      const cold = await fastestOf(RUNS, {
        kiln: () => kilnSeconds(kiln, c, []),
        reference: async () => bud(`cold-${round++}`, false),
      });
      const cacheArgs = ["--cache-repo", `${oracle.mirror}/kiln-bench-cache/${c.name}`];
      await kilnSeconds(kiln, c, cacheArgs);
      await bud("warm", true);
      const warm = await fastestOf(RUNS, {
        kiln: () => kilnSeconds(kiln, c, cacheArgs),
        reference: () => bud("warm", true),
      });
      for (const [kind, best, target] of [
        ["cold", cold, 0.5],
        ["warm", warm, 0.1],
      ] as const) {
        totals[kind].kiln += best.kiln;
        totals[kind].reference += best.reference;
        ok = printRow({ name: `RUN build, ${kind}: ${c.name}`, ...best, target }) && ok;
      }
    }
    for (const [kind, target] of [
      ["cold", 0.5],
      ["warm", 0.1],
    ] as const) {
      ok =
        printRow({
          name: `RUN builds, ${kind}, ${cases.length} cases in total (buildah bud --isolation chroot${kind === "warm" ? " --layers" : ""})`,
          ...totals[kind],
          target,
        }) && ok;
    }
  } finally {
    await buildah.prune().catch(() => {});
    await kiln.close();
    await oracle.close();
  }
  return ok;
}

function readDockerfile(c: CorpusCase): string {
  return readFileSync(join(c.dir, c.spec.dockerfile), "utf8");
}

async function kilnSeconds(kiln: KilnBuilder, c: CorpusCase, args: readonly string[]): Promise<number> {
  const r = await kiln.build(c, { args });
  if (r.kind !== "image") throw new Error(`kiln failed on ${c.name}: ${r.stderr}`);
  return r.seconds;
}

/** `buildah bud` of the staged case under a tag per round; a cold round's image is removed again. */
function budOf(buildah: Buildah, c: CorpusCase, staged: string) {
  return async (round: string, layers: boolean): Promise<number> => {
    const tag = `localhost/kiln-bench-run/${c.name}:${round}`;
    const r = await buildah.bud({
      dockerfile: join(staged, c.spec.dockerfile),
      context: join(staged, c.spec.context),
      tag,
      layers,
      ...(c.spec.buildArgs ? { buildArgs: c.spec.buildArgs } : {}),
      ...(c.spec.target !== undefined ? { target: c.spec.target } : {}),
    });
    if (!layers) await buildah.remove(tag);
    if (!r.ok) throw new Error(`buildah failed on ${c.name}: ${r.error}`);
    return r.seconds;
  };
}
