import { readFileSync } from "node:fs";
import { text } from "node:stream/consumers";
import { DockerfileError, describeError, InvalidInputError, isTemporary } from "../errors.ts";
import { appendLayers, type Image, type Layer } from "../oci/image.ts";
import type { ContainerConfig, History } from "../oci/image-config.ts";
import type { LayerEntry } from "../oci/layer-entry.ts";
import { whiteoutEntry } from "../oci/whiteout.ts";
import type { CopyFrom, CopyOp, Stage, Step } from "../plan/plan.ts";
import type { BuildContext } from "./context.ts";
import { planAddCopy, planBytesCopy, planContextCopy, planMkdir } from "./copy.ts";
import { download } from "./download.ts";
import { indexLayers } from "./image-index.ts";
import { ImageTree } from "./image-tree.ts";

/** Turns a list of entries into a layer file (compressed, digested). Injected so stages stay testable. */
export type LayerWriter = (entries: readonly LayerEntry[]) => Promise<Layer>;

/** The unpacked root of the stage or image a `COPY --from` names. */
export type SourceRoots = (from: Extract<CopyFrom, { kind: "stage" | "image" }>) => Promise<BuildContext>;

export interface StageInputs {
  readonly base: Image;
  readonly context: BuildContext;
  readonly writeLayer: LayerWriter;
  /** ISO time recorded in history and the config's `created`. */
  readonly created: string;
  /** Where `COPY --from` reads; without it such copies are refused. */
  readonly sourceRoots?: SourceRoots;
  /** Step errors name Dockerfile lines (`Dockerfile:LINE: ...`) rather than layer spec items. */
  readonly dockerfile?: boolean;
}

/**
 * Runs a file-only stage: every step's layer is computed from the plan, the context, the base image's
 * file tree and the roots of the stages and images it copies from, without unpacking the base. RUN needs
 * a container and is refused here with its line.
 */
export async function buildFileOnlyStage(stage: Stage, inputs: StageInputs): Promise<Image> {
  const tree = await indexLayers(inputs.base.layers);
  let image = inputs.base;
  const history: History[] = [...(image.config.history ?? [])];
  for (const step of stage.steps) {
    let entries: LayerEntry[] | undefined;
    try {
      entries = await entriesOf(step, inputs, tree);
    } catch (err) {
      throw stepError(step, err, inputs.dockerfile ?? false);
    }
    if (entries === undefined || (step.kind === "mkdir" && entries.length === 0)) {
      history.push({ created: inputs.created, created_by: step.createdBy, empty_layer: true });
      continue;
    }
    const layer = await inputs.writeLayer(entries);
    for (const e of entries) tree.apply(e.path, e, await keptContent(e));
    image = appendLayers(image, layer);
    history.push({ created: inputs.created, created_by: step.createdBy });
  }
  const config = mergeConfig(image.config.config ?? {}, stage.config);
  const author = stage.author ?? image.config.author;
  return {
    ...image,
    config: {
      ...image.config,
      created: inputs.created,
      ...(author !== undefined ? { author } : {}),
      config,
      history,
    },
  };
}

async function entriesOf(
  step: Step,
  inputs: StageInputs,
  tree: ImageTree,
): Promise<LayerEntry[] | undefined> {
  switch (step.kind) {
    case "copy": {
      const all = new Map<string, LayerEntry>();
      for (const op of step.ops) for (const e of await copyEntries(op, inputs, tree)) all.set(e.path, e);
      return [...all.values()];
    }
    case "delete":
      return step.paths.map((p) => whiteoutFor(p, tree));
    case "mkdir": {
      const owner = step.owner ? tree.resolveOwner(step.owner.user, step.owner.group) : { uid: 0, gid: 0 };
      return planMkdir(step.path, owner, tree);
    }
    case "run":
      throw new InvalidInputError("RUN needs a container; this build runs file-only steps");
    case "config":
      return undefined;
  }
}

async function copyEntries(op: CopyOp, inputs: StageInputs, tree: ImageTree): Promise<LayerEntry[]> {
  switch (op.from.kind) {
    case "context":
      return planAddCopy(op, inputs.context, tree);
    case "stage":
    case "image": {
      if (inputs.sourceRoots === undefined)
        throw new InvalidInputError(`copying from ${op.from.kind} needs the build's other stages and images`);
      return planContextCopy(op, await inputs.sourceRoots(op.from), tree);
    }
    case "inline":
      return planBytesCopy(
        op,
        op.from.files.map((f) => ({ name: f.name, content: Buffer.from(f.content), mode: 0o644 })),
        tree,
      );
    case "url": {
      // Docker saves a downloaded file with mode 0600 unless --chmod says otherwise.
      const d = await download(op.from.url, op.from.checksum);
      return planBytesCopy(op, [{ ...d, mode: 0o600 }], tree);
    }
  }
}

/** The text of a file ImageTree keeps (etc/passwd, etc/group), so a later `--chown` sees users a COPY added. */
async function keptContent(e: LayerEntry): Promise<string | undefined> {
  if (e.type !== "file" || !ImageTree.keepsContent(e.path) || e.content === undefined) return undefined;
  return typeof e.content === "string" ? readFileSync(e.content, "utf8") : text(e.content());
}

function stepError(step: Step, err: unknown, dockerfile: boolean): unknown {
  if (isTemporary(err) || step.line === undefined) return err;
  const what = step.createdBy.split(" ", 1)[0];
  if (dockerfile) return new DockerfileError(step.line, `${what}: ${describeError(err)}`, { cause: err });
  return new InvalidInputError(`line ${step.line}: ${describeError(err)}`, { cause: err });
}

function whiteoutFor(path: string, tree: ImageTree): LayerEntry {
  const parent = tree.resolve(path.replace(/\/[^/]*\/?$/, "") || "/");
  const name = path.replace(/\/$/, "").split("/").pop()!;
  const target = parent === "" ? name : `${parent}/${name}`;
  if (tree.get(target) === undefined)
    throw new InvalidInputError(`cannot delete ${path}: it is not in the image`);
  return whiteoutEntry(target);
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
