import { createHash, type Hash } from "node:crypto";
import { z } from "zod";
import { InvalidInputError } from "../errors.ts";

/** `sha256:<64 hex>`. kiln writes sha256 only; it reads sha512 digests too, as the image spec allows. */
export type Digest = string & { readonly __brand: "Digest" };

const DIGEST_RE = /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;

export const DigestSchema = z
  .string()
  .regex(DIGEST_RE, "must be a digest like sha256:<64 lowercase hex digits>")
  .transform((s) => s as Digest);

export function isDigest(s: string): s is Digest {
  return DIGEST_RE.test(s);
}

export function parseDigest(s: string): Digest {
  if (!isDigest(s)) throw new InvalidInputError(`invalid digest ${JSON.stringify(s)}`);
  return s;
}

export function sha256(data: string | Uint8Array): Digest {
  return `sha256:${createHash("sha256").update(data).digest("hex")}` as Digest;
}

/** Finishes a running sha256 hash into a Digest. */
export function digestOf(hash: Hash): Digest {
  return `sha256:${hash.digest("hex")}` as Digest;
}

/** The hex part, used as the blob's file name in an OCI layout and in registry paths. */
export function digestHex(d: Digest): string {
  return d.slice(d.indexOf(":") + 1);
}

export function digestAlgorithm(d: Digest): "sha256" | "sha512" {
  return d.startsWith("sha512:") ? "sha512" : "sha256";
}
