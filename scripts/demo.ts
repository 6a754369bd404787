// The README's quick start, after `npm ci`, as root: brings up the test cluster (a no-op when it runs),
// builds kiln's image with kiln from this checkout, installs the chart with helm, applies examples/hello,
// waits for it to succeed and prints the pushed image's digest on stdout (the rest goes to stderr). The
// release watches only its own namespace (KILN_DEMO_NAMESPACE, default kiln-demo), so it leaves the other
// builds on the cluster alone. Run again, it finds everything in place and prints the same digest.
import { spawnSync } from "node:child_process";
import { resolve } from "node:path";
import { deployChart, testClusterValues } from "../test/chart/helm.ts";
import { loadClusterEnv } from "../test/cluster/cluster-env.ts";
import { kubectl, waitSucceeded } from "../test/cluster/kubectl.ts";
import { kilnImage } from "../test/helpers/kiln-image.ts";

const root = resolve(import.meta.dirname, "..");
const namespace = process.env.KILN_DEMO_NAMESPACE || "kiln-demo";
const say = (line: string) => process.stderr.write(`[demo] ${line}\n`);

const up = spawnSync(resolve(root, "test/cluster/up"), {
  stdio: ["ignore", "inherit", "inherit"],
  cwd: root,
});
if (up.status !== 0) {
  say("the test cluster did not come up (see above)");
  process.exit(up.status ?? 1);
}
const env = loadClusterEnv();
const registry = env.KILN_TEST_REGISTRY;

say(`kiln's image: building it from ./Dockerfile with kiln, unless ${registry} has it`);
const image = await kilnImage(registry);
say(`kiln's image: ${image}`);

say(`helm upgrade --install kiln charts/kiln --namespace ${namespace}`);
await deployChart({
  kubeconfig: env.KUBECONFIG,
  namespace,
  image,
  set: testClusterValues(namespace, registry),
  createNamespace: true,
});

const k = (...args: string[]) => kubectl(env.KUBECONFIG, ["--namespace", namespace, ...args]);
process.stderr.write(await k("apply", "-f", resolve(root, "examples/hello/imagebuild.yaml")));
process.stderr.write(await waitSucceeded(env.KUBECONFIG, namespace, "hello"));
process.stderr.write(await k("get", "imagebuild", "hello"));
say(`KUBECONFIG=${env.KUBECONFIG} kubectl -n ${namespace} get ib hello -o yaml   # the whole status`);
process.stdout.write(`${await k("get", "imagebuild", "hello", "-o", "jsonpath={.status.digest}")}\n`);
