import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { readComparableImage } from "../helpers/image-tree.ts";
import { type CorpusCase, loadCorpus, ownCasesDir } from "./corpus.ts";
import { createKilnBuilder, type KilnBuilder } from "./corpus-kiln.ts";
import { assertDockerImage } from "./expectation.ts";
import { type Oracle, startOracle } from "./oracle.ts";

/**
 * Conformance: kiln builds every case of the shared corpus and of kiln's own cases (test/conformance/cases,
 * same layout) on this machine, and its image must equal buildah's — merged file tree and config, mtimes
 * aside — with the known buildah divergences replaced by Docker's value (expectation.ts). Expected failures
 * must fail at their line.
 */

const corpus = await loadCorpus();
const own = await loadCorpus(ownCasesDir);
const all = [...corpus, ...own];

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

  async function checkCase(c: CorpusCase, t: { diagnostic(msg: string): void }) {
    // The oracle pushes a case's parents (dependsOn) to the mirror when it builds the case.
    const early = c.spec.dependsOn !== undefined ? await oracle.build(c) : undefined;
    const outcome = await kiln.build(c);
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
    await assertDockerImage(c, expected, await readComparableImage(outcome.layout, { ref: "latest" }));
  }
});
