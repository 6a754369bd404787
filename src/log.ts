import { type Logger, pino } from "pino";

/**
 * Paths pino censors in every log line, fixed at start so no child logger can forget them.
 * Credentials travel as headers, docker config `auth` fields and passwords; none of them may reach a log.
 */
export const REDACT_PATHS = [
  "*.authorization",
  "*.Authorization",
  "*.password",
  "*.auth",
  "*.token",
  "*.identitytoken",
  "*.headers.authorization",
  "headers.authorization",
];

export function createLogger(level: string, destination: NodeJS.WritableStream = process.stderr): Logger {
  return pino(
    { level, redact: { paths: REDACT_PATHS, censor: "[redacted]" }, base: { app: "kiln" } },
    destination as pino.DestinationStream,
  );
}
export type { Logger };
