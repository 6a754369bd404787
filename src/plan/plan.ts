import { z } from "zod";
import { ContainerConfigSchema } from "../oci/image-config.ts";

/**
 * The BuildPlan: what both frontends (Dockerfile, declarative layers) compile to and what every executor
 * (local CLI, build pods) runs. A pure value that crosses process boundaries (controller → pod), so it is a
 * zod schema. Everything a step needs is resolved at compile time — expanded words, the user, the working
 * directory, the environment — so executing a step needs no knowledge of the instruction it came from.
 */

/** Where a stage starts from. An image is a reference (`busybox`, `host:5000/a@sha256:…`) or `oci:DIR[:REF]`. */
export const StageBaseSchema = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("scratch") }),
  z.object({ kind: z.literal("image"), image: z.string().min(1) }),
  z.object({ kind: z.literal("stage"), stage: z.string().min(1) }),
]);
export type StageBase = z.infer<typeof StageBaseSchema>;

/** Where a copy reads from. */
export const CopyFromSchema = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("context") }),
  z.object({ kind: z.literal("stage"), stage: z.string().min(1) }),
  z.object({ kind: z.literal("image"), image: z.string().min(1) }),
  /** Heredoc bodies (`COPY <<EOF file`): the content travels in the plan. */
  z.object({
    kind: z.literal("inline"),
    files: z.array(z.object({ name: z.string(), content: z.string() })),
  }),
  z.object({ kind: z.literal("url"), url: z.string().url(), checksum: z.string().optional() }),
]);
export type CopyFrom = z.infer<typeof CopyFromSchema>;

/** Ownership as written by the user: numeric or names, resolved against the stage's /etc/passwd and /etc/group. */
export const OwnerSchema = z.object({ user: z.string().min(1), group: z.string().min(1).optional() });
export type Owner = z.infer<typeof OwnerSchema>;

/** `user[:group]` as `--chown` and `USER` write it. */
export function parseOwner(s: string): Owner {
  const [user, group] = s.split(":", 2) as [string, string | undefined];
  return group === undefined ? { user } : { user, group };
}

export const CopyOpSchema = z.object({
  from: CopyFromSchema,
  /** Source paths relative to `from`'s root; may hold wildcards (Dockerfile semantics). */
  sources: z.array(z.string()).min(1),
  /** Absolute destination inside the image; a trailing `/` means "into this directory". */
  dest: z.string().min(1),
  chown: OwnerSchema.optional(),
  /** Octal mode applied to every copied file and directory, as `--chmod`. */
  chmod: z
    .string()
    .regex(/^[0-7]{3,4}$/)
    .optional(),
  /** Globs (relative to each source) left out of the copy. */
  exclude: z.array(z.string()).default([]),
  /** ADD: extract local tar archives (by content) at the destination. */
  extract: z.boolean().default(false),
  /** COPY --parents: keep the source's parent directories under dest. */
  parents: z.boolean().default(false),
});
export type CopyOp = z.infer<typeof CopyOpSchema>;

export const MountSchema = z.discriminatedUnion("type", [
  z.object({
    type: z.literal("secret"),
    id: z.string(),
    target: z.string(),
    required: z.boolean().default(false),
    mode: z.number().int().default(0o400),
    uid: z.number().int().default(0),
    gid: z.number().int().default(0),
    env: z.string().optional(),
  }),
  z.object({
    type: z.literal("cache"),
    id: z.string(),
    target: z.string(),
    sharing: z.enum(["shared", "private", "locked"]).default("shared"),
    from: z.string().optional(),
    source: z.string().optional(),
    readOnly: z.boolean().default(false),
    mode: z.number().int().default(0o755),
    uid: z.number().int().default(0),
    gid: z.number().int().default(0),
  }),
  z.object({
    type: z.literal("bind"),
    target: z.string(),
    from: CopyFromSchema.optional(),
    source: z.string().default("/"),
    readWrite: z.boolean().default(false),
  }),
  z.object({ type: z.literal("tmpfs"), target: z.string(), size: z.number().int().optional() }),
]);
export type Mount = z.infer<typeof MountSchema>;

const StepCommon = {
  /** 1-based Dockerfile line (or spec item index) the step comes from, for errors and status. */
  line: z.number().int().positive().optional(),
  /** The image history entry's `created_by`. */
  createdBy: z.string(),
};

export const StepSchema = z.discriminatedUnion("kind", [
  /** One layer from one or more copy operations. */
  z.object({ kind: z.literal("copy"), ...StepCommon, ops: z.array(CopyOpSchema).min(1) }),
  z.object({
    kind: z.literal("run"),
    ...StepCommon,
    /** The argv to execute (shell form already wrapped in the stage's SHELL). */
    argv: z.array(z.string()).min(1),
    /** Environment while running: image ENV plus build ARGs in scope. Never written to the config. */
    env: z.array(z.string()),
    user: z.string(),
    workdir: z.string(),
    mounts: z.array(MountSchema).default([]),
    network: z.enum(["default", "none", "host"]).default("default"),
    /** Build args the step reads; part of its cache key. */
    usedArgs: z.record(z.string(), z.string()).default({}),
  }),
  /** Paths removed from the image: the layer holds their whiteouts. */
  z.object({ kind: z.literal("delete"), ...StepCommon, paths: z.array(z.string()).min(1) }),
  /** Create a directory if missing (WORKDIR), owned by the given numeric or named user. */
  z.object({ kind: z.literal("mkdir"), ...StepCommon, path: z.string(), owner: OwnerSchema.optional() }),
  /** A config-only instruction: a history entry with `empty_layer`. */
  z.object({ kind: z.literal("config"), ...StepCommon }),
]);
export type Step = z.infer<typeof StepSchema>;
export type StepKind = Step["kind"];
export type RunStep = Extract<Step, { kind: "run" }>;

export const StageSchema = z.object({
  /** Unique within the plan; Dockerfile stage names are lower-cased, unnamed stages are their index. */
  name: z.string().min(1),
  base: StageBaseSchema,
  /** `os/arch[/variant]` this stage builds for. */
  platform: z.string(),
  /**
   * The build platform (one of the plan's `platforms`) this stage belongs to, when it differs from `platform`
   * (a Dockerfile `FROM --platform=...`): stages are built and looked up per build platform.
   */
  buildFor: z.string().optional(),
  steps: z.array(StepSchema),
  /**
   * Config changes the stage's instructions make, merged over the base image's config: fields present here
   * replace the base's, `Env` entries replace or add by name, `Labels`/`ExposedPorts`/`Volumes` merge.
   */
  config: ContainerConfigSchema.default({}),
  /** The image's `author` (Dockerfile MAINTAINER). */
  author: z.string().optional(),
});
export type Stage = z.infer<typeof StageSchema>;

/** The stages and images a stage's steps read from (COPY --from, RUN --mount=type=bind,from=). */
export function stageSources(stage: Stage): Extract<CopyFrom, { kind: "stage" | "image" }>[] {
  const out: Extract<CopyFrom, { kind: "stage" | "image" }>[] = [];
  for (const step of stage.steps) {
    const froms =
      step.kind === "copy"
        ? step.ops.map((op) => op.from)
        : step.kind === "run"
          ? step.mounts.flatMap((m) => (m.type === "bind" && m.from !== undefined ? [m.from] : []))
          : [];
    for (const f of froms) if (f.kind === "stage" || f.kind === "image") out.push(f);
  }
  return out;
}

export const BuildPlanSchema = z.object({
  stages: z.array(StageSchema).min(1),
  /** The stage whose image is the build's result. */
  target: z.string(),
  platforms: z.array(z.string()).min(1),
  /** Layer mtime, seconds since the epoch. */
  timestamp: z.number().int().nonnegative().default(0),
});
export type BuildPlan = z.infer<typeof BuildPlanSchema>;
