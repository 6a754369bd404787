import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync, type Stats } from "node:fs";
import { join, posix } from "node:path";
import dockerignore from "@balena/dockerignore";
import { InvalidInputError, NotFoundError } from "../errors.ts";
import { type EscapePolicy, resolveInRoot } from "../oci/root-path.ts";

/** A file or directory of the build context, by its path relative to the context root. */
export interface ContextFile {
  readonly path: string;
  readonly stats: Stats;
}

/** A path a COPY source names, resolved; `name` is its last component as written (a symlink's own name). */
export interface SourceMatch {
  readonly path: string;
  readonly name: string;
}

/** How a root other than the build context is read: a stage's or an image's unpacked file system. */
export interface RootOptions {
  /** `strict` (the context: nothing may lead out) or `scoped` (an image: `/` and `..` stop at the root). */
  readonly policy?: EscapePolicy;
  /** Copies keep the files' uid and gid (between stages) instead of making them 0:0 (the context). */
  readonly keepOwners?: boolean;
  /** How errors name the root. */
  readonly name?: string;
}

/**
 * The build context on disk. Every path a build names is resolved strictly inside it (no `..` above the
 * root, no symlink leading out), and paths excluded by .dockerignore do not exist for the build. A stage's
 * or image's root file system is read the same way, with the image's own symlink rules.
 */
export class BuildContext {
  readonly root: string;
  readonly keepOwners: boolean;
  readonly #ignore: Matcher;
  /** Whether the walk enters an ignored directory, to find paths below it that `!` patterns re-include. */
  readonly #entersIgnored: (dir: string) => boolean;
  /** Ignored directories looked into: whether something below them is re-included. */
  readonly #holdsIncluded = new Map<string, boolean>();
  readonly #policy: EscapePolicy;
  readonly #name: string;

  constructor(root: string, ignorePatterns: readonly string[] = [], options: RootOptions = {}) {
    const stats = statOrUndefined(root);
    if (!stats?.isDirectory()) throw new NotFoundError(`build context ${root} is not a directory`);
    this.root = root;
    this.keepOwners = options.keepOwners ?? false;
    this.#policy = options.policy ?? "strict";
    this.#name = options.name ?? "the build context";
    this.#ignore = newMatcher(ignorePatterns);
    this.#entersIgnored = entersExcluded(ignorePatterns);
  }

  /** Opens a context and reads its `.dockerignore` (or the given ignore file) if present. */
  static open(root: string, ignoreFile = join(root, ".dockerignore")): BuildContext {
    const patterns = existsSync(ignoreFile) ? parseIgnoreFile(readFileSync(ignoreFile, "utf8")) : [];
    return new BuildContext(root, patterns);
  }

  readonly readlink = (rel: string): string | undefined => {
    const st = statOrUndefined(join(this.root, rel));
    return st?.isSymbolicLink() ? readlinkSync(join(this.root, rel), "utf8") : undefined;
  };

  isIgnored(rel: string): boolean {
    return rel !== "" && this.#ignore.ignores(rel);
  }

  /** Resolves a source path strictly inside the context, following symlinks it names. */
  resolve(path: string): string {
    return resolveInRoot(path, this.readlink, this.#policy, true, this.#name);
  }

  /**
   * The path's stats when the build sees it: not ignored, or an ignored directory that holds a path a `!`
   * pattern re-includes (BuildKit sends such a directory, with its own metadata, as that path's parent).
   */
  lstat(rel: string): Stats | undefined {
    const stats = statOrUndefined(join(this.root, rel));
    return stats !== undefined && this.#present(rel, stats) ? stats : undefined;
  }

  #present(rel: string, stats: Stats): boolean {
    return !this.isIgnored(rel) || (stats.isDirectory() && this.#holdsIncludedPath(rel));
  }

  #holdsIncludedPath(dir: string): boolean {
    let holds = this.#holdsIncluded.get(dir);
    if (holds === undefined) {
      holds =
        this.#entersIgnored(dir) &&
        readdirSync(join(this.root, dir)).some((name) => this.lstat(`${dir}/${name}`) !== undefined);
      this.#holdsIncluded.set(dir, holds);
    }
    return holds;
  }

  /**
   * The context paths a COPY/ADD source names: the path itself, or every match of a wildcard pattern
   * (Go filepath.Match per component, as Docker). Missing sources are an error that names them.
   */
  match(source: string): string[] {
    return this.matchNamed(source).map((m) => m.path);
  }

  /** As match, with each match's name as written, which a symlink source keeps at its destination. */
  matchNamed(source: string): SourceMatch[] {
    const nameOf = (p: string): string =>
      p
        .split("/")
        .filter((c) => c !== "" && c !== ".")
        .at(-1) ?? "";
    if (!hasWildcard(source)) {
      const rel = this.resolve(source);
      if (this.lstat(rel) === undefined) throw new NotFoundError(`${source}: not found in ${this.#name}`);
      const name = nameOf(source);
      return [{ path: rel, name: name === ".." ? nameOf(rel) : name }];
    }
    const parts = source.split("/").filter((c) => c !== "" && c !== ".");
    let candidates: SourceMatch[] = [{ path: "", name: "" }];
    for (const part of parts) {
      const next: SourceMatch[] = [];
      for (const { path: dir } of candidates) {
        if (!hasWildcard(part)) {
          const rel = this.resolve(dir === "" ? part : `${dir}/${part}`);
          if (this.lstat(rel) !== undefined) next.push({ path: rel, name: part });
          continue;
        }
        const re = globComponentRegExp(part);
        const dirRel = this.resolve(dir);
        for (const name of this.readdir(dirRel)) {
          if (re.test(name))
            next.push({ path: this.resolve(dirRel === "" ? name : `${dirRel}/${name}`), name });
        }
      }
      candidates = next;
    }
    if (candidates.length === 0) throw new NotFoundError(`${source}: no file in ${this.#name} matches`);
    const unique = new Map(candidates.map((c) => [c.path, c]));
    return [...unique.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  }

  /** Names in a context directory, sorted, ignored entries left out. */
  readdir(rel: string): string[] {
    const st = this.lstat(rel);
    if (!st?.isDirectory()) return [];
    return readdirSync(join(this.root, rel))
      .filter((name) => this.lstat(rel === "" ? name : `${rel}/${name}`) !== undefined)
      .sort();
  }

  /**
   * Every file under `rel` (itself first, parents before children), never following symlinks, leaving out
   * ignored paths and those `exclude` matches (patterns relative to `rel`). As BuildKit's walkers, a
   * directory left out is still entered when a `!` pattern may re-include something below it, and is then
   * listed, with its own metadata, just before the first path kept below it.
   */
  walk(rel: string, exclude: readonly string[] = []): ContextFile[] {
    const excluded = exclude.length > 0 ? newMatcher(exclude) : undefined;
    const entersExcluded = exclude.some((p) => p.trim().startsWith("!"));
    const out: ContextFile[] = [];
    // Directories left out above the path visited, listed once something below them is kept.
    const held: ContextFile[] = [];
    const visit = (path: string, sub: string): void => {
      const stats = statOrUndefined(join(this.root, path));
      if (stats === undefined) return;
      const file = { path, stats };
      const ignored = path !== rel && this.isIgnored(path);
      const dropped = ignored || (sub !== "" && excluded?.ignores(sub) === true);
      if (!dropped) out.push(...held.splice(0), file);
      if (!stats.isDirectory()) return;
      if (dropped && !(ignored ? this.#entersIgnored(path) : entersExcluded)) return;
      if (dropped) held.push(file);
      for (const name of readdirSync(join(this.root, path)).sort()) {
        visit(path === "" ? name : `${path}/${name}`, sub === "" ? name : `${sub}/${name}`);
      }
      if (held.at(-1) === file) held.pop();
    };
    visit(rel, "");
    return out;
  }
}

/**
 * Whether a walk enters a directory that `patterns` leave out, as BuildKit's context walker (fsutil)
 * decides: when any `!` pattern holds a wildcard it may match anywhere, so every such directory is
 * entered; otherwise only those that a `!` pattern's path lies below.
 */
function entersExcluded(patterns: readonly string[]): (dir: string) => boolean {
  const exceptions = patterns
    .map((p) => p.trim())
    .filter((p) => p.startsWith("!"))
    .map((p) => withoutTrailingGlob(cleanPattern(p.slice(1))));
  if (exceptions.some((p) => /[*[\]?^\\]/.test(p))) return () => true;
  return (dir) => exceptions.some((p) => `${p}/`.startsWith(`${dir}/`));
}

/** A pattern as Docker reads it from .dockerignore: Go's filepath.Clean, then no leading `/`. */
function cleanPattern(p: string): string {
  const clean = posix.normalize(p.trim()).replace(/(.)\/+$/, "$1");
  return clean.length > 1 ? clean.replace(/^\//, "") : clean;
}

function withoutTrailingGlob(p: string): string {
  return p.replace(/\/\*\*$/, "").replace(/\/\*$/, "");
}

type Matcher = ReturnType<typeof dockerignore.default>;

/** A matcher with Docker's .dockerignore rules (patterns anchored at the root, `**`, `!` exceptions, last match wins). */
function newMatcher(patterns: readonly string[]): Matcher {
  // The package is CommonJS; its factory is reachable as `.default` under both Node's and TypeScript's interop.
  // Case-sensitive, as Docker matches on Linux (the package ignores case by default).
  return dockerignore.default({ ignorecase: false }).add([...patterns]);
}

function statOrUndefined(p: string): Stats | undefined {
  try {
    return lstatSync(p);
  } catch (err) {
    if (
      (err as NodeJS.ErrnoException).code === "ENOENT" ||
      (err as NodeJS.ErrnoException).code === "ENOTDIR"
    ) {
      return undefined;
    }
    throw err;
  }
}

/** .dockerignore lines: comments and blank lines dropped, whitespace trimmed. */
export function parseIgnoreFile(text: string): string[] {
  return text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));
}

export function hasWildcard(p: string): boolean {
  return /[*?[]/.test(p);
}

/** Go's filepath.Match for one path component: `*`, `?`, `[...]` classes with `^`/`!` negation, `\` escapes. */
export function globComponentRegExp(pattern: string): RegExp {
  let re = "";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else if (c === "\\" && i + 1 < pattern.length) re += escapeRegExp(pattern[++i]!);
    else if (c === "[") {
      const end = pattern.indexOf("]", i + 2);
      if (end < 0)
        throw new InvalidInputError(`invalid wildcard pattern ${JSON.stringify(pattern)}: unclosed [`);
      let body = pattern.slice(i + 1, end);
      if (body.startsWith("^") || body.startsWith("!")) body = `^${body.slice(1)}`;
      re += `[${body.replace(/\\(.)/g, "\\$1")}]`;
      i = end;
    } else re += escapeRegExp(c);
  }
  return new RegExp(`^${re}$`, "u");
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}
