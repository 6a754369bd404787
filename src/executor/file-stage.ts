import { InvalidInputError } from "../errors.ts";
import { appendLayers, type Image, type Layer } from "../oci/image.ts";
import type { ContainerConfig, History } from "../oci/image-config.ts";
import type { LayerEntry } from "../oci/layer-entry.ts";
import { whiteoutEntry } from "../oci/whiteout.ts";
import type { Stage, Step } from "../plan/plan.ts";
import type { BuildContext } from "./context.ts";
import { planContextCopy } from "./copy.ts";
import { indexLayers } from "./image-index.ts";
import type { ImageTree } from "./image-tree.ts";

/** Turns a list of entries into a layer file (compressed, digested). Injected so stages stay testable. */
export type LayerWriter = (entries: readonly LayerEntry[]) => Promise<Layer>;

export interface StageInputs {
  readonly base: Image;
  readonly context: BuildContext;
  readonly writeLayer: LayerWriter;
  /** ISO time recorded in history and the config's `created`. */
  readonly created: string;
}

/**
 * Runs a file-only stage: every step's layer is computed from the plan, the context and the base image's
 * file tree, without unpacking a root filesystem. RUN needs a container and is refused here with its line.
 */
export async function buildFileOnlyStage(stage: Stage, inputs: StageInputs): Promise<Image> {
  const tree = await indexLayers(inputs.base.layers);
  let image = inputs.base;
  const history: History[] = [...(image.config.history ?? [])];
  for (const step of stage.steps) {
    const entries = entriesOf(step, inputs.context, tree, workdirOf(image));
    if (entries === undefined) {
      history.push({ created: inputs.created, created_by: step.createdBy, empty_layer: true });
      continue;
    }
    const layer = await inputs.writeLayer(entries);
    for (const e of entries) tree.apply(e.path, e);
    image = appendLayers(image, layer);
    history.push({ created: inputs.created, created_by: step.createdBy });
  }
  const config = mergeConfig(image.config.config ?? {}, stage.config);
  return { ...image, config: { ...image.config, created: inputs.created, config, history } };
}

function workdirOf(image: Image): string {
  return image.config.config?.WorkingDir || "/";
}

function entriesOf(
  step: Step,
  ctx: BuildContext,
  tree: ImageTree,
  workdir: string,
): LayerEntry[] | undefined {
  switch (step.kind) {
    case "copy":
      return step.ops.flatMap((op) => {
        if (op.from.kind !== "context") {
          throw new InvalidInputError(
            `${where(step)}copying from ${op.from.kind} is not supported in file-only builds yet`,
          );
        }
        return planContextCopy(op, ctx, tree, workdir);
      });
    case "delete":
      return step.paths.map((p) => whiteoutFor(p, tree, step));
    case "run":
      throw new InvalidInputError(`${where(step)}RUN needs a container; this build runs file-only steps`);
    case "mkdir":
    case "config":
      return undefined;
  }
}

function whiteoutFor(path: string, tree: ImageTree, step: Step): LayerEntry {
  const parent = tree.resolve(path.replace(/\/[^/]*\/?$/, "") || "/");
  const name = path.replace(/\/$/, "").split("/").pop()!;
  const target = parent === "" ? name : `${parent}/${name}`;
  if (tree.get(target) === undefined)
    throw new InvalidInputError(`${where(step)}cannot delete ${path}: it is not in the image`);
  return whiteoutEntry(target);
}

function where(step: Step): string {
  return step.line !== undefined ? `line ${step.line}: ` : "";
}

/**
 * Merges a stage's config over its base's: Env by name, maps key by key, other fields replaced when set,
 * and removed when the change sets them to null (a new ENTRYPOINT drops the base's CMD).
 */
export function mergeConfig(base: ContainerConfig, change: ContainerConfig): ContainerConfig {
  const out: ContainerConfig = { ...base };
  for (const [k, v] of Object.entries(change) as [keyof ContainerConfig, unknown][]) {
    if (k === "Env") out.Env = mergeEnv(base.Env ?? [], (v as string[]) ?? []);
    else if ((k === "Labels" || k === "ExposedPorts" || k === "Volumes") && v !== null) {
      (out as Record<string, unknown>)[k] = {
        ...((base[k] as object | null | undefined) ?? {}),
        ...(v as object),
      };
    } else if (v === null) delete out[k];
    else (out as Record<string, unknown>)[k] = v;
  }
  return out;
}

function mergeEnv(base: readonly string[], change: readonly string[]): string[] {
  const env = new Map(base.map((e) => [e.split("=", 1)[0]!, e]));
  for (const e of change) env.set(e.split("=", 1)[0]!, e);
  return [...env.values()];
}
