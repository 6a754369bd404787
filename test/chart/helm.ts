import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { parseAllDocuments } from "yaml";

const run = promisify(execFile);

export const CHART = resolve(import.meta.dirname, "../../charts/kiln");
const HELM_SCRIPT = resolve(import.meta.dirname, "helm");

let built: Promise<string> | undefined;

/** The pinned helm binary, built from its Go module by test/chart/helm on first use (cached across runs). */
export function helmPath(): Promise<string> {
  built ??= run(HELM_SCRIPT, ["--path"], { maxBuffer: 16 << 20 }).then((r) => r.stdout.trim());
  return built;
}

/** Runs helm; a non-zero exit rejects with its stderr in the message. */
export async function helm(
  args: readonly string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ stdout: string; stderr: string }> {
  const bin = await helmPath();
  try {
    return await run(bin, [...args], { env: { ...process.env, ...env }, maxBuffer: 64 << 20 });
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`helm ${args.join(" ")}: ${e.stderr ?? e.message}`, { cause: err });
  }
}

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  [field: string]: unknown;
}

/** `values` as a file helm reads (JSON is YAML), removed after `fn`. */
export async function withValuesFile<T>(values: object, fn: (file: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), "kiln-chart-"));
  try {
    const file = join(dir, "values.json");
    await writeFile(file, JSON.stringify(values));
    return await fn(file);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** `helm template` of the chart with `values`, as objects in the order helm prints them. */
export async function renderChart(
  values: object,
  opts: { release?: string; namespace?: string; includeCrds?: boolean } = {},
): Promise<KubeObject[]> {
  const { stdout } = await withValuesFile(values, (file) =>
    helm([
      "template",
      opts.release ?? "kiln",
      CHART,
      "--namespace",
      opts.namespace ?? "kiln-system",
      "--values",
      file,
      ...(opts.includeCrds ? ["--include-crds"] : []),
    ]),
  );
  return parseAllDocuments(stdout)
    .map((d) => {
      if (d.errors.length > 0) throw new Error(`helm template printed bad YAML: ${d.errors[0]?.message}`);
      return d.toJS() as KubeObject | null;
    })
    .filter((o): o is KubeObject => o !== null);
}

export interface InstalledChart {
  readonly release: string;
  readonly namespace: string;
  /** helm's flags naming the cluster and the release's namespace. */
  readonly kube: readonly string[];
  uninstall(): Promise<void>;
}

export interface ChartOptions {
  readonly kubeconfig: string;
  readonly namespace: string;
  /** kiln's image as `repository@sha256:…`. */
  readonly image: string;
  readonly release?: string;
  /** `--set-json` values (JSON is given as is, so no `--set` escaping applies). */
  readonly set?: Readonly<Record<string, unknown>>;
  readonly setFile?: Readonly<Record<string, string>>;
  /** Create the namespace when it is missing. */
  readonly createNamespace?: boolean;
}

/**
 * The values a release on the test cluster needs: it watches only `namespace` (Roles there, not a
 * ClusterRole), so it never touches the builds of tests running beside it, and its build pods push to and
 * pull Docker Hub names from the cluster's plain-HTTP registry.
 */
export function testClusterValues(namespace: string, registry: string): Record<string, unknown> {
  return {
    watchNamespace: namespace,
    insecureRegistries: [registry],
    registryMirrors: [`docker.io=${registry}`],
  };
}

/** The release `opts` names, to uninstall it; nothing is installed. */
export function chartRelease(
  opts: Pick<ChartOptions, "kubeconfig" | "namespace" | "release">,
): InstalledChart {
  const release = opts.release ?? "kiln";
  const kube = ["--kubeconfig", opts.kubeconfig, "--namespace", opts.namespace];
  const uninstall = async () => {
    await helm(["uninstall", release, ...kube, "--ignore-not-found", "--wait", "--timeout", "2m"]);
  };
  return { release, namespace: opts.namespace, kube, uninstall };
}

/**
 * `helm upgrade --install` of the chart as release `release` into namespace `namespace`, running `image`;
 * waits until the controller is Available. The release stays.
 */
export async function deployChart(opts: ChartOptions): Promise<InstalledChart> {
  const chart = chartRelease(opts);
  const [repository, digest] = opts.image.split("@") as [string, string];
  const set = { "image.repository": repository, "image.digest": digest, ...opts.set };
  await helm([
    "upgrade",
    "--install",
    chart.release,
    CHART,
    ...chart.kube,
    ...(opts.createNamespace ? ["--create-namespace"] : []),
    ...Object.entries(set).flatMap(([k, v]) => ["--set-json", `${k}=${JSON.stringify(v)}`]),
    ...Object.entries(opts.setFile ?? {}).flatMap(([k, f]) => ["--set-file", `${k}=${f}`]),
    "--wait",
    "--timeout",
    "5m",
  ]);
  return chart;
}

/** {@link deployChart} into the test cluster, uninstalled after the test (also when the install fails). */
export async function installChart(
  t: { after(fn: () => Promise<unknown>): void },
  opts: ChartOptions,
): Promise<InstalledChart> {
  const chart = chartRelease(opts);
  t.after(() => chart.uninstall().catch(() => {}));
  return deployChart(opts);
}
