import { z } from "zod";
import { describeIssues, InvalidInputError } from "./errors.ts";

/** Settings that come from the environment. The only module that reads `process.env`. */
const ConfigSchema = z.object({
  LOG_LEVEL: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"),
  /** Default layer mtime for reproducible builds (seconds since the epoch), as in reproducible-builds.org. */
  SOURCE_DATE_EPOCH: z.coerce.number().int().nonnegative().optional(),
  /** `kiln controller`: a kubeconfig file; otherwise the pod's service account at the address below. */
  KUBECONFIG: z.string().min(1).optional(),
  KUBERNETES_SERVICE_HOST: z.string().min(1).optional(),
  KUBERNETES_SERVICE_PORT: z.string().min(1).optional(),
});
export type Config = z.infer<typeof ConfigSchema>;

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = ConfigSchema.safeParse(env);
  if (!parsed.success) {
    throw new InvalidInputError(`invalid environment:\n${describeIssues(parsed.error.issues)}`);
  }
  return parsed.data;
}
