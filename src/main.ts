import { describeError, KilnError } from "./errors.ts";

const USAGE = `usage: kiln <command> [options]

commands:
  build       build an image locally from a layer spec or a Dockerfile
  version     print kiln's version`;

async function main(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "version":
      process.stdout.write("kiln 0.1.0\n");
      return 0;
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(`${USAGE}\n`);
      return command === undefined ? 2 : 0;
    default:
      void rest;
      process.stderr.write(`kiln: unknown command ${JSON.stringify(command)}\n${USAGE}\n`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const code = err instanceof KilnError ? err.code : "KILN_ERR_INTERNAL";
    process.stderr.write(`kiln: ${describeError(err)} (${code})\n`);
    if (!(err instanceof KilnError) && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    process.exitCode = 1;
  },
);
