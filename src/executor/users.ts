import fs from "node:fs";
import path from "node:path";
import { InvalidInputError } from "../errors.ts";
import { resolveInRootfs } from "./container.ts";

/** Who a RUN step's process is. */
export interface ExecUser {
  readonly uid: number;
  readonly gid: number;
  readonly additionalGids: readonly number[];
  /** The user's home directory from passwd, "/" for a user passwd lacks; runc sets HOME to it when unset. */
  readonly home: string;
}

interface PasswdEntry {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
  readonly home: string;
}

interface GroupEntry {
  readonly name: string;
  readonly gid: number;
  readonly members: readonly string[];
}

const NUMERIC = /^\d+$/;

/**
 * Resolves a `USER` value (`name`, `uid`, `name:group`, `uid:gid`, "" for root) against the root's own
 * /etc/passwd and /etc/group, as runc's GetExecUser does for Docker and BuildKit:
 * - a user found in passwd (by name, else by uid) gives its uid and primary gid; a uid that is not there
 *   runs with gid 0; a name that is not there is an error;
 * - a group (name or gid) replaces the primary gid; a name that /etc/group lacks is an error;
 * - without a group, the supplementary gids are those of the groups that list the user's name.
 */
export function resolveUser(rootfs: string, spec: string): ExecUser {
  const colon = spec.indexOf(":");
  const userArg = colon === -1 ? spec : spec.slice(0, colon);
  const groupArg = colon === -1 ? undefined : spec.slice(colon + 1);
  const passwd = parseEntries<PasswdEntry>(readEtc(rootfs, "passwd"), 7, (f) =>
    NUMERIC.test(f[2]!) && NUMERIC.test(f[3]!)
      ? { name: f[0]!, uid: Number(f[2]), gid: Number(f[3]), home: f[5] || "/" }
      : undefined,
  );
  const groups = parseEntries<GroupEntry>(readEtc(rootfs, "group"), 4, (f) =>
    NUMERIC.test(f[2]!)
      ? { name: f[0]!, gid: Number(f[2]), members: f[3]!.split(",").filter((m) => m !== "") }
      : undefined,
  );

  const wanted = userArg === "" ? "0" : userArg;
  const numeric = NUMERIC.test(wanted);
  const found: PasswdEntry | undefined =
    passwd.find((p) => p.name === wanted) ??
    (numeric ? passwd.find((p) => p.uid === Number(wanted)) : undefined);
  if (found === undefined && !numeric) {
    throw new InvalidInputError(`unable to find user ${wanted}: no matching entries in passwd file`);
  }
  const uid = found?.uid ?? Number(wanted);
  const home = found?.home ?? "/";

  if (groupArg !== undefined && groupArg !== "") {
    const group =
      groups.find((g) => g.name === groupArg) ??
      (NUMERIC.test(groupArg) ? groups.find((g) => g.gid === Number(groupArg)) : undefined);
    if (group === undefined && !NUMERIC.test(groupArg)) {
      throw new InvalidInputError(`unable to find group ${groupArg}: no matching entries in group file`);
    }
    return { uid, gid: group?.gid ?? Number(groupArg), additionalGids: [], home };
  }
  const name = found?.name;
  const additionalGids =
    name === undefined ? [] : groups.filter((g) => g.members.includes(name)).map((g) => g.gid);
  return { uid, gid: found?.gid ?? 0, additionalGids, home };
}

/** An /etc file of the root, read through the root's symlinks; "" when it has none. */
function readEtc(rootfs: string, name: string): string {
  try {
    return fs.readFileSync(path.join(rootfs, resolveInRootfs(rootfs, `/etc/${name}`)), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return "";
    throw new InvalidInputError(`cannot read /etc/${name} of the root: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/** colon-separated lines; short lines are padded, comments and malformed lines skipped. */
function parseEntries<T>(text: string, fields: number, parse: (f: string[]) => T | undefined): T[] {
  const out: T[] = [];
  for (const line of text.split("\n")) {
    const trimmed = line.trim();
    if (trimmed === "" || trimmed.startsWith("#")) continue;
    const f = trimmed.split(":");
    if (f.length < 3) continue;
    while (f.length < fields) f.push("");
    const entry = parse(f);
    if (entry !== undefined) out.push(entry);
  }
  return out;
}
