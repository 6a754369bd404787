import { z } from "zod";
import { DigestSchema } from "./digest.ts";

const StringSet = z.record(z.string(), z.object({}).loose());

/**
 * The container config (image-spec config.md `config`), plus the Docker fields that the OCI format
 * drops but Docker-format images carry (Healthcheck, OnBuild, Shell): kiln keeps them when present.
 */
export const ContainerConfigSchema = z.looseObject({
  User: z.string().optional(),
  ExposedPorts: StringSet.optional(),
  Env: z.array(z.string()).optional(),
  Entrypoint: z.array(z.string()).nullable().optional(),
  Cmd: z.array(z.string()).nullable().optional(),
  Volumes: StringSet.optional(),
  WorkingDir: z.string().optional(),
  Labels: z.record(z.string(), z.string()).nullable().optional(),
  StopSignal: z.string().optional(),
  ArgsEscaped: z.boolean().optional(),
  Healthcheck: z
    .looseObject({
      Test: z.array(z.string()).optional(),
      Interval: z.number().optional(),
      Timeout: z.number().optional(),
      StartPeriod: z.number().optional(),
      StartInterval: z.number().optional(),
      Retries: z.number().optional(),
    })
    .optional(),
  OnBuild: z.array(z.string()).nullable().optional(),
  Shell: z.array(z.string()).optional(),
});
export type ContainerConfig = z.infer<typeof ContainerConfigSchema>;

/** The fields of a container config in the order of image-spec's Go type, Docker's additions after it. */
const FIELD_ORDER = Object.keys(ContainerConfigSchema.shape) as (keyof ContainerConfig)[];
const MAP_FIELDS: ReadonlySet<string> = new Set(["ExposedPorts", "Volumes", "Labels"]);

/**
 * The config with its fields in the image spec's order and the keys of its maps sorted, as Go's encoding/json
 * writes it for containerd, BuildKit and buildah. Its bytes, and so the image's digest, follow from what it
 * holds, not from the order it was assembled in: a stage read back from JSON through a schema, or a spec
 * whose maps the API server returns sorted, gives the image a local build gives. Unknown fields keep their
 * order after the known ones.
 */
export function canonicalConfig(config: ContainerConfig): ContainerConfig {
  const out: Record<string, unknown> = {};
  for (const k of FIELD_ORDER) {
    if (!Object.hasOwn(config, k)) continue;
    const v = config[k];
    out[k] =
      MAP_FIELDS.has(k) && v !== null && typeof v === "object"
        ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
        : v;
  }
  for (const [k, v] of Object.entries(config)) if (!Object.hasOwn(out, k)) out[k] = v;
  return out as ContainerConfig;
}

export const HistorySchema = z.looseObject({
  created: z.string().optional(),
  created_by: z.string().optional(),
  author: z.string().optional(),
  comment: z.string().optional(),
  empty_layer: z.boolean().optional(),
});
export type History = z.infer<typeof HistorySchema>;

function withoutNulls(value: unknown): unknown {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return value;
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== null));
}

/** OCI image configuration (image-spec config.md); Docker's container image JSON parses the same way. */
export const ImageConfigSchema = z.looseObject({
  created: z.string().optional(),
  author: z.string().optional(),
  architecture: z.string(),
  os: z.string(),
  "os.version": z.string().optional(),
  "os.features": z.array(z.string()).optional(),
  variant: z.string().optional(),
  // Docker and buildah write absent fields as JSON null ("Env": null, "Volumes": null): an image config
  // read from anywhere treats null as absent. (In a plan's config delta, null still means "clear it".)
  config: z.preprocess(withoutNulls, ContainerConfigSchema).optional(),
  rootfs: z.object({ type: z.literal("layers"), diff_ids: z.array(DigestSchema) }),
  history: z.array(HistorySchema).optional(),
});
export type ImageConfig = z.infer<typeof ImageConfigSchema>;
