import { readFile } from "node:fs/promises";
import { parse as parseYaml } from "yaml";
import { describeIssues, InvalidInputError, NotFoundError } from "../errors.ts";
import { type LayerSpec, LayerSpecSchema } from "./spec.ts";

/** Reads a layer spec file (YAML or JSON) and validates it; every problem is listed with where it is. */
export async function loadLayerSpec(file: string): Promise<LayerSpec> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new NotFoundError(`cannot read spec ${file}: ${(err as NodeJS.ErrnoException).code ?? err}`, {
      cause: err,
    });
  }
  let doc: unknown;
  try {
    doc = parseYaml(text, { prettyErrors: true });
  } catch (err) {
    throw new InvalidInputError(`${file}: not valid YAML: ${(err as Error).message}`, { cause: err });
  }
  const parsed = LayerSpecSchema.safeParse(doc ?? {});
  if (!parsed.success)
    throw new InvalidInputError(`${file}: invalid spec:\n${describeIssues(parsed.error.issues)}`);
  return parsed.data;
}
