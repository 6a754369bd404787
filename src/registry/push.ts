import { InvalidInputError } from "../errors.ts";
import type { Descriptor } from "../oci/descriptor.ts";
import { type Blob, canonicalBytes, configBlob, type Image, manifestOf } from "../oci/image.ts";
import type { ImageIndex } from "../oci/manifest.ts";
import { MediaType } from "../oci/media-type.ts";
import { configPlatform } from "../oci/platform.ts";
import type { Reference } from "../oci/reference.ts";
import type { Scope } from "./auth.ts";
import { pushScopes, type RegistryClient, type RepositoryRef } from "./client.ts";
import { mapLimit } from "./limit.ts";

export interface PushOptions {
  /** Tags besides the reference's own. With no tag at all the manifest is stored by digest only. */
  readonly tags?: readonly string[];
  /**
   * A repository on the same registry to mount missing blobs from. Layers that came from pullImage
   * already name their source; this covers blobs that did not.
   */
  readonly mountFrom?: string;
}

/**
 * Pushes in the spec's order: each blob not already there (layers, then the config), then the
 * manifest under every tag. Returns the manifest's descriptor.
 */
export async function pushImage(
  image: Image,
  ref: Reference,
  reg: RegistryClient,
  options: PushOptions = {},
): Promise<Descriptor> {
  const repo = { registry: ref.registry, repository: ref.repository };
  const blobs = [...image.layers, configBlob(image)];
  const scopes = scopesFor(blobs, repo, options.mountFrom);
  await pushBlobs(blobs, repo, reg, scopes, options.mountFrom);
  const manifest = canonicalBytes(manifestOf(image));
  return reg.putManifest(repo, manifest, MediaType.ImageManifest, tagsOf(ref, options), scopes);
}

/**
 * Pushes each image by digest, then one OCI index naming them with the platform from each config.
 * Returns the index's descriptor.
 */
export async function pushIndex(
  images: readonly Image[],
  ref: Reference,
  reg: RegistryClient,
  options: PushOptions = {},
): Promise<Descriptor> {
  const manifests: Descriptor[] = [];
  for (const image of images) {
    const d = await pushImage(image, { registry: ref.registry, repository: ref.repository }, reg, {
      ...(options.mountFrom !== undefined ? { mountFrom: options.mountFrom } : {}),
    });
    manifests.push({ ...d, platform: configPlatform(image.config) });
  }
  const index: ImageIndex = { schemaVersion: 2, mediaType: MediaType.ImageIndex, manifests };
  return putIndex(index, ref, reg, options);
}

/** Stores an OCI index under the reference's tag(s). Docker media types may not appear inside it. */
export async function putIndex(
  index: ImageIndex,
  ref: Reference,
  reg: RegistryClient,
  options: Pick<PushOptions, "tags"> = {},
): Promise<Descriptor> {
  const docker = index.manifests.filter((m) => m.mediaType.startsWith("application/vnd.docker."));
  if (index.mediaType !== MediaType.ImageIndex || docker.length > 0) {
    throw new InvalidInputError(
      `an OCI index may only name OCI manifests; got ${[index.mediaType, ...docker.map((m) => `${m.digest} ${m.mediaType}`)].join(", ")}`,
    );
  }
  const repo = { registry: ref.registry, repository: ref.repository };
  return reg.putManifest(repo, canonicalBytes(index), MediaType.ImageIndex, tagsOf(ref, options));
}

/** One scope set for the whole push, so one bearer token covers every HEAD, mount, upload and PUT. */
function scopesFor(blobs: readonly Blob[], repo: RepositoryRef, mountFrom: string | undefined): Scope[] {
  const sources = new Set([mountFrom, ...blobs.map((b) => sameRegistrySource(b, repo))]);
  sources.delete(undefined);
  return [...pushScopes(repo), ...[...sources].flatMap((s) => pushScopes(repo, s).slice(1))];
}

async function pushBlobs(
  blobs: readonly Blob[],
  repo: RepositoryRef,
  reg: RegistryClient,
  scopes: readonly Scope[],
  mountFrom: string | undefined,
): Promise<void> {
  await mapLimit(blobs, reg.concurrency, async (blob) => {
    if (await reg.hasBlob(repo, blob.digest, scopes)) {
      reg.stats.blobsSkipped++;
      return;
    }
    const from = sameRegistrySource(blob, repo) ?? mountFrom;
    await reg.uploadBlob(repo, blob, { scopes, ...(from !== undefined ? { mountFrom: from } : {}) });
  });
}

/** The repository a pulled layer came from, when it is on the registry being pushed to. */
function sameRegistrySource(blob: Blob, repo: RepositoryRef): string | undefined {
  const source = (blob as { source?: RepositoryRef }).source;
  return source?.registry === repo.registry && source.repository !== repo.repository
    ? source.repository
    : undefined;
}

function tagsOf(ref: Reference, options: Pick<PushOptions, "tags">): string[] {
  const tags = [...(ref.tag !== undefined ? [ref.tag] : []), ...(options.tags ?? [])];
  return [...new Set(tags)];
}
