import { DockerfileError } from "../errors.ts";
import type { CommandLine, Dockerfile, Heredoc, InlineFile, Instruction, KeyValue } from "./ast.ts";
import { parseWords } from "./line-parsers.ts";

/**
 * Writes a Dockerfile that parses back to the same instructions (locations and the `original` text aside):
 * one line per instruction, heredoc bodies after their line, flags quoted so that any value survives.
 */
export function printDockerfile(dockerfile: Dockerfile): string {
  let out = "";
  for (const [name, value] of dockerfile.directives) out += `# ${name}=${value}\n`;
  for (const ins of dockerfile.instructions) out += printInstruction(ins, dockerfile.escapeToken);
  return out;
}

/** One instruction with its heredoc bodies, ending in a newline. */
export function printInstruction(ins: Instruction, escapeToken: string): string {
  return `${instructionLine(ins, escapeToken)}\n${bodies(ins)}`;
}

function bodies(ins: Instruction): string {
  switch (ins.kind) {
    case "RUN":
      return ins.heredocs.map((h: Heredoc) => h.content + h.name + "\n").join("");
    case "COPY":
    case "ADD":
      return ins.json ? "" : ins.inlineFiles.map((f: InlineFile) => f.data + f.path + "\n").join("");
    case "ONBUILD":
      return bodies(ins.trigger);
    default:
      return "";
  }
}

function instructionLine(ins: Instruction, escapeToken: string): string {
  const flags: string[] = [];
  const parts: string[] = [];
  const flag = (name: string, value: string | undefined): void => {
    if (value !== undefined) flags.push(`--${name}=${quoteFlag(value)}`);
  };
  const bool = (name: string, value: boolean): void => {
    if (value) flags.push(`--${name}`);
  };
  switch (ins.kind) {
    case "FROM":
      flag("platform", ins.platform);
      parts.push(ins.image);
      if (ins.stageName !== undefined) parts.push("AS", ins.stageName);
      break;
    case "RUN":
      for (const m of ins.mounts) {
        flag("mount", m.fields.map(([k, v]) => quoteCsv(v === undefined ? k : `${k}=${v}`)).join(","));
      }
      flag("network", ins.network);
      flag("security", ins.security);
      parts.push(command(ins.command));
      break;
    case "CMD":
    case "ENTRYPOINT":
      parts.push(command(ins.command));
      break;
    case "COPY":
    case "ADD":
      if (ins.kind === "COPY") {
        flag("from", ins.from);
        bool("parents", ins.parents);
      } else {
        bool("keep-git-dir", ins.keepGitDir);
        flag("checksum", ins.checksum);
        if (ins.unpack !== undefined) flags.push(`--unpack=${ins.unpack}`);
      }
      flag("chown", ins.chown);
      flag("chmod", ins.chmod);
      bool("link", ins.link);
      for (const e of ins.exclude) flag("exclude", e);
      {
        const markers = ins.inlineFiles.map((f) => (f.expand ? `<<${f.path}` : `<<'${f.path}'`));
        const args = [...ins.sources, ...markers, ins.dest];
        parts.push(ins.json ? JSON.stringify(args) : args.join(" "));
      }
      break;
    case "ARG":
      parts.push(...ins.args.map((a) => (a.value === undefined ? a.key : `${a.key}=${a.value}`)));
      break;
    case "ENV":
    case "LABEL":
      parts.push(keyValues(ins.kind, ins.pairs, escapeToken, ins.location.startLine));
      break;
    case "EXPOSE":
      parts.push(...ins.ports);
      break;
    case "VOLUME":
      parts.push(ins.json ? JSON.stringify(ins.volumes) : ins.volumes.join(" "));
      break;
    case "USER":
      parts.push(ins.user);
      break;
    case "WORKDIR":
      parts.push(ins.path);
      break;
    case "STOPSIGNAL":
      parts.push(ins.signal);
      break;
    case "MAINTAINER":
      parts.push(ins.maintainer);
      break;
    case "SHELL":
      parts.push(JSON.stringify(ins.shell));
      break;
    case "HEALTHCHECK": {
      const h = ins.health;
      if (h.kind === "none") {
        parts.push("NONE");
        break;
      }
      const durations: [string, number][] = [
        ["interval", h.intervalNs],
        ["timeout", h.timeoutNs],
        ["start-period", h.startPeriodNs],
        ["start-interval", h.startIntervalNs],
      ];
      for (const [name, ns] of durations) if (ns !== 0) flag(name, `${ns}ns`);
      if (h.retries !== 0) flag("retries", String(h.retries));
      const [type, ...args] = h.test;
      parts.push("CMD", type === "CMD" ? JSON.stringify(args) : (args[0] ?? ""));
      break;
    }
    case "ONBUILD":
      parts.push(instructionLine(ins.trigger, escapeToken));
      break;
  }
  const args = parts.filter((p) => p !== "");
  // Arguments that start with `--` would read as flags; a bare `--` ends the flags.
  const end = args[0]?.startsWith("--") ? ["--"] : [];
  return [ins.kind, ...flags, ...end, ...args].join(" ");
}

const command = (c: CommandLine): string => (c.form === "exec" ? JSON.stringify(c.args) : c.script);

/** Inside double quotes the flag reader takes `\` as escaping the next character. */
const quoteFlag = (v: string): string => (/^[\w./:@+,=-]+$/.test(v) ? v : `"${v.replace(/[\\"]/g, "\\$&")}"`);

const quoteCsv = (field: string): string => (/[",]/.test(field) ? `"${field.replace(/"/g, '""')}"` : field);

/** `k=v ...` when every pair reads back as one word; the legacy `KEY value` form for a single pair. */
function keyValues(kind: string, pairs: readonly KeyValue[], escapeToken: string, line: number): string {
  const words = pairs.map((p) => `${p.key}=${p.value}`);
  if (words.every((w) => sameWords(parseWords(w, escapeToken), [w]))) return words.join(" ");
  const only = pairs.length === 1 ? pairs[0]! : undefined;
  if (only !== undefined && only.value !== "" && !/[\s=]/.test(only.key)) return `${only.key} ${only.value}`;
  throw new DockerfileError(line, `${kind}: these pairs cannot be written as one instruction`);
}

const sameWords = (a: readonly string[], b: readonly string[]): boolean =>
  a.length === b.length && a.every((w, i) => w === b[i]);
