import { z } from "zod";

/**
 * The declarative layer spec: an image described as a base plus layers of files, without a Dockerfile.
 * The same schema is `spec.layers` of an ImageBuild and the YAML file `kiln build --spec` reads, so every
 * field carries the description `kubectl explain` shows.
 */

const AbsolutePath = z
  .string()
  .min(1)
  .regex(/^\//, "must be an absolute path inside the image, starting with /");

const Owner = z
  .string()
  .regex(
    /^[A-Za-z0-9_.][A-Za-z0-9_.-]*(:[A-Za-z0-9_.][A-Za-z0-9_.-]*)?$/,
    "must be USER or USER:GROUP (names or ids)",
  )
  .describe(
    "Owner of the copied files as USER[:GROUP], numeric or names from the base image's /etc/passwd and /etc/group. Default 0:0.",
  );

export const FileCopySchema = z
  .strictObject({
    src: z
      .string()
      .min(1)
      .describe(
        "Path in the build context (relative). A directory copies its contents; a file copies the file. Must stay inside the context.",
      ),
    dest: AbsolutePath.describe(
      "Where the source lands in the image. A trailing / (or a directory source) means the destination is a directory.",
    ),
    chown: Owner.optional(),
    chmod: z
      .string()
      .regex(/^[0-7]{3,4}$/, "must be an octal mode such as 0644 or 755")
      .optional()
      .describe(
        "Mode given to every copied file and directory, in octal. Default: the context file's own mode.",
      ),
    exclude: z
      .array(z.string().min(1))
      .default([])
      .describe("Glob patterns (relative to src, .dockerignore syntax) of paths left out of the copy."),
  })
  .describe("Files copied from the build context into the layer.");
export type FileCopy = z.infer<typeof FileCopySchema>;

export const SpecLayerSchema = z
  .strictObject({
    comment: z
      .string()
      .optional()
      .describe("Recorded as the layer's history entry; defaults to a summary of the layer."),
    files: z.array(FileCopySchema).min(1).optional().describe("Files this layer adds."),
    delete: z
      .array(AbsolutePath)
      .min(1)
      .optional()
      .describe("Paths of the base image (or earlier layers) this layer removes, written as whiteouts."),
  })
  // The rule below for the API server, where this schema is spec.layers of an ImageBuild.
  .meta({
    "x-kubernetes-validations": [
      { rule: "has(self.files) != has(self.delete)", message: "a layer has exactly one of files or delete" },
    ],
  })
  .refine((l) => (l.files === undefined) !== (l.delete === undefined), {
    message: "a layer has exactly one of files or delete",
  })
  .describe("One image layer: either files added from the context or paths deleted.");
export type SpecLayer = z.infer<typeof SpecLayerSchema>;

const PORT_RE = /^\d{1,5}(\/(tcp|udp|sctp))?$/;
export const SpecConfigSchema = z
  .strictObject({
    env: z
      .record(
        z.string().regex(/^[^=\s]+$/, "environment variable names contain no '=' or spaces"),
        z.string(),
      )
      .optional()
      .describe("Environment variables set in the image, added to (or replacing) the base image's."),
    entrypoint: z
      .array(z.string())
      .optional()
      .describe("The image's entrypoint (exec form). Replaces the base's and clears its cmd."),
    cmd: z.array(z.string()).optional().describe("Default arguments (exec form)."),
    workingDir: AbsolutePath.optional().describe("Working directory of the container."),
    user: z
      .string()
      .min(1)
      .optional()
      .describe("User (and group) the container runs as: NAME, UID, or UID:GID."),
    labels: z.record(z.string(), z.string()).optional().describe("Labels merged over the base image's."),
    exposedPorts: z
      .array(z.string().regex(PORT_RE, "must be PORT or PORT/tcp|udp|sctp"))
      .optional()
      .describe("Ports the container listens on, such as 8080 or 53/udp."),
    volumes: z.array(AbsolutePath).optional().describe("Mount points the container expects."),
    stopSignal: z.string().min(1).optional().describe("Signal that stops the container, such as SIGTERM."),
  })
  .describe("Image configuration set on top of the base image's.");
export type SpecConfig = z.infer<typeof SpecConfigSchema>;

export const PLATFORM_RE = /^[a-z0-9]+\/[a-z0-9_]+(\/[a-z0-9]+)?$/;

export const LayerSpecSchema = z
  .strictObject({
    base: z
      .string()
      .min(1)
      .default("scratch")
      .describe(
        "Base image: scratch, an image reference (busybox, registry:5000/app@sha256:...), or oci:DIR[:REF] for a local OCI layout.",
      ),
    platforms: z
      .array(
        z
          .string()
          .regex(PLATFORM_RE, "must be os/arch or os/arch/variant, such as linux/amd64 or linux/arm/v7"),
      )
      .min(1)
      .default(["linux/amd64"])
      .describe("Platforms to build; more than one gives an image index."),
    layers: z.array(SpecLayerSchema).default([]).describe("Layers added on top of the base, bottom first."),
    config: SpecConfigSchema.default({}),
  })
  .describe("A declarative image: a base plus layers of files from the build context.");
export type LayerSpec = z.infer<typeof LayerSpecSchema>;
