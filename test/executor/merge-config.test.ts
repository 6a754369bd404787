import assert from "node:assert/strict";
import { test } from "node:test";
import { StageJobSchema } from "../../src/api/stage-job.ts";
import { compileDockerfile } from "../../src/dockerfile/compile.ts";
import { mergeConfig } from "../../src/executor/file-stage.ts";
import { compileLayerSpec } from "../../src/layerspec/compile.ts";
import { LayerSpecSchema } from "../../src/layerspec/spec.ts";
import { type ContainerConfig, canonicalConfig } from "../../src/oci/image-config.ts";
import type { BuildPlan, Stage } from "../../src/plan/plan.ts";

// A build pod reads its stage back from the job's JSON through the schema, which orders an object's fields
// as the schema declares them; a local build uses the stage as compiled. Both must write the same config
// bytes, or the same ImageBuild gets another digest in the cluster than on this machine.

const BASE: ContainerConfig = { Env: ["PATH=/bin"] };

/** The stage as a build pod sees it. */
function throughJob(stage: Stage): Stage {
  const job = {
    kind: "stage",
    stage,
    timestamp: 0,
    source: { inline: { files: { f: "" } } },
    push: { image: "registry:5000/x", tagged: true },
  };
  const parsed = StageJobSchema.parse(JSON.parse(JSON.stringify(job)));
  assert.equal(parsed.kind, "stage");
  return parsed.stage;
}

const merged = (stage: Stage) => JSON.stringify(mergeConfig(BASE, stage.config));

test("canonicalConfig orders fields as the image spec does and sorts the keys of maps", () => {
  const config = {
    Labels: { b: "2", a: "1" },
    WorkingDir: "/app",
    Custom: true,
    User: "1000",
    ExposedPorts: { "8080/tcp": {}, "53/udp": {} },
    Env: ["Z=1", "A=2"],
  };
  assert.equal(
    JSON.stringify(canonicalConfig(config)),
    '{"User":"1000","ExposedPorts":{"53/udp":{},"8080/tcp":{}},"Env":["Z=1","A=2"],"WorkingDir":"/app","Labels":{"a":"1","b":"2"},"Custom":true}',
  );
});

test("a Dockerfile's config is the same bytes compiled here and read back in a build pod", async () => {
  const plan: BuildPlan = await compileDockerfile(
    'FROM scratch\nLABEL z=1 a=2\nWORKDIR /srv\nENV B=1 A=2\nUSER 101:101\nEXPOSE 8080\nENTRYPOINT ["/app"]\n',
    { platforms: ["linux/amd64"], resolveImageConfig: () => Promise.reject(new Error("no images")) },
  );
  const stage = plan.stages[0]!;
  assert.equal(merged(throughJob(stage)), merged(stage));
  assert.deepEqual(Object.keys(JSON.parse(merged(stage))), [
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "WorkingDir",
    "Labels",
  ]);
});

test("a layer spec's config does not depend on the order of its keys", () => {
  const written = {
    config: {
      workingDir: "/srv",
      labels: { z: "1", a: "2" },
      env: { SITE: "/srv", APP: "x" },
      user: "101:101",
      entrypoint: ["/app"],
    },
  };
  // As the API server returns an ImageBuild: every key sorted.
  const served = {
    config: {
      entrypoint: ["/app"],
      env: { APP: "x", SITE: "/srv" },
      labels: { a: "2", z: "1" },
      user: "101:101",
      workingDir: "/srv",
    },
  };
  const stageOf = (spec: object) => compileLayerSpec(LayerSpecSchema.parse(spec), 0).stages[0]!;
  const local = merged(stageOf(written));
  assert.equal(merged(stageOf(served)), local);
  assert.equal(merged(throughJob(stageOf(served))), local);
  assert.deepEqual(JSON.parse(local).Env, ["PATH=/bin", "APP=x", "SITE=/srv"]);
});
