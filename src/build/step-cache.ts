import type { Layer } from "../oci/image.ts";
import type { Platform } from "../oci/platform.ts";
import type { Reference } from "../oci/reference.ts";
import type { RegistryClient } from "../registry/client.ts";
import { pullImage } from "../registry/pull.ts";
import { pushImage } from "../registry/push.ts";
import { RegistryError } from "../registry/registry-error.ts";

/**
 * The per-step cache in a registry repository: one small image per RUN step, tagged with the step's cache
 * key (plan/cache-key.ts), holding the step's layer; its config's `created` is when it was stored, for the
 * TTL. Reading needs only pull access; a hit's layer names the cache repository as its source, so pushing
 * the built image mounts it there instead of uploading it again.
 */
export interface StepCacheOptions {
  readonly registry: RegistryClient;
  readonly repository: Reference;
  /** Entries older than this are misses. */
  readonly ttlMs: number;
  /** Where hit layers are downloaded. */
  readonly blobDir: string;
  readonly now?: () => number;
}

export class StepCache {
  readonly #o: StepCacheOptions;
  /** Keys looked up in this build, hit or miss. */
  readonly stats = { hits: 0, misses: 0, stored: 0 };

  constructor(options: StepCacheOptions) {
    this.#o = options;
  }

  /** The layer cached under `key` for `platform`, or undefined when there is none or it expired. */
  async lookup(key: string, platform: Platform): Promise<Layer | undefined> {
    try {
      const img = await pullImage(this.#ref(key), this.#o.registry, { platform, blobDir: this.#o.blobDir });
      const created = Date.parse(img.config.created ?? "");
      const fresh = Number.isFinite(created) && (this.#o.now ?? Date.now)() - created <= this.#o.ttlMs;
      if (img.layers.length === 1 && fresh) {
        this.stats.hits++;
        return img.layers[0];
      }
    } catch (err) {
      if (!(err instanceof RegistryError && err.status === 404)) throw err;
    }
    this.stats.misses++;
    return undefined;
  }

  /** Stores a RUN step's layer under its key. */
  async store(key: string, layer: Layer, platform: Platform): Promise<void> {
    const created = new Date((this.#o.now ?? Date.now)()).toISOString();
    await pushImage(
      {
        config: {
          created,
          architecture: platform.architecture,
          os: platform.os,
          ...(platform.variant !== undefined ? { variant: platform.variant } : {}),
          rootfs: { type: "layers", diff_ids: [layer.diffId] },
          history: [{ created, comment: "kiln step cache" }],
        },
        layers: [layer],
      },
      this.#ref(key),
      this.#o.registry,
    );
    this.stats.stored++;
  }

  #ref(key: string): Reference {
    return { registry: this.#o.repository.registry, repository: this.#o.repository.repository, tag: key };
  }
}
