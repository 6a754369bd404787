// The whole test suite, as the README runs it: the test cluster is brought up first (a no-op when it is
// running; `sudo test/cluster/down` stops it), then every test file runs. Arguments narrow the files:
// `npm test -- test/cli` or `npm test -- test/oci/layout.test.ts`.
import { spawnSync } from "node:child_process";
import { resolve } from "node:path";

const root = resolve(import.meta.dirname, "..");
const args = process.argv.slice(2);
const files =
  args.length > 0
    ? args.map((a) => (a.endsWith(".ts") ? a : `${a.replace(/\/$/, "")}/**/*.test.ts`))
    : ["test/**/*.test.ts"];

if (process.env.KILN_TEST_CLUSTER !== "external") {
  const up = spawnSync(resolve(root, "test/cluster/up"), {
    stdio: ["ignore", "inherit", "inherit"],
    cwd: root,
  });
  if (up.status !== 0) {
    process.stderr.write(
      "test: the test cluster did not come up (see above); tests that need it would fail\n",
    );
    process.exit(up.status ?? 1);
  }
}

const run = spawnSync(
  process.execPath,
  [
    "--test",
    "--test-concurrency=2",
    "--test-timeout=900000",
    "--disable-warning=ExperimentalWarning",
    ...files,
  ],
  { stdio: "inherit", cwd: root },
);
process.exit(run.status ?? 1);
