/**
 * Tar headers as GNU tar writes them with `--format=posix --numeric-owner` and
 * `--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime`, so a kiln layer is byte for byte
 * the archive GNU tar makes of the same tree. tar-stream's packer cannot be used for writing: it turns mode
 * 000 into 0644, clamps large uids instead of writing PAX records, and its header layout differs from GNU's.
 */

export const BLOCK = 512;

/** The tar typeflags kiln writes. */
export const TarType = {
  file: "0",
  hardlink: "1",
  symlink: "2",
  char: "3",
  block: "4",
  dir: "5",
  fifo: "6",
  paxHeader: "x",
} as const;
export type TarType = (typeof TarType)[keyof typeof TarType];

export interface TarHeader {
  /** The archive name: relative, `/`-separated, directories ending in `/`. */
  readonly name: string;
  readonly type: TarType;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  /** Seconds since the epoch. */
  readonly mtime: number;
  readonly linkname?: string;
  readonly devMajor?: number;
  readonly devMinor?: number;
  /** Written as `SCHILY.xattr.<name>` PAX records, in the order given. */
  readonly xattrs?: ReadonlyArray<readonly [string, Buffer]>;
}

const NAME_MAX = 100;
const MAX_ID = 0o7777777;
const MAX_SIZE = 0o77777777777;

/**
 * The header blocks for one entry: a PAX extended header (with its records) when a field does not fit the
 * ustar header, then the ustar header. The entry's content and padding follow.
 */
export function encodeTarHeader(h: TarHeader): Buffer {
  const name = Buffer.from(h.name, "utf8");
  const linkname = Buffer.from(h.linkname ?? "", "utf8");
  const records: Buffer[] = [];
  // GNU tar's order: linkpath (written before the header is started), path, uid, gid, size, xattrs.
  if (linkname.length > NAME_MAX) records.push(paxRecord("linkpath", linkname));
  if (name.length > NAME_MAX || !isAscii(name)) records.push(paxRecord("path", name));
  if (h.uid > MAX_ID) records.push(paxRecord("uid", Buffer.from(String(h.uid))));
  if (h.gid > MAX_ID) records.push(paxRecord("gid", Buffer.from(String(h.gid))));
  if (h.size > MAX_SIZE) records.push(paxRecord("size", Buffer.from(String(h.size))));
  for (const [key, value] of h.xattrs ?? []) records.push(paxRecord(`SCHILY.xattr.${key}`, value));

  const ustar = ustarBlock({
    name,
    mode: h.mode & 0o7777,
    uid: h.uid > MAX_ID ? 0 : h.uid,
    gid: h.gid > MAX_ID ? 0 : h.gid,
    size: h.size > MAX_SIZE ? 0 : h.size,
    mtime: h.mtime,
    type: h.type,
    linkname,
    dev: [h.devMajor ?? 0, h.devMinor ?? 0],
  });
  if (records.length === 0) return ustar;

  const body = Buffer.concat(records);
  const pax = ustarBlock({
    name: Buffer.from(paxHeaderName(h.name), "utf8"),
    mode: 0o644,
    uid: 0,
    gid: 0,
    size: body.length,
    mtime: h.mtime,
    type: TarType.paxHeader,
    linkname: Buffer.alloc(0),
    dev: undefined,
  });
  return Buffer.concat([pax, body, Buffer.alloc(padding(body.length)), ustar]);
}

/** Zero bytes that pad `size` bytes of content to a whole block. */
export function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

/** The end-of-archive marker: two zero blocks (GNU tar with `-b 1`, Go's archive/tar, tar-stream). */
export const END_OF_ARCHIVE: Buffer = Buffer.alloc(2 * BLOCK);

interface UstarFields {
  readonly name: Buffer;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  readonly mtime: number;
  readonly type: TarType;
  readonly linkname: Buffer;
  /** undefined leaves the device fields zero-filled, as GNU tar does in its PAX headers. */
  readonly dev: readonly [number, number] | undefined;
}

function ustarBlock(f: UstarFields): Buffer {
  const b = Buffer.alloc(BLOCK);
  f.name.copy(b, 0, 0, Math.min(f.name.length, NAME_MAX));
  octal(b, 100, 8, f.mode);
  octal(b, 108, 8, f.uid);
  octal(b, 116, 8, f.gid);
  octal(b, 124, 12, f.size);
  octal(b, 136, 12, f.mtime);
  b.write(f.type, 156, "latin1");
  f.linkname.copy(b, 157, 0, Math.min(f.linkname.length, NAME_MAX));
  b.write("ustar\x0000", 257, "latin1");
  if (f.dev !== undefined) {
    octal(b, 329, 8, f.dev[0]);
    octal(b, 337, 8, f.dev[1]);
  }
  let sum = 8 * 0x20; // the checksum field counts as spaces
  for (let i = 0; i < BLOCK; i++) sum += b[i]!;
  b.write(`${sum.toString(8).padStart(6, "0")}\x00 `, 148, "latin1");
  return b;
}

/** A zero-padded octal number filling `width - 1` digits and a NUL. */
function octal(b: Buffer, offset: number, width: number, value: number): void {
  b.write(`${value.toString(8).padStart(width - 1, "0")}\x00`, offset, "latin1");
}

/** `<length> <key>=<value>\n`, where length counts its own digits. */
function paxRecord(key: string, value: Buffer): Buffer {
  const rest = Buffer.byteLength(key) + value.length + 3; // " " "=" "\n"
  let len = rest + String(rest).length;
  if (String(len).length !== String(rest).length) len = rest + String(len).length;
  return Buffer.concat([Buffer.from(`${len} ${key}=`, "utf8"), value, Buffer.from("\n")]);
}

/** `%d/PaxHeaders/%f`: the entry's directory ("." at the top) and its base name without a trailing `/`. */
function paxHeaderName(name: string): string {
  const trimmed = name.endsWith("/") ? name.slice(0, -1) : name;
  const slash = trimmed.lastIndexOf("/");
  const dir = slash === -1 ? "." : trimmed.slice(0, slash);
  return `${dir}/PaxHeaders/${trimmed.slice(slash + 1)}`;
}

function isAscii(b: Buffer): boolean {
  for (const byte of b) if (byte >= 0x80) return false;
  return true;
}
