import { DockerfileError } from "../errors.ts";
import type {
  AddInstruction,
  CommandLine,
  CopyInstruction,
  HealthcheckSpec,
  Heredoc,
  InlineFile,
  Instruction,
  InstructionKind,
  KeyValue,
  RunMountSpec,
  SourceRange,
} from "./ast.ts";
import { trimSpace } from "./chars.ts";
import { type FlagSpec, type ParsedFlags, parseFlags } from "./flags.ts";
import { parseGoDuration } from "./go-duration.ts";
import { parseHeredocWord } from "./heredoc.ts";
import {
  parseJsonArray,
  parseNameValues,
  parseWords,
  splitCommand,
  splitFirstWord,
  splitWhitespace,
} from "./line-parsers.ts";
import { resolveMount, splitMountSpec, suggestion } from "./run-mount.ts";
import { expandWord } from "./shell-lex.ts";

/** One logical line as the line parser produced it. */
export interface RawInstruction {
  readonly line: string;
  readonly heredocs: readonly Heredoc[];
  readonly location: SourceRange;
  readonly escapeToken: string;
}

export const INSTRUCTION_KINDS: readonly InstructionKind[] = [
  "ADD",
  "ARG",
  "CMD",
  "COPY",
  "ENTRYPOINT",
  "ENV",
  "EXPOSE",
  "FROM",
  "HEALTHCHECK",
  "LABEL",
  "MAINTAINER",
  "ONBUILD",
  "RUN",
  "SHELL",
  "STOPSIGNAL",
  "USER",
  "VOLUME",
  "WORKDIR",
];

/** The keyword of a line as an instruction kind, or undefined when it is not one. */
export function instructionKind(keyword: string): InstructionKind | undefined {
  const upper = keyword.toUpperCase();
  return (INSTRUCTION_KINDS as readonly string[]).includes(upper) ? (upper as InstructionKind) : undefined;
}

/** Turns a logical line into a typed instruction (BuildKit's instructions.ParseInstruction). */
export function buildInstruction(raw: RawInstruction): Instruction {
  const { keyword, flags, rest } = splitCommand(raw.line);
  const kind = instructionKind(keyword);
  const fail = (detail: string): never => {
    throw new DockerfileError(raw.location.startLine, detail);
  };
  if (kind === undefined) {
    return fail(`unknown instruction: ${keyword.toUpperCase()}${suggestion(keyword, INSTRUCTION_KINDS)}`);
  }
  const base = { location: raw.location, original: trimSpace(raw.line) };
  const flagsOf = (spec: FlagSpec): ParsedFlags => {
    const parsed = parseFlags(flags, spec);
    return typeof parsed === "string" ? fail(`${kind}: ${parsed}`) : parsed;
  };
  const optional = (f: ParsedFlags, name: string): string | undefined => f.values.get(name) || undefined;
  const exactlyOne = (): string => {
    flagsOf({});
    return rest === "" ? fail(`${kind} requires exactly one argument`) : rest;
  };

  switch (kind) {
    case "FROM": {
      const args = splitWhitespace(rest);
      let stageName: string | undefined;
      if (args.length === 3 && args[1]!.toLowerCase() === "as") {
        stageName = args[2]!.toLowerCase();
        if (!/^[a-z][a-z0-9-_.]*$/.test(stageName)) {
          fail(
            `invalid name for build stage: ${JSON.stringify(args[2])}, name can't start with a number or contain symbols`,
          );
        }
      } else if (args.length !== 1) {
        fail("FROM requires either one or three arguments");
      }
      const f = flagsOf({ platform: "string" });
      return { kind, ...base, image: args[0]!, stageName, platform: optional(f, "platform") };
    }
    case "RUN": {
      const f = flagsOf({ mount: "strings", network: "string", security: "string" });
      const mounts = (f.lists.get("mount") ?? []).map((m) => runMountSpec(m, fail));
      const network = f.values.get("network");
      if (network !== undefined && !["default", "none", "host"].includes(network)) {
        fail(`unsupported network mode ${JSON.stringify(network)}`);
      }
      const security = f.values.get("security");
      if (security !== undefined && !["sandbox", "insecure"].includes(security)) {
        fail(`security ${JSON.stringify(security)} is not valid`);
      }
      return {
        kind,
        ...base,
        command: commandLine(rest, fail),
        heredocs: raw.heredocs,
        mounts,
        network: network as "default" | "none" | "host" | undefined,
        security: security as "sandbox" | "insecure" | undefined,
      };
    }
    case "CMD":
    case "ENTRYPOINT":
      flagsOf({});
      return { kind, ...base, command: commandLine(rest, fail) };
    case "SHELL": {
      flagsOf({});
      const json = parseJsonArray(rest);
      if ("error" in json) return fail(json.error);
      if (json.json ? json.args.length === 0 : rest === "")
        return fail("SHELL requires at least one argument");
      if (!json.json) return fail(`SHELL requires the arguments to be in JSON form${windowsPathHint(rest)}`);
      return { kind, ...base, shell: json.args };
    }
    case "COPY": {
      const f = flagsOf({
        from: "string",
        chown: "string",
        chmod: "string",
        link: "bool",
        exclude: "strings",
        parents: "bool",
      });
      const from = optional(f, "from");
      if (from !== undefined && expandWord(from, new Map(), { escapeToken: "\\" }).result !== from) {
        fail(
          "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
        );
      }
      return {
        kind,
        ...base,
        ...copyLike(kind, rest, raw.heredocs, f, fail),
        from,
        parents: f.values.get("parents") === "true",
      } satisfies CopyInstruction;
    }
    case "ADD": {
      const f = flagsOf({
        chown: "string",
        chmod: "string",
        link: "bool",
        "keep-git-dir": "bool",
        checksum: "string",
        exclude: "strings",
        unpack: "bool",
      });
      const unpack = f.values.get("unpack");
      return {
        kind,
        ...base,
        ...copyLike(kind, rest, raw.heredocs, f, fail),
        keepGitDir: f.values.get("keep-git-dir") === "true",
        checksum: optional(f, "checksum"),
        unpack: unpack === undefined ? undefined : unpack === "true",
      } satisfies AddInstruction;
    }
    case "ARG": {
      flagsOf({});
      const words = parseWords(rest, raw.escapeToken);
      if (words.length === 0) fail("ARG requires at least one argument");
      const args = words.map((w) => {
        const eq = w.indexOf("=");
        if (eq < 0) return { key: w, value: undefined };
        if (eq === 0) return fail("ARG names can not be blank");
        return { key: w.slice(0, eq), value: w.slice(eq + 1) };
      });
      return { kind, ...base, args };
    }
    case "ENV":
    case "LABEL": {
      flagsOf({});
      const pairs = parseNameValues(rest, kind, raw.escapeToken);
      if (typeof pairs === "string") return fail(pairs);
      if (pairs.length === 0) fail(`${kind} requires at least one argument`);
      if (pairs.some((p) => p.key === "")) fail(`${kind} names can not be blank`);
      return { kind, ...base, pairs: pairs satisfies KeyValue[] };
    }
    case "EXPOSE": {
      flagsOf({});
      const ports = splitWhitespace(rest);
      if (ports.length === 0) fail("EXPOSE requires at least one argument");
      return { kind, ...base, ports: ports.sort() };
    }
    case "VOLUME": {
      flagsOf({});
      const { args, json } = listArgs(rest, fail);
      if (args.length === 0) fail("VOLUME requires at least one argument");
      const volumes = args.map((v) => trimSpace(v) || fail("VOLUME specified can not be an empty string"));
      return { kind, ...base, volumes, json };
    }
    case "USER":
      return { kind, ...base, user: exactlyOne() };
    case "WORKDIR":
      return { kind, ...base, path: exactlyOne() };
    case "STOPSIGNAL":
      return { kind, ...base, signal: exactlyOne() };
    case "MAINTAINER":
      return { kind, ...base, maintainer: exactlyOne() };
    case "HEALTHCHECK": {
      const f = flagsOf({
        interval: "string",
        timeout: "string",
        "start-period": "string",
        "start-interval": "string",
        retries: "string",
      });
      return { kind, ...base, health: healthcheck(rest, f, fail) };
    }
    case "ONBUILD": {
      flagsOf({});
      if (rest === "") fail("ONBUILD requires at least one argument");
      const trigger = splitCommand(rest).keyword.toUpperCase();
      if (trigger === "ONBUILD") fail("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
      if (trigger === "MAINTAINER" || trigger === "FROM")
        fail(`${trigger} isn't allowed as an ONBUILD trigger`);
      let expression = raw.line.replace(/^\s*ONBUILD\s*/i, "");
      for (const h of raw.heredocs) expression += "\n" + h.content + h.name;
      return { kind, ...base, expression, trigger: buildInstruction({ ...raw, line: rest }) };
    }
  }
}

type Fail = (detail: string) => never;

function commandLine(rest: string, fail: Fail): CommandLine {
  if (rest === "") return { form: "shell", script: "" };
  const json = parseJsonArray(rest);
  if ("error" in json) return fail(json.error);
  return json.json ? { form: "exec", args: json.args } : { form: "shell", script: rest };
}

function listArgs(rest: string, fail: Fail): { args: string[]; json: boolean } {
  const json = parseJsonArray(rest);
  if ("error" in json) return fail(json.error);
  return json.json ? { args: json.args, json: true } : { args: splitWhitespace(rest), json: false };
}

function copyLike(
  kind: "COPY" | "ADD",
  rest: string,
  heredocs: readonly Heredoc[],
  f: ParsedFlags,
  fail: Fail,
): Pick<
  CopyInstruction,
  "sources" | "inlineFiles" | "dest" | "chown" | "chmod" | "link" | "exclude" | "json"
> {
  const { args, json } = listArgs(rest, fail);
  if (args.length < 2) {
    fail(
      `${kind} requires at least two arguments, but only one was provided. Destination could not be determined`,
    );
  }
  const dest = args[args.length - 1]!;
  if (parseHeredocWord(dest) !== undefined) fail(`${kind} cannot accept a heredoc as a destination`);
  const sources: string[] = [];
  const inlineFiles: InlineFile[] = [];
  for (const src of args.slice(0, -1)) {
    const h = parseHeredocWord(src);
    if (h === undefined) sources.push(src);
    else
      inlineFiles.push({
        path: h.name,
        data: heredocs.find((d) => d.name === h.name)?.content ?? "",
        expand: h.expand,
      });
  }
  return {
    sources,
    inlineFiles,
    dest,
    chown: f.values.get("chown") || undefined,
    chmod: f.values.get("chmod") || undefined,
    link: f.values.get("link") === "true",
    exclude: f.lists.get("exclude") ?? [],
    json,
  };
}

function runMountSpec(value: string, fail: Fail): RunMountSpec {
  const spec = splitMountSpec(value);
  if (typeof spec === "string") return fail(spec);
  const from = spec.fields.find(([k]) => k.toLowerCase() === "from")?.[1];
  if (from !== undefined && /\$./.test(from)) {
    fail("'from' doesn't support variable expansion, define alias stage instead");
  }
  // Without variables the mount is final now, so its errors are reported at parse time.
  if (!value.includes("$")) {
    const mount = resolveMount(spec, (v) => v);
    if (typeof mount === "string") fail(mount);
  }
  return spec;
}

function healthcheck(rest: string, f: ParsedFlags, fail: Fail): HealthcheckSpec {
  const [word, cmd] = splitFirstWord(rest);
  if (word === "") return fail("HEALTHCHECK requires at least one argument");
  const type = word.toUpperCase();
  const json = cmd === "" ? { json: false as const } : parseJsonArray(cmd);
  if ("error" in json) return fail(json.error);
  const args = json.json ? json.args : cmd === "" ? [] : [cmd];
  if (type === "NONE") {
    if (args.length !== 0) fail("HEALTHCHECK NONE takes no arguments");
    return { kind: "none" };
  }
  if (type !== "CMD") return fail(`Unknown type ${JSON.stringify(type)} in HEALTHCHECK (try CMD)`);
  if (args.length === 0) fail("Missing command after HEALTHCHECK CMD");
  const interval = (name: string): number => {
    const v = f.values.get(name);
    if (v === undefined || v === "") return 0;
    const ns = parseGoDuration(v);
    if (typeof ns === "string") return fail(`HEALTHCHECK --${name}: ${ns}`);
    if (ns !== 0 && ns < 1e6) fail(`Interval ${JSON.stringify(name)} cannot be less than 1ms`);
    return ns;
  };
  let retries = 0;
  const r = f.values.get("retries");
  if (r !== undefined && r !== "") {
    if (!/^[+-]?\d+$/.test(r) || Math.abs(Number(r)) > 2 ** 31) {
      fail(`strconv.ParseInt: parsing ${JSON.stringify(r)}: invalid syntax`);
    }
    retries = Number(r);
    if (retries < 0) fail(`--retries cannot be negative (${retries})`);
  }
  return {
    kind: "cmd",
    test: [json.json ? "CMD" : "CMD-SHELL", ...args],
    intervalNs: interval("interval"),
    timeoutNs: interval("timeout"),
    startPeriodNs: interval("start-period"),
    startIntervalNs: interval("start-interval"),
    retries,
  };
}

/** BuildKit's hint for `SHELL ["c:\path", ...]`: JSON needs the backslash escaped. */
function windowsPathHint(rest: string): string {
  const lower = rest.toLowerCase();
  if (/"[a-z]:\\/.test(lower) && !lower.includes("\\\\") && lower.includes("[") && lower.includes("]")) {
    return `. It looks like '${lower}' includes a file path without an escaped back-slash. JSON requires back-slashes to be escaped such as ["c:\\\\path\\\\to\\\\file.exe", "/S"]`;
  }
  return "";
}
