import { Writable } from "node:stream";
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

export type LogFormat = "json" | "text";

/** The root logger. `json` for the controller and pods (one object a line); `text` for people at a terminal. */
export function createLogger(
  level: string,
  destination: NodeJS.WritableStream = process.stderr,
  format: LogFormat = "json",
): Logger {
  const out = format === "text" ? textDestination(destination) : destination;
  return pino(
    { level, redact: { paths: REDACT_PATHS, censor: "[redacted]" }, base: { app: "kiln" } },
    out as pino.DestinationStream,
  );
}

const LEVELS: Readonly<Record<number, string>> = {
  10: "trace",
  20: "debug",
  30: "info",
  40: "warn",
  50: "error",
  60: "fatal",
};
const HIDDEN = new Set(["level", "time", "app", "msg", "pid", "hostname"]);

/** Renders pino's JSON lines as `kiln: message key=value …` after redaction has run. */
function textDestination(destination: NodeJS.WritableStream): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString("utf8").split("\n")) {
        if (line === "") continue;
        const o = JSON.parse(line) as Record<string, unknown>;
        const level = (o.level as number) >= 40 ? `${LEVELS[o.level as number]}: ` : "";
        const fields = Object.entries(o)
          .filter(([k]) => !HIDDEN.has(k))
          .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`);
        destination.write(`kiln: ${level}${o.msg ?? ""}${fields.length > 0 ? ` ${fields.join(" ")}` : ""}\n`);
      }
      done();
    },
  });
}

export type { Logger };
