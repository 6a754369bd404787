import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Image } from "../oci/image.ts";
import { applyLayer } from "../oci/layer-apply.ts";
import { BuildContext } from "./context.ts";

/**
 * The unpacked file systems of the stages and images a build copies from (`COPY --from`), each unpacked
 * once into its own folder under `dir`, so copies read real files with their modes, owners and links.
 */
export class ImageRoots {
  readonly #dir: string;
  readonly #roots = new Map<string, Promise<BuildContext>>();

  constructor(dir: string) {
    this.#dir = dir;
  }

  /** The root of `image`, unpacked on first use; `key` names it (`stage build`, `image busybox`). */
  root(key: string, image: Image): Promise<BuildContext> {
    let root = this.#roots.get(key);
    if (root === undefined) {
      root = this.#unpack(key, image);
      this.#roots.set(key, root);
    }
    return root;
  }

  async #unpack(key: string, image: Image): Promise<BuildContext> {
    await mkdir(this.#dir, { recursive: true });
    const dir = await mkdtemp(join(this.#dir, "root-"));
    for (const layer of image.layers) await applyLayer(layer.open(), dir);
    return new BuildContext(dir, [], { policy: "scoped", keepOwners: true, name: key });
  }

  async close(): Promise<void> {
    await rm(this.#dir, { recursive: true, force: true });
  }
}
