import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import type { V1Container, V1Pod, V1Volume } from "@kubernetes/client-node";
import { parse as parseYaml } from "yaml";
import type { ImageBuild } from "../../src/api/image-build.ts";
import { chartRelease, installChart, testClusterValues } from "../chart/helm.ts";
import { kubectl, waitSucceeded } from "../cluster/kubectl.ts";
import { cluster, getImageBuild, namespace, registryDigest, runPod } from "../controller/harness.ts";
import { readTextFiles } from "../helpers/files.ts";
import { pullComparableImage } from "../helpers/image-tree.ts";
import { runKiln, runShell } from "../helpers/kiln-cli.ts";
import { skopeo } from "../helpers/skopeo.ts";

// The examples as a user meets them: the chart installed with helm, each examples/*/imagebuild.yaml applied
// as it is with the cluster's own kubectl, `kubectl wait` for Succeeded, `kubectl get ib` read, and every
// image run as a pod that prints what the example promises. Then the README's first command, run in a copy
// of the checkout as a new user would run it in theirs.

const ROOT = resolve(import.meta.dirname, "../..");
const EXAMPLES = join(ROOT, "examples");
const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

/** What each example's image prints when it runs: the pod's containers and the logs they must write. */
interface ImageRun {
  readonly containers: (image: string) => V1Container[];
  readonly initContainers?: V1Container[];
  readonly volumes?: V1Volume[];
  readonly logs: Readonly<Record<string, string>>;
}

const TOOLS = { name: "tools", mountPath: "/tools" };

const RUNS: Readonly<Record<string, ImageRun>> = {
  // httpd serves the site; a busybox beside it in the pod fetches it.
  hello: {
    containers: (image) => [
      { name: "site", image },
      {
        name: "client",
        image: "busybox",
        command: [
          "sh",
          "-c",
          [
            "for i in $(seq 150); do wget -q -O /tmp/index.html http://127.0.0.1:8080/ 2>/dev/null && break; sleep 0.2; done",
            "cat /tmp/index.html",
            "wget -q -O - http://127.0.0.1:8080/css/site.css",
            "wget -q -O - http://127.0.0.1:8080/about.draft.html 2>/dev/null || echo about.draft.html: not found",
          ].join("\n"),
        ],
      },
    ],
    logs: {
      client: [
        "<!doctype html>",
        "<title>hello from kiln</title>",
        '<link rel="stylesheet" href="css/site.css">',
        "<h1>Hello from kiln</h1>",
        "h1 { font-family: sans-serif; }",
        "about.draft.html: not found",
        "",
      ].join("\n"),
    },
  },
  "c-program": {
    containers: (image) => [{ name: "main", image }],
    logs: { main: "Hello from C, compiled by gcc in a kiln build pod, running on x86_64\n" },
  },
  greet: {
    containers: (image) => [
      { name: "main", image },
      { name: "args", image, args: ["Ada", "Grace"] },
    ],
    logs: {
      main: "Hello, kiln!\n(as 65534:65534 in /etc/greet; /etc/greet/greeting.txt belongs to nobody:nogroup)\n",
      args: "Hello, Ada!\nHello, Grace!\n(as 65534:65534 in /etc/greet; /etc/greet/greeting.txt belongs to nobody:nogroup)\n",
    },
  },
  // Files on scratch, nothing to run: busybox is copied in, as a debugging session would.
  "multi-platform": {
    initContainers: [
      { name: "tools", image: "busybox", command: ["cp", "/bin/busybox", "/tools/"], volumeMounts: [TOOLS] },
    ],
    volumes: [{ name: "tools", emptyDir: {} }],
    containers: (image) => [
      {
        name: "main",
        image,
        command: ["/tools/busybox", "cat", "/usr/share/hello/message.txt", "/usr/share/hello/arch.txt"],
        volumeMounts: [TOOLS],
      },
    ],
    logs: { main: "The same file on every platform.\nBuilt for amd64 (x86-64).\n" },
  },
};

async function readExamples(): Promise<{ file: string; ib: ImageBuild }[]> {
  const found = [];
  for (const dir of (await readdir(EXAMPLES, { withFileTypes: true })).filter((e) => e.isDirectory())) {
    const file = join(EXAMPLES, dir.name, "imagebuild.yaml");
    const text = await readFile(file, "utf8").catch(() => undefined);
    if (text !== undefined) found.push({ file, ib: parseYaml(text) as ImageBuild });
  }
  return found;
}

test("hello's ImageBuild is kiln.yaml with site/ written inline", async () => {
  const dir = join(EXAMPLES, "hello");
  const ib = parseYaml(await readFile(join(dir, "imagebuild.yaml"), "utf8")) as ImageBuild;
  const spec = parseYaml(await readFile(join(dir, "kiln.yaml"), "utf8")) as Record<string, unknown>;
  assert.deepEqual(ib.spec.layers, spec);
  const site = await readTextFiles(join(dir, "site"));
  assert.deepEqual(
    ib.spec.source.inline?.files,
    Object.fromEntries(Object.entries(site).map(([path, text]) => [`site/${path}`, text])),
  );
});

test("every example applies as it is, succeeds with the registry's digest and runs as it says", {
  timeout: 900_000,
}, async (t) => {
  const c = await cluster();
  const ns = await namespace(c, t);
  const registry = c.env.KILN_TEST_REGISTRY;
  const examples = await readExamples();
  assert.deepEqual(examples.map((e) => e.ib.metadata.name).sort(), Object.keys(RUNS).sort());
  await installChart(t, {
    kubeconfig: c.env.KUBECONFIG,
    namespace: ns,
    image: c.image,
    set: testClusterValues(ns, registry),
  });
  const k = (...args: string[]) => kubectl(c.env.KUBECONFIG, ["--namespace", ns, ...args]);

  const started = performance.now();
  for (const e of examples) {
    assert.equal(await k("apply", "-f", e.file), `imagebuild.kiln.dev/${e.ib.metadata.name} created\n`);
  }
  await Promise.all(
    examples.map(async ({ ib: { metadata } }) => {
      const printed = await waitSucceeded(c.env.KUBECONFIG, ns, metadata.name);
      assert.equal(printed, `imagebuild.kiln.dev/${metadata.name} condition met\n`);
      t.diagnostic(
        `${metadata.name}: Succeeded after ${((performance.now() - started) / 1000).toFixed(1)} s`,
      );
    }),
  );

  const built = new Map<string, ImageBuild>();
  for (const e of examples) {
    const name = e.ib.metadata.name;
    const ib = (await getImageBuild(c, ns, name))!;
    const repo = e.ib.spec.output.image;
    const digest = await registryDigest(`${repo}:latest`);
    assert.equal(ib.status?.phase, "Succeeded", name);
    assert.equal(ib.status?.digest, digest, name);
    assert.equal(ib.status?.image, `${repo}@${digest}`, name);
    assert.deepEqual(
      ib.status?.conditions?.map((x) => [x.type, x.status]).sort(),
      [
        ["Ready", "True"],
        ["Succeeded", "True"],
      ],
      name,
    );
    built.set(name, ib);
  }

  // The printer columns: NAME and the CRD's Phase, Image, Digest and Age (Reason only with -o wide).
  const [header, ...rows] = (await k("get", "ib"))
    .trimEnd()
    .split("\n")
    .map((l) => l.split(/\s{2,}/));
  assert.deepEqual(header, ["NAME", "PHASE", "IMAGE", "DIGEST", "AGE"]);
  assert.deepEqual(
    rows.map((r) => r.slice(0, 4)),
    [...built.values()]
      .sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1))
      .map((ib) => [ib.metadata.name, "Succeeded", ib.spec.output.image, ib.status!.digest!]),
  );
  for (const r of rows) assert.match(r[4]!, /^(\d+m)?\d+s$|^\d+m$/);

  // The multi-platform build is an index of both platforms, each image with its own arch.txt.
  const multi = built.get("multi-platform")!;
  const index = JSON.parse(
    await skopeo("inspect", "--raw", "--tls-verify=false", `docker://${multi.status!.image}`),
  ) as { mediaType: string; manifests: { digest: string; platform: { os: string; architecture: string } }[] };
  assert.equal(index.mediaType, "application/vnd.oci.image.index.v1+json");
  assert.deepEqual(
    index.manifests.map((m) => [m.platform.os, m.platform.architecture, m.digest]),
    multi.status!.platforms!.map((p) => [...p.platform.split("/"), p.digest]),
  );
  assert.deepEqual(
    index.manifests.map((m) => `${m.platform.os}/${m.platform.architecture}`),
    ["linux/amd64", "linux/arm64"],
  );
  const arm64 = await pullComparableImage(`${multi.spec.output.image}@${index.manifests[1]!.digest}`);
  assert.equal(arm64.config.architecture, "arm64");
  assert.equal(arm64.tree.get("/usr/share/hello/arch.txt")?.sha256, sha256("Built for arm64 (AArch64).\n"));
  assert.equal(
    arm64.tree.get("/usr/share/hello/message.txt")?.sha256,
    sha256("The same file on every platform.\n"),
  );

  // The C program's image holds the binary, not the compiler.
  const program = await pullComparableImage(built.get("c-program")!.status!.image!);
  assert.equal(program.tree.get("/usr/local/bin/hello")?.type, "file");
  assert.equal(program.tree.get("/usr/bin/gcc"), undefined);

  await Promise.all(
    [...built.values()].map(async (ib) => {
      const run = RUNS[ib.metadata.name]!;
      const pod: V1Pod = {
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name: `run-${ib.metadata.name}`, namespace: ns },
        spec: {
          restartPolicy: "Never",
          automountServiceAccountToken: false,
          containers: run.containers(ib.status!.image!),
          ...(run.initContainers ? { initContainers: run.initContainers } : {}),
          ...(run.volumes ? { volumes: run.volumes } : {}),
        },
      };
      assert.deepEqual(await runPod(c, pod, Object.keys(run.logs)), run.logs, ib.metadata.name);
    }),
  );

  // kiln.yaml built on this machine is the image the cluster built from its ImageBuild.
  const local = await runKiln([
    "build",
    "--spec",
    join(EXAMPLES, "hello/kiln.yaml"),
    "--registry-mirror",
    `docker.io=${registry}`,
    "--insecure-registry",
    registry,
    "--output",
    `oci:${await scratchDir(t)}/hello`,
    join(EXAMPLES, "hello"),
  ]);
  assert.equal(local.code, 0, local.stderr);
  assert.equal(local.stdout, built.get("hello")!.status!.digest);
});

test("the README's first command installs kiln, builds hello in the cluster and prints its digest", {
  timeout: 900_000,
}, async (t) => {
  const c = await cluster();
  const ns = await namespace(c, t);
  const command = await quickStartCommand();
  assert.equal(command, "npm ci && npm run demo");
  // A copy of the checkout as git has it (without node_modules, caches or the cluster's env file).
  const checkout = await scratchDir(t);
  await copyCheckout(checkout);
  t.after(() =>
    chartRelease({ kubeconfig: c.env.KUBECONFIG, namespace: ns })
      .uninstall()
      .catch(() => {}),
  );

  const started = performance.now();
  const run = await runShell(command, [], { cwd: checkout, env: { KILN_DEMO_NAMESPACE: ns } });
  t.diagnostic(`${command}: ${((performance.now() - started) / 1000).toFixed(1)} s`);
  assert.equal(run.code, 0, run.stderr);
  const ib = (await getImageBuild(c, ns, "hello"))!;
  const digest = await registryDigest(`${ib.spec.output.image}:latest`);
  // npm prints its banner on stdout before the demo's one line.
  assert.equal(run.stdout.split("\n").at(-1), digest);
  assert.equal(ib.status?.digest, digest);
  assert.match(run.stderr, new RegExp(`^hello +Succeeded +${ib.spec.output.image} +${digest} `, "m"));
});

/** The first line of the first sh block under "## Quick start". */
async function quickStartCommand(): Promise<string> {
  const readme = await readFile(join(ROOT, "README.md"), "utf8");
  const section = readme.slice(readme.indexOf("\n## Quick start\n"));
  const block = /```sh\n([^\n]*)\n/.exec(section);
  assert.ok(block, "README.md: a ```sh block under ## Quick start");
  return block[1]!;
}

/** The files git tracks or would track (not the ignored ones), copied as they are in the working tree. */
async function copyCheckout(dest: string): Promise<void> {
  const { stdout } = await promisify(execFile)(
    "git",
    ["-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
    { maxBuffer: 64 << 20 },
  );
  for (const file of stdout.split("\0").filter((f) => f !== "")) {
    await mkdir(dirname(join(dest, file)), { recursive: true });
    await copyFile(join(ROOT, file), join(dest, file)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== "ENOENT") throw err; // deleted in the working tree
    });
  }
}

async function scratchDir(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "kiln-examples-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}
