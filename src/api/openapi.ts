import { z } from "zod";
import { KilnError } from "../errors.ts";
import { type CelRule, celRulesOf, celString, VALIDATIONS_KEY } from "./cel.ts";

/** An OpenAPI v3 schema as the API server reads it (JSONSchemaProps), as plain JSON. */
export type JsonSchema = { [key: string]: unknown };

/** A zod schema uses something a Kubernetes structural schema cannot say. */
export class UnrepresentableSchemaError extends KilnError {
  override readonly code = "KILN_ERR_UNREPRESENTABLE_SCHEMA";
}

const INT_OR_STRING = "x-kubernetes-int-or-string";

/**
 * Converts a zod schema into a Kubernetes structural schema: inline (no $ref), `type` on every node,
 * input defaults as `default`, cross-field refinements as the CEL rules attached next to them.
 *
 * A regex check that carries a message becomes a CEL `matches` rule with that message, so the API server
 * answers in the same words as zod, instead of quoting the pattern. CEL rules must have a bounded cost, so
 * this happens only for strings with a maximum length; unbounded strings keep a plain `pattern`.
 */
export function structuralSchemaOf(schema: z.ZodType): JsonSchema {
  const json = z.toJSONSchema(schema, {
    target: "openapi-3.0",
    io: "input",
    unrepresentable: "throw",
    cycles: "throw",
    reused: "inline",
    override: ({ zodSchema, jsonSchema, path }) => mirrorChecks(zodSchema, jsonSchema, path.join(".")),
  }) as JsonSchema;
  delete json["$schema"];
  return clean(json, "");
}

interface CheckDef {
  check: string;
  format?: string;
  pattern?: RegExp;
  error?: (issue: object) => unknown;
}

function checksOf(schema: z.core.$ZodType): CheckDef[] {
  const checks = (schema._zod.def as { checks?: { _zod: { def: CheckDef } }[] }).checks ?? [];
  return checks.map((c) => c._zod.def);
}

function mirrorChecks(schema: z.core.$ZodType, json: JsonSchema, path: string): void {
  const checks = checksOf(schema);
  if (checks.some((c) => c.check === "custom") && celRulesOf(schema).length === 0) {
    throw new UnrepresentableSchemaError(
      `${path || "the root"}: a refinement has no CEL rule; attach one with withRule`,
    );
  }
  const regexes = checks.filter((c) => c.check === "string_format" && c.format === "regex");
  const messages = regexes.map((c) => c.error?.({}));
  if (regexes.length === 0 || typeof json["maxLength"] !== "number") return;
  if (!messages.every((m): m is string => typeof m === "string")) return;
  const rules: CelRule[] = regexes.map((c, i) => ({
    rule: `self.matches(${celString(re2Source(c.pattern!))})`,
    message: messages[i]!,
  }));
  delete json["pattern"];
  delete json["allOf"];
  json[VALIDATIONS_KEY] = [...rules, ...((json[VALIDATIONS_KEY] as CelRule[] | undefined) ?? [])];
}

function re2Source(re: RegExp): string {
  if (re.flags !== "") throw new UnrepresentableSchemaError(`regex ${re} has flags; RE2 patterns have none`);
  return re.source;
}

function clean(node: JsonSchema, path: string): JsonSchema {
  if (node["additionalProperties"] === false) delete node["additionalProperties"];
  if (node["type"] === "integer") {
    if (node["minimum"] === Number.MIN_SAFE_INTEGER) delete node["minimum"];
    if (node["maximum"] === Number.MAX_SAFE_INTEGER) delete node["maximum"];
  }
  // zod spells date-time out as a regex as well; the API server checks the format itself.
  if (node["format"] === "date-time") delete node["pattern"];
  if (node[INT_OR_STRING] === true) {
    const string = (node["anyOf"] as JsonSchema[]).find((s) => s["type"] === "string");
    node["anyOf"] = [{ type: "integer" }, { type: "string" }];
    if (string?.["pattern"] !== undefined) node["pattern"] = string["pattern"];
  } else if (node["anyOf"] !== undefined || node["oneOf"] !== undefined) {
    throw new UnrepresentableSchemaError(`${path || "the root"}: unions other than int-or-string`);
  }
  const properties = node["properties"] as Record<string, JsonSchema> | undefined;
  for (const [name, p] of Object.entries(properties ?? {})) clean(p, `${path}.${name}`);
  const items = node["items"] as JsonSchema | undefined;
  if (items !== undefined) clean(items, `${path}[]`);
  const additional = node["additionalProperties"];
  if (typeof additional === "object" && additional !== null) clean(additional as JsonSchema, `${path}[*]`);
  return node;
}
