/**
 * Registry transfers: kiln's pushImage / pullImage of a 1 GiB, 5-layer image of random (incompressible)
 * bytes to Debian's docker-registry on loopback, next to `skopeo copy` of the same image in the same run,
 * and a re-push of the unchanged image (HEADs only; target ≤ 0.2 s). The image is generated once into
 * bench/.work/, which git ignores.
 */
import { createHash } from "node:crypto";
import {
  createReadStream,
  existsSync,
  linkSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import type { Digest } from "../src/oci/digest.ts";
import { canonicalBytes, configBlob, type Image, type Layer, manifestOf } from "../src/oci/image.ts";
import { MediaType } from "../src/oci/media-type.ts";
import { parseReference } from "../src/oci/reference.ts";
import { createRegistryClient } from "../src/registry/client.ts";
import { pullImage } from "../src/registry/pull.ts";
import { pushImage } from "../src/registry/push.ts";
import { type RunningRegistry, startRegistry } from "../test/helpers/registry.ts";
import { fastestOf, printRow, timeAsync, timeCommand } from "./run.ts";

const WORK = join(import.meta.dirname, ".work", "registry");
const LAYERS = 5;
const LAYER_BYTES = Math.floor(1024 ** 3 / LAYERS);
const RUNS = 2;
const REPUSH_TARGET_S = 0.2;

interface LayerFile {
  readonly file: string;
  readonly digest: Digest;
  readonly diffId: Digest;
  readonly size: number;
}

export default async function registryBench(): Promise<boolean> {
  const layers = await randomLayers();
  const image: Image = {
    config: {
      architecture: "amd64",
      os: "linux",
      rootfs: { type: "layers", diff_ids: layers.map((l) => l.diffId) },
    },
    layers: layers.map(
      (l): Layer => ({
        digest: l.digest,
        diffId: l.diffId,
        size: l.size,
        mediaType: MediaType.LayerTarGzip,
        open: () => createReadStream(l.file, { highWaterMark: 1 << 20 }),
      }),
    ),
  };
  const layout = writeLayout(image, layers);
  const totalMb = layers.reduce((n, l) => n + l.size, 0) / 1e6;
  const rate = (s: number) => `${(totalMb / s).toFixed(0)} MB/s`;

  // Each push goes to a registry of its own, so neither side finds blobs already there (or mountable).
  const onFreshRegistry = (push: (r: RunningRegistry) => Promise<unknown>) => async () => {
    const r = await startRegistry();
    try {
      return await timeAsync(() => push(r));
    } finally {
      await r.close();
    }
  };
  const push = await fastestOf(RUNS, {
    kiln: onFreshRegistry(async (r) => {
      const reg = await createRegistryClient({ insecure: [r.host] });
      await pushImage(image, parseReference(`${r.host}/bench/image:v1`), reg);
      await reg.close();
    }),
    skopeo: onFreshRegistry((r) =>
      timeCommand(
        `skopeo copy -q --dest-tls-verify=false oci:${layout}:v1 docker://${r.host}/bench/image:v1`,
      ),
    ),
  });

  const registry = await startRegistry();
  try {
    const reg = await createRegistryClient({ insecure: [registry.host] });
    const ref = parseReference(`${registry.host}/bench/image:v1`);
    await pushImage(image, ref, reg);
    const pullDir = join(WORK, "pulled");
    const pull = await fastestOf(RUNS, {
      kiln: async () => {
        rmSync(pullDir, { recursive: true, force: true });
        return timeAsync(() => pullImage(ref, reg, { blobDir: pullDir }));
      },
      skopeo: async () => {
        rmSync(pullDir, { recursive: true, force: true });
        return timeCommand(
          `skopeo copy -q --src-tls-verify=false docker://${registry.host}/bench/image:v1 dir:${pullDir}`,
        );
      },
    });
    rmSync(pullDir, { recursive: true, force: true });
    const repush = await fastestOf(3, {
      kiln: () => timeAsync(() => pushImage(image, ref, reg)),
      skopeo: () =>
        timeCommand(
          `skopeo copy -q --dest-tls-verify=false oci:${layout}:v1 docker://${registry.host}/bench/image:v1`,
        ),
    });
    await reg.close();

    const rows = [
      printRow({
        name: "push 1 GiB, 5 layers vs skopeo copy",
        kiln: push.kiln,
        reference: push.skopeo,
        target: 1.1,
        note: `${rate(push.kiln)} vs ${rate(push.skopeo)}`,
      }),
      printRow({
        name: "pull 1 GiB, 5 layers vs skopeo copy",
        kiln: pull.kiln,
        reference: pull.skopeo,
        target: 1.1,
        note: `${rate(pull.kiln)} vs ${rate(pull.skopeo)}`,
      }),
      printRow({
        name: "re-push unchanged image vs skopeo copy",
        kiln: repush.kiln,
        reference: repush.skopeo,
        note: `target ≤ ${REPUSH_TARGET_S} s: ${repush.kiln <= REPUSH_TARGET_S ? "ok" : "MISSED"}`,
      }),
    ];
    return rows.every(Boolean) && repush.kiln <= REPUSH_TARGET_S;
  } finally {
    await registry.close();
  }
}

/** Five tar+gzip layers of random bytes, made once with GNU tar and pigz; digests read back from disk. */
async function randomLayers(): Promise<LayerFile[]> {
  const meta = join(WORK, "layers.json");
  if (existsSync(meta)) return JSON.parse(readFileSync(meta, "utf8")) as LayerFile[];
  mkdirSync(WORK, { recursive: true });
  console.error(`generating ${LAYERS} random layers of ${LAYER_BYTES} bytes in ${WORK}`);
  const layers: LayerFile[] = [];
  for (let i = 0; i < LAYERS; i++) {
    const dir = join(WORK, `tree-${i}`);
    const file = join(WORK, `layer-${i}.tar.gz`);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir);
    await timeCommand(`head -c ${LAYER_BYTES} /dev/urandom > '${dir}/random-${i}.bin'`);
    const tar = `tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C '${dir}' -cf - .`;
    await timeCommand(`${tar} | pigz -n -1 > '${file}.tmp' && mv '${file}.tmp' '${file}'`);
    await timeCommand(`${tar} | sha256sum | cut -d' ' -f1 > '${file}.diffid'`);
    rmSync(dir, { recursive: true, force: true });
    const diffId = `sha256:${readFileSync(`${file}.diffid`, "utf8").trim()}` as Digest;
    const { digest, size } = await hashFile(file);
    layers.push({ file, digest, diffId, size });
  }
  writeFileSync(meta, JSON.stringify(layers));
  return layers;
}

async function hashFile(file: string): Promise<{ digest: Digest; size: number }> {
  const hash = createHash("sha256");
  let size = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { digest: `sha256:${hash.digest("hex")}` as Digest, size };
}

/** The same image as an OCI layout for skopeo: layer files hard-linked in, config and manifest as kiln makes them. */
function writeLayout(image: Image, layers: readonly LayerFile[]): string {
  const dir = join(WORK, "layout");
  const tmp = `${dir}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  const blobs = join(tmp, "blobs", "sha256");
  mkdirSync(blobs, { recursive: true });
  for (const l of layers) linkSync(l.file, join(blobs, l.digest.slice("sha256:".length)));
  const config = configBlob(image);
  const manifest = canonicalBytes(manifestOf(image));
  writeFileSync(join(blobs, config.digest.slice("sha256:".length)), config.bytes);
  const manifestDigest = createHash("sha256").update(manifest).digest("hex");
  writeFileSync(join(blobs, manifestDigest), manifest);
  writeFileSync(join(tmp, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  writeFileSync(
    join(tmp, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: MediaType.ImageManifest,
          digest: `sha256:${manifestDigest}`,
          size: manifest.length,
          annotations: { "org.opencontainers.image.ref.name": "v1" },
        },
      ],
    }),
  );
  rmSync(dir, { recursive: true, force: true });
  renameSync(tmp, dir);
  return dir;
}

// Runnable on its own too: `node bench/registry.bench.ts`.
if (import.meta.main) {
  const { printTableHeader } = await import("./run.ts");
  printTableHeader();
  process.exitCode = (await registryBench()) ? 0 : 1;
}
