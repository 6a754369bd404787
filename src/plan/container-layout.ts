/**
 * Where things are inside a stage container, wherever it runs (runc on this machine, a build pod in a
 * cluster): the contract between whoever starts the container and the executor inside it.
 */

/**
 * Everything of kiln's is mounted below this one folder, which snapshots leave out: a name no image uses,
 * so a Dockerfile that writes to /kiln (kiln's own does) never meets a read-only mount.
 */
export const KILN_MOUNTS = "/.kiln";
/** kiln's self-contained runtime (scripts/runtime/build). */
export const RUNTIME_MOUNT = `${KILN_MOUNTS}/runtime`;
/** The workspace the executor shares with the pusher (src/executor/workspace.ts). */
export const WORKSPACE_MOUNT = `${KILN_MOUNTS}/workspace`;
/** The build's secrets, one file per id, for `RUN --mount=type=secret`. */
export const SECRETS_MOUNT = `${KILN_MOUNTS}/secrets`;
/** The persistent `RUN --mount=type=cache` folders. */
export const CACHE_MOUNTS_MOUNT = `${KILN_MOUNTS}/cache`;

/**
 * argv that starts `kiln executor` from the runtime inside any root — glibc, musl, busybox or none — through
 * the runtime's own ELF loader, so nothing of the root's is read (DESIGN decision 2).
 */
export const RUNTIME_EXECUTOR_ARGV: readonly string[] = [
  `${RUNTIME_MOUNT}/lib/ld-linux-x86-64.so.2`,
  "--library-path",
  `${RUNTIME_MOUNT}/lib`,
  `${RUNTIME_MOUNT}/bin/node`,
  "--disable-warning=ExperimentalWarning",
  `${RUNTIME_MOUNT}/src/main.ts`,
  "executor",
];
