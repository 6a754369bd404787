import { z } from "zod";

/** metav1.Condition, the shape the API conventions give every status condition. */
export const ConditionSchema = z
  .object({
    type: z
      .string()
      .max(316)
      .regex(
        /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/,
      )
      .describe("Type of the condition: Succeeded or Ready."),
    status: z.enum(["True", "False", "Unknown"]).describe("True, False or Unknown."),
    observedGeneration: z
      .number()
      .int()
      .nonnegative()
      .optional()
      .describe("The metadata.generation the condition was set for."),
    lastTransitionTime: z.iso.datetime().describe("When the status last changed."),
    reason: z
      .string()
      .min(1)
      .max(1024)
      .regex(/^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$/)
      .describe("CamelCase reason for the last transition, for programs."),
    message: z.string().max(32768).describe("Details of the last transition, for a person."),
  })
  .describe("One aspect of the build's state, as metav1.Condition.");
export type Condition = z.infer<typeof ConditionSchema>;

export const ConditionType = {
  /** True when the image is pushed, False when the build failed, Unknown while it runs (as Tekton and kpack). */
  Succeeded: "Succeeded",
  /** True when the image is there to use; the same as Succeeded=True, for tools that wait on Ready. */
  Ready: "Ready",
} as const;
export type ConditionType = (typeof ConditionType)[keyof typeof ConditionType];

/**
 * Returns the conditions with `next` in place of the one of its type (appended when new). The order is kept
 * and `lastTransitionTime` moves only when the status changes, so setting the same condition again gives an
 * equal list and the status is not written.
 */
export function setCondition(
  all: readonly Condition[],
  next: Omit<Condition, "lastTransitionTime">,
  now: Date,
): Condition[] {
  const prev = all.find((c) => c.type === next.type);
  const lastTransitionTime = prev?.status === next.status ? prev.lastTransitionTime : now.toISOString();
  const condition = { ...next, lastTransitionTime };
  return prev === undefined ? [...all, condition] : all.map((c) => (c === prev ? condition : c));
}
