import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { diffImages, formatDifferences, readComparableImage } from "../helpers/image-tree.ts";
import { type CorpusCase, type KnownDivergence, loadCorpus } from "./corpus.ts";
import { createKilnBuilder, type KilnBuilder } from "./corpus-kiln.ts";
import { dockerExpectation } from "./divergences.ts";
import { type Oracle, readOracleImage, startOracle } from "./oracle.ts";

/**
 * Conformance: kiln builds every case of the shared corpus and of kiln's own cases (test/conformance/cases,
 * same layout) whose built stages have no RUN, and its image must equal buildah's — merged file tree and
 * config, mtimes aside — with each case's known buildah divergences replaced by Docker's value. Expected
 * failures must fail at their line. Cases with RUN are reported as TODO until the RUN executor lands.
 */

const corpus = await loadCorpus();
const own = await loadCorpus(join(import.meta.dirname, "cases"));
const all = [...corpus, ...own];

/**
 * Divergences between buildah 1.28.2 and BuildKit that the shared corpus does not record, by case: kiln
 * gives BuildKit's value.
 */
const SCRATCH_WORKDIR: KnownDivergence = {
  what: "BuildKit starts a FROM scratch stage with WorkingDir / (dockerfile2llb emptyImage); buildah leaves it empty",
  affects: { WorkingDir: { buildah: null, buildkit: "/" } },
};
const MORE_DIVERGENCES: Readonly<Record<string, readonly KnownDivergence[]>> = {
  "scratch-copy-only": [SCRATCH_WORKDIR],
};

describe("conformance: kiln's image equals buildah's (Docker semantics)", { concurrency: false }, () => {
  let oracle: Oracle;
  let kiln: KilnBuilder;
  before(async () => {
    oracle = await startOracle(all);
    kiln = await createKilnBuilder(oracle.mirror);
  });
  after(async () => {
    await kiln?.close();
    await oracle?.close();
  });

  for (const c of all) {
    test(`${own.includes(c) ? "kiln case" : "corpus"} ${c.name}`, async (t) => {
      await checkCase(c, t);
    });
  }

  async function checkCase(c: CorpusCase, t: { todo(msg: string): void; diagnostic(msg: string): void }) {
    // The oracle pushes a case's parents (dependsOn) to the mirror when it builds the case.
    const early = c.spec.dependsOn !== undefined ? await oracle.build(c) : undefined;
    const outcome = await kiln.build(c);
    if (outcome.kind === "needs-run") {
      t.todo(`waiting for the RUN executor: RUN at Dockerfile line ${outcome.line} in the stages built`);
      return;
    }
    const expected = early ?? (await oracle.build(c));
    if (c.spec.expectFailure !== undefined) {
      assert.equal(outcome.kind, "failure", `${c.name} must fail: ${c.spec.expectFailure.reason}`);
      assert.ok(outcome.kind === "failure");
      assert.equal(outcome.line, c.spec.expectFailure.line, outcome.stderr);
      return;
    }
    assert.ok(outcome.kind === "image", outcome.kind === "failure" ? outcome.stderr : "");
    assert.ok(expected.kind === "image", expected.kind === "failure" ? `buildah: ${expected.error}` : "");
    t.diagnostic(`kiln ${outcome.seconds.toFixed(2)}s, buildah bud ${expected.budSeconds}s`);
    const docker = dockerExpectation(await readOracleImage(expected), [
      ...(c.spec.knownBuildahDivergences ?? []),
      ...(MORE_DIVERGENCES[c.name] ?? []),
    ]);
    const actual = await readComparableImage(outcome.layout, { ref: "latest" });
    const diffs = diffImages(actual, docker);
    assert.equal(diffs.length, 0, `\n${formatDifferences(diffs, { actual: "kiln", expected: "docker" })}`);
  }
});
