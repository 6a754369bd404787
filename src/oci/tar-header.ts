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

/** Whether the entry's header is one ustar block, with no PAX records: the common case. */
export function fitsUstar(h: TarHeader): boolean {
  if (h.name.length > NAME_MAX || !isAscii(h.name) || h.uid > MAX_ID || h.gid > MAX_ID) return false;
  if (h.size > MAX_SIZE || (h.xattrs?.length ?? 0) > 0) return false;
  const link = h.linkname ?? "";
  return link.length <= NAME_MAX && (isAscii(link) || Buffer.byteLength(link) <= NAME_MAX);
}

/**
 * Writes the header of an entry that fitsUstar into `out` at `offset` (512 bytes, which must be there),
 * without allocating. Byte by byte rather than through strings: a layer of small files writes tens of
 * thousands of headers.
 */
export function writeUstarHeader(h: TarHeader, out: Buffer, offset: number): void {
  const link = h.linkname ?? "";
  out.set(ZERO_BLOCK, offset);
  for (let i = 0; i < h.name.length; i++) out[offset + i] = h.name.charCodeAt(i);
  if (isAscii(link)) for (let i = 0; i < link.length; i++) out[offset + 157 + i] = link.charCodeAt(i);
  else out.write(link, offset + 157, "utf8");
  ustarFields(
    out,
    offset,
    h.mode & 0o7777,
    h.uid,
    h.gid,
    h.size,
    h.mtime,
    h.type,
    h.devMajor ?? 0,
    h.devMinor ?? 0,
  );
}

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return false;
  return true;
}

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
  if (name.length > NAME_MAX || !isAscii(h.name)) records.push(paxRecord("path", name));
  if (h.uid > MAX_ID) records.push(paxRecord("uid", Buffer.from(String(h.uid))));
  if (h.gid > MAX_ID) records.push(paxRecord("gid", Buffer.from(String(h.gid))));
  if (h.size > MAX_SIZE) records.push(paxRecord("size", Buffer.from(String(h.size))));
  for (const [key, value] of h.xattrs ?? []) records.push(paxRecord(`SCHILY.xattr.${key}`, value));

  const ustar = Buffer.alloc(BLOCK);
  name.copy(ustar, 0, 0, Math.min(name.length, NAME_MAX));
  linkname.copy(ustar, 157, 0, Math.min(linkname.length, NAME_MAX));
  ustarFields(
    ustar,
    0,
    h.mode & 0o7777,
    h.uid > MAX_ID ? 0 : h.uid,
    h.gid > MAX_ID ? 0 : h.gid,
    h.size > MAX_SIZE ? 0 : h.size,
    h.mtime,
    h.type,
    h.devMajor ?? 0,
    h.devMinor ?? 0,
  );
  if (records.length === 0) return ustar;

  const body = Buffer.concat(records);
  const pax = Buffer.alloc(BLOCK);
  Buffer.from(paxHeaderName(h.name), "utf8").copy(pax, 0, 0, NAME_MAX);
  ustarFields(pax, 0, 0o644, 0, 0, body.length, h.mtime, TarType.paxHeader, undefined, undefined);
  return Buffer.concat([pax, body, Buffer.alloc(padding(body.length)), ustar]);
}

/** Zero bytes that pad `size` bytes of content to a whole block. */
export function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

/** The end-of-archive marker: two zero blocks (GNU tar with `-b 1`, Go's archive/tar, tar-stream). */
export const END_OF_ARCHIVE: Buffer = Buffer.alloc(2 * BLOCK);

const MAGIC = Buffer.from("ustar\x0000", "latin1");
const ZERO_BLOCK = new Uint8Array(BLOCK);

/**
 * Fills in a header block whose name and linkname are written and whose other bytes are zero. Devices
 * undefined leave the device fields zero-filled, as GNU tar does in its PAX headers.
 */
function ustarFields(
  b: Buffer,
  o: number,
  mode: number,
  uid: number,
  gid: number,
  size: number,
  mtime: number,
  type: TarType,
  devMajor: number | undefined,
  devMinor: number | undefined,
): void {
  octal(b, o + 100, 8, mode);
  octal(b, o + 108, 8, uid);
  octal(b, o + 116, 8, gid);
  octal(b, o + 124, 12, size);
  octal(b, o + 136, 12, mtime);
  b[o + 156] = type.charCodeAt(0);
  b.set(MAGIC, o + 257);
  if (devMajor !== undefined && devMinor !== undefined) {
    octal(b, o + 329, 8, devMajor);
    octal(b, o + 337, 8, devMinor);
  }
  let sum = 8 * 0x20; // the checksum field counts as spaces
  for (let i = o; i < o + 265; i++) sum += b[i]!; // names, numbers, type, link, magic; 265-328 stay zero
  for (let i = o + 329; i < o + 345; i++) sum += b[i]!; // devices; the rest stays zero
  octal(b, o + 148, 7, sum);
  b[o + 155] = 0x20;
}

/** A zero-padded octal number filling `width - 1` digits and a NUL; callers keep values in range. */
function octal(b: Buffer, offset: number, width: number, value: number): void {
  let i = offset + width - 2;
  let v = value;
  // Sizes and times may pass 2^31: their top digits come off by division, the rest in integer steps
  // (a double's % and / would cost a call per digit).
  for (; v > 0x7fffffff; i--) {
    b[i] = 0x30 + (v % 8);
    v = Math.floor(v / 8);
  }
  for (let n = v | 0; i >= offset; i--, n >>>= 3) b[i] = 0x30 + (n & 7);
  b[offset + width - 1] = 0;
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
