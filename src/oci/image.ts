import { Readable } from "node:stream";
import type { Descriptor } from "./descriptor.ts";
import type { Digest } from "./digest.ts";
import { sha256 } from "./digest.ts";
import type { ImageConfig } from "./image-config.ts";
import type { ImageManifest } from "./manifest.ts";
import { MediaType } from "./media-type.ts";

/** A blob that can be read again from the start: a retry calls open() again, nothing rewinds. */
export interface Blob {
  readonly digest: Digest;
  readonly size: number;
  readonly mediaType: string;
  open(): Readable;
}

/** A layer blob with its uncompressed digest (the config's rootfs.diff_ids entry). */
export interface Layer extends Blob {
  readonly diffId: Digest;
  readonly annotations?: Readonly<Record<string, string>>;
}

/** An image as a value: its config and its layers, base first. The manifest is derived, never stored. */
export interface Image {
  readonly config: ImageConfig;
  readonly layers: readonly Layer[];
  readonly annotations?: Readonly<Record<string, string>>;
}

/** Canonical JSON bytes of a config/manifest/index as kiln writes them: compact, keys in insertion order. */
export function canonicalBytes(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value), "utf8");
}

/** The config as a blob, with the digest the manifest names it by. */
export function configBlob(image: Image): Blob & { readonly bytes: Buffer } {
  const bytes = canonicalBytes(image.config);
  return bytesBlob(bytes, MediaType.ImageConfig);
}

export function bytesBlob(bytes: Buffer, mediaType: string): Blob & { readonly bytes: Buffer } {
  return {
    bytes,
    digest: sha256(bytes),
    size: bytes.length,
    mediaType,
    open: () => Readable.from([bytes]),
  };
}

export function descriptorOf(blob: Blob): Descriptor {
  return { mediaType: blob.mediaType, digest: blob.digest, size: blob.size };
}

/** Returns a new Image; `base` is not modified. Layer order: base first, top last. */
export function appendLayers(base: Image, ...added: readonly Layer[]): Image {
  const diff_ids = [...base.config.rootfs.diff_ids, ...added.map((l) => l.diffId)];
  return Object.freeze({
    ...base,
    config: { ...base.config, rootfs: { type: "layers" as const, diff_ids } },
    layers: [...base.layers, ...added],
  });
}

/** The OCI manifest for an image. */
export function manifestOf(image: Image): ImageManifest {
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaType.ImageManifest,
    config: descriptorOf(configBlob(image)),
    layers: image.layers.map((l) => ({
      ...descriptorOf(l),
      ...(l.annotations ? { annotations: { ...l.annotations } } : {}),
    })),
  };
  if (image.annotations) manifest.annotations = { ...image.annotations };
  return manifest;
}
