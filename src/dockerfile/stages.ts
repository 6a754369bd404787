import { DockerfileError } from "../errors.ts";
import type { ArgInstruction, Dockerfile, FromInstruction, Instruction } from "./ast.ts";

/** A build stage: its FROM and the instructions up to the next FROM. */
export interface Stage {
  /** 0-based position, what `COPY --from=0` refers to. */
  readonly index: number;
  /** Lower-cased `AS` name. */
  readonly name: string | undefined;
  readonly from: FromInstruction;
  readonly instructions: readonly Exclude<Instruction, FromInstruction>[];
}

export interface StageSplit {
  /** ARGs before the first FROM: the only variables FROM lines can use. */
  readonly globalArgs: readonly ArgInstruction[];
  readonly stages: readonly Stage[];
}

/** Splits a Dockerfile into its global ARGs and stages (BuildKit's instructions.Parse). */
export function splitStages(dockerfile: Dockerfile): StageSplit {
  const globalArgs: ArgInstruction[] = [];
  const stages: {
    index: number;
    name: string | undefined;
    from: FromInstruction;
    instructions: Stage["instructions"][number][];
  }[] = [];
  for (const ins of dockerfile.instructions) {
    if (ins.kind === "FROM") {
      if (ins.stageName !== undefined && stages.some((s) => s.name === ins.stageName)) {
        throw new DockerfileError(
          ins.location.startLine,
          `duplicate stage name ${JSON.stringify(ins.stageName)}`,
        );
      }
      stages.push({ index: stages.length, name: ins.stageName, from: ins, instructions: [] });
      continue;
    }
    const current = stages.at(-1);
    if (current !== undefined) current.instructions.push(ins);
    else if (ins.kind === "ARG") globalArgs.push(ins);
    else {
      throw new DockerfileError(
        ins.location.startLine,
        `no build stage in current context: ${ins.kind} before the first FROM (only ARG may come before it)`,
      );
    }
  }
  if (stages.length === 0) {
    throw new DockerfileError(
      dockerfile.instructions.at(-1)?.location.endLine,
      "the Dockerfile has no FROM: no stages to build",
    );
  }
  return { globalArgs, stages };
}

/** Finds a stage by name (case-insensitive) or by index as `COPY --from` and `--target` name them. */
export function findStage(split: StageSplit, ref: string): Stage | undefined {
  const lower = ref.toLowerCase();
  const byName = split.stages.find((s) => s.name === lower);
  if (byName !== undefined) return byName;
  return /^\d+$/.test(ref) ? split.stages[Number(ref)] : undefined;
}
