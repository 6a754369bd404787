import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { z } from "zod";
import { type ImageBuild, type ImageBuildSpecSchema, Phase } from "../../src/api/image-build.ts";
import { contextEntries } from "../../src/cli/context-command.ts";
import { formatReference, parseReference, withDigest } from "../../src/oci/reference.ts";
import { createRegistryClient, type RegistryClient } from "../../src/registry/client.ts";
import { pushContext } from "../../src/source/context-artifact.ts";
import { installChart, testClusterValues } from "../chart/helm.ts";
import { type CorpusCase, loadCorpus, ownCasesDir, stageCase } from "../conformance/corpus.ts";
import { assertDockerImage } from "../conformance/expectation.ts";
import { dockerHubPath, type OracleResult, startOracle } from "../conformance/oracle.ts";
import {
  type Cluster,
  cluster,
  createImageBuild,
  listImageBuilds,
  namespace,
  registryDigest,
} from "../controller/harness.ts";
import { type ComparableImage, pullComparableImage } from "../helpers/image-tree.ts";

// Every Dockerfile conformance case (the shared corpus and kiln's own cases) as an ImageBuild on the real
// test cluster, built by the controller the Helm chart installs: the context reaches the cluster as a user's
// would, pushed as an OCI artifact (kiln context push) and pinned by digest; the Dockerfile, which lives beside
// the context, goes inline. Expected failures must fail at their line; every other case must succeed with the
// registry's digest in its status and an image equal to buildah's image of the same case, as the local
// conformance test compares it (test/conformance/expectation.ts). Independent cases are applied together (the
// chart's builds.maxBuilds bounds how many run); a case with dependsOn is applied when its parents have
// succeeded, each parent pushed to the name the child's FROM reaches through the docker.io mirror.

const corpus = await loadCorpus();
const own = await loadCorpus(ownCasesDir);
const cases = [...corpus, ...own];
/**
 * Builds running at once. The test machine has 2 cores, and a build is mostly CPU (pod start-up, kiln's Node
 * processes, RUN steps): 4 keep both busy while some pods wait for the kubelet or the registry; 6 were no
 * faster.
 */
const MAX_BUILDS = 4;
const SUITE_TIMEOUT_MS = 14 * 60_000;

interface CaseRun {
  readonly ib: ImageBuild;
  /** From create to Succeeded/Failed, as seen here. */
  readonly seconds: number;
  /** Succeeded only: the manifest digest the output tag holds, and the image pulled from the registry. */
  readonly registryDigest?: string;
  readonly image?: ComparableImage;
}

test("every conformance case builds in the cluster into buildah's image (Docker semantics), failures at their line", {
  timeout: SUITE_TIMEOUT_MS,
}, async (t) => {
  const suiteStart = performance.now();
  const c = await cluster();
  const ns = await namespace(c, t);
  const registry = c.env.KILN_TEST_REGISTRY;
  const work = await mkdtemp(join(tmpdir(), "kiln-corpus-cluster-"));
  t.after(() => rm(work, { recursive: true, force: true }));
  const reg = await createRegistryClient({ insecure: [registry] });
  t.after(() => reg.close());

  const [oracle, chartSeconds] = await Promise.all([
    startOracle(cases),
    (async () => {
      const start = performance.now();
      await installChart(t, {
        kubeconfig: c.env.KUBECONFIG,
        namespace: ns,
        image: c.image,
        set: { ...testClusterValues(ns, registry), "builds.maxBuilds": MAX_BUILDS },
      });
      return (performance.now() - start) / 1000;
    })(),
  ]);
  t.after(() => oracle.close());

  // buildah's images, one build after another beside the cluster's builds (cached across runs).
  const expected = new Map<string, Promise<OracleResult>>();
  let chain: Promise<unknown> = Promise.resolve();
  for (const k of cases.filter((k) => k.spec.expectFailure === undefined)) {
    const built = chain.then(() => oracle.build(k));
    chain = built.catch(() => {});
    expected.set(k.name, built);
  }

  const setupSeconds = (performance.now() - suiteStart) / 1000;
  // Every context pushed at once; then the ImageBuilds created one after another, the heaviest first, as
  // the controller admits builds in arrival order; a case with parents when they have succeeded.
  const watcher = watchImageBuilds(c, ns, SUITE_TIMEOUT_MS - 90_000);
  t.after(() => watcher.stop());
  const ctx = { c, ns, registry, reg, work };
  const prepared = await Promise.all(cases.map((k) => prepareCase(k, ctx)));
  assert.equal(new Set(prepared.map((p) => p.name)).size, cases.length, "one ImageBuild name per case");
  const runs = new Map(cases.map((k) => [k.name, Promise.withResolvers<CaseRun>()]));
  for (const d of runs.values()) d.promise.catch(() => {}); // awaited by the case's subtest below
  let applying: Promise<unknown> = Promise.resolve();
  for (const p of [...prepared].sort((x, y) => weight(y, prepared) - weight(x, prepared))) {
    const parents = (p.case.spec.dependsOn ?? []).map((name) => [name, runs.get(name)?.promise] as const);
    const turn = parents.length > 0 ? Promise.resolve() : applying;
    const run = (async () => {
      await turn;
      for (const [name, parent] of parents) {
        const phase = (await parent)?.ib.status?.phase;
        if (phase !== Phase.Succeeded)
          throw new Error(`${p.case.name} depends on ${name}, which ended ${phase ?? "unknown"}`);
      }
      const started = performance.now();
      await createImageBuild(c, ns, p.name, p.spec);
      return started;
    })();
    if (parents.length === 0) applying = run.catch(() => {});
    const d = runs.get(p.case.name)!;
    run.then((started) => finishCase(p, started, watcher)).then(d.resolve, d.reject);
  }

  for (const k of cases) {
    await t.test(`${own.includes(k) ? "kiln case" : "corpus"} ${k.name}`, async (st) => {
      const run = await runs.get(k.name)!.promise;
      const { status } = run.ib;
      if (k.spec.expectFailure !== undefined) {
        assert.equal(status?.phase, Phase.Failed, `${k.name} must fail: ${k.spec.expectFailure.reason}`);
        assert.equal(status?.failure?.line, k.spec.expectFailure.line, JSON.stringify(status?.failure));
        assert.equal(status?.digest, undefined);
        st.diagnostic(
          `cluster ${run.seconds.toFixed(1)}s: ${status?.failure?.reason} at line ${status?.failure?.line}: ${status?.failure?.message}`,
        );
        return;
      }
      assert.equal(status?.phase, Phase.Succeeded, JSON.stringify(status?.failure));
      assert.equal(status?.digest, run.registryDigest);
      const output = parseReference(run.ib.spec.output.image);
      assert.equal(status?.image, `${output.registry}/${output.repository}@${status?.digest}`);
      const built = await expected.get(k.name)!;
      assert.ok(built.kind === "image", built.kind === "failure" ? `buildah: ${built.error}` : "");
      st.diagnostic(
        `cluster ${run.seconds.toFixed(1)}s (${buildSeconds(run.ib).toFixed(0)}s building), buildah bud ${built.budSeconds}s`,
      );
      await assertDockerImage(k, built, run.image!);
    });
  }
  t.diagnostic(
    `${cases.length} cases in ${((performance.now() - suiteStart) / 1000).toFixed(1)}s ` +
      `(setup ${setupSeconds.toFixed(1)}s, of which the chart ${chartSeconds.toFixed(1)}s; builds.maxBuilds ${MAX_BUILDS})`,
  );
});

interface RunContext {
  readonly c: Cluster;
  readonly ns: string;
  readonly registry: string;
  readonly reg: RegistryClient;
  readonly work: string;
}

interface PreparedCase {
  readonly case: CorpusCase;
  readonly name: string;
  readonly dockerfile: string;
  /** The ImageBuild's spec, its context already in the registry. */
  readonly spec: ImageBuildSpecInput;
}

type ImageBuildSpecInput = z.input<typeof ImageBuildSpecSchema>;

/** Pushes the case's context as an OCI artifact, as `kiln context push` does, and writes its ImageBuild spec. */
async function prepareCase(k: CorpusCase, ctx: RunContext): Promise<PreparedCase> {
  const name = objectName(k.name);
  const staged = await stageCase(k, join(ctx.work, name));
  const dockerfile = await readFile(join(staged, k.spec.dockerfile), "utf8");
  const contextRef = parseReference(`${ctx.registry}/kiln-e2e/corpus-context/${name}`);
  const pushed = await pushContext(contextEntries(join(staged, k.spec.context)), contextRef, ctx.reg);
  // A parent goes where its children's FROM finds it: its Docker Hub name, through the docker.io mirror.
  const output =
    k.spec.pushedTo !== undefined
      ? `${ctx.registry}/${dockerHubPath(k.spec.pushedTo)}`
      : `${ctx.registry}/kiln-e2e/corpus/${ctx.ns}/${name}:latest`;
  const spec: ImageBuildSpecInput = {
    source: { oci: { image: formatReference(withDigest(contextRef, pushed.digest)) } },
    dockerfile: {
      inline: dockerfile,
      ...(k.spec.buildArgs !== undefined ? { buildArgs: k.spec.buildArgs } : {}),
      ...(k.spec.target !== undefined ? { target: k.spec.target } : {}),
    },
    output: { image: output, insecure: true },
  };
  return { case: k, name, dockerfile, spec };
}

/** Waits for the case's ImageBuild to finish and, when it succeeded, pulls its image. */
async function finishCase(p: PreparedCase, started: number, watcher: ImageBuildWatcher): Promise<CaseRun> {
  const ib = await watcher.finished(p.name);
  const seconds = (performance.now() - started) / 1000;
  if (ib.status?.phase !== Phase.Succeeded || ib.status.image === undefined) return { ib, seconds };
  const [image, digest] = await Promise.all([
    pullComparableImage(ib.status.image),
    registryDigest(ib.spec.output.image),
  ]);
  return { ib, seconds, registryDigest: digest, image };
}

/**
 * A guess at how long a case keeps the cluster busy, to start the long ones first: its stages and RUN
 * steps, and those of the cases that wait for it (dependsOn).
 */
function weight(p: PreparedCase, all: readonly PreparedCase[]): number {
  const own = p.dockerfile.match(/^\s*(FROM|RUN)\s/gim)?.length ?? 0;
  const children = all.filter((q) => q.case.spec.dependsOn?.includes(p.case.name));
  return own + children.reduce((sum, q) => sum + weight(q, all), 0);
}

interface ImageBuildWatcher {
  /** Resolves with the ImageBuild once its phase is Succeeded or Failed. */
  finished(name: string): Promise<ImageBuild>;
  stop(): void;
}

/**
 * One list of the namespace's ImageBuilds a second for all the cases (not a poll per case), until each one
 * waited for has finished; at the deadline the waits still open fail with the status last seen.
 */
function watchImageBuilds(c: Cluster, ns: string, timeoutMs: number): ImageBuildWatcher {
  const waiting = new Map<string, PromiseWithResolvers<ImageBuild>>();
  const lastSeen = new Map<string, ImageBuild>();
  const deadline = Date.now() + timeoutMs;
  let stopped = false;
  let lastError: unknown;
  void (async () => {
    while (!stopped) {
      try {
        for (const ib of await listImageBuilds(c, ns)) {
          lastSeen.set(ib.metadata.name, ib);
          const phase = ib.status?.phase;
          const w = waiting.get(ib.metadata.name);
          if (w !== undefined && (phase === Phase.Succeeded || phase === Phase.Failed)) {
            waiting.delete(ib.metadata.name);
            w.resolve(ib);
          }
        }
      } catch (err) {
        lastError = err;
      }
      if (Date.now() > deadline) {
        for (const [name, w] of waiting) {
          const seen = lastSeen.get(name)?.status;
          w.reject(
            new Error(`timed out waiting for ${ns}/${name}: ${JSON.stringify(seen)}`, { cause: lastError }),
          );
        }
        waiting.clear();
      }
      await sleep(1000);
    }
  })();
  return {
    finished: (name) => {
      const w = Promise.withResolvers<ImageBuild>();
      waiting.set(name, w);
      return w.promise;
    },
    stop: () => {
      stopped = true;
    },
  };
}

/** A case name as an ImageBuild name and repository component: DNS-1123, at most 40 characters. */
function objectName(caseName: string): string {
  return (
    caseName
      .toLowerCase()
      .replace(/[^a-z0-9-]+/g, "-")
      .slice(0, 40)
      .replace(/^-+|-+$/g, "") || "case"
  );
}

/** The controller's own build time: status.startTime to completionTime. */
function buildSeconds(ib: ImageBuild): number {
  const { startTime, completionTime } = ib.status ?? {};
  if (startTime === undefined || completionTime === undefined) return Number.NaN;
  return (Date.parse(completionTime) - Date.parse(startTime)) / 1000;
}
