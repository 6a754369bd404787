import type { ContainerConfig } from "../oci/image-config.ts";
import { type BuildPlan, type CopyOp, parseOwner, type Stage, type Step } from "../plan/plan.ts";
import type { FileCopy, LayerSpec, SpecConfig } from "./spec.ts";

/** The single stage a layer spec compiles to; its name is the plan's target. */
export const LAYERSPEC_STAGE = "image";

/** Compiles a declarative layer spec into a BuildPlan: one stage per platform, one step per layer. */
export function compileLayerSpec(spec: LayerSpec, timestamp: number): BuildPlan {
  // No step `line`: lines are the Dockerfile's. Step N is layers[N], and errors name it so.
  const steps = spec.layers.map((layer): Step => {
    if (layer.files !== undefined) {
      const ops = layer.files.map(copyOpOf);
      return { kind: "copy", createdBy: layer.comment ?? describeCopy(layer.files), ops };
    }
    const paths = layer.delete ?? [];
    return { kind: "delete", createdBy: layer.comment ?? `DELETE ${paths.join(" ")}`, paths };
  });
  const base =
    spec.base === "scratch" ? ({ kind: "scratch" } as const) : ({ kind: "image", image: spec.base } as const);
  const config = containerConfigOf(spec.config);
  const stages = spec.platforms.map(
    (platform): Stage => ({ name: LAYERSPEC_STAGE, base, platform, steps, config }),
  );
  return { stages, target: LAYERSPEC_STAGE, platforms: spec.platforms, timestamp };
}

function copyOpOf(f: FileCopy): CopyOp {
  return {
    from: { kind: "context" },
    sources: [f.src],
    dest: f.dest,
    ...(f.chown !== undefined ? { chown: parseOwner(f.chown) } : {}),
    ...(f.chmod !== undefined ? { chmod: f.chmod } : {}),
    exclude: f.exclude,
    extract: false,
    parents: false,
  };
}

function describeCopy(files: readonly FileCopy[]): string {
  return files.map((f) => `COPY ${f.chown ? `--chown=${f.chown} ` : ""}${f.src} ${f.dest}`).join("; ");
}

function containerConfigOf(c: SpecConfig): ContainerConfig {
  const out: ContainerConfig = {};
  // A mapping has no order (the API server returns an ImageBuild's keys sorted): Env lists it by name.
  if (c.env)
    out.Env = Object.keys(c.env)
      .sort()
      .map((k) => `${k}=${c.env![k]}`);
  if (c.entrypoint) {
    out.Entrypoint = c.entrypoint;
    // As in Docker: a new entrypoint drops the base image's cmd unless the spec gives one.
    out.Cmd = c.cmd ?? null;
  } else if (c.cmd) out.Cmd = c.cmd;
  if (c.workingDir) out.WorkingDir = c.workingDir;
  if (c.user) out.User = c.user;
  if (c.labels) out.Labels = c.labels;
  if (c.exposedPorts)
    out.ExposedPorts = Object.fromEntries(c.exposedPorts.map((p) => [p.includes("/") ? p : `${p}/tcp`, {}]));
  if (c.volumes) out.Volumes = Object.fromEntries(c.volumes.map((v) => [v, {}]));
  if (c.stopSignal) out.StopSignal = c.stopSignal;
  return out;
}
