import fs from "node:fs";
import path from "node:path";
import { InvalidInputError, KilnError } from "../errors.ts";
import type { LayerEntry } from "../oci/layer-entry.ts";
import type { Mount, Step } from "../plan/plan.ts";
import { type ContainerMount, resolveInRootfs, runContainer } from "./container.ts";
import { diffSnapshots, type Snapshot, takeSnapshot } from "./snapshot.ts";
import { resolveUser } from "./users.ts";

export type RunStep = Extract<Step, { kind: "run" }>;

/** Where kiln's runtime is mounted in a RUN container, and left out of every snapshot. */
export const RUNTIME_MOUNT = "/kiln";

/** Docker's PATH for a process whose environment has none. */
const DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

export interface RunStepOptions {
  /** Where container bundles are made (removed after the step). */
  readonly workDir: string;
  /** kiln's self-contained runtime, bind-mounted read-only at /kiln; none when undefined. */
  readonly runtime?: string;
  /** More paths inside the root (the workspace) that the snapshot leaves out. */
  readonly exclude?: readonly string[];
  /** The snapshot the previous step ended with; saves a walk. Taken now when undefined. */
  readonly before?: Snapshot;
  /** Gives `bind`, `cache` and `secret` mounts their source; tmpfs mounts need none. */
  readonly resolveMount?: (m: Mount) => ContainerMount;
  readonly hostname?: string;
  readonly runc?: string;
  readonly onOutput?: (stream: "stdout" | "stderr", chunk: Buffer) => void;
  readonly signal?: AbortSignal;
}

export interface RunStepResult {
  /** The step's layer, sorted (see diffSnapshots). */
  readonly entries: LayerEntry[];
  /** Always 0: any other status is a RunStepError. */
  readonly exitCode: number;
  /** The root after the step: the next step's `before`. */
  readonly snapshot: Snapshot;
}

/** A RUN step's process ended with a status other than 0. */
export class RunStepError extends KilnError {
  override readonly code = "KILN_ERR_RUN";
  readonly exitCode: number;
  readonly line: number | undefined;
  constructor(step: RunStep, exitCode: number) {
    const where = step.line === undefined ? "" : `line ${step.line}: `;
    super(`${where}${step.createdBy}: exit status ${exitCode}`);
    this.exitCode = exitCode;
    this.line = step.line;
  }
}

/**
 * Runs one RUN step in a runc container over `rootfs`, in place, and returns what it changed as layer
 * entries. The working directory is made (root-owned, 0755) when missing, as Docker does, and is part of
 * the layer then. The runtime, the workspace and mount points are never part of it.
 */
export async function runStep(
  step: RunStep,
  rootfs: string,
  options: RunStepOptions,
): Promise<RunStepResult> {
  const user = resolveUser(rootfs, step.user);
  const mounts = step.mounts.map((m) => containerMount(m, options));
  if (options.runtime !== undefined) {
    mounts.push({ type: "bind", source: options.runtime, target: RUNTIME_MOUNT, readOnly: true });
  }
  const snapshotOptions = { exclude: [RUNTIME_MOUNT, ...(options.exclude ?? [])] };
  const before = options.before ?? takeSnapshot(rootfs, snapshotOptions);
  const cwd = step.workdir === "" ? "/" : step.workdir;
  fs.mkdirSync(path.join(rootfs, resolveInRootfs(rootfs, cwd)), { recursive: true, mode: 0o755 });

  const exit = await runContainer(
    {
      rootfs,
      argv: step.argv,
      env: step.env.some((e) => e.startsWith("PATH=")) ? step.env : [...step.env, DEFAULT_PATH],
      cwd,
      uid: user.uid,
      gid: user.gid,
      additionalGids: user.additionalGids,
      mounts,
      network: step.network,
      hostname: options.hostname ?? "kiln",
    },
    {
      workDir: options.workDir,
      ...(options.runc === undefined ? {} : { runc: options.runc }),
      ...(options.onOutput === undefined ? {} : { onOutput: options.onOutput }),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    },
  );
  if (exit.exitCode !== 0) throw new RunStepError(step, exit.exitCode);
  const snapshot = takeSnapshot(rootfs, snapshotOptions);
  return {
    entries: diffSnapshots(before, snapshot, { ignoreTimes: exit.touchedDirs }),
    exitCode: exit.exitCode,
    snapshot,
  };
}

function containerMount(m: Mount, options: RunStepOptions): ContainerMount {
  if (m.type === "tmpfs") {
    return { type: "tmpfs", target: m.target, ...(m.size === undefined ? {} : { sizeBytes: m.size }) };
  }
  if (options.resolveMount === undefined) {
    throw new InvalidInputError(
      `RUN --mount=type=${m.type} (target ${m.target}) needs a source, and none was given`,
    );
  }
  return options.resolveMount(m);
}
