import { DockerfileError } from "../errors.ts";
import type { Dockerfile, Heredoc, Instruction } from "./ast.ts";
import { trimLeadingSpace } from "./chars.ts";
import { chompHeredoc, heredocMarkers } from "./heredoc.ts";
import { buildInstruction, INSTRUCTION_KINDS, instructionKind } from "./instructions.ts";
import { parseJsonArray, splitCommand } from "./line-parsers.ts";
import { suggestion } from "./run-mount.ts";

/**
 * Parses a Dockerfile the way BuildKit's parser (frontend/dockerfile/parser/parser.go) reads it: parser
 * directives at the very top, comment lines, line continuations with the escape token (comment and empty
 * lines inside a continuation are dropped), heredoc bodies after RUN/COPY/ADD, then each logical line into
 * a typed instruction. Throws DockerfileError with the line of the offending instruction.
 */
export function parseDockerfile(text: string): Dockerfile {
  const lines = scanLines(text);
  const directives = new DirectiveReader();
  const instructions: Instruction[] = [];
  const emptyContinuationLines: number[] = [];
  let current = 0; // lines consumed so far = 1-based number of the last line read

  const nextLine = (): string | undefined => {
    const l = lines[current];
    if (l !== undefined) current++;
    return l;
  };

  for (let raw = nextLine(); raw !== undefined; raw = nextLine()) {
    if (current === 1) raw = raw.replace(/^\uFEFF/, "");
    const startLine = current;
    const first = trimLeadingSpace(trimNewline(raw));
    directives.read(first, startLine);
    let [line, complete] = directives.trimContinuation(isComment(first) ? "" : first);
    if (complete && line === "") continue;

    let hasEmptyContinuation = false;
    while (!complete) {
      const next = nextLine();
      if (next === undefined) break;
      const token = trimNewline(next);
      directives.read(token, current);
      if (isComment(next)) continue;
      if (trimLeadingSpace(token) === "") {
        hasEmptyContinuation = true;
        continue;
      }
      let part: string;
      [part, complete] = directives.trimContinuation(token);
      line += part;
    }
    if (hasEmptyContinuation) emptyContinuationLines.push(startLine);
    if (line.trim() === "") {
      throw new DockerfileError(
        startLine,
        "empty continuation at end of file: nothing follows the line continuation",
      );
    }

    const { keyword, rest } = splitCommand(line);
    if (instructionKind(keyword) === undefined)
      throw unknownInstruction(keyword, startLine, instructions, directives);

    const heredocs: Heredoc[] = [];
    if (line.includes("<<") && mayHaveHeredocs(keyword, rest)) {
      let markers: ReturnType<typeof heredocMarkers>;
      try {
        markers = heredocMarkers(line);
      } catch (err) {
        if (err instanceof DockerfileError) throw new DockerfileError(startLine, err.detail, { cause: err });
        throw err;
      }
      for (const marker of markers) {
        let content = "";
        let terminated = false;
        for (let body = nextLine(); body !== undefined; body = nextLine()) {
          let candidate = trimNewline(body);
          if (marker.chomp) candidate = candidate.replace(/^\t+/, "");
          if (candidate === marker.name) {
            terminated = true;
            break;
          }
          content += body;
        }
        if (!terminated) {
          throw new DockerfileError(
            startLine,
            `unterminated heredoc: no line "${marker.name}" ends the heredoc started here (read to line ${current})`,
          );
        }
        heredocs.push({ ...marker, content: marker.chomp ? chompHeredoc(content) : content });
      }
    }

    instructions.push(
      buildInstruction({
        line,
        heredocs,
        location: { startLine, endLine: current },
        escapeToken: directives.escapeToken,
      }),
    );
  }

  if (instructions.length === 0) throw new DockerfileError(current, "file with no instructions");
  return {
    escapeToken: directives.escapeToken,
    directives: directives.found,
    instructions,
    emptyContinuationLines,
  };
}

/** Lines with their line endings, as BuildKit's scanner keeps them (heredoc bodies need the `\r\n`). */
function scanLines(text: string): string[] {
  const lines = text.split(/(?<=\n)/);
  if (lines.at(-1) === "") lines.pop();
  return lines;
}

const trimNewline = (s: string): string => s.replace(/[\r\n]+$/, "");
const isComment = (s: string): boolean => trimLeadingSpace(s).startsWith("#");

/** RUN, COPY and ADD in shell form (also as an ONBUILD trigger) may carry heredocs. */
function mayHaveHeredocs(keyword: string, rest: string): boolean {
  let kind = instructionKind(keyword);
  let args = rest;
  if (kind === "ONBUILD") {
    const sub = splitCommand(rest);
    kind = instructionKind(sub.keyword);
    args = sub.rest;
  }
  if (kind !== "RUN" && kind !== "COPY" && kind !== "ADD") return false;
  const json = parseJsonArray(args);
  return !("json" in json && json.json);
}

function unknownInstruction(
  keyword: string,
  line: number,
  before: readonly Instruction[],
  directives: DirectiveReader,
): DockerfileError {
  let detail = `unknown instruction: ${keyword.toUpperCase()}${suggestion(keyword, INSTRUCTION_KINDS)}`;
  const prev = before.at(-1);
  if (prev !== undefined && prev.location.endLine === line - 1) {
    const lines =
      prev.location.startLine === prev.location.endLine
        ? `line ${prev.location.startLine}`
        : `lines ${prev.location.startLine}-${prev.location.endLine}`;
    detail +=
      `; the ${prev.kind} instruction on ${lines} ends because line ${line - 1} does not end with` +
      ` "${directives.escapeToken}": a missing line continuation?`;
  }
  return new DockerfileError(line, detail);
}

// RE2's \s is [\t\n\f\r ]; JavaScript's is wider.
const DIRECTIVE = /^#[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*$/;
const KNOWN_DIRECTIVES = new Set(["syntax", "escape", "check"]);

/**
 * Parser directives (`# syntax=`, `# escape=`, `# check=`) are read only until the first line that is not
 * one: an instruction, another comment or an empty line ends them.
 */
class DirectiveReader {
  readonly found = new Map<string, string>();
  escapeToken: "\\" | "`" = "\\";
  private continuation = continuationRegExp("\\");
  private done = false;

  read(line: string, lineNumber: number): void {
    if (this.done) return;
    const m = DIRECTIVE.exec(line);
    const name = m?.[1]?.toLowerCase();
    if (m === null || name === undefined || !KNOWN_DIRECTIVES.has(name)) {
      this.done = true;
      return;
    }
    if (this.found.has(name))
      throw new DockerfileError(lineNumber, `only one ${name} parser directive can be used`);
    const value = m[2]!;
    this.found.set(name, value);
    if (name === "escape") {
      if (value !== "`" && value !== "\\") {
        throw new DockerfileError(lineNumber, `invalid escape token '${value}' does not match \` or \\`);
      }
      this.escapeToken = value;
      this.continuation = continuationRegExp(value);
    }
  }

  /** Removes a trailing escape token (and whitespace after it); `complete` when there was none. */
  trimContinuation(line: string): [line: string, complete: boolean] {
    if (!this.continuation.test(line)) return [line, true];
    return [line.replace(this.continuation, "$1"), false];
  }
}

/**
 * The escape token as the last non-blank character continues the line, unless another escape token
 * precedes it (`foo \\` ends with an escaped backslash).
 */
function continuationRegExp(token: string): RegExp {
  const t = token === "\\" ? "\\\\" : token;
  return new RegExp(`([^${t}])${t}[ \\t]*$|^${t}[ \\t]*$`);
}
