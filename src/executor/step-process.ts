import { spawn } from "node:child_process";
import fs from "node:fs";
import { constants } from "node:os";
import path from "node:path";
import { InvalidInputError, KilnError, NotFoundError } from "../errors.ts";
import type { Mount, RunStep } from "../plan/plan.ts";
import { MountPoints, resolveInRootfs } from "./container.ts";
import { resolveUser } from "./users.ts";

/** Docker's PATH for a process whose environment has none. */
const DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** A RUN step's process ended with a status other than 0 (BuildKit's wording). */
export class StepProcessError extends KilnError {
  override readonly code = "KILN_ERR_RUN";
  readonly exitCode: number;
  constructor(step: RunStep, exitCode: number) {
    super(
      `process ${JSON.stringify(step.argv.join(" "))} did not complete successfully: exit code: ${exitCode}`,
    );
    this.exitCode = exitCode;
  }
}

export interface StepProcessOptions {
  /** The root the step runs in: "/" inside the stage container. */
  readonly rootfs: string;
  /** The kiln-run helper (src/executor/kiln-run.c). */
  readonly helper: string;
  /** Mount points of kiln's own (runtime, workspace, secrets, caches) the step must not see. */
  readonly hide: readonly string[];
  /** Where scratch files for the step's mounts go (secret copies, read-write bind copies). */
  readonly scratch: string;
  /** Files by secret id; a secret without one is skipped, or an error when required. */
  readonly secrets: string;
  /** Persistent `type=cache` folders, one per id. */
  readonly caches: string;
  /** Roots for `type=bind`: the context's and, by `stage:NAME` / `image:REF`, the other roots. */
  readonly bindRoot: (m: Extract<Mount, { type: "bind" }>) => string;
  readonly onOutput: (stream: "stdout" | "stderr", chunk: Buffer) => void;
}

export interface StepProcessResult {
  /** Directories in which a mount point was made and removed again: their times changed for no content. */
  readonly touchedDirs: readonly string[];
}

/**
 * Runs a RUN step as a child process in the root: user, supplementary groups, environment and working
 * directory exactly the step's, its mounts in a mount namespace of its own (kiln-run), kiln's own mounts
 * hidden. A working directory that is missing is made (root-owned, 0755) as Docker does. Mount points the
 * root lacks are made for the step and removed after it, as BuildKit does, so none ends up in a layer.
 */
export async function runStepProcess(step: RunStep, o: StepProcessOptions): Promise<StepProcessResult> {
  const user = resolveUser(o.rootfs, step.user);
  const cwd = step.workdir === "" ? "/" : step.workdir;
  fs.mkdirSync(path.join(o.rootfs, resolveInRootfs(o.rootfs, cwd)), { recursive: true, mode: 0o755 });
  const env = step.env.some((e) => e.startsWith("PATH=")) ? [...step.env] : [...step.env, DEFAULT_PATH];
  // As runc: HOME is the user's home from the root's passwd unless the step sets it.
  if (!env.some((e) => e.startsWith("HOME="))) env.push(`HOME=${user.home}`);
  const stubs = new MountPoints(path.resolve(o.rootfs));
  const scratch = fs.mkdtempSync(path.join(o.scratch, "step-"));
  try {
    const args: string[] = ["--root", o.rootfs];
    for (const m of step.mounts) {
      const mounted = mountArgs(m, o, scratch, env);
      if (mounted === undefined) continue;
      stubs.ensure(m.target, mounted.kind);
      args.push(...mounted.args, path.join(o.rootfs, resolveInRootfs(o.rootfs, m.target)), ...mounted.tail);
    }
    for (const h of o.hide) args.push("--hide", h);
    args.push("--uid", String(user.uid), "--gid", String(user.gid), "--cwd", cwd);
    if (user.additionalGids.length > 0) args.push("--groups", user.additionalGids.join(","));
    const exitCode = await spawnHelper(o.helper, [...args, "--", ...step.argv], env, o.onOutput);
    if (exitCode !== 0) throw new StepProcessError(step, exitCode);
    return { touchedDirs: stubs.touchedDirs() };
  } finally {
    stubs.removeAll();
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

interface MountArgs {
  readonly kind: "file" | "dir";
  /** Before the target. */
  readonly args: readonly string[];
  /** After the target. */
  readonly tail: readonly string[];
}

function mountArgs(m: Mount, o: StepProcessOptions, scratch: string, env: string[]): MountArgs | undefined {
  switch (m.type) {
    case "tmpfs":
      return { kind: "dir", args: ["--tmpfs"], tail: [String(m.size ?? 0)] };
    case "secret": {
      const source = path.join(o.secrets, m.id);
      if (!fs.existsSync(source)) {
        if (m.required) throw new NotFoundError(`secret ${m.id} is required but was not given`);
        return undefined;
      }
      // A copy per step, so each mount has its own mode and owner; the secret store is hidden from the step.
      const copy = path.join(scratch, `secret-${m.id}`);
      fs.copyFileSync(source, copy);
      fs.chownSync(copy, m.uid, m.gid);
      fs.chmodSync(copy, m.mode);
      if (m.env !== undefined) env.push(`${m.env}=${fs.readFileSync(source, "utf8")}`);
      return { kind: "file", args: ["--bind", copy], tail: ["ro"] };
    }
    case "cache": {
      const dir = path.join(o.caches, encodeURIComponent(m.id));
      if (!fs.existsSync(dir)) {
        fs.mkdirSync(dir, { recursive: true });
        fs.chownSync(dir, m.uid, m.gid);
        fs.chmodSync(dir, m.mode);
      }
      return { kind: "dir", args: ["--bind", dir], tail: [m.readOnly ? "ro" : "rw"] };
    }
    case "bind": {
      const root = o.bindRoot(m);
      const source = path.join(root, resolveInRootfs(root, m.source));
      const st = fs.statSync(source, { throwIfNoEntry: false });
      if (st === undefined) throw new InvalidInputError(`RUN --mount=type=bind: ${m.source} does not exist`);
      if (!m.readWrite)
        return { kind: st.isDirectory() ? "dir" : "file", args: ["--bind", source], tail: ["ro"] };
      // BuildKit throws away what a step writes to a read-write bind mount: it writes to a copy.
      const copy = path.join(scratch, "bind");
      fs.cpSync(source, copy, { recursive: true, preserveTimestamps: true, verbatimSymlinks: true });
      return { kind: st.isDirectory() ? "dir" : "file", args: ["--bind", copy], tail: ["rw"] };
    }
  }
}

/** Environment entries as spawn wants them; order is kept, a later duplicate wins as in execve's users. */
function envObject(env: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of env) {
    const i = e.indexOf("=");
    if (i > 0) out[e.slice(0, i)] = e.slice(i + 1);
  }
  return out;
}

/**
 * Waits for the step's process itself, not for its output pipes: a daemon a step leaves behind may hold
 * them open. What it wrote until then is read; after a short grace the pipes are closed.
 */
function spawnHelper(
  helper: string,
  args: readonly string[],
  env: readonly string[],
  onOutput: StepProcessOptions["onOutput"],
): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(helper, args, { env: envObject(env), stdio: ["ignore", "pipe", "pipe"] });
    child.stdout.on("data", (b: Buffer) => onOutput("stdout", b));
    child.stderr.on("data", (b: Buffer) => onOutput("stderr", b));
    child.on("error", (err) =>
      reject(new KilnError(`cannot start ${helper}: ${err.message}`, { cause: err })),
    );
    child.on("exit", (code, signal) => {
      // A shell reports a process that a signal ended as 128 + the signal's number; so does runc.
      const status = code ?? 128 + (signal === null ? 0 : constants.signals[signal]);
      const timer = setTimeout(() => {
        child.stdout.destroy();
        child.stderr.destroy();
        resolve(status);
      }, 200);
      child.on("close", () => {
        clearTimeout(timer);
        resolve(status);
      });
    });
  });
}
