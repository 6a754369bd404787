import { z } from "zod";
import { InvalidInputError } from "../errors.ts";
import { DigestSchema } from "../oci/digest.ts";

/**
 * What a stage pod reports to the controller: its container's termination message (DESIGN.md decision 8).
 * The kubelet keeps at most 4096 bytes of it, so the keys are short and {@link encodeStageResult} drops the
 * least useful parts first — the oldest steps, then the log's head — and never the digest or the failure.
 */

export const TERMINATION_MESSAGE_LIMIT = 4096;
const MESSAGE_LIMIT = 1024;
const LOG_LIMIT = 2048;

export const StepResultSchema = z.object({
  /** Dockerfile line of the step (layer-spec steps have none). */
  line: z.number().int().positive().optional(),
  cached: z.boolean(),
  ms: z.number().int().nonnegative(),
  /** The layer the step added: digest of the compressed blob and its size. */
  digest: DigestSchema.optional(),
  size: z.number().int().nonnegative().optional(),
});
export type StepResult = z.infer<typeof StepResultSchema>;

export const StageFailureSchema = z.object({
  /** CamelCase, as a condition's reason: StepFailed, PullFailed, PushFailed, ... */
  reason: z.string().min(1),
  message: z.string(),
  /** Dockerfile line of the failing step. */
  line: z.number().int().positive().optional(),
  /** The tail of what the failing step wrote. */
  log: z.string().optional(),
});
export type StageFailure = z.infer<typeof StageFailureSchema>;

export const StageResultSchema = z
  .object({
    /** Manifest digest of the stage's image, on success. */
    digest: DigestSchema.optional(),
    steps: z.array(StepResultSchema).default([]),
    /** How many of the first steps were left out to fit the termination message. */
    omittedSteps: z.number().int().positive().optional(),
    failure: StageFailureSchema.optional(),
  })
  .refine((r) => (r.digest === undefined) !== (r.failure === undefined), {
    message: "a stage result has either a digest or a failure",
  });
export type StageResult = z.infer<typeof StageResultSchema>;

/** The termination message for `result`, at most {@link TERMINATION_MESSAGE_LIMIT} bytes of JSON. */
export function encodeStageResult(result: StageResult): string {
  let steps = result.steps;
  let message = headBytes(result.failure?.message ?? "", MESSAGE_LIMIT);
  let log = tailBytes(result.failure?.log ?? "", LOG_LIMIT);
  const encode = () => {
    const omitted = result.steps.length - steps.length + (result.omittedSteps ?? 0);
    const failure = result.failure && {
      ...result.failure,
      reason: headBytes(result.failure.reason, 128),
      message,
      ...(result.failure.log !== undefined ? { log } : {}),
    };
    return JSON.stringify({ ...result, steps, ...(omitted > 0 ? { omittedSteps: omitted } : {}), failure });
  };
  const fits = () => Buffer.byteLength(encode()) <= TERMINATION_MESSAGE_LIMIT;
  while (!fits() && steps.length > 0) steps = steps.slice(1);
  // JSON escapes can make one byte of text cost six, so the log and message shrink by halves.
  while (!fits() && log !== "") log = tailBytes(log, Math.floor(Buffer.byteLength(log) / 2));
  while (!fits() && message !== "") message = headBytes(message, Math.floor(Buffer.byteLength(message) / 2));
  return encode();
}

/** Reads a termination message written by {@link encodeStageResult}. */
export function parseStageResult(text: string): StageResult {
  try {
    return StageResultSchema.parse(JSON.parse(text));
  } catch (err) {
    throw new InvalidInputError(`termination message is not a stage result: ${text.slice(0, 200)}`, {
      cause: err,
    });
  }
}

function headBytes(s: string, n: number): string {
  const b = Buffer.from(s);
  if (b.length <= n) return s;
  let end = n;
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--; // do not split a UTF-8 sequence
  return b.subarray(0, end).toString();
}

function tailBytes(s: string, n: number): string {
  const b = Buffer.from(s);
  if (b.length <= n) return s;
  let start = b.length - n;
  while (start < b.length && (b[start]! & 0xc0) === 0x80) start++;
  return b.subarray(start).toString();
}
