import fs from "node:fs";
import { parseArgs } from "node:util";
import { describeError, InvalidInputError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { WORKSPACE_MOUNT } from "../plan/container-layout.ts";
import { executeStage } from "./stage-executor.ts";
import { type ExecutorJob, ExecutorJobSchema, heartbeatFile, jobFile, validated } from "./workspace.ts";

/**
 * `kiln executor [--workspace DIR]`: runs the job in the workspace over the root it runs in, as the stage
 * container's main process. RUN output goes to stderr, each line with its Dockerfile line. Exit status 1
 * after a failure, which the `failed` event describes.
 */
export async function runExecutorCommand(args: readonly string[], log: Logger): Promise<number> {
  let workspace: string;
  try {
    workspace =
      parseArgs({ args: [...args], options: { workspace: { type: "string" } } }).values.workspace ??
      WORKSPACE_MOUNT;
  } catch (err) {
    throw new InvalidInputError(`${(err as Error).message}; usage: kiln executor [--workspace DIR]`, {
      cause: err,
    });
  }
  let job: ExecutorJob;
  try {
    job = validated(ExecutorJobSchema, JSON.parse(fs.readFileSync(jobFile(workspace), "utf8")));
  } catch (err) {
    throw new InvalidInputError(`${jobFile(workspace)} is not an executor job: ${describeError(err)}`, {
      cause: err,
    });
  }
  const pending = new Map<string, string>();
  const beat = () => fs.writeFileSync(heartbeatFile(workspace), "");
  beat();
  const heartbeat = setInterval(beat, 5_000);
  try {
    await executeStage(job, {
      workspace,
      log,
      onOutput: (line, stream, chunk) => {
        // Whole lines, each with its step's line, so interleaved stdout and stderr stay readable.
        const key = `${line}:${stream}`;
        const text = (pending.get(key) ?? "") + chunk.toString();
        const end = text.lastIndexOf("\n");
        pending.set(key, end === -1 ? text : text.slice(end + 1));
        if (end === -1) return;
        const prefix = line === undefined ? "[run] " : `[line ${line}] `;
        process.stderr.write(
          text
            .slice(0, end)
            .split("\n")
            .map((l) => `${prefix}${l}\n`)
            .join(""),
        );
      },
    });
    return 0;
  } catch {
    // The failed event describes it; whoever started the executor reports it once, with its line.
    return 1;
  } finally {
    clearInterval(heartbeat);
  }
}
