import type { RunMountSpec } from "./ast.ts";

/**
 * `RUN --mount=...` as BuildKit reads it (frontend/dockerfile/instructions/commands_runmount.go): one CSV
 * record of `key=value` fields; values are expanded with the build's variables before they are checked.
 */
export type MountType = "bind" | "cache" | "tmpfs" | "secret" | "ssh";
export type CacheSharing = "shared" | "private" | "locked";

export interface RunMount {
  readonly type: MountType;
  readonly from: string | undefined;
  readonly source: string | undefined;
  readonly target: string | undefined;
  readonly readOnly: boolean;
  /** `id=`: the cache id, or the secret/ssh id. */
  readonly id: string | undefined;
  readonly sharing: CacheSharing | undefined;
  readonly required: boolean;
  readonly mode: number | undefined;
  readonly uid: number | undefined;
  readonly gid: number | undefined;
  /** tmpfs `size=` in bytes. */
  readonly sizeLimit: number | undefined;
  /** secret `env=`: the variable the secret is exposed as. */
  readonly env: string | undefined;
}

const MOUNT_TYPES: readonly MountType[] = ["bind", "cache", "tmpfs", "secret", "ssh"];
const SHARING: readonly CacheSharing[] = ["shared", "private", "locked"];
const KEYS = [
  "type",
  "from",
  "source",
  "target",
  "readonly",
  "id",
  "sharing",
  "required",
  "mode",
  "uid",
  "gid",
  "size",
  "env",
  "src",
  "dst",
  "destination",
  "ro",
  "rw",
  "readwrite",
];

/** Splits the flag value into fields; returns an error message when it is not one CSV record. */
export function splitMountSpec(value: string): RunMountSpec | string {
  const fields = readCsvRecord(value);
  if (typeof fields === "string") return `failed to parse csv mounts: ${fields}`;
  return {
    fields: fields.map((f) => {
      const eq = f.indexOf("=");
      return eq < 0 ? ([f, undefined] as const) : ([f.slice(0, eq), f.slice(eq + 1)] as const);
    }),
  };
}

/** Go's encoding/csv for a single record without LazyQuotes. */
function readCsvRecord(line: string): string[] | string {
  if (line === "") return "EOF";
  const fields: string[] = [];
  let i = 0;
  for (;;) {
    let field = "";
    if (line[i] === '"') {
      i++;
      for (;;) {
        const q = line.indexOf('"', i);
        if (q < 0) return 'extraneous or missing " in quoted-field';
        field += line.slice(i, q);
        i = q + 1;
        if (line[i] === '"') {
          field += '"';
          i++;
        } else if (i === line.length || line[i] === ",") {
          break;
        } else {
          return 'extraneous or missing " in quoted-field';
        }
      }
    } else {
      const comma = line.indexOf(",", i);
      field = line.slice(i, comma < 0 ? line.length : comma);
      if (field.includes('"')) return 'bare " in non-quoted-field';
      i = comma < 0 ? line.length : comma;
    }
    fields.push(field);
    if (i >= line.length) return fields;
    i++; // the comma
    if (i === line.length) {
      fields.push("");
      return fields;
    }
  }
}

/**
 * Checks the fields and builds the mount; `expand` turns each value into its final text. Returns an error
 * message on an invalid mount.
 */
export function resolveMount(spec: RunMountSpec, expand: (value: string) => string): RunMount | string {
  let type: MountType = "bind";
  let from: string | undefined;
  let source: string | undefined;
  let target: string | undefined;
  let readOnly = false;
  let roAuto = true;
  let id: string | undefined;
  let sharing: CacheSharing | undefined;
  let required = false;
  let mode: number | undefined;
  let uid: number | undefined;
  let gid: number | undefined;
  let sizeLimit: number | undefined;
  let env: string | undefined;

  for (const [rawKey, rawValue] of spec.fields) {
    const key = rawKey.toLowerCase();
    if (rawValue === undefined) {
      if (key === "readonly" || key === "ro") {
        readOnly = true;
        roAuto = false;
        continue;
      }
      if (key === "readwrite" || key === "rw") {
        readOnly = false;
        roAuto = false;
        continue;
      }
      if (key === "required") {
        if (type !== "secret" && type !== "ssh") return `unexpected key '${key}' for mount type '${type}'`;
        required = true;
        continue;
      }
      return `invalid field '${rawKey}' must be a key=value pair`;
    }
    const value = expand(rawValue);
    switch (key) {
      case "type": {
        const t = value.toLowerCase();
        if (!(MOUNT_TYPES as readonly string[]).includes(t)) {
          return `unsupported mount type ${JSON.stringify(value)}${suggestion(t, MOUNT_TYPES)}`;
        }
        type = t as MountType;
        break;
      }
      case "from":
        from = value;
        break;
      case "source":
      case "src":
        source = value;
        break;
      case "target":
      case "dst":
      case "destination":
        target = value;
        break;
      case "readonly":
      case "ro":
      case "readwrite":
      case "rw": {
        const b = parseGoBool(value);
        if (b === undefined) return `invalid value for ${key}: ${value}`;
        readOnly = key === "readonly" || key === "ro" ? b : !b;
        roAuto = false;
        break;
      }
      case "required": {
        if (type !== "secret" && type !== "ssh") return `unexpected key '${key}' for mount type '${type}'`;
        const b = parseGoBool(value);
        if (b === undefined) return `invalid value for ${key}: ${value}`;
        required = b;
        break;
      }
      case "id":
        id = value;
        break;
      case "sharing": {
        const s = value.toLowerCase();
        if (!(SHARING as readonly string[]).includes(s))
          return `unsupported sharing value ${JSON.stringify(value)}`;
        sharing = s as CacheSharing;
        break;
      }
      case "mode":
        mode = parseUint32(value, 8);
        if (mode === undefined) return `invalid value ${value} for mode`;
        break;
      case "uid":
        uid = parseUint32(value, 10);
        if (uid === undefined) return `invalid value ${value} for uid`;
        break;
      case "gid":
        gid = parseUint32(value, 10);
        if (gid === undefined) return `invalid value ${value} for gid`;
        break;
      case "size":
        if (type !== "tmpfs") return `unexpected key '${key}' for mount type '${type}'`;
        sizeLimit = parseRamBytes(value);
        if (sizeLimit === undefined) return `invalid value ${value} for size`;
        break;
      case "env":
        if (type !== "secret") return `unexpected key '${key}' for mount type '${type}'`;
        env = value;
        break;
      default:
        return `unexpected key '${key}' in '${rawKey}=${rawValue}'${suggestion(key, KEYS)}`;
    }
  }

  const fileInfoAllowed = type === "secret" || type === "ssh" || type === "cache";
  if (mode !== undefined && !fileInfoAllowed) return `mode not allowed for "${type}" type mounts`;
  if (uid !== undefined && !fileInfoAllowed) return `uid not allowed for "${type}" type mounts`;
  if (gid !== undefined && !fileInfoAllowed) return `gid not allowed for "${type}" type mounts`;
  if (roAuto) readOnly = !(type === "cache" || type === "tmpfs");
  if (sharing !== undefined && type !== "cache") return `invalid cache sharing set for ${type} mount`;
  if (type === "secret") {
    const given = (s: string | undefined): boolean => s !== undefined && s !== "";
    if (given(from)) return "secret mount should not have a from";
    if (!given(source) && !given(target) && !given(id) && env === undefined) {
      return "invalid secret mount. one of source, target required";
    }
    if (given(source) && given(id)) return "both source and id can't be set";
  }
  return { type, from, source, target, readOnly, id, sharing, required, mode, uid, gid, sizeLimit, env };
}

function parseGoBool(s: string): boolean | undefined {
  if (["1", "t", "T", "TRUE", "true", "True"].includes(s)) return true;
  if (["0", "f", "F", "FALSE", "false", "False"].includes(s)) return false;
  return undefined;
}

function parseUint32(s: string, radix: 8 | 10): number | undefined {
  const digits = radix === 8 ? /^[0-7]+$/ : /^[0-9]+$/;
  if (!digits.test(s)) return undefined;
  const n = Number.parseInt(s, radix);
  return n <= 0xffffffff ? n : undefined;
}

/** docker/go-units RAMInBytes: a number with an optional binary unit (`64m`, `1.5g`, `512KiB`). */
function parseRamBytes(s: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?) ?([kmgtp])?(i?b)?$/i.exec(s);
  if (m === null) return undefined;
  const exp = m[2] === undefined ? 0 : "kmgtp".indexOf(m[2].toLowerCase()) + 1;
  return Math.trunc(Number(m[1]) * 1024 ** exp);
}

/** ` (did you mean X?)` when a known word is a small edit away. */
export function suggestion(word: string, known: readonly string[]): string {
  let best: string | undefined;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const k of known) {
    const d = editDistance(word.toLowerCase(), k.toLowerCase());
    if (d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  return best !== undefined && bestDistance > 0 && bestDistance <= Math.max(1, Math.floor(word.length / 3))
    ? ` (did you mean ${best}?)`
    : "";
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}
