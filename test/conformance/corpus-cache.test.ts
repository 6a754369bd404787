import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { loadCorpus } from "./corpus.ts";
import { createKilnBuilder, type KilnBuilder } from "./corpus-kiln.ts";
import { type Oracle, startOracle } from "./oracle.ts";

/**
 * The per-step cache on corpus cases with RUN: built twice with the same cache repository and push target,
 * the second build runs no RUN step, uploads no blob and gives the same image. Bases come through the
 * oracle's mirror, which also holds the cache and the pushed images.
 */

const CASES = ["whiteouts-opaque", "c-gcc-busybox", "workdir-user"];
const corpus = (await loadCorpus()).filter((c) => CASES.includes(c.name));

describe("step cache on corpus cases", { concurrency: false }, () => {
  let oracle: Oracle;
  let kiln: KilnBuilder;
  before(async () => {
    oracle = await startOracle(corpus);
    kiln = await createKilnBuilder(oracle.mirror);
  });
  after(async () => {
    await kiln?.close();
    await oracle?.close();
  });

  for (const c of corpus) {
    test(`${c.name}: the second build runs no RUN step and pushes no blob`, async (t) => {
      const args = [
        "--cache-repo",
        `${oracle.mirror}/kiln-cache/${c.name}`,
        "--push",
        `${oracle.mirror}/kiln-out/${c.name}:1`,
      ];
      const first = await kiln.build(c, { args });
      assert.equal(first.kind, "image", first.stderr);
      const ran = Number(/runSteps=(\d+)/.exec(first.stderr)?.[1]);
      assert.ok(ran > 0, first.stderr);
      const second = await kiln.build(c, { args });
      assert.equal(second.kind, "image", second.stderr);
      assert.match(second.stderr, new RegExp(`runSteps=0 cachedSteps=${ran}\\b`));
      assert.match(second.stderr, /Pushed image .*blobsUploaded=0/);
      const digest = (s: string) => /Pushed image .*digest=(sha256:[0-9a-f]{64})/.exec(s)?.[1];
      assert.equal(digest(second.stderr), digest(first.stderr));
      t.diagnostic(`cold ${first.seconds.toFixed(2)}s, warm ${second.seconds.toFixed(2)}s`);
    });
  }
});
