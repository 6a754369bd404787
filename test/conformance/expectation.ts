import assert from "node:assert/strict";
import { type ComparableImage, diffImages, formatDifferences } from "../helpers/image-tree.ts";
import type { CorpusCase, KnownDivergence } from "./corpus.ts";
import { dockerExpectation } from "./divergences.ts";
import { type OracleImage, readOracleImage } from "./oracle.ts";

/**
 * What a builder following Docker/BuildKit must give for a corpus case, and the comparison with it: buildah's
 * image with the case's recorded divergences, the ones below and the hard-link groups put in. The local
 * conformance test (corpus.test.ts) and the in-cluster one (test/e2e/corpus-cluster.test.ts) both check
 * kiln's image with `assertDockerImage`.
 */

/**
 * Divergences between buildah 1.28.2 and BuildKit that the shared corpus does not record, by case: kiln
 * gives BuildKit's value.
 */
const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const JUPYTER_ENV = [
  "DEBIAN_FRONTEND=noninteractive",
  "CONDA_DIR=/opt/conda",
  "SHELL=/bin/bash",
  "NB_USER=jovyan",
  "NB_UID=1000",
  "NB_GID=100",
  "LC_ALL=C.UTF-8",
  "LANG=C.UTF-8",
  "LANGUAGE=C.UTF-8",
  "HOME=/home/jovyan",
];
const SCRATCH_WORKDIR: KnownDivergence = {
  what: "BuildKit starts a FROM scratch stage with WorkingDir / (dockerfile2llb emptyImage); buildah leaves it empty",
  affects: { WorkingDir: { buildah: null, buildkit: "/" } },
};
/** buildah lists a variable that ENV replaced last; BuildKit replaces it where it was (dockerfile2llb addEnv). */
const envReplacedInPlace = (buildah: string[], buildkit: string[]): KnownDivergence => ({
  what: "ENV replacing a base variable: buildah moves it to the end of Env; BuildKit replaces it in place",
  affects: { Env: { buildah, buildkit } },
});
/** BuildKit's VOLUME only sets the config (dockerfile2llb dispatchVolume); buildah makes each path a directory. */
const volumeDirs = (paths: readonly string[]): KnownDivergence => ({
  what: "VOLUME paths: buildah creates each as an empty directory in the image; BuildKit records them in the config only",
  affects: Object.fromEntries(paths.map((p) => [p, { buildah: "present", buildkit: null }])),
});
/**
 * The case's exception for keep*.pyc files below scripts/, inside directories its __pycache__ pattern leaves
 * out: an exception with a wildcard makes BuildKit's context walker
 * (fsutil's filterFS, onlyPrefixExcludeExceptions false) enter every excluded directory, so the file is sent
 * with its directory; buildah, like Docker's classic builder, enters only directories an exception's path
 * starts with. The RUN's listing then has those two lines more (sorted in: `./scripts/__pycache__`,
 * `./scripts/__pycache__/keep-me.pyc`).
 */
const WILDCARD_EXCEPTION: KnownDivergence = {
  what: "a .dockerignore exception with a wildcard re-includes files inside an excluded directory (BuildKit); buildah leaves the directory out",
  affects: {
    "/usr/src/app/scripts/__pycache__": {
      buildah: null,
      buildkit: { type: "dir", mode: 0o755, uid: 0, gid: 0 },
    },
    "/usr/src/app/scripts/__pycache__/keep-me.pyc": {
      buildah: null,
      buildkit: {
        type: "file",
        mode: 0o644,
        uid: 0,
        gid: 0,
        size: 14,
        sha256: "5b11d6d21a072f604738832e34bd839cabc29242b6555b54e0b3d892ba603775",
      },
    },
    "/context-listing.txt": {
      buildah: "present",
      buildkit: {
        size: 680,
        sha256: "4b79fd97caa5a330a9e22fe510493df666fc7bf96b8e7d8ce55f522529725492",
      },
    },
  },
};
const MORE_DIVERGENCES: Readonly<Record<string, readonly KnownDivergence[]>> = {
  dockerignore: [WILDCARD_EXCEPTION],
  "scratch-copy-only": [SCRATCH_WORKDIR],
  "c-static-scratch-index": [SCRATCH_WORKDIR],
  "metadata-config": [volumeDirs(["/cache", "/tmp/scratch", "/var/lib/vaultwarden", "/var/log/vaultwarden"])],
  "arg-before-from": [
    envReplacedInPlace(
      ["LANG=C.UTF-8", "JAVA_HOME=/opt/java/openjdk", `PATH=/opt/java/openjdk/bin:${DEFAULT_PATH}`],
      [`PATH=/opt/java/openjdk/bin:${DEFAULT_PATH}`, "LANG=C.UTF-8", "JAVA_HOME=/opt/java/openjdk"],
    ),
  ],
  "workdir-user": [
    envReplacedInPlace(
      [...JUPYTER_ENV.slice(0, 9), `PATH=/opt/conda/bin:${DEFAULT_PATH}`, JUPYTER_ENV[9]!],
      [`PATH=/opt/conda/bin:${DEFAULT_PATH}`, ...JUPYTER_ENV],
    ),
  ],
};

/**
 * Hard links a RUN makes to a file of a lower layer: buildah's vfs diff writes only the new path, as a
 * separate file; BuildKit's overlayfs snapshotter copies the lower file up when it is linked, so both
 * paths are in the layer and stay one file (the link group's smallest path names it).
 */
const LINK_GROUPS: Readonly<Record<string, readonly (readonly string[])[]>> = {
  "links-symlinks-hardlinks": [["/opt/rootfs/bin/getconf", "/usr/bin/getconf"]],
};

function withLinkGroups(image: ComparableImage, groups: readonly (readonly string[])[]): ComparableImage {
  const tree = new Map(image.tree);
  for (const group of groups) {
    const linkGroup = [...group].sort()[0]!;
    for (const p of group) {
      const node = tree.get(p);
      if (node === undefined || node.linkGroup !== undefined)
        throw new Error(
          `LINK_GROUPS ${p}: buildah's image ${node === undefined ? "lacks it" : "links it already"}`,
        );
      tree.set(p, { ...node, linkGroup });
    }
  }
  return { ...image, tree };
}

/** The image Docker/BuildKit gives for case `c`, from buildah's image of it. */
export async function dockerImage(c: CorpusCase, built: OracleImage): Promise<ComparableImage> {
  const divergences = [...(c.spec.knownBuildahDivergences ?? []), ...(MORE_DIVERGENCES[c.name] ?? [])];
  return withLinkGroups(
    dockerExpectation(await readOracleImage(built), divergences),
    LINK_GROUPS[c.name] ?? [],
  );
}

/**
 * Asserts that `actual` (kiln's image of case `c`) equals Docker's image of it (merged file tree and config,
 * mtimes aside), listing every difference when it does not.
 */
export async function assertDockerImage(
  c: CorpusCase,
  built: OracleImage,
  actual: ComparableImage,
): Promise<void> {
  const diffs = diffImages(actual, await dockerImage(c, built));
  assert.equal(diffs.length, 0, `\n${formatDifferences(diffs, { actual: "kiln", expected: "docker" })}`);
}
