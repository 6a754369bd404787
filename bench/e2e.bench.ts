/**
 * Builds end to end in the test cluster: an ImageBuild created → its Succeeded condition, with the controller
 * the chart installs (in a pod, watching its own namespace), for examples/hello (a layer spec, files only;
 * target ≤ 3 s) and the corpus case c-gcc-busybox (gcc in a RUN step, then COPY --from onto busybox). Next to
 * each, buildah bud of the same case on this machine in the same run (chroot isolation, vfs storage in
 * bench/.work/, which git ignores; bases from the test registry, pulled once before). kiln's time includes
 * the push to the registry and the pods' start; buildah's is the build into its local storage. The fastest
 * of the rounds, each build under a new name, so nothing is reused but the bases the node and buildah hold.
 */
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import type { ImageBuild } from "../src/api/image-build.ts";
import { imageBuildsPath } from "../src/kube/resources.ts";
import { installChart, testClusterValues } from "../test/chart/helm.ts";
import { loadCorpus, stageCase } from "../test/conformance/corpus.ts";
import { type Cluster, cluster, createImageBuild, namespace } from "../test/controller/harness.ts";
import { type BudOptions, createBuildah } from "../test/helpers/buildah.ts";
import { readTextFiles } from "../test/helpers/files.ts";
import { fastestOf, printRow } from "./run.ts";

const WORK = join(import.meta.dirname, ".work", "e2e");
const EXAMPLES = join(import.meta.dirname, "..", "examples");
const RUNS = 3;
const TARGET_COPY_SECONDS = 3;

// examples/hello/kiln.yaml as a Dockerfile, for buildah: the same files, owner and configuration.
const HELLO_DOCKERFILE = `FROM busybox
COPY --chown=101:101 site/ /srv/www/
ENV SITE_ROOT=/srv/www
WORKDIR /srv/www
USER 101:101
LABEL org.opencontainers.image.title=hello
EXPOSE 8080/tcp
ENTRYPOINT ["httpd", "-f", "-v", "-p", "8080", "-h", "/srv/www"]
`;

interface Case {
  readonly name: string;
  /** The ImageBuild's spec but its output. */
  readonly spec: object;
  readonly bud: Omit<BudOptions, "tag">;
  readonly target?: number;
}

export default async function e2eBench(): Promise<boolean> {
  const cleanups: (() => Promise<unknown>)[] = [];
  const t = { after: (fn: () => Promise<unknown>) => cleanups.push(fn) };
  try {
    const c = await cluster();
    const registry = c.env.KILN_TEST_REGISTRY;
    const ns = await namespace(c, t);
    await rm(WORK, { recursive: true, force: true });
    await mkdir(WORK, { recursive: true });
    const [cases] = await Promise.all([
      benchCases(),
      installChart(t, {
        kubeconfig: c.env.KUBECONFIG,
        namespace: ns,
        image: c.image,
        set: testClusterValues(ns, registry),
      }),
    ]);
    const buildah = await createBuildah({
      storageDir: join(WORK, "..", "buildah"),
      dockerHubMirror: registry,
    });
    for (const base of ["busybox:latest", "gcc:bookworm"]) await buildah.pull(`docker.io/library/${base}`);
    const succeeded = watchSucceeded(c, ns, t);

    let ok = true;
    let round = 0;
    for (const k of cases) {
      const best = await fastestOf(RUNS, {
        kiln: async () => {
          const name = `${k.name}-${round++}`;
          const start = performance.now();
          await createImageBuild(c, ns, name, {
            ...k.spec,
            output: { image: `${registry}/bench/e2e/${k.name}:latest`, insecure: true },
          });
          await succeeded(name);
          return (performance.now() - start) / 1000;
        },
        reference: async () => {
          const tag = `localhost/kiln-bench/${k.name}:latest`;
          const r = await buildah.bud({ ...k.bud, tag });
          await buildah.remove(tag);
          if (!r.ok) throw new Error(`buildah failed on ${k.name}: ${r.error}`);
          return r.seconds;
        },
      });
      ok =
        printRow({
          name: `in-cluster build, create → Succeeded: ${k.name} (buildah bud)`,
          kiln: best.kiln,
          reference: best.reference,
          ...(k.target !== undefined ? { targetSeconds: k.target } : {}),
          note: `fastest of ${RUNS}; kiln's includes its pods and the push`,
        }) && ok;
    }
    await buildah.prune().catch(() => {});
    return ok;
  } finally {
    for (const fn of cleanups.reverse()) await fn().catch(() => {});
  }
}

/** The two cases: examples/hello as it is, and c-gcc-busybox with its context written inline. */
async function benchCases(): Promise<Case[]> {
  const hello = parseYaml(await readFile(join(EXAMPLES, "hello/imagebuild.yaml"), "utf8")) as ImageBuild;
  const helloDir = join(WORK, "hello");
  await mkdir(helloDir);
  await writeFile(join(helloDir, "Dockerfile"), HELLO_DOCKERFILE);
  await writeFile(join(helloDir, ".dockerignore"), "**/*.draft.html\n");
  for (const [path, text] of Object.entries(hello.spec.source.inline!.files)) {
    await mkdir(join(helloDir, path, ".."), { recursive: true });
    await writeFile(join(helloDir, path), text);
  }

  const gcc = (await loadCorpus()).find((k) => k.name === "c-gcc-busybox")!;
  const staged = await stageCase(gcc, join(WORK, gcc.name));
  const context = join(staged, gcc.spec.context);
  return [
    {
      name: "hello",
      spec: { ...hello.spec, output: undefined },
      bud: { dockerfile: join(helloDir, "Dockerfile"), context: helloDir },
      target: TARGET_COPY_SECONDS,
    },
    {
      name: gcc.name,
      spec: {
        source: { inline: { files: await readTextFiles(context) } },
        dockerfile: { inline: await readFile(join(staged, gcc.spec.dockerfile), "utf8") },
      },
      bud: { dockerfile: join(staged, gcc.spec.dockerfile), context },
    },
  ];
}

/** Resolves `succeeded(name)` when that ImageBuild's Succeeded condition turns True; rejects when False. */
function watchSucceeded(
  c: Cluster,
  ns: string,
  t: { after(fn: () => Promise<unknown>): void },
): (name: string) => Promise<void> {
  const waiting = new Map<string, PromiseWithResolvers<void>>();
  const stop = new AbortController();
  t.after(async () => stop.abort());
  const waiter = (name: string) => {
    const w = waiting.get(name) ?? Promise.withResolvers<void>();
    waiting.set(name, w);
    return w;
  };
  void c.client
    .watch(
      imageBuildsPath(ns),
      {},
      ({ object }) => {
        const ib = object as ImageBuild;
        const cond = ib.status?.conditions?.find((x) => x.type === "Succeeded");
        if (cond?.status === "True") waiter(ib.metadata.name).resolve();
        if (cond?.status === "False")
          waiter(ib.metadata.name).reject(
            new Error(`${ib.metadata.name}: ${JSON.stringify(ib.status?.failure)}`),
          );
      },
      stop.signal,
      600_000,
    )
    .catch((err: unknown) => {
      if (!stop.signal.aborted) console.error("ImageBuild watch failed:", err);
    });
  return (name) => waiter(name).promise;
}
