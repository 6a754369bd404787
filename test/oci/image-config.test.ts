import assert from "node:assert/strict";
import { test } from "node:test";
import { ImageConfigSchema } from "../../src/oci/image-config.ts";

test("null fields of a Docker-format config read as absent", () => {
  // As `buildah commit --format docker` and Docker's classic builder write them.
  const parsed = ImageConfigSchema.parse({
    architecture: "amd64",
    os: "linux",
    config: {
      Env: null,
      Volumes: null,
      ExposedPorts: null,
      Cmd: ["sh"],
      Entrypoint: null,
      Healthcheck: null,
    },
    rootfs: { type: "layers", diff_ids: [] },
  });
  assert.deepEqual(parsed.config, { Cmd: ["sh"] });
});
