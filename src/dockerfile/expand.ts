import { DockerfileError } from "../errors.ts";
import type { InlineFile, Instruction, KeyValue, RunInstruction } from "./ast.ts";
import { type RunMount, resolveMount } from "./run-mount.ts";
import { type Env, type Expansion, expandWord } from "./shell-lex.ts";

/**
 * The builder's variable expansion, per instruction as BuildKit's dockerfile2llb applies it: ADD, COPY, ENV,
 * EXPOSE, FROM, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR and ARG defaults are expanded, as are RUN --mount
 * values and the bodies of unquoted COPY/ADD heredocs. RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK, ONBUILD
 * and MAINTAINER are left to the shell or to the child build. `COPY --from` never expands.
 */
export interface Expanded<I extends Instruction> {
  readonly instruction: I;
  /** Variables the instruction referenced that were set: what a cache key must include. */
  readonly used: ReadonlySet<string>;
  /** Variables it referenced that were not set (expanded to empty). */
  readonly unset: ReadonlySet<string>;
}

/**
 * Expands `instruction` against `env`, the variables in effect before it (for ENV, every pair sees the
 * values from before the instruction, not the pairs before it on the same line).
 */
export function expandInstruction<I extends Instruction>(
  instruction: I,
  env: Env,
  escapeToken: string,
): Expanded<I> {
  const x = new Expander(env, escapeToken, instruction.location.startLine);
  const ins: Instruction = instruction;
  let out: Instruction;
  switch (ins.kind) {
    case "ENV":
    case "LABEL":
      out = {
        ...ins,
        pairs: ins.pairs.map((p): KeyValue => ({ key: x.word(p.key), value: x.word(p.value) })),
      };
      break;
    case "ARG":
      out = {
        ...ins,
        args: ins.args.map((a) => ({
          key: a.key,
          value: a.value === undefined ? undefined : x.word(a.value),
        })),
      };
      break;
    case "FROM":
      out = {
        ...ins,
        image: x.word(ins.image),
        platform: ins.platform === undefined ? undefined : x.word(ins.platform),
      };
      break;
    case "COPY":
    case "ADD": {
      const common = {
        chown: x.optional(ins.chown),
        sources: ins.sources.map((s) => x.word(s)),
        dest: x.word(ins.dest),
        inlineFiles: ins.inlineFiles.map((f) => x.inlineFile(f)),
      };
      out =
        ins.kind === "COPY"
          ? { ...ins, ...common }
          : { ...ins, ...common, checksum: x.optional(ins.checksum) };
      break;
    }
    case "EXPOSE":
      out = { ...ins, ports: ins.ports.flatMap((p) => x.words(p)) };
      break;
    case "VOLUME":
      out = { ...ins, volumes: ins.volumes.map((v) => x.word(v)) };
      break;
    case "USER":
      out = { ...ins, user: x.word(ins.user) };
      break;
    case "WORKDIR":
      out = { ...ins, path: x.word(ins.path) };
      break;
    case "STOPSIGNAL":
      out = { ...ins, signal: x.word(ins.signal) };
      break;
    default:
      out = ins;
  }
  return { instruction: out as I, used: x.used, unset: x.unset };
}

/** RUN --mount values expanded and checked. */
export function expandRunMounts(
  run: RunInstruction,
  env: Env,
  escapeToken: string,
): {
  readonly mounts: readonly RunMount[];
  readonly used: ReadonlySet<string>;
  readonly unset: ReadonlySet<string>;
} {
  const x = new Expander(env, escapeToken, run.location.startLine);
  const mounts = run.mounts.map((spec) => {
    const m = resolveMount(spec, (v) => x.word(v));
    if (typeof m === "string") throw new DockerfileError(run.location.startLine, m);
    return m;
  });
  return { mounts, used: x.used, unset: x.unset };
}

class Expander {
  readonly used = new Set<string>();
  readonly unset = new Set<string>();
  private readonly env: Env;
  private readonly escapeToken: string;
  private readonly line: number;

  constructor(env: Env, escapeToken: string, line: number) {
    this.env = env;
    this.escapeToken = escapeToken;
    this.line = line;
  }

  word(w: string): string {
    return this.run(w, { escapeToken: this.escapeToken }).result;
  }

  words(w: string): readonly string[] {
    return this.run(w, { escapeToken: this.escapeToken }).words;
  }

  optional(w: string | undefined): string | undefined {
    return w === undefined ? undefined : this.word(w);
  }

  /** Heredoc bodies: only `$` and `\` are special; quotes belong to the file. */
  inlineFile(f: InlineFile): InlineFile {
    if (!f.expand) return f;
    return { ...f, data: this.run(f.data, { escapeToken: "\\", skipProcessQuotes: true }).result };
  }

  private run(w: string, options: Parameters<typeof expandWord>[2]): Expansion {
    let r: Expansion;
    try {
      r = expandWord(w, this.env, options);
    } catch (err) {
      if (err instanceof DockerfileError) throw new DockerfileError(this.line, err.detail, { cause: err });
      throw err;
    }
    for (const v of r.matched) this.used.add(v);
    for (const v of r.unmatched) this.unset.add(v);
    return r;
  }
}
