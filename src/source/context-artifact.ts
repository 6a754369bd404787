import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InvalidInputError } from "../errors.ts";
import type { Descriptor } from "../oci/descriptor.ts";
import { bytesBlob, canonicalBytes, descriptorOf } from "../oci/image.ts";
import type { LayerEntry } from "../oci/layer-entry.ts";
import { writeLayer } from "../oci/layer-writer.ts";
import type { ImageManifest } from "../oci/manifest.ts";
import { MediaType } from "../oci/media-type.ts";
import type { Reference } from "../oci/reference.ts";
import type { RegistryClient } from "../registry/client.ts";

/**
 * A build context as an OCI artifact, after the image spec's guidelines for artifacts whose content needs
 * no config: the empty config, the artifact's own `artifactType`, and the content as one ordinary
 * tar+gzip layer, which registries, skopeo and oras already know how to store and copy.
 */
export const CONTEXT_ARTIFACT_TYPE = "application/vnd.kiln.context.v1";

/** The spec's empty descriptor's content: `{}`. */
const EMPTY_CONFIG = bytesBlob(Buffer.from("{}"), MediaType.Empty);

/**
 * Pushes the entries as a context artifact under the reference's tag (or by digest only) and returns the
 * manifest's descriptor. The tar is deterministic (sorted, mtime 0, as normalised by writeLayer), so the same
 * files give the same digest on any machine.
 */
export async function pushContext(
  entries: readonly LayerEntry[],
  ref: Reference,
  reg: RegistryClient,
): Promise<Descriptor> {
  if (ref.digest !== undefined) {
    throw new InvalidInputError(
      `${ref.digest}: a context is pushed to a tag or a repository, not to a digest`,
    );
  }
  const scratch = await mkdtemp(join(tmpdir(), "kiln-context-"));
  try {
    const layer = await writeLayer(entries, { file: join(scratch, "context.tar.gz"), mtime: 0 });
    const repo = { registry: ref.registry, repository: ref.repository };
    for (const blob of [layer, EMPTY_CONFIG]) {
      if (!(await reg.hasBlob(repo, blob.digest))) await reg.uploadBlob(repo, blob);
    }
    const manifest: ImageManifest = {
      schemaVersion: 2,
      mediaType: MediaType.ImageManifest,
      artifactType: CONTEXT_ARTIFACT_TYPE,
      config: descriptorOf(EMPTY_CONFIG),
      layers: [descriptorOf(layer)],
    };
    const tags = ref.tag !== undefined ? [ref.tag] : [];
    return await reg.putManifest(repo, canonicalBytes(manifest), MediaType.ImageManifest, tags);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
