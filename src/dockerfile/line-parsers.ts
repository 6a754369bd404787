import { isGoSpace, trimLeadingSpace, trimSpace, WHITESPACE_RUN } from "./chars.ts";

/**
 * The argument splitters of BuildKit's parser (frontend/dockerfile/parser/line_parsers.go and
 * split_command.go). They work on one logical line with continuations already joined.
 */

export interface SplitLine {
  /** The instruction keyword as written. */
  readonly keyword: string;
  /** `--name=value` words before the arguments, quotes and backslash escapes removed. */
  readonly flags: readonly string[];
  /** The rest of the line, trimmed. */
  readonly rest: string;
}

export function splitCommand(line: string): SplitLine {
  const trimmed = trimSpace(line);
  const m = WHITESPACE_RUN.exec(trimmed);
  if (m === null) return { keyword: trimmed, flags: [], rest: "" };
  const keyword = trimmed.slice(0, m.index);
  const [rest, flags] = extractBuilderFlags(trimmed.slice(m.index + m[0].length));
  return { keyword, flags, rest: trimSpace(rest) };
}

/** Reads leading `--flag` words (a bare `--` ends them); returns the remaining line and the flags. */
function extractBuilderFlags(line: string): [string, string[]] {
  const words: string[] = [];
  let phase: "spaces" | "word" | "quote" = "spaces";
  let word = "";
  let quote = "";
  let blankOK = false;
  for (let pos = 0; pos <= line.length; pos++) {
    const ch = pos < line.length ? line[pos]! : "";
    if (phase === "spaces") {
      if (pos === line.length) break;
      if (isGoSpace(ch)) continue;
      if (ch !== "-" || pos + 1 === line.length || line[pos + 1] !== "-") return [line.slice(pos), words];
      phase = "word";
    }
    if (pos === line.length) {
      if (word !== "--" && (blankOK || word.length > 0)) words.push(word);
      break;
    }
    if (phase === "word") {
      if (isGoSpace(ch)) {
        phase = "spaces";
        if (word === "--") return [line.slice(pos), words];
        if (blankOK || word.length > 0) words.push(word);
        word = "";
        blankOK = false;
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOK = true;
        phase = "quote";
        continue;
      }
      if (ch === "\\") {
        if (pos + 1 === line.length) continue;
        pos++;
        word += line[pos]!;
        continue;
      }
      word += ch;
      continue;
    }
    if (ch === quote) {
      phase = "word";
      continue;
    }
    if (ch === "\\") {
      if (pos + 1 === line.length) {
        phase = "word";
        continue;
      }
      pos++;
      word += line[pos]!;
      continue;
    }
    word += ch;
  }
  return ["", words];
}

/**
 * Splits on unquoted whitespace keeping quotes and escapes in the words (they are processed when the word
 * is expanded). Used by ENV, LABEL and ARG.
 */
export function parseWords(rest: string, escapeToken: string): string[] {
  const chars = Array.from(rest);
  const words: string[] = [];
  let phase: "spaces" | "word" | "quote" = "spaces";
  let word = "";
  let quote = "";
  let blankOK = false;
  for (let pos = 0; pos <= chars.length; pos++) {
    let ch = chars[pos] ?? "";
    if (phase === "spaces") {
      if (pos === chars.length) break;
      if (isGoSpace(ch)) continue;
      phase = "word";
    }
    if (pos === chars.length) {
      if (blankOK || word.length > 0) words.push(word);
      break;
    }
    if (phase === "word") {
      if (isGoSpace(ch)) {
        phase = "spaces";
        if (blankOK || word.length > 0) words.push(word);
        word = "";
        blankOK = false;
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOK = true;
        phase = "quote";
      }
      if (ch === escapeToken) {
        if (pos + 1 === chars.length) continue; // an escape token at the end of the line is dropped
        // Unquoted, the escape and the escaped character (even a quote) are both kept.
        word += ch;
        pos++;
        ch = chars[pos]!;
      }
      word += ch;
      continue;
    }
    if (ch === quote) phase = "word";
    // Inside single quotes nothing escapes.
    if (ch === escapeToken && quote !== "'") {
      if (pos + 1 === chars.length) {
        phase = "word";
        continue;
      }
      pos++;
      word += ch;
      ch = chars[pos]!;
    }
    word += ch;
  }
  return words;
}

export interface KeyValueWord {
  readonly key: string;
  readonly value: string;
}

/**
 * ENV and LABEL: `KEY value...` (legacy: the key, then the whole rest as one value) when the first word has
 * no `=`, otherwise `k=v` words. Returns an error message for a word without `=`.
 */
export function parseNameValues(rest: string, keyword: string, escapeToken: string): KeyValueWord[] | string {
  const words = parseWords(rest, escapeToken);
  if (words.length === 0) return [];
  if (!words[0]!.includes("=")) {
    const m = WHITESPACE_RUN.exec(rest);
    if (m === null) return `${keyword} must have two arguments`;
    return [{ key: rest.slice(0, m.index), value: rest.slice(m.index + m[0].length) }];
  }
  const pairs: KeyValueWord[] = [];
  for (const word of words) {
    const eq = word.indexOf("=");
    if (eq < 0)
      return `Syntax error - can't find = in ${JSON.stringify(word)}. Must be of the form: name=value`;
    pairs.push({ key: word.slice(0, eq), value: word.slice(eq + 1) });
  }
  return pairs;
}

/** FROM and EXPOSE arguments, and the shell form of COPY/ADD/VOLUME. */
export function splitWhitespace(rest: string): string[] {
  return rest === "" ? [] : rest.split(new RegExp(WHITESPACE_RUN.source, "g"));
}

export type MaybeJson =
  | { readonly json: true; readonly args: string[] }
  | { readonly json: false }
  | { readonly error: string };

/**
 * A JSON form is an array of strings; like Go's json.Decoder only the first JSON value counts, text after
 * it is ignored. An array holding anything but strings is an error, not a shell form.
 */
export function parseJsonArray(rest: string): MaybeJson {
  const text = trimLeadingSpace(rest);
  if (!text.startsWith("[")) return { json: false };
  const end = endOfJsonValue(text);
  if (end < 0) return { json: false };
  let value: unknown;
  try {
    value = JSON.parse(text.slice(0, end));
  } catch {
    return { json: false };
  }
  if (!Array.isArray(value)) return { json: false };
  if (!value.every((v) => typeof v === "string")) {
    return { error: "when using JSON array syntax, arrays must be comprised of strings only" };
  }
  return { json: true, args: value };
}

/** Index after the JSON value that starts at 0 (brackets balanced outside strings), or -1. */
function endOfJsonValue(text: string): number {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (inString) {
      if (ch === "\\") i++;
      else if (ch === '"') inString = false;
      continue;
    }
    if (ch === '"') inString = true;
    else if (ch === "[" || ch === "{") depth++;
    else if (ch === "]" || ch === "}") {
      depth--;
      if (depth === 0) return i + 1;
    }
  }
  return -1;
}

/** HEALTHCHECK: the type word (`CMD`/`NONE`) and what follows it. */
export function splitFirstWord(rest: string): [string, string] {
  let sep = 0;
  while (sep < rest.length && !isGoSpace(rest[sep]!)) sep++;
  let next = sep;
  while (next < rest.length && isGoSpace(rest[next]!)) next++;
  return [rest.slice(0, sep), rest.slice(next)];
}
