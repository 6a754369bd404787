import { DockerfileError } from "../errors.ts";
import { expandWord } from "./shell-lex.ts";

/** A heredoc marker word (`<<EOF`, `<<-"EOF"`, `3<<EOF`) before its body is read. */
export interface HeredocMarker {
  readonly name: string;
  readonly expand: boolean;
  readonly chomp: boolean;
  readonly fileDescriptor: number;
}

const MARKER = /^(\d*)<<(-?)([^<]*)$/;
const NO_ENV = new Map<string, string>();

/**
 * Reads a marker word; undefined when the word is not one (BuildKit's ParseHeredoc). The delimiter is
 * quoted, and the body therefore not expanded, when removing quotes changes its quote count.
 */
export function parseHeredocWord(word: string): HeredocMarker | undefined {
  const m = MARKER.exec(word);
  if (m === null || m[3] === "") return undefined;
  const rest = m[3]!;
  const words = expandWord(rest, NO_ENV, { escapeToken: "\\", skipUnsetEnv: true }).words;
  if (words.length !== 1) return undefined;
  const raw = expandWord(rest, NO_ENV, { escapeToken: "\\", skipUnsetEnv: true, rawQuotes: true }).words;
  if (raw.length !== 1) {
    throw new DockerfileError(undefined, `internal lexing of heredoc produced inconsistent results: ${rest}`);
  }
  const quotes = (s: string): number => s.split(/['"]/).length - 1;
  return {
    name: words[0]!,
    expand: quotes(words[0]!) === quotes(raw[0]!),
    chomp: m[2] === "-",
    fileDescriptor: Number(m[1] || "0"),
  };
}

/** The heredoc markers of a RUN/COPY/ADD line, in order (lexing errors mean there are none). */
export function heredocMarkers(line: string): HeredocMarker[] {
  let words: readonly string[];
  try {
    words = expandWord(line, NO_ENV, {
      escapeToken: "\\",
      rawQuotes: true,
      rawEscapes: true,
      skipUnsetEnv: true,
    }).words;
  } catch (err) {
    if (err instanceof DockerfileError) return [];
    throw err;
  }
  const markers: HeredocMarker[] = [];
  for (const w of words) {
    const marker = parseHeredocWord(w);
    if (marker !== undefined) markers.push(marker);
  }
  return markers;
}

/** `<<-`: leading tabs are removed from every line of the body. */
export const chompHeredoc = (content: string): string => content.replace(/(^|\n)\t+/g, "$1");
