import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, rename, stat, unlink } from "node:fs/promises";
import { join } from "node:path";
import { PassThrough, type Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { DigestMismatchError, describeIssues, KilnError } from "../errors.ts";
import type { Descriptor } from "../oci/descriptor.ts";
import { type Digest, digestAlgorithm, digestHex } from "../oci/digest.ts";
import type { Image, Layer } from "../oci/image.ts";
import { type ImageConfig, ImageConfigSchema } from "../oci/image-config.ts";
import type { ImageIndex, ImageManifest } from "../oci/manifest.ts";
import { isIndexMediaType, MediaType } from "../oci/media-type.ts";
import { hostPlatform, type Platform, requirePlatform, selectManifest } from "../oci/platform.ts";
import { formatReference, type Reference, withDigest } from "../oci/reference.ts";
import type { FetchedManifest, RegistryClient, RepositoryRef } from "./client.ts";
import { mapLimit } from "./limit.ts";
import { RegistryConnectionError, RegistryProtocolError } from "./registry-error.ts";
import { withRetry } from "./retry.ts";

export interface PullOptions {
  /** Which image of an index to take; the host's platform when absent. */
  readonly platform?: Platform;
  /**
   * Content-addressed cache (`<blobDir>/sha256/<hex>`, as in an OCI layout). Layers are kept here so
   * they re-open without the network: an executor reads a base layer more than once (unpack, diff),
   * and a pod may no longer hold registry credentials when it does.
   */
  readonly blobDir: string;
  /**
   * Fetch layers only when they are opened, not before returning: for pushing on top of a base (the registry
   * usually has its layers, or mounts them) and for reading a base's config.
   */
  readonly lazyLayers?: boolean;
}

/** A layer pulled from a registry remembers where it came from, so a push there can mount it. */
export interface PulledLayer extends Layer {
  readonly source: RepositoryRef;
}

/** An Image plus the manifest it was read from, for pinning a base by digest. */
export interface PulledImage extends Image {
  readonly layers: readonly PulledLayer[];
  /** The platform manifest's descriptor (not the index's). */
  readonly manifest: Descriptor;
}

/** Docker layer types carry the same bytes as their OCI twins; kiln's own manifests say OCI. */
const OCI_LAYER_TYPE: Readonly<Record<string, string>> = {
  [MediaType.DockerLayerGzip]: MediaType.LayerTarGzip,
};

/** Resolves a tag or digest to the manifest for one platform (walking an index if there is one). */
export async function resolveManifest(
  ref: Reference,
  reg: RegistryClient,
  platform: Platform = hostPlatform(),
): Promise<FetchedManifest & { readonly manifest: ImageManifest }> {
  const top = await reg.getManifest(ref);
  if (!isIndexMediaType(top.descriptor.mediaType)) {
    return top as FetchedManifest & { manifest: ImageManifest };
  }
  const chosen = selectManifest(top.manifest as ImageIndex, platform);
  const child = await reg.getManifest(withDigest(ref, chosen.digest));
  if (isIndexMediaType(child.descriptor.mediaType)) {
    throw new RegistryProtocolError(
      `index ${chosen.digest} names another index for ${platform.architecture}`,
    );
  }
  return child as FetchedManifest & { manifest: ImageManifest };
}

/** Pulls one platform's image: config and layers verified against their digests and cached in blobDir. */
export async function pullImage(
  ref: Reference,
  reg: RegistryClient,
  options: PullOptions,
): Promise<PulledImage> {
  const { descriptor, manifest } = await resolveManifest(ref, reg, options.platform);
  const configPath = await fetchToCache(reg, ref, manifest.config, options.blobDir);
  const config = await readConfig(configPath, manifest.config.digest);
  requirePlatform(formatReference(ref), options.platform ?? hostPlatform(), config);
  const diffIds = config.rootfs.diff_ids;
  if (diffIds.length !== manifest.layers.length) {
    throw new RegistryProtocolError(
      `image ${descriptor.digest}: ${manifest.layers.length} layers but ${diffIds.length} diff_ids in its config`,
    );
  }
  const source = { registry: ref.registry, repository: ref.repository };
  const layers = await mapLimit(manifest.layers, reg.concurrency, async (d, i): Promise<PulledLayer> => {
    const path = options.lazyLayers ? undefined : await fetchToCache(reg, ref, d, options.blobDir);
    return Object.freeze({
      digest: d.digest,
      diffId: diffIds[i]!,
      size: d.size,
      mediaType: OCI_LAYER_TYPE[d.mediaType] ?? d.mediaType,
      ...(d.annotations ? { annotations: d.annotations } : {}),
      source,
      open: () => (path !== undefined ? createReadStream(path) : openLazily(reg, ref, d, options.blobDir)),
    });
  });
  return Object.freeze({
    config,
    layers,
    manifest: descriptor,
    ...(manifest.annotations ? { annotations: manifest.annotations } : {}),
  });
}

/** A stream of a blob that is fetched into the cache first, for layers pulled with `lazyLayers`. */
function openLazily(reg: RegistryClient, ref: Reference, d: Descriptor, blobDir: string): Readable {
  const out = new PassThrough();
  fetchToCache(reg, ref, d, blobDir).then(
    (path) =>
      createReadStream(path)
        .on("error", (err) => out.destroy(err))
        .pipe(out),
    (err: unknown) => out.destroy(err as Error),
  );
  return out;
}

/** Path of a blob in the cache. */
export function cachedBlobPath(blobDir: string, digest: Digest): string {
  return join(blobDir, digestAlgorithm(digest), digestHex(digest));
}

/**
 * Downloads a blob into the cache unless it is there. Bytes go to a temporary file that is renamed
 * only once size and digest match, so the cache never holds a partial or wrong blob.
 */
export async function fetchToCache(
  reg: RegistryClient,
  ref: RepositoryRef,
  d: Descriptor,
  blobDir: string,
): Promise<string> {
  const path = cachedBlobPath(blobDir, d.digest);
  const existing = await stat(path).catch(() => undefined);
  if (existing?.size === d.size) return path;
  await mkdir(join(blobDir, digestAlgorithm(d.digest)), { recursive: true });
  await withRetry(reg.retryPolicy, async () => {
    const tmp = `${path}.partial-${randomBytes(6).toString("hex")}`;
    try {
      await pipeline(await reg.fetchBlob(ref, d.digest), verifying(d), createWriteStream(tmp));
      await rename(tmp, path);
    } catch (err) {
      await unlink(tmp).catch(() => {});
      // A body cut off mid-stream is as temporary as a refused connection: fetch the blob again.
      if (err instanceof KilnError) throw err;
      throw new RegistryConnectionError(
        "GET",
        `https://${ref.registry}/v2/${ref.repository}/blobs/${d.digest}`,
        {
          cause: err,
        },
      );
    }
  });
  return path;
}

/** Passes bytes through while hashing them; fails at the end on a wrong digest, early on excess size. */
function verifying(d: Descriptor): Transform {
  const hash = createHash(digestAlgorithm(d.digest));
  let size = 0;
  const what = `blob ${d.digest} (${d.mediaType})`;
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      size += chunk.length;
      if (size > d.size) {
        done(new DigestMismatchError(`${what}: more than ${d.size} bytes`, d.digest, "(unfinished)"));
        return;
      }
      hash.update(chunk);
      done(null, chunk);
    },
    flush(done) {
      const actual = `${digestAlgorithm(d.digest)}:${hash.digest("hex")}`;
      done(actual === d.digest ? null : new DigestMismatchError(what, d.digest, actual));
    },
  });
}

async function readConfig(path: string, digest: Digest): Promise<ImageConfig> {
  const chunks: Buffer[] = [];
  for await (const c of createReadStream(path)) chunks.push(c as Buffer);
  const parsed = ImageConfigSchema.safeParse(JSON.parse(Buffer.concat(chunks).toString("utf8")));
  if (!parsed.success) {
    throw new RegistryProtocolError(
      `config ${digest} is not an image config:\n${describeIssues(parsed.error.issues)}`,
      {
        cause: parsed.error,
      },
    );
  }
  return parsed.data;
}
