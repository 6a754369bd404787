import { enableCompileCache } from "node:module";
import { parseArgs } from "node:util";
import { loadConfig } from "./config.ts";
import { describeError, InvalidInputError, KilnError } from "./errors.ts";
import { createLogger } from "./log.ts";

const USAGE = `usage: kiln <command> [options]

commands:
  build       build an image locally from a layer spec or a Dockerfile
  controller  reconcile ImageBuilds into build pods (kubeconfig or in-cluster config)
  stage       run one unit of a build inside its pod: stage plan | build | prepare | push | index
  executor    run a stage's steps in the root it runs in (inside a stage container)
  crd         write the ImageBuild CustomResourceDefinition (--output DIR; default crds and charts/kiln/crds)
  context     push DIR REF: upload a build context as an OCI artifact for spec.source.oci
  version     print kiln's version`;

// Commands are imported when run. `kiln build` on a host first enables Node's on-disk cache of compiled
// (type-stripped) code, which takes most of a short build's start-up time away. Nothing else does: the
// executor runs inside a base image's root and must not write a cache into it (NODE_COMPILE_CACHE, which
// Node reads itself, can point such processes at a volume).

async function main(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "version":
      process.stdout.write("kiln 0.1.0\n");
      return 0;
    case "build": {
      enableCompileCache();
      const config = loadConfig();
      const { runBuild } = await import("./cli/build-command.ts");
      return runBuild(rest, config, createLogger(config.LOG_LEVEL, process.stderr, "text"));
    }
    case "controller": {
      const config = loadConfig();
      const { runControllerCommand } = await import("./controller/controller-command.ts");
      return runControllerCommand(rest, config, createLogger(config.LOG_LEVEL));
    }
    case "stage": {
      const config = loadConfig();
      const { runStageCommand } = await import("./pusher/stage-command.ts");
      return runStageCommand(rest, createLogger(config.LOG_LEVEL));
    }
    case "executor": {
      const config = loadConfig();
      const { runExecutorCommand } = await import("./executor/executor-command.ts");
      return runExecutorCommand(rest, createLogger(config.LOG_LEVEL, process.stderr, "text"));
    }
    case "context": {
      const config = loadConfig();
      const { runContextCommand } = await import("./cli/context-command.ts");
      return runContextCommand(rest, createLogger(config.LOG_LEVEL, process.stderr, "text"));
    }
    case "crd":
      return crdCommand(rest);
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(`${USAGE}\n`);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`kiln: unknown command ${JSON.stringify(command)}\n${USAGE}\n`);
      return 2;
  }
}

/** `kiln crd [--output DIR]`: writes the ImageBuild CRD generated from src/api and prints its path. */
async function crdCommand(args: readonly string[]): Promise<number> {
  let output: string | undefined;
  try {
    output = parseArgs({ args: [...args], options: { output: { type: "string", short: "o" } } }).values
      .output;
  } catch (err) {
    throw new InvalidInputError(`${(err as Error).message}; usage: kiln crd [--output DIR]`, { cause: err });
  }
  const { writeCrd } = await import("./api/crd.ts");
  // A Helm chart carries its CRDs inside its own folder: the chart's copy is written with crds/ (a test
  // compares them), so neither goes stale.
  for (const dir of output !== undefined ? [output] : ["crds", "charts/kiln/crds"])
    process.stdout.write(`${await writeCrd(dir)}\n`);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`kiln: ${describeError(err)} (${errorCode(err)})\n`);
    // A stack helps only with kiln's own bugs, not with a missing file or a refused permission.
    if (errorCode(err) === "KILN_ERR_INTERNAL" && err instanceof Error)
      process.stderr.write(`${err.stack}\n`);
    process.exitCode = 1;
  },
);

function errorCode(err: unknown): string {
  if (err instanceof KilnError) return err.code;
  const sys = err as NodeJS.ErrnoException;
  return typeof sys?.code === "string" && typeof sys.syscall === "string"
    ? "KILN_ERR_IO"
    : "KILN_ERR_INTERNAL";
}
