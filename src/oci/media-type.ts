/** Media types kiln writes (OCI) and reads (OCI and Docker schema2). */
export const MediaType = {
  ImageManifest: "application/vnd.oci.image.manifest.v1+json",
  ImageIndex: "application/vnd.oci.image.index.v1+json",
  ImageConfig: "application/vnd.oci.image.config.v1+json",
  LayerTar: "application/vnd.oci.image.layer.v1.tar",
  LayerTarGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  LayerTarZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  Empty: "application/vnd.oci.empty.v1+json",
  DockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  DockerManifestList: "application/vnd.docker.distribution.manifest.list.v2+json",
  DockerConfig: "application/vnd.docker.container.image.v1+json",
  DockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  DockerForeignLayerGzip: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
} as const;
export type MediaType = (typeof MediaType)[keyof typeof MediaType];

export const MANIFEST_MEDIA_TYPES: readonly string[] = [MediaType.ImageManifest, MediaType.DockerManifest];
export const INDEX_MEDIA_TYPES: readonly string[] = [MediaType.ImageIndex, MediaType.DockerManifestList];

export function isIndexMediaType(mt: string | undefined): boolean {
  return mt !== undefined && INDEX_MEDIA_TYPES.includes(mt);
}
export function isManifestMediaType(mt: string | undefined): boolean {
  return mt !== undefined && MANIFEST_MEDIA_TYPES.includes(mt);
}

export type Compression = "gzip" | "zstd" | "none";

/** How a layer blob is compressed, from its media type (Docker's gzip types included). */
export function layerCompression(mt: string): Compression {
  if (mt.endsWith("+gzip") || mt.endsWith(".tar.gzip")) return "gzip";
  if (mt.endsWith("+zstd")) return "zstd";
  return "none";
}

export function layerMediaType(c: Compression): MediaType {
  return c === "gzip" ? MediaType.LayerTarGzip : c === "zstd" ? MediaType.LayerTarZstd : MediaType.LayerTar;
}
