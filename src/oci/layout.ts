import { createHash, randomUUID } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, open, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { pipeline as pipelineStreams, type Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { z } from "zod";
import {
  DigestMismatchError,
  describeIssues,
  InvalidInputError,
  KilnError,
  NotFoundError,
} from "../errors.ts";
import type { Descriptor, Platform } from "./descriptor.ts";
import type { Digest } from "./digest.ts";
import { digestAlgorithm, digestHex } from "./digest.ts";
import type { Blob, Image, Layer } from "./image.ts";
import { bytesBlob, canonicalBytes, configBlob, descriptorOf, manifestOf } from "./image.ts";
import { ImageConfigSchema } from "./image-config.ts";
import type { ImageIndex, ImageManifest } from "./manifest.ts";
import { ImageIndexSchema, ImageManifestSchema } from "./manifest.ts";
import { isIndexMediaType, isManifestMediaType, MediaType } from "./media-type.ts";
import {
  configPlatform,
  formatPlatform,
  hostPlatform,
  platformMatches,
  requirePlatform,
  selectManifest,
} from "./platform.ts";

/**
 * OCI image layout (image-spec image-layout.md) on a local directory: `oci-layout`, `index.json` and
 * content-addressed `blobs/<alg>/<hex>`. Writes are crash-safe in the one way that matters: blobs first,
 * each renamed into place only once complete and verified, and `index.json` replaced last, so a layout
 * that looks valid never names a blob that is missing.
 */

/** The annotation skopeo, buildah and containerd use to name an `index.json` entry (`oci:DIR:REF`). */
export const REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name";
const LAYOUT_VERSION = "1.0.0";
/** Manifests and configs are small; anything bigger is not one (registries cap manifests at 4 MiB). */
const MAX_JSON_BLOB = 8 * 1024 * 1024;

// image-layout.md's grammar for ref.name values.
const REF_NAME_RE =
  /^[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*(?:\/[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*)*$/;

export interface PlatformImage {
  readonly platform: Platform;
  readonly image: Image;
}

/** What a ref in a layout names: one image manifest, or an index of them. */
export type Resolved =
  | { readonly kind: "manifest"; readonly descriptor: Descriptor; readonly manifest: ImageManifest }
  | { readonly kind: "index"; readonly descriptor: Descriptor; readonly index: ImageIndex };

// --- write ------------------------------------------------------------------------------------------

/** Writes one image under `ref`; other refs in the layout are kept. Returns the `index.json` entry. */
export async function writeImage(dir: string, ref: string, image: Image): Promise<Descriptor> {
  checkRefName(ref);
  await prepareLayout(dir);
  const manifest = await writeImageBlobs(dir, image);
  await syncDir(blobDir(dir, "sha256"));
  return putRef(dir, ref, manifest);
}

/**
 * Writes one image per platform and an OCI image index over them under `ref`. The index lists the
 * images in the order given, each descriptor carrying its platform. Returns the `index.json` entry.
 */
export async function writeIndex(
  dir: string,
  ref: string,
  entries: readonly PlatformImage[],
): Promise<Descriptor> {
  checkRefName(ref);
  checkPlatforms(entries);
  await prepareLayout(dir);
  const manifests: Descriptor[] = [];
  for (const { platform, image } of entries) {
    const manifest = await writeImageBlobs(dir, image);
    manifests.push({ ...manifest, platform: platformField(platform) });
  }
  const index: ImageIndex = { schemaVersion: 2, mediaType: MediaType.ImageIndex, manifests };
  const blob = bytesBlob(canonicalBytes(index), MediaType.ImageIndex);
  await writeBlob(dir, blob);
  await syncDir(blobDir(dir, "sha256"));
  return putRef(dir, ref, descriptorOf(blob));
}

function checkRefName(ref: string): void {
  if (!REF_NAME_RE.test(ref)) {
    throw new InvalidInputError(
      `invalid layout ref ${JSON.stringify(ref)}: use letters, digits and -._:@+ separators, like a tag`,
    );
  }
}

function checkPlatforms(entries: readonly PlatformImage[]): void {
  if (entries.length === 0) throw new InvalidInputError("an image index needs at least one image");
  const seen = new Set<string>();
  for (const { platform, image } of entries) {
    const name = formatPlatform(platform);
    if (seen.has(name)) throw new InvalidInputError(`platform ${name} appears twice in the image index`);
    seen.add(name);
    const own = configPlatform(image.config);
    if (!platformMatches(platform, own)) {
      throw new InvalidInputError(`the image listed for ${name} has a config for ${formatPlatform(own)}`);
    }
  }
}

function platformField(p: Platform): Platform {
  return {
    architecture: p.architecture,
    os: p.os,
    ...(p["os.version"] !== undefined ? { "os.version": p["os.version"] } : {}),
    ...(p.variant !== undefined ? { variant: p.variant } : {}),
  };
}

/** Layers, config, manifest, in that order; returns the manifest's descriptor. */
async function writeImageBlobs(dir: string, image: Image): Promise<Descriptor> {
  for (const layer of image.layers) await writeBlob(dir, layer);
  await writeBlob(dir, configBlob(image));
  const manifest = bytesBlob(canonicalBytes(manifestOf(image)), MediaType.ImageManifest);
  await writeBlob(dir, manifest);
  return descriptorOf(manifest);
}

async function prepareLayout(dir: string): Promise<void> {
  // One listing decides: writers put oci-layout in place before anything else, so a listing that shows
  // other entries of theirs also shows it.
  const present: string[] = await readdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return [];
    throw err;
  });
  if (present.includes("oci-layout")) {
    const version = await readJsonFile(join(dir, "oci-layout"), "oci-layout");
    if (version !== undefined) checkLayoutVersion(dir, version);
  } else if (present.some((name) => !isOwnTemporary(name))) {
    // A folder that holds something else is the user's, not a layout to write into: refuse before touching it.
    throw new InvalidInputError(
      `${dir} is not empty and not an OCI image layout (no oci-layout file); give a new or empty folder`,
    );
  } else {
    await mkdir(dir, { recursive: true });
    await replaceFile(dir, "oci-layout", canonicalBytes({ imageLayoutVersion: LAYOUT_VERSION }));
  }
  await mkdir(blobDir(dir, "sha256"), { recursive: true });
}

function isOwnTemporary(name: string): boolean {
  return name === LOCK_FILE || (name.startsWith(".") && name.endsWith(".tmp"));
}

/** Stores a blob unless it is already there; the content is verified against its digest before it lands. */
export async function writeBlob(dir: string, blob: Blob): Promise<void> {
  const path = blobPath(dir, blob.digest);
  if (await exists(path)) return;
  const tmp = join(
    blobDir(dir, digestAlgorithm(blob.digest)),
    `.${digestHex(blob.digest)}.${randomUUID()}.tmp`,
  );
  try {
    await pipeline(
      blob.open(),
      verifying(blob.digest, blob.size, `blob ${blob.digest}`),
      createWriteStream(tmp, { flags: "wx", flush: true }),
    );
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** Adds or replaces the `index.json` entry for `ref`, keeping the others in their order. */
async function putRef(dir: string, ref: string, target: Descriptor): Promise<Descriptor> {
  return withIndexLock(dir, () => updateRef(dir, ref, target));
}

async function updateRef(dir: string, ref: string, target: Descriptor): Promise<Descriptor> {
  const entry: Descriptor = { ...target, annotations: { [REF_NAME_ANNOTATION]: ref } };
  const current = (await readIndexJson(dir)) ?? {
    schemaVersion: 2,
    mediaType: MediaType.ImageIndex,
    manifests: [],
  };
  const index: ImageIndex = {
    ...current,
    manifests: [...current.manifests.filter((d) => d.annotations?.[REF_NAME_ANNOTATION] !== ref), entry],
  };
  await replaceFile(dir, "index.json", canonicalBytes(index));
  return entry;
}

const LOCK_FILE = ".index.json.lock";
/** A lock older than this was left by a writer that died; index.json updates take milliseconds. */
const STALE_LOCK_MS = 30_000;
const LOCK_WAIT_MS = 120_000;

/**
 * Serialises read-modify-write of index.json between processes (two builds writing refs into one layout
 * would otherwise lose one): an exclusively created lock file, waited for with a short backoff.
 */
async function withIndexLock<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const lock = join(dir, LOCK_FILE);
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (let delay = 5; ; delay = Math.min(delay * 2, 200)) {
    try {
      await (await open(lock, "wx")).close();
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const age = await stat(lock).then(
        (st) => Date.now() - st.mtimeMs,
        () => 0,
      );
      if (age > STALE_LOCK_MS) await rm(lock, { force: true });
      else if (Date.now() > deadline) {
        throw new KilnError(`${dir} is locked by another writer (${lock}); remove it if no kiln is running`);
      }
      await new Promise((r) => setTimeout(r, delay + Math.random() * delay));
    }
  }
  try {
    return await fn();
  } finally {
    await rm(lock, { force: true });
  }
}

/** Writes `name` in `dir` through a temporary file and a rename, so readers see the old or the new file. */
async function replaceFile(dir: string, name: string, bytes: Buffer): Promise<void> {
  const tmp = join(dir, `.${name}.${randomUUID()}.tmp`);
  try {
    const fh = await open(tmp, "wx");
    try {
      await fh.writeFile(bytes);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, join(dir, name));
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await syncDir(dir);
}

/** Makes the renames in a directory durable, so `index.json` cannot survive a crash that its blobs did not. */
async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

// --- read -------------------------------------------------------------------------------------------

/** The layout's `index.json`, after checking `oci-layout`. */
export async function readLayout(dir: string): Promise<ImageIndex> {
  const version = await readJsonFile(join(dir, "oci-layout"), "oci-layout");
  if (version === undefined)
    throw new NotFoundError(`${dir} is not an OCI image layout: it has no oci-layout file`);
  checkLayoutVersion(dir, version);
  const index = await readIndexJson(dir);
  if (index === undefined) throw new NotFoundError(`OCI image layout ${dir} has no index.json`);
  return index;
}

/**
 * Finds the `index.json` entry named `ref` (its ref.name annotation) or, without a ref, the only entry,
 * and reads what it points at, verified against its digest.
 */
export async function resolveRef(dir: string, ref?: string): Promise<Resolved> {
  const index = await readLayout(dir);
  const descriptor = findRef(dir, index, ref);
  return readTarget(dir, descriptor);
}

function findRef(dir: string, index: ImageIndex, ref: string | undefined): Descriptor {
  const names = index.manifests.map((d) => d.annotations?.[REF_NAME_ANNOTATION] ?? `(unnamed) ${d.digest}`);
  if (ref === undefined) {
    if (index.manifests.length === 1) return index.manifests[0]!;
    throw new InvalidInputError(
      `OCI image layout ${dir} holds ${index.manifests.length} entries; name one of: ${names.join(", ") || "none"}`,
    );
  }
  const found = index.manifests.findLast((d) => d.annotations?.[REF_NAME_ANNOTATION] === ref);
  if (found === undefined) {
    throw new NotFoundError(
      `OCI image layout ${dir} has no ref ${JSON.stringify(ref)}; it has: ${names.join(", ")}`,
    );
  }
  return found;
}

async function readTarget(dir: string, descriptor: Descriptor): Promise<Resolved> {
  const what = `manifest ${descriptor.digest}`;
  if (!isIndexMediaType(descriptor.mediaType) && !isManifestMediaType(descriptor.mediaType)) {
    throw new InvalidInputError(
      `${what} in ${dir} has media type ${descriptor.mediaType}, which is not an image`,
    );
  }
  const bytes = await readBlob(dir, descriptor);
  if (isIndexMediaType(descriptor.mediaType)) {
    return { kind: "index", descriptor, index: parseJson(bytes, ImageIndexSchema, what) };
  }
  return { kind: "manifest", descriptor, manifest: parseJson(bytes, ImageManifestSchema, what) };
}

/**
 * The image `ref` names (or the only entry). An index is resolved to the image for `platform`, the host's
 * platform when none is given. The layers re-open their blob files and verify them as they are read.
 */
export async function resolveImage(dir: string, ref?: string, platform?: Platform): Promise<Image> {
  let resolved = await resolveRef(dir, ref);
  for (let depth = 0; resolved.kind === "index"; depth++) {
    if (depth === 8) throw new InvalidInputError(`image indexes in ${dir} nest more than 8 deep`);
    resolved = await readTarget(dir, selectManifest(resolved.index, platform ?? hostPlatform()));
  }
  const { manifest } = resolved;
  const config = parseJson(
    await readBlob(dir, manifest.config),
    ImageConfigSchema,
    `config ${manifest.config.digest}`,
  );
  if (platform !== undefined) requirePlatform(`${ref ?? "the image"} in ${dir}`, platform, config);
  const diffIds = config.rootfs.diff_ids;
  if (diffIds.length !== manifest.layers.length) {
    throw new InvalidInputError(
      `manifest ${resolved.descriptor.digest} in ${dir} has ${manifest.layers.length} layers but its config lists ${diffIds.length} diff_ids`,
    );
  }
  const layers = await Promise.all(manifest.layers.map((d, i) => layerAt(dir, d, diffIds[i]!)));
  return Object.freeze({
    config,
    layers,
    ...(manifest.annotations ? { annotations: manifest.annotations } : {}),
  });
}

async function layerAt(dir: string, d: Descriptor, diffId: Digest): Promise<Layer> {
  const path = blobPath(dir, d.digest);
  await checkBlobFile(dir, d);
  const layer: Layer = {
    digest: d.digest,
    diffId,
    size: d.size,
    mediaType: d.mediaType,
    ...(d.annotations ? { annotations: d.annotations } : {}),
    // Errors of the file stream reach the reader through the verifying stream, which pipeline destroys with them.
    open: (): Readable =>
      pipelineStreams(
        createReadStream(path),
        verifying(d.digest, d.size, `layer ${d.digest} in ${dir}`),
        () => {},
      ),
  };
  return Object.freeze(layer);
}

async function checkBlobFile(dir: string, d: Descriptor): Promise<void> {
  const st = await stat(blobPath(dir, d.digest)).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT")
      throw new NotFoundError(`blob ${d.digest} is missing from ${dir}`, { cause: err });
    throw err;
  });
  // A wrong size is already certain; reading it through lets the error name the digest it really has.
  if (st.size !== d.size) await verifyBlobFile(dir, d);
}

/** A small blob (manifest, index, config) read whole and verified. */
async function readBlob(dir: string, d: Descriptor): Promise<Buffer> {
  if (d.size > MAX_JSON_BLOB) {
    throw new InvalidInputError(
      `blob ${d.digest} in ${dir} is ${d.size} bytes, too large for a manifest or config`,
    );
  }
  await checkBlobFile(dir, d);
  const chunks: Buffer[] = [];
  await verifyBlobFile(dir, d, (chunk) => chunks.push(chunk));
  return Buffer.concat(chunks);
}

async function verifyBlobFile(dir: string, d: Descriptor, onChunk?: (chunk: Buffer) => void): Promise<void> {
  const file = createReadStream(blobPath(dir, d.digest));
  await pipeline(file, verifying(d.digest, d.size, `blob ${d.digest} in ${dir}`), async (verified) => {
    for await (const chunk of verified) onChunk?.(chunk as Buffer);
  });
}

/** Hashes what passes through and fails the stream at its end when the digest or size is not the expected one. */
function verifying(expected: Digest, size: number, what: string): Transform {
  const hash = createHash(digestAlgorithm(expected));
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      seen += chunk.length;
      done(null, chunk);
    },
    flush(done) {
      const actual = `${digestAlgorithm(expected)}:${hash.digest("hex")}`;
      const sizeNote = seen === size ? "" : ` (${seen} bytes, expected ${size})`;
      done(
        actual === expected && sizeNote === ""
          ? null
          : new DigestMismatchError(what + sizeNote, expected, actual),
      );
    },
  });
}

function checkLayoutVersion(dir: string, value: unknown): void {
  const version = (value as { imageLayoutVersion?: unknown } | null)?.imageLayoutVersion;
  if (version !== LAYOUT_VERSION) {
    throw new InvalidInputError(
      `OCI image layout ${dir} has imageLayoutVersion ${JSON.stringify(version)}; kiln reads ${LAYOUT_VERSION}`,
    );
  }
}

async function readIndexJson(dir: string): Promise<ImageIndex | undefined> {
  const raw = await readJsonFile(join(dir, "index.json"), "index.json");
  return raw === undefined ? undefined : validate(raw, ImageIndexSchema, `index.json in ${dir}`);
}

/** A JSON file's value, or undefined when the file does not exist. */
async function readJsonFile(path: string, what: string): Promise<unknown> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  try {
    return JSON.parse(bytes.toString("utf8"));
  } catch (err) {
    throw new InvalidInputError(`${what} at ${path} is not JSON`, { cause: err });
  }
}

function parseJson<T>(bytes: Buffer, schema: z.ZodType<T>, what: string): T {
  let raw: unknown;
  try {
    raw = JSON.parse(bytes.toString("utf8"));
  } catch (err) {
    throw new InvalidInputError(`${what} is not JSON`, { cause: err });
  }
  return validate(raw, schema, what);
}

/**
 * Checks `raw` against the schema but returns `raw` itself: zod's output reorders keys, and the original
 * order is what re-serialises to the same bytes (and so the same digest).
 */
function validate<T>(raw: unknown, schema: z.ZodType<T>, what: string): T {
  const result = schema.safeParse(raw);
  if (!result.success)
    throw new InvalidInputError(`${what} is malformed:\n${describeIssues(result.error.issues)}`, {
      cause: result.error,
    });
  return raw as T;
}

function blobDir(dir: string, algorithm: string): string {
  return join(dir, "blobs", algorithm);
}

export function blobPath(dir: string, d: Digest): string {
  return join(blobDir(dir, digestAlgorithm(d)), digestHex(d));
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}
