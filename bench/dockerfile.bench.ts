/**
 * Dockerfile builds: kiln's parse + plan of a generated 2,000-line Dockerfile, and the file-only conformance
 * cases (no RUN in the stages built) built by `kiln build -f` and by `buildah bud`, same staged files, same
 * base images from one local mirror, in the same run. Work files live in bench/.work/, which git ignores.
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { compileDockerfile } from "../src/dockerfile/compile.ts";
import { type CorpusCase, loadCorpus, stageCase } from "../test/conformance/corpus.ts";
import { createKilnBuilder } from "../test/conformance/corpus-kiln.ts";
import { cacheRoot, startOracle } from "../test/conformance/oracle.ts";
import { createBuildah } from "../test/helpers/buildah.ts";
import { fastestOf, printRow, timeAsync } from "./run.ts";

const WORK = join(import.meta.dirname, ".work", "dockerfile");
const RUNS = 3;

export default async function dockerfileBench(): Promise<boolean> {
  rmSync(WORK, { recursive: true, force: true });
  mkdirSync(WORK, { recursive: true });
  let ok = true;
  ok = (await benchPlan()) && ok;
  ok = (await benchCases()) && ok;
  return ok;
}

/** 100 stages of 20 lines: ARG, ENV and LABEL over continuation lines, COPY --from, WORKDIR, EXPOSE, CMD. */
function generatedDockerfile(): string {
  const lines = ["# syntax=docker/dockerfile:1", "ARG BASE=scratch"];
  for (let s = 0; lines.length < 2000; s++) {
    lines.push(
      `FROM \${BASE} AS stage${s}`,
      `ARG VERSION=${s}.0`,
      "ENV A=1 \\",
      "    B=${A}-$VERSION \\",
      '    C="quoted ${B}" \\',
      "    PATH=/opt/bin:$PATH",
      `LABEL org.example.stage=${s} \\`,
      '      org.example.version="$VERSION" \\',
      "      org.example.b=$B",
      `WORKDIR /app/${s}`,
      s > 0 ? `COPY --from=stage${s - 1} /app /app` : "COPY . .",
      "COPY --chown=1000:1000 --chmod=0644 conf/*.conf ./conf/",
      "EXPOSE 8000-8010/tcp 53/udp",
      "USER 1000:1000",
      'HEALTHCHECK --interval=30s CMD ["/bin/true"]',
      "STOPSIGNAL SIGTERM",
      "VOLUME /data",
      "# a comment line",
      'ENTRYPOINT ["/app/run"]',
      "CMD serve --port 80",
    );
  }
  return `${lines.slice(0, 2000).join("\n")}\n`;
}

async function benchPlan(): Promise<boolean> {
  const text = generatedDockerfile();
  writeFileSync(join(WORK, "Dockerfile.2000"), text);
  const plan = () =>
    compileDockerfile(text, {
      platforms: ["linux/amd64"],
      resolveImageConfig: () => Promise.reject(new Error("no images in this Dockerfile")),
    });
  await plan(); // warm up the JIT
  const { kiln } = await fastestOf(RUNS, { kiln: () => timeAsync(plan) });
  // No other tool plans without building, so the row has no reference: kiln's time is shown against itself.
  return printRow({
    name: "parse + plan, 2,000-line Dockerfile (100 stages)",
    kiln,
    reference: kiln,
    note: `${Math.round(2000 / kiln)} lines/s; no reference tool`,
  });
}

async function benchCases(): Promise<boolean> {
  const corpus = await loadCorpus();
  const own = await loadCorpus(join(import.meta.dirname, "..", "test", "conformance", "cases"));
  const all = [...corpus, ...own];
  const oracle = await startOracle(all);
  const kiln = await createKilnBuilder(oracle.mirror);
  const buildah = await createBuildah({
    storageDir: join(cacheRoot, "buildah"),
    dockerHubMirror: oracle.mirror,
  });
  let ok = true;
  try {
    for (const name of ["busybox:latest", "debian:bookworm-slim"])
      await buildah.pull(`docker.io/library/${name}`);
    const cases: CorpusCase[] = [];
    for (const c of all) {
      if (c.spec.expectFailure !== undefined || c.spec.dependsOn !== undefined) continue;
      const compiled = await kiln.plan(c);
      if ("run" in compiled && compiled.run === undefined) cases.push(c);
    }
    let kilnTotal = 0;
    let buildahTotal = 0;
    for (const c of cases) {
      const staged = await stageCase(c, join(WORK, `${c.name}-${Date.now()}`));
      const best = await fastestOf(RUNS, {
        kiln: async () => {
          const r = await kiln.build(c);
          if (r.kind !== "image") throw new Error(`kiln failed on ${c.name}: ${JSON.stringify(r)}`);
          return r.seconds;
        },
        reference: async () => {
          const tag = `localhost/kiln-bench/${c.name}:latest`;
          const r = await buildah.bud({
            dockerfile: join(staged, c.spec.dockerfile),
            context: join(staged, c.spec.context),
            tag,
            ...(c.spec.buildArgs ? { buildArgs: c.spec.buildArgs } : {}),
            ...(c.spec.target !== undefined ? { target: c.spec.target } : {}),
          });
          await buildah.remove(tag);
          if (!r.ok) throw new Error(`buildah failed on ${c.name}: ${r.error}`);
          return r.seconds;
        },
      });
      kilnTotal += best.kiln;
      buildahTotal += best.reference;
      ok =
        printRow({
          name: `file-only build: ${c.name}`,
          kiln: best.kiln,
          reference: best.reference,
          target: 0.5,
        }) && ok;
    }
    ok =
      printRow({
        name: `file-only builds, ${cases.length} cases in total (buildah bud)`,
        kiln: kilnTotal,
        reference: buildahTotal,
        target: 0.5,
      }) && ok;
  } finally {
    await buildah.prune().catch(() => {});
    await kiln.close();
    await oracle.close();
  }
  return ok;
}
