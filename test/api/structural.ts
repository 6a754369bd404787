/**
 * The rules the API server applies to a CRD's openAPIV3Schema (apiextensions-apiserver's structural schema
 * and v1 CRD validation), checked without a server so a broken generator fails in a unit test.
 */
type Schema = { [key: string]: unknown };

const TYPES = new Set(["object", "array", "string", "integer", "number", "boolean"]);
const FORBIDDEN = ["$ref", "$schema", "$defs", "definitions", "id", "dependencies", "patternProperties"];
const FORBIDDEN_MORE = ["additionalItems", "const", "propertyNames", "oneOf", "if", "then", "else"];
const JUNCTORS = ["allOf", "anyOf", "oneOf", "not"];
const NOT_IN_JUNCTORS = ["description", "type", "default", "additionalProperties", "nullable"];

export function structuralViolations(root: Schema): string[] {
  const out: string[] = [];
  if (root["type"] !== "object") out.push("<root>: type must be object");
  const props = (root["properties"] ?? {}) as Record<string, Schema>;
  const metadata = props["metadata"];
  if (metadata !== undefined && JSON.stringify(metadata) !== '{"type":"object"}') {
    out.push("metadata: only name and generateName may be restricted; kiln restricts nothing");
  }
  walk(root, "", out, false);
  return out;
}

/** `field` is true for an object's properties: those are what `kubectl explain` describes. */
function walk(node: Schema, path: string, out: string[], field: boolean): void {
  const at = path || "<root>";
  const intOrString = node["x-kubernetes-int-or-string"] === true;
  const preserve = node["x-kubernetes-preserve-unknown-fields"] === true;
  if (node["type"] === undefined) {
    if (!intOrString && !preserve) out.push(`${at}: type is missing`);
  } else if (!TYPES.has(node["type"] as string))
    out.push(`${at}: unknown type ${JSON.stringify(node["type"])}`);
  for (const k of [...FORBIDDEN, ...FORBIDDEN_MORE]) if (k in node) out.push(`${at}: ${k} is not allowed`);
  if (node["uniqueItems"] === true) out.push(`${at}: uniqueItems: true is forbidden (quadratic)`);
  if (node["additionalProperties"] === false) out.push(`${at}: additionalProperties: false is not allowed`);
  if (node["properties"] !== undefined && node["additionalProperties"] !== undefined) {
    out.push(`${at}: properties and additionalProperties are mutually exclusive`);
  }
  if (field && path !== "metadata" && typeof node["description"] !== "string") {
    out.push(`${at}: description is missing`);
  }
  checkJunctors(node, at, intOrString, out);
  checkEnum(node, at, out);
  checkRules(node, at, out);
  checkListType(node, at, out);

  if (node["type"] === "array") {
    const items = node["items"];
    if (typeof items !== "object" || items === null || Array.isArray(items)) {
      out.push(`${at}: an array needs one items schema`);
    } else walk(items as Schema, `${path}[]`, out, false);
  }
  if (node["type"] === "object" && !preserve) {
    const props = node["properties"] as Record<string, Schema> | undefined;
    const additional = node["additionalProperties"];
    if (props === undefined && additional === undefined && path !== "metadata") {
      out.push(
        `${at}: an object needs properties or additionalProperties (or x-kubernetes-preserve-unknown-fields)`,
      );
    }
    for (const [name, p] of Object.entries(props ?? {})) walk(p, path ? `${path}.${name}` : name, out, true);
    if (typeof additional === "object" && additional !== null) {
      walk(additional as Schema, `${path}[*]`, out, false);
    }
    for (const r of (node["required"] as string[] | undefined) ?? []) {
      if (props !== undefined && !(r in props)) out.push(`${at}: required field ${r} is not a property`);
    }
  }
  if (node["default"] !== undefined) checkDefault(node["default"], node, at, out);
}

function checkJunctors(node: Schema, at: string, intOrString: boolean, out: string[]): void {
  for (const j of JUNCTORS) {
    const value = node[j];
    if (value === undefined) continue;
    if (intOrString && j === "anyOf" && JSON.stringify(value) === '[{"type":"integer"},{"type":"string"}]')
      continue;
    const branches = (Array.isArray(value) ? value : [value]) as Schema[];
    for (const b of branches) {
      for (const k of NOT_IN_JUNCTORS) if (k in b) out.push(`${at}: ${j} must not set ${k}`);
    }
  }
}

function checkEnum(node: Schema, at: string, out: string[]): void {
  const values = node["enum"];
  if (values === undefined) return;
  const jsType = { string: "string", integer: "number", number: "number", boolean: "boolean" }[
    node["type"] as string
  ];
  for (const v of values as unknown[]) {
    if (typeof v !== jsType) out.push(`${at}: enum value ${JSON.stringify(v)} is not a ${node["type"]}`);
  }
}

function checkRules(node: Schema, at: string, out: string[]): void {
  const rules = node["x-kubernetes-validations"];
  if (rules === undefined) return;
  for (const r of rules as Schema[]) {
    if (typeof r["rule"] !== "string" || r["rule"] === "") out.push(`${at}: a validation has no rule`);
    if (typeof r["message"] !== "string" || r["message"] === "" || /[\r\n]/.test(r["message"] as string)) {
      out.push(`${at}: validation ${JSON.stringify(r["rule"])} needs a one-line message`);
    }
  }
}

function checkListType(node: Schema, at: string, out: string[]): void {
  const listType = node["x-kubernetes-list-type"];
  if (listType === undefined) return;
  const items = (node["items"] ?? {}) as Schema;
  if (listType === "set" && (items["type"] === "object" || items["type"] === "array")) {
    out.push(`${at}: a set holds scalars`);
  }
  if (listType === "map") {
    const keys = node["x-kubernetes-list-map-keys"] as string[] | undefined;
    if (keys === undefined || keys.length === 0)
      out.push(`${at}: a map list needs x-kubernetes-list-map-keys`);
    const required = (items["required"] as string[] | undefined) ?? [];
    const props = (items["properties"] ?? {}) as Record<string, Schema>;
    for (const k of keys ?? []) {
      if (!required.includes(k) && props[k]?.["default"] === undefined) {
        out.push(`${at}: map key ${k} must be required or defaulted`);
      }
    }
  }
}

function checkDefault(value: unknown, node: Schema, at: string, out: string[]): void {
  const type = node["type"];
  const ok =
    type === "array"
      ? Array.isArray(value)
      : type === "object"
        ? typeof value === "object" && value !== null && !Array.isArray(value)
        : type === "integer"
          ? Number.isInteger(value)
          : typeof value === type;
  if (!ok) out.push(`${at}: default ${JSON.stringify(value)} is not a ${type}`);
}
