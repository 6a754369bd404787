import { DockerfileError } from "../errors.ts";
import { isGoSpace } from "./chars.ts";

/**
 * Word expansion as BuildKit's ShellLex (frontend/dockerfile/shell/lex.go) does it: quotes, the escape
 * token, `$V`, `${V}`, `${V:-x}` `${V-x}` `${V:+x}` `${V+x}` `${V:?msg}` `${V?msg}`, `${V#p}` `${V##p}`
 * `${V%p}` `${V%%p}`, `${V/p/r}` `${V//p/r}`. Only the builder's own expansion: command substitution,
 * arithmetic and field splitting on IFS do not exist here.
 */
export interface ShellLexOptions {
  /** The Dockerfile's escape token (`\` or the backtick set by `# escape=`). */
  readonly escapeToken: string;
  /** Keep quote characters in the result (they still group words). */
  readonly rawQuotes?: boolean;
  /** Keep escape tokens in the result (they still escape). */
  readonly rawEscapes?: boolean;
  /** Treat quotes as ordinary characters (heredoc bodies). */
  readonly skipProcessQuotes?: boolean;
  /** Leave references to unset variables as they are written. */
  readonly skipUnsetEnv?: boolean;
}

/** Variables visible to an expansion; keys are case-sensitive (Linux). */
export type Env = ReadonlyMap<string, string>;

export interface Expansion {
  /** The word with variables replaced and quotes/escapes processed. */
  readonly result: string;
  /** The same text split into words on unquoted whitespace (empty words dropped). */
  readonly words: readonly string[];
  /** Variables the word referenced that were set (ProcessWordWithMatches' Matched). */
  readonly matched: ReadonlySet<string>;
  /** Variables the word referenced that were not set. */
  readonly unmatched: ReadonlySet<string>;
}

const EOF = "";

/** Expands `word` against `env`; throws DockerfileError (without a line) on a syntax error. */
export function expandWord(word: string, env: Env, options: ShellLexOptions): Expansion {
  const sw = new ShellWord(word, env, options);
  try {
    const [result, words] = sw.processStopOn(EOF, options.rawEscapes ?? false);
    return { result, words, matched: sw.matched, unmatched: sw.unmatched };
  } catch (err) {
    if (err instanceof LexFailure) {
      throw new DockerfileError(undefined, `failed to process ${JSON.stringify(word)}: ${err.message}`);
    }
    throw err;
  }
}

/** An internal signal turned into a DockerfileError by expandWord, which knows the whole word. */
class LexFailure extends Error {}

class Words {
  readonly words: string[] = [];
  private buf = "";
  private inWord = false;

  addChar(ch: string): void {
    if (isGoSpace(ch) && this.inWord) {
      if (this.buf.length !== 0) {
        this.words.push(this.buf);
        this.buf = "";
        this.inWord = false;
      }
    } else if (!isGoSpace(ch)) {
      this.addRawChar(ch);
    }
  }

  addRawChar(ch: string): void {
    this.buf += ch;
    this.inWord = true;
  }

  addString(s: string): void {
    for (const ch of s) this.addChar(ch);
  }

  addRawString(s: string): void {
    this.buf += s;
    this.inWord = true;
  }

  finish(): string[] {
    if (this.buf.length > 0) {
      this.words.push(this.buf);
      this.buf = "";
      this.inWord = false;
    }
    return this.words;
  }
}

class ShellWord {
  readonly matched = new Set<string>();
  readonly unmatched = new Set<string>();
  private readonly chars: readonly string[];
  private pos = 0;
  private readonly env: Env;
  private readonly opts: ShellLexOptions;
  private rawEscapes: boolean;

  constructor(word: string, env: Env, opts: ShellLexOptions) {
    this.chars = Array.from(word);
    this.env = env;
    this.opts = opts;
    this.rawEscapes = opts.rawEscapes ?? false;
  }

  private peek(): string {
    return this.chars[this.pos] ?? EOF;
  }

  private next(): string {
    const ch = this.chars[this.pos] ?? EOF;
    if (ch !== EOF) this.pos++;
    return ch;
  }

  /** Processes until `stopChar` (consumed) or the end; returns the text and its words. */
  processStopOn(stopChar: string, rawEscapes: boolean): [string, string[]] {
    // BuildKit shares one words buffer between nested calls, which drops the text before a `${V:-x}` from
    // ProcessWords' result; each call has its own buffer here, as the words of `a${V:-b}c` are `abc`.
    const words = new Words();
    let result = "";
    const saved = this.rawEscapes;
    this.rawEscapes = rawEscapes;
    try {
      while (this.peek() !== EOF) {
        let ch = this.peek();
        if (stopChar !== EOF && ch === stopChar) {
          this.next();
          return [result, words.finish()];
        }
        const special = this.specialFor(ch);
        if (special !== undefined) {
          const tmp = special();
          result += tmp;
          if (ch === "$") words.addString(tmp);
          else words.addRawString(tmp);
          continue;
        }
        ch = this.next();
        if (ch === this.opts.escapeToken) {
          if (this.rawEscapes) {
            words.addRawChar(ch);
            result += ch;
          }
          ch = this.next();
          if (ch === EOF) break;
          words.addRawChar(ch);
        } else {
          words.addChar(ch);
        }
        result += ch;
      }
      if (stopChar !== EOF) {
        throw new LexFailure(`unexpected end of statement while looking for matching ${stopChar}`);
      }
      return [result, words.finish()];
    } finally {
      this.rawEscapes = saved;
    }
  }

  private specialFor(ch: string): (() => string) | undefined {
    if (ch === "$") return () => this.processDollar();
    if (this.opts.skipProcessQuotes) return undefined;
    if (ch === "'") return () => this.processSingleQuote();
    if (ch === '"') return () => this.processDoubleQuote();
    return undefined;
  }

  private processSingleQuote(): string {
    // Nothing escapes inside single quotes, not even a single quote.
    let result = "";
    const open = this.next();
    if (this.opts.rawQuotes) result += open;
    for (;;) {
      const ch = this.next();
      if (ch === EOF)
        throw new LexFailure("unexpected end of statement while looking for matching single-quote");
      if (ch === "'") {
        if (this.opts.rawQuotes) result += ch;
        return result;
      }
      result += ch;
    }
  }

  private processDoubleQuote(): string {
    // Inside double quotes the escape token only escapes `"`, `$` and itself; other escapes stay literal.
    let result = "";
    const open = this.next();
    if (this.opts.rawQuotes) result += open;
    for (;;) {
      const peeked = this.peek();
      if (peeked === EOF) {
        throw new LexFailure("unexpected end of statement while looking for matching double-quote");
      }
      if (peeked === '"') {
        const ch = this.next();
        if (this.opts.rawQuotes) result += ch;
        return result;
      }
      if (peeked === "$") {
        result += this.processDollar();
        continue;
      }
      let ch = this.next();
      if (ch === this.opts.escapeToken) {
        if (this.rawEscapes) result += ch;
        const after = this.peek();
        if (after === EOF) continue;
        if (after === '"' || after === "$" || after === this.opts.escapeToken) ch = this.next();
      }
      result += ch;
    }
  }

  private processDollar(): string {
    this.next();
    if (this.peek() !== "{") {
      const name = this.processName();
      if (name === "") return "$";
      const value = this.getEnv(name);
      if (value === undefined && this.opts.skipUnsetEnv) return "$" + name;
      return value ?? "";
    }
    this.next();
    const first = this.peek();
    if (first === EOF) throw new LexFailure("syntax error: missing '}'");
    if (first === "{" || first === "}" || first === ":")
      throw new LexFailure("syntax error: bad substitution");
    const name = this.processName();
    let ch = this.next();
    let chs = ch;
    switch (ch) {
      case EOF:
        throw new LexFailure("syntax error: missing '}'");
      case "}": {
        const value = this.getEnv(name);
        if (value === undefined && this.opts.skipUnsetEnv) return "${" + name + "}";
        return value ?? "";
      }
      case "/":
        return this.processReplace(name);
      case ":":
        ch = this.next();
        chs += ch;
        return this.processModifier(name, ch, chs, true);
      case "+":
      case "-":
      case "?":
      case "#":
      case "%":
        return this.processModifier(name, ch, chs, false);
      default:
        throw new LexFailure(`unsupported modifier (${chs}) in substitution`);
    }
  }

  private processModifier(name: string, ch: string, chs: string, nullIsUnset: boolean): string {
    const rawEscapes = ch === "#" || ch === "%";
    if (nullIsUnset && rawEscapes) throw new LexFailure(`unsupported modifier (${chs}) in substitution`);
    const word = this.readUntil("}", rawEscapes, "syntax error: missing '}'");
    const value = this.getEnv(name);
    if (value === undefined && this.opts.skipUnsetEnv) return "${" + name + chs + word + "}";
    const unsetOrNull = value === undefined || (nullIsUnset && value === "");
    switch (ch) {
      case "-":
        return unsetOrNull ? word : value!;
      case "+":
        return unsetOrNull ? "" : word;
      case "?":
        if (value === undefined) throw new LexFailure(`${name}: ${word || "is not allowed to be unset"}`);
        if (nullIsUnset && value === "")
          throw new LexFailure(`${name}: ${word || "is not allowed to be empty"}`);
        return value;
      case "%":
      case "#": {
        // `%`/`#` remove the shortest match, `%%`/`##` the longest.
        const greedy = word.startsWith(ch);
        const pattern = greedy ? word.slice(1) : word;
        return ch === "%"
          ? trimSuffix(pattern, value ?? "", greedy)
          : trimPrefix(pattern, value ?? "", greedy);
      }
      default:
        throw new LexFailure(`unsupported modifier (${chs}) in substitution`);
    }
  }

  private processReplace(name: string): string {
    const replaceAll = this.peek() === "/";
    if (replaceAll) this.next();
    const pattern = this.readUntil("/", true, "syntax error: missing '/' in $" + "{}");
    const replacement = this.readUntil("}", true, "syntax error: missing '}'");
    const value = this.getEnv(name);
    if (value === undefined && this.opts.skipUnsetEnv)
      return "${" + name + "/" + pattern + "/" + replacement + "}";
    const re = shellPatternToRegExp(pattern, true, false, replaceAll);
    const subject = value ?? "";
    if (replaceAll) return subject.replace(re, (whole) => expandGoTemplate(replacement, whole));
    const m = re.exec(subject);
    if (m === null) return subject;
    return subject.slice(0, m.index) + replacement + subject.slice(m.index + m[0].length);
  }

  /** The text up to `stop`; running out of input is reported as `atEof`. */
  private readUntil(stop: string, rawEscapes: boolean, atEof: string): string {
    try {
      return this.processStopOn(stop, rawEscapes)[0];
    } catch (err) {
      if (err instanceof LexFailure && this.peek() === EOF) throw new LexFailure(atEof);
      throw err;
    }
  }

  private processName(): string {
    // A name is letters, digits and `_`; a leading digit reads digits only; a special parameter is one char.
    let name = "";
    while (this.peek() !== EOF) {
      const ch = this.peek();
      if (name.length === 0 && isDigit(ch)) {
        while (this.peek() !== EOF && isDigit(this.peek())) name += this.next();
        return name;
      }
      if (name.length === 0 && SPECIAL_PARAMS.has(ch)) return this.next();
      if (!isLetter(ch) && !isDigit(ch) && ch !== "_") break;
      name += this.next();
    }
    return name;
  }

  private getEnv(name: string): string | undefined {
    const value = this.env.get(name);
    if (value === undefined) this.unmatched.add(name);
    else this.matched.add(name);
    return value;
  }
}

const SPECIAL_PARAMS = new Set(["@", "*", "#", "?", "-", "$", "!", "0"]);
const isDigit = (ch: string): boolean => /^\p{Nd}$/u.test(ch);
const isLetter = (ch: string): boolean => /^\p{L}$/u.test(ch);

/**
 * A shell pattern (`?` one char, `*` any string, `\` escapes `*`, `?` and `\`; `\}` and `\/` are the literal
 * characters) as a RegExp. Go's `.` matches everything but a newline, hence `[^\n]`.
 */
function shellPatternToRegExp(pattern: string, greedy: boolean, anchored: boolean, global: boolean): RegExp {
  const chars = Array.from(pattern);
  let out = anchored ? "^" : "";
  const star = greedy ? "[^\\n]*" : "[^\\n]*?";
  for (let i = 0; i < chars.length; i++) {
    let tok = chars[i]!;
    if (tok === "*") {
      out += star;
      continue;
    }
    if (tok === "?") {
      out += "[^\\n]";
      continue;
    }
    if (tok === "\\") {
      const after = chars[i + 1];
      if (after === "}" || after === "/") continue;
      out += "\\";
      i++;
      tok = chars[i] ?? "";
      if (tok !== "*" && tok !== "?" && tok !== "\\") {
        throw new LexFailure(`invalid pattern (${pattern}) in substitution: invalid escape '\\${tok}'`);
      }
    } else if ("[]{}.+()|^$".includes(tok)) {
      out += "\\";
    }
    out += tok;
  }
  return new RegExp(out, global ? "gu" : "u");
}

function trimPrefix(pattern: string, value: string, greedy: boolean): string {
  const m = shellPatternToRegExp(pattern, greedy, true, false).exec(value);
  return m === null ? value : value.slice(m[0].length);
}

/** Regular expressions find the leftmost match only, so the shortest suffix is the reversed shortest prefix. */
function trimSuffix(pattern: string, value: string, greedy: boolean): string {
  return reverse(trimPrefix(reversePattern(pattern), reverse(value), greedy));
}

const reverse = (s: string): string => Array.from(s).reverse().join("");

/** Reverses a pattern keeping each escape before the character it escapes: `a\*c` → `c\*a`. */
function reversePattern(pattern: string): string {
  const chars = Array.from(pattern);
  const out: string[] = new Array(chars.length);
  const last = chars.length - 1;
  for (let i = 0; i <= last; ) {
    const tok = chars[i]!;
    const o = last - i;
    if (tok === "\\" && i !== last) {
      out[o - 1] = tok;
      out[o] = chars[i + 1]!;
      i += 2;
    } else {
      out[o] = tok;
      i++;
    }
  }
  return out.join("");
}

/**
 * Go's Regexp.ReplaceAllString treats `$0`/`${0}` as the match, other `$name` as an (absent, so empty)
 * group, `$$` as `$`, and a `$` not followed by a name as itself.
 */
function expandGoTemplate(template: string, whole: string): string {
  let out = "";
  let rest = template;
  for (;;) {
    const i = rest.indexOf("$");
    if (i < 0) return out + rest;
    out += rest.slice(0, i);
    rest = rest.slice(i + 1);
    if (rest.startsWith("$")) {
      out += "$";
      rest = rest.slice(1);
      continue;
    }
    const m = /^(?:\{(\w+)\}|(\w+))/.exec(rest);
    if (m === null) {
      out += "$";
      continue;
    }
    const name = m[1] ?? m[2]!;
    rest = rest.slice(m[0].length);
    if (/^\d+$/.test(name) && Number(name) === 0) out += whole;
  }
}
