import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { ContainerError } from "../executor/container.ts";
import { digestHex } from "../oci/digest.ts";
import { configBlob, type Image } from "../oci/image.ts";
import { applyLayer } from "../oci/layer-apply.ts";

const run = promisify(execFile);

/**
 * Unpacked image roots kept between builds, one folder per image config digest (which names every layer),
 * as a container engine keeps unpacked layers: a stage container's root is an overlay over one of them, so
 * a build neither unpacks nor copies its base again. Folders are written under a temporary name and
 * renamed, so a reader never sees half a root; they are only read afterwards.
 */
export async function cachedRoot(image: Image, cacheDir: string): Promise<string> {
  const dir = path.join(cacheDir, digestHex(configBlob(image).digest));
  if (fs.existsSync(dir)) return dir;
  fs.mkdirSync(cacheDir, { recursive: true });
  const tmp = fs.mkdtempSync(`${dir}.new-`);
  fs.chmodSync(tmp, 0o755);
  try {
    for (const layer of image.layers) await applyLayer(layer.open(), tmp);
    fs.renameSync(tmp, dir);
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    if (!fs.existsSync(dir)) throw err; // another build made it first otherwise
  }
  return dir;
}

/** An overlay mount: `lower` read-only below, writes to `upper`; `unmount()` takes it down. */
export interface Overlay {
  readonly root: string;
  unmount(): Promise<void>;
}

/** Mounts an overlay of `lower` at `dir`/rootfs, with its upper and work folders in `dir`. */
export async function mountOverlay(lower: string, dir: string): Promise<Overlay> {
  const root = path.join(dir, "rootfs");
  const upper = path.join(dir, "upper");
  const work = path.join(dir, "overlay-work");
  for (const d of [root, upper, work]) fs.mkdirSync(d, { recursive: true, mode: 0o755 });
  // The root directory's own mode and owner come from the upper folder.
  fs.chmodSync(upper, fs.statSync(lower).mode & 0o7777);
  try {
    await run("mount", [
      "-t",
      "overlay",
      "overlay",
      "-o",
      `lowerdir=${lower},upperdir=${upper},workdir=${work}`,
      root,
    ]);
  } catch (err) {
    throw new ContainerError(`cannot mount an overlay of ${lower}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return {
    root,
    unmount: async () => {
      await run("umount", [root]);
    },
  };
}
