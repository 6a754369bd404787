/**
 * Instruction flags as BuildKit's BFlags reads them: `--name=value` for strings (the `=` is required),
 * `--name`, `--name=true|false` for booleans, repeatable `--name=value` for string lists. Unknown and
 * repeated flags are errors; a bare `--` ends the flags.
 */
export type FlagSpec = Readonly<Record<string, "bool" | "string" | "strings">>;

export interface ParsedFlags {
  /** Last value of string flags, `"true"`/`"false"` for bool flags that were given. */
  readonly values: ReadonlyMap<string, string>;
  readonly lists: ReadonlyMap<string, readonly string[]>;
}

/** Returns the flags or the error message BuildKit gives. */
export function parseFlags(args: readonly string[], spec: FlagSpec): ParsedFlags | string {
  const values = new Map<string, string>();
  const lists = new Map<string, string[]>();
  for (const raw of args) {
    if (!raw.startsWith("--")) return `Arg should start with -- : ${raw}`;
    if (raw === "--") break;
    let name = raw.slice(2);
    let value = "";
    const eq = name.indexOf("=");
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    const type = Object.hasOwn(spec, name) ? spec[name] : undefined;
    if (type === undefined) {
      const known = Object.keys(spec).map((k) => `--${k}`);
      return `unknown flag: --${name}` + (known.length > 0 ? ` (allowed: ${known.join(", ")})` : "");
    }
    if (type !== "strings" && values.has(name)) return `Duplicate flag specified: ${name}`;
    switch (type) {
      case "bool": {
        if (eq >= 0 && value === "") return `Missing a value on flag: ${name}`;
        const lower = value.toLowerCase();
        if (lower === "") values.set(name, "true");
        else if (lower === "true" || lower === "false") values.set(name, lower);
        else return `Expecting boolean value for flag ${name}, not: ${value}`;
        break;
      }
      case "string":
        if (eq < 0) return `Missing a value on flag: ${name}`;
        values.set(name, value);
        break;
      case "strings": {
        if (eq < 0) return `Missing a value on flag: ${name}`;
        const list = lists.get(name) ?? [];
        list.push(value);
        lists.set(name, list);
        break;
      }
    }
  }
  return { values, lists };
}
