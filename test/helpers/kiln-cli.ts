import { spawn } from "node:child_process";
import { join, resolve } from "node:path";

export const REPO_ROOT = resolve(import.meta.dirname, "../..");
const KILN = join(REPO_ROOT, "bin/kiln");

export interface KilnRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs ./bin/kiln as a user would (a separate process, optionally under another umask). */
export function runKiln(
  args: readonly string[],
  opts: { readonly umask?: string; readonly env?: Readonly<Record<string, string>> } = {},
): Promise<KilnRun> {
  const script = opts.umask ? `umask ${opts.umask} && exec "$0" "$@"` : `exec "$0" "$@"`;
  return runShell(script, [KILN, ...args], opts);
}

/** Runs a `sh -c` script (`args` are its `$0`, `$1`, …); stdout and stderr are collected and trimmed. */
export function runShell(
  script: string,
  args: readonly string[] = [],
  opts: { readonly cwd?: string; readonly env?: Readonly<Record<string, string>> } = {},
): Promise<KilnRun> {
  return new Promise((done, fail) => {
    const child = spawn("sh", ["-c", script, ...args], {
      env: { ...process.env, ...opts.env },
      stdio: ["ignore", "pipe", "pipe"],
      ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (c: Buffer) => out.push(c));
    child.stderr.on("data", (c: Buffer) => err.push(c));
    child.on("error", fail);
    child.on("close", (code) =>
      done({
        code,
        stdout: Buffer.concat(out).toString().trim(),
        stderr: Buffer.concat(err).toString().trim(),
      }),
    );
  });
}
