import { DockerfileError } from "../errors.ts";
import type { ArgInstruction } from "./ast.ts";
import { expandInstruction } from "./expand.ts";
import type { Env } from "./shell-lex.ts";
import { findStage, type Stage, type StageSplit } from "./stages.ts";

/**
 * Build-arg scoping and stage selection as BuildKit's dockerfile2llb does them, as pure functions: the
 * global scope (predefined platform args, then the ARGs before the first FROM, build args overriding their
 * defaults), FROM resolution against it, ARG inside a stage, and the stages a target needs.
 */
export interface Platform {
  readonly os: string;
  readonly architecture: string;
  readonly variant?: string;
}

/** Passed to RUN when given as build args, without an ARG; never recorded in the image history. */
export const PROXY_ARGS: readonly string[] = [
  "HTTP_PROXY",
  "HTTPS_PROXY",
  "FTP_PROXY",
  "NO_PROXY",
  "ALL_PROXY",
].flatMap((n) => [n, n.toLowerCase()]);

const platformString = (p: Platform): string => [p.os, p.architecture, p.variant].filter(Boolean).join("/");

/** TARGETPLATFORM, TARGETOS, TARGETARCH, TARGETVARIANT and the BUILD* counterparts. */
export function platformArgs(target: Platform, build: Platform): Map<string, string> {
  const args = new Map<string, string>();
  for (const [prefix, p] of [
    ["TARGET", target],
    ["BUILD", build],
  ] as const) {
    args.set(`${prefix}PLATFORM`, platformString(p));
    args.set(`${prefix}OS`, p.os);
    args.set(`${prefix}ARCH`, p.architecture);
    args.set(`${prefix}VARIANT`, p.variant ?? "");
  }
  return args;
}

/**
 * The global scope: a global ARG's default is expanded against the scope so far; a build arg replaces it.
 * A global ARG without a value and without a build arg is declared but unset.
 */
export function resolveGlobalArgs(
  globalArgs: readonly ArgInstruction[],
  buildArgs: Env,
  predefined: Env,
  escapeToken: string,
): Map<string, string> {
  const scope = new Map(predefined);
  for (const ins of globalArgs) {
    for (const arg of ins.args) {
      const value = buildArgs.get(arg.key) ?? expandArgDefault(ins, arg.key, scope, escapeToken);
      if (value !== undefined) scope.set(arg.key, value);
    }
  }
  return scope;
}

function expandArgDefault(
  ins: ArgInstruction,
  key: string,
  env: Env,
  escapeToken: string,
): string | undefined {
  const one: ArgInstruction = { ...ins, args: ins.args.filter((a) => a.key === key) };
  return expandInstruction(one, env, escapeToken).instruction.args[0]?.value;
}

export type StageBase =
  | { readonly kind: "scratch" }
  | { readonly kind: "stage"; readonly index: number }
  | { readonly kind: "image"; readonly ref: string };

export interface ResolvedFrom {
  readonly base: StageBase;
  /** `--platform` expanded, if given. */
  readonly platform: string | undefined;
  /** Global args the FROM line used (part of the stage's cache key). */
  readonly usedArgs: ReadonlySet<string>;
}

/** Expands each FROM against the global scope; a name of an earlier stage (any case) makes it that stage. */
export function resolveFroms(split: StageSplit, globalScope: Env, escapeToken: string): ResolvedFrom[] {
  return split.stages.map((stage) => {
    const { instruction, used } = expandInstruction(stage.from, globalScope, escapeToken);
    const image = instruction.image;
    if (image === "")
      throw new DockerfileError(stage.from.location.startLine, "base name (image) cannot be empty");
    const earlier = split.stages.slice(0, stage.index).find((s) => s.name === image.toLowerCase());
    const base: StageBase =
      earlier !== undefined
        ? { kind: "stage", index: earlier.index }
        : image.toLowerCase() === "scratch"
          ? { kind: "scratch" }
          : { kind: "image", ref: image };
    return { base, platform: instruction.platform, usedArgs: used };
  });
}

/**
 * The value an `ARG` inside a stage takes: the build arg, else its default expanded against the stage's
 * variables, else (no default) the global value of the same name; undefined when none applies.
 */
export function stageArgValue(
  arg: { readonly key: string; readonly value: string | undefined },
  ins: ArgInstruction,
  scope: {
    readonly buildArgs: Env;
    readonly globalScope: Env;
    readonly stageEnv: Env;
    readonly escapeToken: string;
  },
): string | undefined {
  const given = scope.buildArgs.get(arg.key);
  if (given !== undefined) return given;
  if (arg.value !== undefined) return expandArgDefault(ins, arg.key, scope.stageEnv, scope.escapeToken);
  return scope.globalScope.get(arg.key);
}

/**
 * The target stage (by name, case-insensitive, or the last stage) and every stage it needs through FROM,
 * `COPY --from` and `RUN --mount from=`, in stage order. Other names in `--from` are images.
 */
export function neededStages(
  split: StageSplit,
  froms: readonly ResolvedFrom[],
  target?: string,
): { readonly target: Stage; readonly needed: readonly number[] } {
  const targetStage = target === undefined ? split.stages.at(-1)! : findStage(split, target);
  if (targetStage === undefined || (target !== undefined && targetStage.name !== target.toLowerCase())) {
    throw new DockerfileError(undefined, `target stage ${JSON.stringify(target)} could not be found`);
  }
  const needed = new Set<number>();
  const visit = (stage: Stage): void => {
    if (needed.has(stage.index)) return;
    needed.add(stage.index);
    const base = froms[stage.index]?.base;
    if (base?.kind === "stage") visit(split.stages[base.index]!);
    for (const ins of stage.instructions) {
      const refs =
        ins.kind === "COPY"
          ? [ins.from]
          : ins.kind === "RUN"
            ? ins.mounts.map((m) => m.fields.find(([k]) => k.toLowerCase() === "from")?.[1])
            : [];
      for (const ref of refs) {
        const dep = ref === undefined ? undefined : findStage(split, ref);
        if (dep !== undefined && dep.index !== stage.index) visit(dep);
      }
    }
  };
  visit(targetStage);
  return { target: targetStage, needed: [...needed].sort((a, b) => a - b) };
}
