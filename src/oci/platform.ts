import { InvalidInputError, NotFoundError } from "../errors.ts";
import type { Descriptor, Platform } from "./descriptor.ts";
import type { ImageConfig } from "./image-config.ts";
import type { ImageIndex } from "./manifest.ts";

export type { Platform } from "./descriptor.ts";

const KNOWN_OS = new Set([
  "aix",
  "android",
  "darwin",
  "dragonfly",
  "freebsd",
  "hurd",
  "illumos",
  "ios",
  "js",
  "linux",
  "nacl",
  "netbsd",
  "openbsd",
  "plan9",
  "solaris",
  "wasip1",
  "windows",
  "zos",
]);
const KNOWN_ARCH = new Set([
  "386",
  "amd64",
  "arm",
  "arm64",
  "loong64",
  "mips",
  "mips64",
  "mips64le",
  "mipsle",
  "ppc64",
  "ppc64le",
  "riscv64",
  "s390x",
  "wasm",
]);
const COMPONENT_RE = /^[A-Za-z0-9_.-]+$/;

/**
 * The platform in the form containerd compares: lower case, `x86_64`/`aarch64`/`armhf` aliases resolved,
 * default variants made explicit for arm (v7) and dropped for arm64 (v8) and amd64 (v1), so that
 * `linux/arm64` and `linux/arm64/v8` are equal.
 */
export function normalizePlatform(p: Platform): Platform {
  const os = p.os.toLowerCase() === "macos" ? "darwin" : p.os.toLowerCase();
  let architecture = p.architecture.toLowerCase();
  let variant = p.variant?.toLowerCase() ?? "";
  switch (architecture) {
    case "i386":
      architecture = "386";
      variant = "";
      break;
    case "x86_64":
    case "x86-64":
    case "amd64":
      architecture = "amd64";
      if (variant === "v1") variant = "";
      break;
    case "aarch64":
    case "arm64":
      architecture = "arm64";
      if (variant === "8" || variant === "v8" || variant === "v8.0") variant = "";
      else if (variant === "9" || variant === "9.0" || variant === "v9.0") variant = "v9";
      break;
    case "armhf":
      architecture = "arm";
      variant = "v7";
      break;
    case "armel":
      architecture = "arm";
      variant = "v6";
      break;
    case "arm":
      if (variant === "" || variant === "7") variant = "v7";
      else if (variant === "5" || variant === "6" || variant === "8") variant = `v${variant}`;
      break;
  }
  const out: Platform = { architecture, os };
  if (variant !== "") out.variant = variant;
  if (p["os.version"] !== undefined) out["os.version"] = p["os.version"];
  return out;
}

/**
 * Parses `os[/arch[/variant]]` as containerd does; a single part that is a known architecture means
 * the host's OS, a single OS means the host's architecture. The result is normalised.
 */
export function parsePlatform(s: string): Platform {
  const parts = s.split("/");
  const bad = parts.find((c) => !COMPONENT_RE.test(c));
  if (bad !== undefined || parts.length > 3) {
    throw new InvalidInputError(
      `invalid platform ${JSON.stringify(s)}: expected os[/arch[/variant]] of [A-Za-z0-9_.-]`,
    );
  }
  const [first, arch, variant] = parts as [string, string?, string?];
  if (arch !== undefined) {
    return normalizePlatform({ os: first, architecture: arch, ...(variant ? { variant } : {}) });
  }
  const host = hostPlatform();
  if (KNOWN_OS.has(first.toLowerCase())) return normalizePlatform({ ...host, os: first });
  const asArch = normalizePlatform({ os: host.os, architecture: first });
  if (KNOWN_ARCH.has(asArch.architecture)) return asArch;
  throw new InvalidInputError(
    `invalid platform ${JSON.stringify(s)}: unknown operating system or architecture`,
  );
}

/** `os/arch[/variant]`, the form `--platform` takes and parsePlatform reads. */
export function formatPlatform(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter((c) => c !== undefined && c !== "").join("/");
}

/** Whether an image for `have` is what was asked for with `want`, after normalising both. */
export function platformMatches(want: Platform, have: Platform): boolean {
  const w = normalizePlatform(want);
  const h = normalizePlatform(have);
  return (
    w.os === h.os &&
    w.architecture === h.architecture &&
    w.variant === h.variant &&
    (w["os.version"] === undefined || w["os.version"] === h["os.version"])
  );
}

/** Attestation manifests (BuildKit provenance, SBOMs) sit in indexes next to the images; they run nowhere. */
export function isAttestation(d: Descriptor): boolean {
  return (
    d.annotations?.["vnd.docker.reference.type"] !== undefined ||
    (d.platform?.os === "unknown" && d.platform.architecture === "unknown")
  );
}

/** The descriptor of the manifest for `want` in an OCI index or Docker manifest list. */
export function selectManifest(index: ImageIndex, want: Platform): Descriptor {
  const images = index.manifests.filter((d) => !isAttestation(d));
  const found = images.find((d) => d.platform !== undefined && platformMatches(want, d.platform));
  if (found !== undefined) return found;
  const available = images.map((d) =>
    d.platform ? formatPlatform(d.platform) : `(no platform) ${d.digest}`,
  );
  throw new NotFoundError(
    `no image for platform ${formatPlatform(want)} in the index; available: ${available.join(", ") || "none"}`,
  );
}

const NODE_ARCH: Readonly<Record<string, string>> = {
  x64: "amd64",
  ia32: "386",
  arm64: "arm64",
  arm: "arm",
  ppc64: "ppc64le",
  s390x: "s390x",
  riscv64: "riscv64",
  loong64: "loong64",
  mips: "mips",
  mipsel: "mipsle",
};

/** The platform this process runs on, normalised. */
export function hostPlatform(): Platform {
  const os = process.platform === "win32" ? "windows" : process.platform;
  const architecture = NODE_ARCH[process.arch] ?? process.arch;
  const armVersion = (process.config.variables as Record<string, unknown>)["arm_version"];
  const variant = architecture === "arm" && armVersion !== undefined ? `v${String(armVersion)}` : undefined;
  return normalizePlatform({ os, architecture, ...(variant ? { variant } : {}) });
}

/** The platform an image config says its image is for. */
export function configPlatform(config: ImageConfig): Platform {
  return {
    architecture: config.architecture,
    os: config.os,
    ...(config["os.version"] !== undefined ? { "os.version": config["os.version"] } : {}),
    ...(config.variant ? { variant: config.variant } : {}),
  };
}

/**
 * Refuses an image whose config is for another platform than the one asked for: a single-platform image
 * has no index to choose from, so building on it for another architecture would silently be wrong.
 */
export function requirePlatform(what: string, want: Platform, config: ImageConfig): void {
  const have = configPlatform(config);
  if (!platformMatches(want, have)) {
    throw new NotFoundError(`${what} is for ${formatPlatform(have)}, not ${formatPlatform(want)}`);
  }
}
