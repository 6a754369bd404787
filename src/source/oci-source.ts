import { createReadStream } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { applyLayer } from "../oci/layer-apply.ts";
import type { ImageManifest } from "../oci/manifest.ts";
import { isIndexMediaType, MediaType } from "../oci/media-type.ts";
import { formatReference, parseReference, withDigest } from "../oci/reference.ts";
import { createRegistryClient, type RegistryClientOptions } from "../registry/client.ts";
import { fetchToCache } from "../registry/pull.ts";
import type { FetchedSource, OciSource } from "./fetch-source.ts";
import { SourceError } from "./source-error.ts";

/** Layers that are a tar archive: OCI's, Docker's, and artifacts' own `….tar+gzip` types (oras, Helm). */
const TAR_LAYER_RE = /[.+]tar(\+gzip|\+zstd|\.gzip)?$/;

/**
 * Pulls a context artifact (`kiln context push`, or `oras push` of a folder or tarball): one manifest
 * with one tar layer, verified against its digest and unpacked into `dir`.
 */
export async function fetchOci(
  spec: OciSource,
  dir: string,
  registry: RegistryClientOptions,
): Promise<FetchedSource> {
  const ref = parseReference(spec.image);
  const reg = await createRegistryClient(registry);
  const blobDir = await mkdtemp(`${dir}.blobs-`);
  try {
    const { descriptor, manifest } = await reg.getManifest(ref);
    if (isIndexMediaType(descriptor.mediaType)) {
      throw new SourceError(
        `${spec.image} is an image index; a build context is a manifest with one tar layer (kiln context push)`,
      );
    }
    const layers = (manifest as ImageManifest).layers;
    const layer = layers[0];
    if (layers.length !== 1 || layer === undefined || !isTarLayer(layer.mediaType)) {
      throw new SourceError(
        `${spec.image} is no build context: it has ${layers.length} layers (${layers.map((l) => l.mediaType).join(", ")}), a context artifact has one tar layer`,
      );
    }
    const blob = await fetchToCache(reg, ref, layer, blobDir);
    try {
      await applyLayer(createReadStream(blob), dir, { sameOwner: false });
    } catch (err) {
      throw new SourceError(`unpacking ${spec.image}: ${(err as Error).message}`, { cause: err });
    }
    const pinned = formatReference(withDigest(ref, descriptor.digest));
    return { pinned: descriptor.digest, source: { oci: { ...spec, image: pinned } } };
  } finally {
    await reg.close();
    await rm(blobDir, { recursive: true, force: true });
  }
}

function isTarLayer(mediaType: string): boolean {
  return mediaType === MediaType.DockerLayerGzip || TAR_LAYER_RE.test(mediaType);
}
