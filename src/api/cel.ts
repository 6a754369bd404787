import { z } from "zod";

/**
 * A Kubernetes validation rule (`x-kubernetes-validations`): a CEL expression the API server evaluates with
 * `self` bound to the value, and the message a person reads when it is false.
 */
export interface CelRule {
  readonly rule: string;
  readonly message: string;
  /** Where the API server reports the error, relative to the value, such as `.path`. */
  readonly fieldPath?: string;
}

export const VALIDATIONS_KEY = "x-kubernetes-validations";

/** The CEL rules attached to a schema by {@link withRule}. */
export function celRulesOf(schema: z.core.$ZodType): readonly CelRule[] {
  const rules = z.globalRegistry.get(schema)?.[VALIDATIONS_KEY];
  return Array.isArray(rules) ? (rules as CelRule[]) : [];
}

/**
 * One cross-field rule, written twice in one place: as CEL for the API server and as `check` for zod, with
 * the same message, so `kubectl apply` and `kiln build` refuse the same spec in the same words.
 */
export function withRule<T extends z.ZodType>(
  schema: T,
  rule: CelRule,
  check: (value: z.output<T>) => boolean,
): T {
  const path = rule.fieldPath?.split(".").filter((p) => p !== "");
  // Metadata first: the refined schema inherits it, so no schema in the chain has a check without its rule.
  const described = schema.meta({
    ...z.globalRegistry.get(schema),
    [VALIDATIONS_KEY]: [...celRulesOf(schema), rule],
  });
  return described.refine(check, { message: rule.message, ...(path ? { path } : {}) }) as T;
}

/** A CEL string literal holding `s`; CEL's escapes are JSON's. */
export function celString(s: string): string {
  return JSON.stringify(s);
}
