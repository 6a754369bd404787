import { z } from "zod";

/** Settings that come from the environment. The only module that reads `process.env`. */
const ConfigSchema = z.object({
  LOG_LEVEL: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"),
  /** Default layer mtime for reproducible builds (seconds since the epoch), as in reproducible-builds.org. */
  SOURCE_DATE_EPOCH: z.coerce.number().int().nonnegative().optional(),
});
export type Config = z.infer<typeof ConfigSchema>;

export const loadConfig = (env: NodeJS.ProcessEnv = process.env): Config => ConfigSchema.parse(env);
