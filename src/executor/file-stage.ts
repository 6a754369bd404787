import { readFileSync } from "node:fs";
import { text } from "node:stream/consumers";
import { DockerfileError, describeError, InvalidInputError, isTemporary } from "../errors.ts";
import { appendLayers, configBlob, type Image, type Layer } from "../oci/image.ts";
import { type ContainerConfig, canonicalConfig, type History } from "../oci/image-config.ts";
import type { LayerEntry } from "../oci/layer-entry.ts";
import { whiteoutEntry } from "../oci/whiteout.ts";
import { nextCacheKey, stageCacheKey } from "../plan/cache-key.ts";
import type { CopyFrom, CopyOp, RunStep, Stage, Step } from "../plan/plan.ts";
import type { BuildContext } from "./context.ts";
import { planAddCopy, planBytesCopy, planContextCopy, planMkdir } from "./copy.ts";
import { download } from "./download.ts";
import { indexLayers } from "./image-index.ts";
import { ImageTree } from "./image-tree.ts";

/** Turns a list of entries into a layer file (compressed, digested). Injected so stages stay testable. */
export type LayerWriter = (entries: readonly LayerEntry[]) => Promise<Layer>;

/** The unpacked root of the stage or image a `COPY --from` names. */
export type SourceRoots = (from: Extract<CopyFrom, { kind: "stage" | "image" }>) => Promise<BuildContext>;

/** What a RUN step added: its layer and, when known, the entries in it (else the layer is read for them). */
export interface RunLayer {
  readonly layer: Layer;
  readonly entries?: readonly LayerEntry[];
  readonly cached: boolean;
}

/**
 * Runs (or finds in the cache) one RUN step, whose cache key is `key`; `undefined` means it cannot be done
 * here, and the stage stops before it.
 */
export type RunStepHandler = (step: RunStep, key: string) => Promise<RunLayer | undefined>;

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
  /** The merged file tree of `base`; read from its layers when not given. */
  readonly tree?: ImageTree;
  /** The cache key before the first step (plan/cache-key.ts); the base config's when not given. */
  readonly cacheKey?: string;
  /** Runs RUN steps; without it a RUN is refused with its line. */
  readonly runStep?: RunStepHandler;
  /** Sees every step's outcome: the layer it added (with the step's cache key), or none. */
  readonly onStep?: (step: Step, outcome: StepOutcome) => Promise<void> | void;
}

export interface StepOutcome {
  readonly index: number;
  readonly key: string;
  readonly layer?: Layer;
  readonly cached: boolean;
  readonly ms: number;
}

/** Where a stage got to: the whole stage, or the steps before `stoppedAt` (a RUN that could not run there). */
export interface StageProgress {
  readonly image: Image;
  /** Index of the first step not done; the image's config is then not merged with the stage's yet. */
  readonly stoppedAt?: number;
  /** The cache key after the last step done. */
  readonly cacheKey: string;
}

/**
 * Runs a file-only stage: every step's layer is computed from the plan, the context, the base image's
 * file tree and the roots of the stages and images it copies from, without unpacking the base. RUN needs
 * a container and is refused here with its line.
 */
export async function buildFileOnlyStage(stage: Stage, inputs: StageInputs): Promise<Image> {
  return (await buildStage(stage, inputs)).image;
}

/**
 * Runs a stage's steps in order over an image tree: copies, deletes and directories are computed from the
 * tree, RUN steps go to `runStep`. Each layer-adding step gets a history entry and a layer; the others an
 * `empty_layer` history entry. Once all steps are done the stage's config is merged over the base's.
 */
export async function buildStage(stage: Stage, inputs: StageInputs): Promise<StageProgress> {
  // Read only when a step needs it: a stage that starts with a RUN to run elsewhere never does.
  let known = inputs.tree;
  const treeNow = async (): Promise<ImageTree> => {
    known ??= await indexLayers(inputs.base.layers);
    return known;
  };
  let image = inputs.base;
  let key = inputs.cacheKey ?? stageCacheKey(configBlob(inputs.base).digest);
  const history: History[] = [...(image.config.history ?? [])];
  for (const [index, step] of stage.steps.entries()) {
    const started = performance.now();
    let layer: Layer | undefined;
    let cached = false;
    try {
      if (step.kind === "run") {
        if (inputs.runStep === undefined)
          throw new InvalidInputError("RUN needs a container; this build runs file-only steps");
        const before = key;
        key = nextCacheKey(key, step);
        const ran = await inputs.runStep(step, key);
        if (ran === undefined) {
          const partial = { ...image, config: { ...image.config, history } };
          return { image: partial, stoppedAt: index, cacheKey: before };
        }
        ({ layer, cached } = ran);
        if (ran.entries !== undefined) await applyEntries(await treeNow(), ran.entries);
        else await indexLayers([ran.layer], await treeNow());
      } else {
        const tree = await treeNow();
        const entries = await entriesOf(step, inputs, tree);
        if (entries !== undefined && !(step.kind === "mkdir" && entries.length === 0)) {
          layer = await inputs.writeLayer(entries);
          await applyEntries(tree, entries);
        }
        key = nextCacheKey(key, step, layer?.diffId);
      }
    } catch (err) {
      throw stepError(step, index, err, inputs.dockerfile ?? false);
    }
    if (layer === undefined) {
      history.push({ created: inputs.created, created_by: step.createdBy, empty_layer: true });
    } else {
      image = appendLayers(image, layer);
      history.push({ created: inputs.created, created_by: step.createdBy });
    }
    const outcome = { index, key, cached, ms: Math.round(performance.now() - started) };
    await inputs.onStep?.(step, layer === undefined ? outcome : { ...outcome, layer });
  }
  const config = mergeConfig(image.config.config ?? {}, stage.config);
  const author = stage.author ?? image.config.author;
  return {
    image: {
      ...image,
      config: {
        ...image.config,
        created: inputs.created,
        ...(author !== undefined ? { author } : {}),
        config,
        history,
      },
    },
    cacheKey: key,
  };
}

async function applyEntries(tree: ImageTree, entries: readonly LayerEntry[]): Promise<void> {
  for (const e of entries) tree.apply(e.path, e, await keptContent(e));
}

async function entriesOf(
  step: Exclude<Step, RunStep>,
  inputs: StageInputs,
  tree: ImageTree,
): Promise<LayerEntry[] | undefined> {
  switch (step.kind) {
    case "copy": {
      const all = new Map<string, LayerEntry>();
      for (const [i, op] of step.ops.entries()) {
        for (const e of await inItem(`files[${i}]`, () => copyEntries(op, inputs, tree))) all.set(e.path, e);
      }
      return [...all.values()];
    }
    case "delete": {
      const whiteouts: LayerEntry[] = [];
      for (const [i, p] of step.paths.entries())
        whiteouts.push(await inItem(`delete[${i}]`, () => whiteoutFor(p, tree)));
      return whiteouts;
    }
    case "mkdir": {
      const owner = step.owner ? tree.resolveOwner(step.owner.user, step.owner.group) : { uid: 0, gid: 0 };
      return planMkdir(step.path, owner, tree);
    }
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

/** A failure of one item of a step — a copy of a layer spec's `files`, a path of its `delete` — and which. */
class ItemFailure {
  readonly item: string;
  readonly error: unknown;
  constructor(item: string, error: unknown) {
    this.item = item;
    this.error = error;
  }
}

async function inItem<T>(item: string, work: () => Promise<T> | T): Promise<T> {
  try {
    return await work();
  } catch (err) {
    throw new ItemFailure(item, err);
  }
}

/**
 * A step's error as its user finds it: `Dockerfile:LINE: INSTRUCTION: …`, or for a layer spec (whose steps
 * are its layers, in order) the item of the spec, `layers[N].files[M]: …`.
 */
function stepError(step: Step, index: number, err: unknown, dockerfile: boolean): unknown {
  const item = err instanceof ItemFailure ? err.item : undefined;
  const cause = err instanceof ItemFailure ? err.error : err;
  if (isTemporary(cause)) return cause;
  if (!dockerfile) {
    const where = `layers[${index}]${item !== undefined ? `.${item}` : ""}`;
    return new InvalidInputError(`${where}: ${describeError(cause)}`, { cause });
  }
  if (step.line === undefined) return cause;
  const what = step.createdBy.split(" ", 1)[0];
  return new DockerfileError(step.line, `${what}: ${describeError(cause)}`, { cause });
}

function whiteoutFor(path: string, tree: ImageTree): LayerEntry {
  if (path.split("/").every((c) => c === "" || c === "." || c === "..")) {
    throw new InvalidInputError(`cannot delete ${path}: it names the image's root`);
  }
  const parent = tree.resolve(path.replace(/\/[^/]*\/?$/, "") || "/");
  const name = path.replace(/\/$/, "").split("/").pop()!;
  const target = parent === "" ? name : `${parent}/${name}`;
  if (tree.get(target) === undefined)
    throw new InvalidInputError(`cannot delete ${path}: it is not in the image`);
  return whiteoutEntry(target);
}

/**
 * Merges a stage's config over its base's: Env by name, maps key by key, other fields replaced when set,
 * and removed when the change sets them to null (a new ENTRYPOINT drops the base's CMD). The result is in
 * canonical order, so a build pod, which reads its stage back from JSON, writes the config a local build writes.
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
  return canonicalConfig(out);
}

function mergeEnv(base: readonly string[], change: readonly string[]): string[] {
  const env = new Map(base.map((e) => [e.split("=", 1)[0]!, e]));
  for (const e of change) env.set(e.split("=", 1)[0]!, e);
  return [...env.values()];
}
