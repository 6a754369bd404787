import { execFile } from "node:child_process";
import { join, resolve } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const BUILD = resolve(import.meta.dirname, "build");

let built: Promise<string> | undefined;

/** The kubectl of the cluster's own release, which test/cluster/build makes (a no-op once it is cached). */
export function kubectlPath(): Promise<string> {
  built ??= run(BUILD, [], { maxBuffer: 16 << 20 }).then((r) =>
    join(r.stdout.trim().split("\n").at(-1)!, "kubectl"),
  );
  return built;
}

/** Runs kubectl against the cluster `kubeconfig` names; a non-zero exit rejects with its stderr in the message. */
export async function kubectl(
  kubeconfig: string,
  args: readonly string[],
  signal?: AbortSignal,
): Promise<string> {
  const bin = await kubectlPath();
  try {
    const r = await run(bin, ["--kubeconfig", kubeconfig, ...args], {
      maxBuffer: 64 << 20,
      ...(signal ? { signal } : {}),
    });
    return r.stdout;
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`kubectl ${args.join(" ")}: ${e.stderr || e.message}`, { cause: err });
  }
}

/**
 * `kubectl wait --for=condition=Succeeded ib/NAME`, as a user waits for a build, beside a wait for
 * `Succeeded=False`: a failed build ends the wait at once with its failure, not at the timeout. Resolves
 * with what the successful wait printed.
 */
export async function waitSucceeded(
  kubeconfig: string,
  namespace: string,
  name: string,
  timeout = "10m",
): Promise<string> {
  const stop = new AbortController();
  const wait = (condition: string) =>
    kubectl(
      kubeconfig,
      ["wait", "-n", namespace, `--for=condition=${condition}`, `ib/${name}`, `--timeout=${timeout}`],
      stop.signal,
    ).then(
      (stdout) => ({ condition, stdout }),
      (err: unknown) => {
        // The other wait ended first; this one was stopped.
        if (stop.signal.aborted) return { condition: "stopped", stdout: "" };
        throw err;
      },
    );
  try {
    const first = await Promise.race([wait("Succeeded"), wait("Succeeded=False")]);
    if (first.condition === "Succeeded") return first.stdout;
  } finally {
    stop.abort();
  }
  const failure = await kubectl(kubeconfig, [
    "get",
    "-n",
    namespace,
    `ib/${name}`,
    "-o",
    "jsonpath={.status.failure}",
  ]);
  throw new Error(`ImageBuild ${namespace}/${name} failed: ${failure}`);
}
