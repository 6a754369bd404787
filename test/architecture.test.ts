import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { test } from "node:test";

// DESIGN.md "Modules and who may import whom": the controller never touches registries or build code,
// the build side never touches Kubernetes. Top-level files (errors, log) are shared by everyone.
const MAY_IMPORT: Record<string, readonly string[]> = {
  oci: [],
  registry: ["oci"],
  plan: ["oci"],
  dockerfile: ["oci", "plan"],
  layerspec: ["oci", "plan"],
  api: ["oci", "plan", "layerspec"],
  executor: ["oci", "plan", "registry"],
  // Fetches a build context inside a build pod: no Kubernetes, and below the executor that reads it.
  source: ["oci", "registry", "api"],
  // Build pods run one command (src/pusher/stage-command.ts): the plan pod compiles the Dockerfile, a
  // file-only stage pod runs the executor's file steps, the pusher pushes.
  pusher: ["oci", "plan", "registry", "api", "executor", "build", "dockerfile", "layerspec", "source"],
  build: ["oci", "plan", "registry", "dockerfile", "layerspec", "executor", "pusher"],
  cli: [
    "oci",
    "plan",
    "registry",
    "dockerfile",
    "layerspec",
    "executor",
    "pusher",
    "build",
    "api",
    "kube",
    "controller",
    "source",
  ],
  kube: ["api", "oci", "plan"],
  controller: ["api", "kube", "plan", "oci", "dockerfile", "layerspec"],
};
const SHARED = new Set(["errors.ts", "log.ts"]);
const SRC = resolve(import.meta.dirname, "../src");

function* tsFiles(dir: string): Generator<string> {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* tsFiles(p);
    else if (e.name.endsWith(".ts")) yield p;
  }
}

test("modules import only what DESIGN.md allows", () => {
  const violations: string[] = [];
  for (const file of tsFiles(SRC)) {
    const [module, ...rest] = relative(SRC, file).split("/");
    if (rest.length === 0) continue; // main.ts, config.ts: the composition root may import anything
    const allowed = MAY_IMPORT[module!];
    assert.ok(
      allowed,
      `src/${module} is not listed in the architecture test; add it with its allowed imports`,
    );
    const text = readFileSync(file, "utf8");
    for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)[^"'\n]*?from\s+["'](\.[^"']+)["']/g)) {
      const target = relative(SRC, resolve(dirname(file), m[1]!)).split("/");
      const [targetModule] = target;
      if (target.length === 1 && SHARED.has(targetModule!)) continue;
      if (target.length === 1 || targetModule === module) continue;
      if (!allowed.includes(targetModule!)) violations.push(`${relative(SRC, file)} imports ${m[1]}`);
    }
  }
  assert.deepEqual(violations, []);
});
