import { DockerfileError, describeError } from "../errors.ts";
import type { ContainerConfig, ImageConfig } from "../oci/image-config.ts";
import { formatPlatform, hostPlatform, parsePlatform } from "../oci/platform.ts";
import { parseReference } from "../oci/reference.ts";
import type { BuildPlan, Stage as PlanStage } from "../plan/plan.ts";
import { configDelta, StageCompiler, type StageLinks, scratchConfig } from "./compile-stage.ts";
import { expandInstruction } from "./expand.ts";
import { parseDockerfile } from "./parser.ts";
import type { Env } from "./shell-lex.ts";
import {
  neededStages,
  platformArgs,
  type ResolvedFrom,
  resolveFroms,
  resolveGlobalArgs,
} from "./stage-resolution.ts";
import { type Stage, type StageSplit, splitStages } from "./stages.ts";

/** The config of an image (`FROM` base or `COPY --from` image) for an `os/arch[/variant]` platform. */
export type ImageConfigResolver = (ref: string, platform: string) => Promise<ImageConfig>;

export interface CompileOptions {
  readonly buildArgs?: Readonly<Record<string, string>>;
  /** The stage to build (name, case-insensitive); the last stage when absent. */
  readonly target?: string;
  /** Platforms to build for; the host's when empty. */
  readonly platforms?: readonly string[];
  /** The platform the build runs on (BUILDPLATFORM and friends); the host's when absent. */
  readonly buildPlatform?: string;
  /** Layer mtimes and creation time, seconds since the epoch. */
  readonly timestamp?: number;
  readonly resolveImageConfig: ImageConfigResolver;
}

/**
 * Compiles a Dockerfile into a BuildPlan as BuildKit's dockerfile2llb reads it: global ARGs and platform
 * args scope the FROM lines, the target and the stages it needs (through FROM, `COPY --from` and
 * `RUN --mount from=`) are compiled in dependency order, every other stage is left out. Each needed stage
 * walks its base image's config (Env, WorkingDir, User, Shell, ONBUILD triggers) and then its instructions,
 * so every word is expanded with the variables in effect at its line. Errors are DockerfileErrors that name
 * the line, raised before anything is built.
 */
export async function compileDockerfile(text: string, options: CompileOptions): Promise<BuildPlan> {
  const dockerfile = parseDockerfile(text);
  const split = splitStages(dockerfile);
  const buildArgs: Env = new Map(Object.entries(options.buildArgs ?? {}));
  const buildPlatform = parsePlatform(options.buildPlatform ?? formatPlatform(hostPlatform()));
  const platforms = (options.platforms?.length ? options.platforms : [formatPlatform(hostPlatform())]).map(
    (p) => formatPlatform(parsePlatform(p)),
  );
  const stages: PlanStage[] = [];
  let targetName = "";
  for (const platform of platforms) {
    const predefined = platformArgs(parsePlatform(platform), buildPlatform);
    const globalScope = resolveGlobalArgs(split.globalArgs, buildArgs, predefined, dockerfile.escapeToken);
    const froms = resolveFromsWithHints(split, globalScope, dockerfile.escapeToken);
    const { target } = neededStages(split, froms, options.target);
    targetName = stageName(target);
    const run = new PlatformCompile({
      split,
      froms,
      globalScope,
      buildArgs,
      platform,
      escapeToken: dockerfile.escapeToken,
      resolveImageConfig: options.resolveImageConfig,
    });
    await run.stage(target, []);
    stages.push(...run.compiled);
  }
  return { stages, target: targetName, platforms, timestamp: options.timestamp ?? 0 };
}

/** Plan name of a Dockerfile stage: its lower-cased name, or its index when it has none. */
export function stageName(stage: Stage): string {
  return stage.name ?? String(stage.index);
}

interface PlatformInputs {
  readonly split: StageSplit;
  readonly froms: readonly ResolvedFrom[];
  readonly globalScope: Env;
  readonly buildArgs: Env;
  readonly platform: string;
  readonly escapeToken: string;
  readonly resolveImageConfig: ImageConfigResolver;
}

/** The stages one target platform needs, compiled depth-first so that dependencies come first. */
class PlatformCompile {
  readonly compiled: PlanStage[] = [];
  readonly #in: PlatformInputs;
  /** Final config of each compiled stage, by index: a later `FROM stage` starts from it. */
  readonly #configs = new Map<number, ContainerConfig>();

  constructor(inputs: PlatformInputs) {
    this.#in = inputs;
  }

  /** Compiles `stage` after what it needs; `path` is the chain of stages waiting for it. */
  async stage(stage: Stage, path: readonly number[]): Promise<void> {
    if (this.#configs.has(stage.index)) return;
    if (path.includes(stage.index)) {
      throw new DockerfileError(
        stage.from.location.startLine,
        `circular dependency detected on stage: ${stageName(stage)}`,
      );
    }
    const inner = [...path, stage.index];
    const { base: from, platform: fromPlatform } = this.#in.froms[stage.index]!;
    const line = stage.from.location.startLine;
    const platform = fromPlatform ? normalizeFromPlatform(fromPlatform, line) : this.#in.platform;
    let baseConfig: ContainerConfig;
    let base: PlanStage["base"];
    switch (from.kind) {
      case "scratch":
        baseConfig = scratchConfig(parsePlatform(platform).os);
        base = { kind: "scratch" };
        break;
      case "stage": {
        const parent = this.#in.split.stages[from.index]!;
        await this.stage(parent, inner);
        baseConfig = this.#configs.get(from.index)!;
        base = { kind: "stage", stage: stageName(parent) };
        break;
      }
      case "image":
        baseConfig = (await this.#imageConfig(from.ref, platform, line, "FROM")).config ?? {};
        base = { kind: "image", image: from.ref };
        break;
    }
    const links: StageLinks = {
      stageRef: async (ref, at) => {
        const dep = findStageRef(this.#in.split, ref, at);
        if (dep === undefined) return undefined;
        if (dep.index === stage.index) {
          throw new DockerfileError(at, `stage ${stageName(stage)} cannot copy from itself`);
        }
        await this.stage(dep, inner);
        return stageName(dep);
      },
      imageRef: async (ref, at) => {
        await this.#imageConfig(ref, platform, at, "COPY --from");
      },
    };
    const compiler = new StageCompiler({
      baseConfig,
      globalScope: this.#in.globalScope,
      buildArgs: this.#in.buildArgs,
      escapeToken: this.#in.escapeToken,
      links,
    });
    await compiler.onBuildTriggers(baseConfig.OnBuild ?? [], line);
    for (const ins of stage.instructions) await compiler.instruction(ins);
    const config = compiler.config();
    this.#configs.set(stage.index, config);
    this.compiled.push({
      name: stageName(stage),
      base,
      platform,
      ...(platform !== this.#in.platform ? { buildFor: this.#in.platform } : {}),
      steps: compiler.steps,
      config: configDelta(baseConfig, config),
      ...(compiler.author !== undefined ? { author: compiler.author } : {}),
    });
  }

  async #imageConfig(ref: string, platform: string, line: number, what: string): Promise<ImageConfig> {
    try {
      parseReference(ref);
    } catch (err) {
      throw new DockerfileError(line, `${what} ${ref}: ${describeError(err)}`, { cause: err });
    }
    try {
      return await this.#in.resolveImageConfig(ref, platform);
    } catch (err) {
      throw new DockerfileError(line, `${what} ${ref}: ${describeError(err)}`, { cause: err });
    }
  }
}

/**
 * `COPY --from=` and `RUN --mount from=`: a stage by name (any case) or index, or else an image. An index
 * that is no stage is an error rather than an image named by digits.
 */
function findStageRef(split: StageSplit, ref: string, line: number): Stage | undefined {
  const lower = ref.toLowerCase();
  const named = split.stages.find((s) => s.name === lower);
  if (named !== undefined) return named;
  if (!/^\d+$/.test(ref)) return undefined;
  const byIndex = split.stages[Number(ref)];
  if (byIndex === undefined) {
    throw new DockerfileError(
      line,
      `--from=${ref}: there is no stage with index ${ref} (the Dockerfile has ${split.stages.length})`,
    );
  }
  return byIndex;
}

function normalizeFromPlatform(p: string, line: number): string {
  try {
    return formatPlatform(parsePlatform(p));
  } catch (err) {
    throw new DockerfileError(line, `FROM --platform=${p}: ${describeError(err)}`, { cause: err });
  }
}

/**
 * resolveFroms, with the variables a FROM line used but nobody defined named in its error, and every image
 * reference checked: an undefined ARG in FROM is the usual reason for `busybox:` or an empty name.
 */
function resolveFromsWithHints(split: StageSplit, scope: Env, escapeToken: string): ResolvedFrom[] {
  const unsetIn = (line: number | undefined): string => {
    const stage = split.stages.find((s) => s.from.location.startLine === line);
    if (stage === undefined) return "";
    const { unset } = expandInstruction(stage.from, scope, escapeToken);
    if (unset.size === 0) return "";
    const names = [...unset].join(", ");
    return ` (${names} ${unset.size === 1 ? "is" : "are"} not defined: declare ${unset.size === 1 ? "it" : "them"} with ARG before the first FROM or pass --build-arg)`;
  };
  let froms: ResolvedFrom[];
  try {
    froms = resolveFroms(split, scope, escapeToken);
  } catch (err) {
    if (err instanceof DockerfileError) {
      throw new DockerfileError(err.line, `${err.detail}${unsetIn(err.line)}`, { cause: err });
    }
    throw err;
  }
  for (const [i, f] of froms.entries()) {
    if (f.base.kind !== "image") continue;
    const line = split.stages[i]!.from.location.startLine;
    try {
      parseReference(f.base.ref);
    } catch (err) {
      throw new DockerfileError(line, `FROM ${f.base.ref}: ${describeError(err)}${unsetIn(line)}`, {
        cause: err,
      });
    }
  }
  return froms;
}
