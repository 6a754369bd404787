import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { KilnError } from "../errors.ts";
import { resolveInRoot } from "../oci/root-path.ts";

/** A mount inside the container. Targets are absolute paths inside the root; they resolve through its symlinks. */
export type ContainerMount =
  | {
      readonly type: "bind";
      readonly source: string;
      readonly target: string;
      readonly readOnly: boolean;
    }
  | { readonly type: "tmpfs"; readonly target: string; readonly sizeBytes?: number; readonly mode?: number };

/**
 * `none` and `default` both get a network namespace of their own with only `lo` up: kiln does not give RUN
 * steps outside network yet (no bridge or CNI is set up for them). `host` shares the caller's namespace.
 */
export type NetworkMode = "none" | "default" | "host";

export interface Container {
  /** The directory that becomes `/`. It is written to in place: that is what a RUN step changes. */
  readonly rootfs: string;
  readonly argv: readonly string[];
  readonly env: readonly string[];
  /** Absolute; must exist in the root. */
  readonly cwd: string;
  readonly uid: number;
  readonly gid: number;
  readonly additionalGids: readonly number[];
  readonly mounts: readonly ContainerMount[];
  readonly network: NetworkMode;
  readonly hostname: string;
  /** Capabilities besides Docker's defaults (the stage executor needs CAP_SYS_ADMIN to mount for its steps). */
  readonly extraCapabilities?: readonly string[];
}

export interface RunContainerOptions {
  /** Where bundles (config.json, generated /etc files) are made; one subdirectory per container, removed after. */
  readonly workDir: string;
  /** The runc binary. */
  readonly runc?: string;
  /** runc's state directory (`runc --root`). */
  readonly runcRoot?: string;
  /** Receives the container's output as it comes. */
  readonly onOutput?: (stream: "stdout" | "stderr", chunk: Buffer) => void;
  /** Aborting kills the container. */
  readonly signal?: AbortSignal;
}

export interface ContainerExit {
  /** The process's exit status; 128 + N when signal N ended it (as runc reports it). */
  readonly exitCode: number;
  /**
   * Directories of the root (relative, "" for the root) in which kiln made a mount point for the run and
   * removed it afterwards: their mtime and ctime changed although their content did not.
   */
  readonly touchedDirs: readonly string[];
}

/** runc failed to start or manage the container; the process inside did not get to run or was not waited for. */
export class ContainerError extends KilnError {
  override readonly code = "KILN_ERR_CONTAINER";
}

/** Docker's default capability set (moby oci/caps/defaults.go). */
export const DEFAULT_CAPABILITIES = [
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_FSETID",
  "CAP_FOWNER",
  "CAP_MKNOD",
  "CAP_NET_RAW",
  "CAP_SETGID",
  "CAP_SETUID",
  "CAP_SETFCAP",
  "CAP_SETPCAP",
  "CAP_NET_BIND_SERVICE",
  "CAP_SYS_CHROOT",
  "CAP_KILL",
  "CAP_AUDIT_WRITE",
] as const;

/** runc's default spec (`runc spec`): hidden and read-only parts of /proc and /sys. */
const MASKED_PATHS = [
  "/proc/acpi",
  "/proc/asound",
  "/proc/kcore",
  "/proc/keys",
  "/proc/latency_stats",
  "/proc/timer_list",
  "/proc/timer_stats",
  "/proc/sched_debug",
  "/proc/scsi",
  "/sys/firmware",
];
const READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/** The files a resolver needs; each is bind-mounted only over a regular file the root already has. */
const ETC_FILES = ["hosts", "hostname", "resolv.conf"] as const;

/** The parts of an OCI runtime spec (runtime-spec config.md) kiln writes. */
export interface RuntimeSpec {
  readonly ociVersion: string;
  readonly process: {
    readonly terminal: boolean;
    readonly user: { readonly uid: number; readonly gid: number; readonly additionalGids: readonly number[] };
    readonly args: readonly string[];
    readonly env: readonly string[];
    readonly cwd: string;
    readonly capabilities: Readonly<
      Record<"bounding" | "effective" | "permitted" | "inheritable" | "ambient", readonly string[]>
    >;
    readonly rlimits: ReadonlyArray<{ readonly type: string; readonly hard: number; readonly soft: number }>;
    readonly noNewPrivileges: boolean;
  };
  readonly root: { readonly path: string; readonly readonly: boolean };
  readonly hostname: string;
  readonly mounts: ReadonlyArray<{
    readonly destination: string;
    readonly type: string;
    readonly source: string;
    readonly options: readonly string[];
  }>;
  readonly linux: {
    readonly cgroupsPath: string;
    readonly namespaces: ReadonlyArray<{ readonly type: string }>;
    readonly resources: {
      readonly devices: ReadonlyArray<{ readonly allow: boolean; readonly access: string }>;
    };
    readonly maskedPaths: readonly string[];
    readonly readonlyPaths: readonly string[];
  };
}

/**
 * The runtime spec for one container. `etcFiles` maps `/etc/hosts` and friends to the generated files to
 * bind over the root's own (only those the root has).
 */
export function runtimeSpec(
  c: Container,
  id: string,
  etcFiles: ReadonlyMap<string, string>,
  maxOpenFiles = 1048576,
): RuntimeSpec {
  const caps = [...DEFAULT_CAPABILITIES, ...(c.extraCapabilities ?? [])];
  // As Docker does since 20.10: a non-root process starts without capabilities; setuid binaries still gain them.
  const own = c.uid === 0 ? caps : [];
  return {
    ociVersion: "1.0.2",
    process: {
      terminal: false,
      user: { uid: c.uid, gid: c.gid, additionalGids: [...c.additionalGids] },
      args: [...c.argv],
      env: [...c.env],
      cwd: c.cwd,
      capabilities: { bounding: caps, effective: own, permitted: own, inheritable: [], ambient: [] },
      // A soft limit of 1024 keeps select() users and fd-closing loops fast; the hard limit lets a step raise it.
      rlimits: [{ type: "RLIMIT_NOFILE", hard: maxOpenFiles, soft: Math.min(1024, maxOpenFiles) }],
      // RUN steps may use setuid programs (su, sudo, ping).
      noNewPrivileges: false,
    },
    root: { path: path.resolve(c.rootfs), readonly: false },
    hostname: c.hostname,
    mounts: [
      { destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] },
      {
        destination: "/dev",
        type: "tmpfs",
        source: "tmpfs",
        options: ["nosuid", "strictatime", "mode=755", "size=65536k"],
      },
      {
        destination: "/dev/pts",
        type: "devpts",
        source: "devpts",
        options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
      },
      {
        destination: "/dev/shm",
        type: "tmpfs",
        source: "shm",
        options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
      },
      {
        destination: "/dev/mqueue",
        type: "mqueue",
        source: "mqueue",
        options: ["nosuid", "noexec", "nodev"],
      },
      { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
      {
        destination: "/sys/fs/cgroup",
        type: "cgroup",
        source: "cgroup",
        options: ["nosuid", "noexec", "nodev", "relatime", "ro"],
      },
      ...[...etcFiles].map(([destination, source]) => ({
        destination,
        type: "bind",
        source,
        options: ["rbind", "rw", "nosuid", "nodev"],
      })),
      ...c.mounts.map((m) =>
        m.type === "bind"
          ? {
              destination: m.target,
              type: "bind",
              source: m.source,
              options: ["rbind", m.readOnly ? "ro" : "rw"],
            }
          : {
              destination: m.target,
              type: "tmpfs",
              source: "tmpfs",
              options: [
                "nosuid",
                "nodev",
                `mode=${(m.mode ?? 0o1777).toString(8)}`,
                ...(m.sizeBytes === undefined ? [] : [`size=${m.sizeBytes}`]),
              ],
            },
      ),
    ],
    linux: {
      cgroupsPath: `/kiln/${id}`,
      namespaces: [
        { type: "pid" },
        { type: "ipc" },
        { type: "uts" },
        { type: "mount" },
        ...(c.network === "host" ? [] : [{ type: "network" }]),
      ],
      // runc adds the standard devices (null, zero, full, random, urandom, tty, ptmx) to whatever is allowed.
      resources: { devices: [{ allow: false, access: "rwm" }] },
      maskedPaths: MASKED_PATHS,
      readonlyPaths: READONLY_PATHS,
    },
  };
}

/**
 * Runs one process in a runc container over `c.rootfs` and resolves with its exit status once it ended.
 * A non-zero status is not an error here; failing to run it is (ContainerError). The container is always
 * deleted afterwards, and every mount point kiln had to create in the root is removed again, so the root
 * holds only what the process itself wrote.
 */
export async function runContainer(c: Container, options: RunContainerOptions): Promise<ContainerExit> {
  const id = `kiln-${randomBytes(8).toString("hex")}`;
  const bundle = path.join(options.workDir, id);
  fs.mkdirSync(bundle, { recursive: true });
  const stubs = new MountPoints(path.resolve(c.rootfs));
  try {
    const etcFiles = writeEtcFiles(c, bundle);
    const spec = runtimeSpec(c, id, etcFiles, hardOpenFileLimit());
    for (const m of spec.mounts) {
      // /proc, /dev and /sys need a directory; runc makes the ones below /dev inside its tmpfs.
      if (m.destination.startsWith("/dev/") || m.destination.startsWith("/sys/")) continue;
      const source = m.type === "bind" ? fs.statSync(m.source) : undefined;
      stubs.ensure(m.destination, source !== undefined && !source.isDirectory() ? "file" : "dir");
    }
    fs.writeFileSync(path.join(bundle, "config.json"), JSON.stringify(spec, null, 2));
    const exitCode = await runRunc(id, bundle, options);
    return { exitCode, touchedDirs: stubs.touchedDirs() };
  } finally {
    stubs.removeAll();
    fs.rmSync(bundle, { recursive: true, force: true });
  }
}

function runcArgs(options: RunContainerOptions, ...args: string[]): string[] {
  return [...(options.runcRoot === undefined ? [] : ["--root", options.runcRoot]), ...args];
}

/**
 * `runc run` in the foreground: its status is the process's. runc's own messages go to a log file, so that
 * a container runc could not start (no such program, a bad mount) is a ContainerError, not a status.
 */
async function runRunc(id: string, bundle: string, options: RunContainerOptions): Promise<number> {
  const runc = options.runc ?? "runc";
  const log = path.join(bundle, "runc.log");
  let code: number;
  try {
    code = await new Promise<number>((resolve, reject) => {
      const args = ["--log", log, "--log-format", "json", "run", "--bundle", bundle, id];
      const child = spawn(runc, runcArgs(options, ...args), {
        stdio: ["ignore", "pipe", "pipe"],
      });
      child.stdout.on("data", (b: Buffer) => options.onOutput?.("stdout", b));
      child.stderr.on("data", (b: Buffer) => options.onOutput?.("stderr", b));
      const kill = (): void => {
        spawn(runc, runcArgs(options, "kill", id, "KILL"), { stdio: "ignore" }).on("error", () => {});
      };
      options.signal?.addEventListener("abort", kill, { once: true });
      child.on("error", (err) =>
        reject(new ContainerError(`cannot start ${runc}: ${err.message}`, { cause: err })),
      );
      child.on("close", (code, signal) => {
        options.signal?.removeEventListener("abort", kill);
        if (code === null) reject(new ContainerError(`${runc} run ${id} was killed by ${signal}`));
        else resolve(code);
      });
    });
  } finally {
    await deleteContainer(runc, id, options);
  }
  const errors = runcErrors(log);
  if (errors.length > 0) throw new ContainerError(`runc run ${id}: ${errors.join("; ")}`);
  return code;
}

/** The error messages in runc's JSON log (one object a line). */
function runcErrors(log: string): string[] {
  return readOr(log, "")
    .split("\n")
    .filter((line) => line.startsWith("{"))
    .map((line) => JSON.parse(line) as { level?: string; msg?: string })
    .filter((e) => e.level === "error" && e.msg !== undefined)
    .map((e) => e.msg!);
}

/** `runc delete --force`; a container that runc already removed is fine. */
function deleteContainer(runc: string, id: string, options: RunContainerOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(runc, runcArgs(options, "delete", "--force", id), {
      stdio: ["ignore", "ignore", "pipe"],
    });
    const err: Buffer[] = [];
    child.stderr.on("data", (b: Buffer) => err.push(b));
    child.on("error", (e) =>
      reject(new ContainerError(`cannot run ${runc} delete: ${e.message}`, { cause: e })),
    );
    child.on("close", (code) => {
      const msg = Buffer.concat(err).toString().trim();
      if (code === 0 || /does not exist|not exist/.test(msg)) resolve();
      else reject(new ContainerError(`${runc} delete ${id}: exit ${code}: ${msg}`));
    });
  });
}

/**
 * Writes /etc/hosts, /etc/hostname and /etc/resolv.conf for the container into the bundle, for each that
 * the root has as a regular file. A root without them gets none: a stub made to mount over would be an
 * empty file the snapshot has to leave out, and what the process would write there is lost anyway.
 */
function writeEtcFiles(c: Container, bundle: string): Map<string, string> {
  const root = path.resolve(c.rootfs);
  const files = new Map<string, string>();
  const content: Record<(typeof ETC_FILES)[number], () => string> = {
    hosts: () =>
      `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t${c.hostname}\n`,
    hostname: () => `${c.hostname}\n`,
    // No outside network yet, so no name server: lookups fail at once rather than after a timeout.
    "resolv.conf": () => (c.network === "host" ? readOr("/etc/resolv.conf", "") : ""),
  };
  for (const name of ETC_FILES) {
    if (!lstatOrUndefined(path.join(root, "etc", name))?.isFile()) continue;
    const file = path.join(bundle, name);
    fs.writeFileSync(file, content[name](), { mode: 0o644 });
    files.set(`/etc/${name}`, file);
  }
  return files;
}

/** kiln's own hard RLIMIT_NOFILE: raising it needs CAP_SYS_RESOURCE, which kiln may lack. */
function hardOpenFileLimit(): number {
  const line = /^Max open files\s+\S+\s+(\d+)/m.exec(readOr("/proc/self/limits", ""));
  return line === null ? 1024 : Number(line[1]);
}

function readOr(file: string, fallback: string): string {
  try {
    return fs.readFileSync(file, "utf8");
  } catch {
    return fallback;
  }
}

function lstatOrUndefined(p: string): fs.Stats | undefined {
  return fs.lstatSync(p, { throwIfNoEntry: false });
}

/**
 * Mount points kiln makes in the root for one run, and removes afterwards (deepest first). Targets resolve
 * through the root's own symlinks, as runc resolves them, so a stub never lands outside the root.
 */
export class MountPoints {
  readonly #root: string;
  readonly #made: string[] = [];
  readonly #touched = new Set<string>();

  constructor(root: string) {
    this.#root = root;
  }

  ensure(target: string, kind: "file" | "dir"): void {
    const rel = resolveInRootfs(this.#root, target);
    const parts = rel === "" ? [] : rel.split("/");
    for (let i = 1; i <= parts.length; i++) {
      const sub = parts.slice(0, i).join("/");
      const abs = path.join(this.#root, sub);
      const st = lstatOrUndefined(abs);
      if (st !== undefined) continue;
      if (i === parts.length && kind === "file") fs.writeFileSync(abs, "", { flag: "wx", mode: 0o644 });
      else fs.mkdirSync(abs, { mode: 0o755 });
      this.#made.push(sub);
      this.#touched.add(parts.slice(0, i - 1).join("/"));
    }
  }

  touchedDirs(): string[] {
    return [...this.#touched].filter((d) => !this.#made.includes(d)).sort();
  }

  removeAll(): void {
    for (const sub of this.#made.reverse()) {
      const abs = path.join(this.#root, sub);
      if (lstatOrUndefined(abs)?.isDirectory()) fs.rmdirSync(abs);
      else fs.rmSync(abs, { force: true });
    }
    this.#made.length = 0;
  }
}

/**
 * Resolves a path as a process inside the root filesystem would, through the root's own symlinks (absolute
 * targets start at the root, `..` stops there); returns it relative to the root, "" for the root itself.
 */
export function resolveInRootfs(rootfs: string, p: string): string {
  const readlink = (rel: string): string | undefined => {
    const abs = path.join(rootfs, rel);
    return lstatOrUndefined(abs)?.isSymbolicLink() ? fs.readlinkSync(abs) : undefined;
  };
  return resolveInRoot(p, readlink, "scoped", true, rootfs);
}
