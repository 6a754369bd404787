import { z } from "zod";
import { LayerSpecSchema } from "../layerspec/spec.ts";
import { DigestSchema } from "../oci/digest.ts";
import { celString, withRule } from "./cel.ts";
import { ConditionSchema } from "./condition.ts";
import {
  LocalObjectReferenceSchema,
  ObjectNameSchema,
  ResourceRequirementsSchema,
  SecretKeySelectorSchema,
  TolerationSchema,
} from "./core-v1.ts";
import { DurationSchema } from "./duration.ts";

/**
 * The ImageBuild API, kiln.dev/v1alpha1. These schemas are the single source of truth: the TypeScript types
 * are inferred from them, `kiln build` parses local specs with them, and `kiln crd` generates the
 * CustomResourceDefinition from them, so a field's description, default and rules live here once.
 */

export const API_GROUP = "kiln.dev";
export const API_VERSION = "v1alpha1";
export const IMAGE_BUILD_KIND = "ImageBuild";
export const IMAGE_BUILD_PLURAL = "imagebuilds";

// distribution/reference's grammar as one RE2-compatible expression, because the API server needs a regex;
// test/api/image-build.test.ts checks that it agrees with parseReference.
const DOMAIN_COMPONENT = "[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?";
// A first component is a registry only when it has a `.`, a `:` or an upper-case letter, or is `localhost`
// (as parseReference decides, after distribution's splitDockerDomain); RE2 has no lookahead, so a path whose
// first component could be read as a registry may not hold a dot.
const UPPER_COMPONENT =
  "(?:[A-Z]|[A-Z][a-zA-Z0-9-]*[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[A-Z]|[a-zA-Z0-9][a-zA-Z0-9-]*[A-Z][a-zA-Z0-9-]*[a-zA-Z0-9])";
const DOMAIN = `(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})+(?::[0-9]+)?|${DOMAIN_COMPONENT}:[0-9]+|${UPPER_COMPONENT}|localhost|\\[[a-fA-F0-9:]+\\](?::[0-9]+)?)`;
const PATH_COMPONENT = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
const UNDOTTED_COMPONENT = "[a-z0-9]+(?:(?:_|__|-+)[a-z0-9]+)*";
const NAME = `(?:${DOMAIN}/${PATH_COMPONENT}(?:/${PATH_COMPONENT})*|${PATH_COMPONENT}|${UNDOTTED_COMPONENT}(?:/${PATH_COMPONENT})+)`;
const TAG = "\\w[\\w.-]{0,127}";
const DIGEST = "(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})";
export const IMAGE_NAME_RE = new RegExp(`^${NAME}(?::${TAG})?$`);
export const IMAGE_REFERENCE_RE = new RegExp(`^${NAME}(?::${TAG})?(?:@${DIGEST})?$`);
/** A 64-hex string is an image ID to Docker, never a name. */
const IMAGE_ID_RE = /^[a-f0-9]{64}$/;

const notAnImageId = <T extends z.ZodString>(s: T): T =>
  withRule(
    s,
    {
      rule: "!self.matches('^[a-f0-9]{64}$')",
      message: "a 64-character hex string is an image ID, not a name",
    },
    (v) => !IMAGE_ID_RE.test(v),
  );

// A path segment other than "..": RE2 has no lookahead, so the cases are spelled out.
const SEGMENT = "(?:[^/.][^/]*|\\.|\\.[^/.][^/]*|\\.\\.[^/]+)";
const RELATIVE_PATH_RE = new RegExp(`^${SEGMENT}(?:/${SEGMENT})*/?$`);
const RelativePathSchema = z
  .string()
  .max(4096)
  .regex(
    RELATIVE_PATH_RE,
    "must be a relative path that stays inside the build context (no leading / or ..)",
  );

const HTTP_URL_RE = /^https?:\/\/[^\s/?#]+[^\s]*$/;
// Build pods clone over smart HTTP(S) with a library (no git binary in them): ssh is refused here, not at build time.
const GIT_URL_RE = /^https?:\/\/[^\s/?#]+[^\s]*$/;

export const GitSourceSchema = z
  .strictObject({
    url: z
      .string()
      .max(2048)
      .regex(GIT_URL_RE, "must be an https:// or http:// Git URL (ssh is not supported)")
      .describe("Repository to clone over HTTP(S): https://host/org/repo.git."),
    revision: z
      .string()
      .min(1)
      .max(255)
      .regex(/^[^\s~^:?*[\\]+$/, "must be a branch, a tag or a commit SHA")
      .optional()
      .describe(
        "Branch, tag or commit SHA to build. Default: the remote's default branch. A full commit SHA makes the build reproducible.",
      ),
    subPath: RelativePathSchema.optional().describe(
      "Directory of the repository used as the build context. Default: the repository's root.",
    ),
    secretRef: LocalObjectReferenceSchema.optional().describe(
      "Secret with clone credentials: keys username and password (type kubernetes.io/basic-auth), or a key token (sent as the password of user x-access-token).",
    ),
  })
  .describe("Build context cloned from a Git repository at one revision, without history.");

export const OciSourceSchema = z
  .strictObject({
    image: notAnImageId(
      z
        .string()
        .max(512)
        .regex(
          IMAGE_REFERENCE_RE,
          "must be an image reference such as registry.example.com/team/context:v1 or registry:5000/context@sha256:<64 hex>",
        ),
    ).describe(
      "OCI artifact holding the context as one tar or tar+gzip layer (as `oras push` writes it); pulled with pullSecretRefs.",
    ),
    subPath: RelativePathSchema.optional().describe(
      "Directory inside the archive used as the build context. Default: the archive's root.",
    ),
  })
  .describe("Build context from a tarball pushed to a registry as an OCI artifact.");

export const HttpSourceSchema = z
  .strictObject({
    url: z
      .string()
      .max(2048)
      .regex(HTTP_URL_RE, "must be an http:// or https:// URL")
      .describe("URL of a tar archive (plain, gzip or zstd compressed) of the build context."),
    sha256: z
      .string()
      .max(64)
      .regex(/^[a-f0-9]{64}$/, "must be the archive's sha256 as 64 lowercase hex digits")
      .optional()
      .describe(
        "sha256 of the downloaded archive; the build fails when it differs. Without it the archive is fetched again on every build and cannot be cached.",
      ),
  })
  .describe("Build context downloaded over HTTP(S) as a tar archive.");

const INLINE_FILES_MAX = 64;
export const InlineSourceSchema = z
  .strictObject({
    files: withRule(
      withRule(
        // maxProperties bounds the cost of the CEL rules for the API server; the size rule says it in words.
        z.record(z.string(), z.string()).meta({ maxProperties: INLINE_FILES_MAX }),
        {
          rule: `size(self) >= 1 && size(self) <= ${INLINE_FILES_MAX}`,
          message: `must hold between 1 and ${INLINE_FILES_MAX} files`,
        },
        (files) => {
          const n = Object.keys(files).length;
          return n >= 1 && n <= INLINE_FILES_MAX;
        },
      ),
      {
        rule: `self.all(path, path.matches(${celString(RELATIVE_PATH_RE.source)}))`,
        message: "file names must be relative paths that stay inside the build context (no leading / or ..)",
      },
      (files) => Object.keys(files).every((path) => RELATIVE_PATH_RE.test(path)),
    ).describe(
      "Files of the context: a relative path (directories are created) mapped to the file's text. Files get mode 0644.",
    ),
  })
  .describe("A small build context written in the ImageBuild itself, such as a Dockerfile and a script.");

const SOURCE_KINDS = ["git", "oci", "http", "inline"] as const;
export const SourceSchema = withRule(
  z.strictObject({
    git: GitSourceSchema.optional(),
    oci: OciSourceSchema.optional(),
    http: HttpSourceSchema.optional(),
    inline: InlineSourceSchema.optional(),
  }),
  {
    rule: `[${SOURCE_KINDS.map((k) => `has(self.${k})`).join(", ")}].filter(set, set).size() == 1`,
    message: "exactly one of git, oci, http or inline must be set",
  },
  (s) => SOURCE_KINDS.filter((k) => s[k] !== undefined).length === 1,
).describe("Where the build context comes from: exactly one of git, oci, http or inline.");
export type Source = z.infer<typeof SourceSchema>;

export const DockerfileSchema = withRule(
  z.strictObject({
    path: RelativePathSchema.optional().describe(
      "Path of the Dockerfile in the build context. Default: Dockerfile. A file <path>.dockerignore next to it is used before the context's .dockerignore.",
    ),
    inline: z
      .string()
      .min(1)
      .max(256 * 1024)
      .optional()
      .describe("The Dockerfile's text, used instead of a file from the context."),
    buildArgs: z
      .record(z.string(), z.string())
      .optional()
      .describe("Values for the Dockerfile's ARG instructions, as `docker build --build-arg NAME=VALUE`."),
    target: z
      .string()
      .max(128)
      .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, "must be a stage name from FROM ... AS <name>, or its index")
      .optional()
      .describe("Stage to build, named by FROM ... AS <name>. Default: the last stage."),
  }),
  { rule: "!(has(self.path) && has(self.inline))", message: "set either path or inline, not both" },
  (d) => d.path === undefined || d.inline === undefined,
).describe("Build from a Dockerfile. Exactly one of dockerfile or layers is set.");
export type Dockerfile = z.infer<typeof DockerfileSchema>;

/** The Dockerfile's path in the context when the spec names none. */
export const DEFAULT_DOCKERFILE = "Dockerfile";

const TagSchema = z
  .string()
  .max(128)
  .regex(
    /^\w[\w.-]{0,127}$/,
    "must be a tag: 1-128 of letters, digits, '_', '.' and '-', not starting with . or -",
  );

export const OutputSchema = z
  .strictObject({
    image: notAnImageId(
      z
        .string()
        .max(512)
        .regex(
          IMAGE_NAME_RE,
          "must be an image reference without digest, such as registry.example.com/team/app or registry:5000/app:v1",
        ),
    ).describe(
      "Where the image is pushed: registry/repository[:tag]. Without a tag the image is tagged latest.",
    ),
    tags: withRule(
      z.array(TagSchema).max(32),
      { rule: "self.all(t, self.exists_one(u, u == t))", message: "must not repeat a tag" },
      (tags) => new Set(tags).size === tags.length,
    )
      .optional()
      .describe("More tags for the same image in the same repository."),
    pushSecretRef: LocalObjectReferenceSchema.optional().describe(
      "Secret of type kubernetes.io/dockerconfigjson with credentials for the output registry. Only the pusher container mounts it.",
    ),
    insecure: z
      .boolean()
      .default(false)
      .describe(
        "Allow plain HTTP, or HTTPS without certificate verification, for the output and cache registry.",
      ),
  })
  .describe("The image the build pushes.");
export type Output = z.infer<typeof OutputSchema>;

const platformSchema = LayerSpecSchema.shape.platforms.unwrap().element.max(64);
export const PlatformsSchema = withRule(
  z.array(platformSchema).min(1).max(16),
  { rule: "self.all(p, self.exists_one(q, q == p))", message: "must not repeat a platform" },
  (ps) => new Set(ps).size === ps.length,
)
  .default(["linux/amd64"])
  .describe(
    "Platforms (os/arch[/variant]) to build for, each on nodes of its architecture. More than one gives an image index.",
  );

const CACHE_TTL_DEFAULT = "168h";
export const CacheSchema = z
  .strictObject({
    disabled: z.boolean().default(false).describe("Run every step again, reading and writing no cache."),
    repository: notAnImageId(
      z
        .string()
        .max(512)
        .regex(
          new RegExp(`^${NAME}$`),
          "must be a repository without tag or digest, such as registry.example.com/team/cache",
        ),
    )
      .optional()
      .describe(
        "Repository holding cached RUN steps, one small image per step tagged by its cache key; the push secret must be able to read and write it. Default: <output repository>/cache.",
      ),
    ttl: DurationSchema.default(CACHE_TTL_DEFAULT).describe(
      "How long a cached step is reused after it was built, such as 168h.",
    ),
  })
  .prefault({})
  .describe(
    "Reuse of RUN steps built before: a step whose cache key (the base image's digest, the steps before it, the files they read and the build args it uses) is in the cache repository is not run again; its layer is applied instead.",
  );
export type Cache = z.infer<typeof CacheSchema>;

const SecretMountSchema = z
  .strictObject({
    id: z
      .string()
      .max(128)
      .regex(/^[A-Za-z0-9_.-]+$/, "must be a secret id: letters, digits, '_', '.' and '-'")
      .describe("The id RUN --mount=type=secret,id=<id> names."),
    secretRef: SecretKeySelectorSchema.describe("The Secret value mounted for that id."),
  })
  .describe("A secret available to RUN --mount=type=secret; it never enters a layer.");

export const ImageBuildSpecSchema = withRule(
  withRule(
    z.strictObject({
      source: SourceSchema,
      dockerfile: DockerfileSchema.optional(),
      layers: LayerSpecSchema.omit({ platforms: true })
        .optional()
        .describe(
          "Build from a declarative spec instead of a Dockerfile: a base image plus layers of files from the context. Exactly one of dockerfile or layers is set; the platforms come from spec.platforms.",
        ),
      output: OutputSchema,
      platforms: PlatformsSchema,
      cache: CacheSchema,
      timestamp: z
        .number()
        .int()
        .min(0)
        .default(0)
        .describe(
          "Time stamped on every file in the new layers and on the image, in seconds since the epoch. The default 0 (1970-01-01) makes builds reproducible: the same inputs give the same digests. There is deliberately no 'now': a time that changes every build defeats reproducibility and the cache; pass a fixed time such as the commit's instead.",
        ),
      timeout: DurationSchema.default("1h").describe(
        "How long the whole build may run before it fails with reason Timeout, such as 30m or 1h30m.",
      ),
      resources: ResourceRequirementsSchema.optional(),
      nodeSelector: z
        .record(z.string(), z.string())
        .optional()
        .describe("Labels a node must have to run build pods; kubernetes.io/arch is added per platform."),
      tolerations: z.array(TolerationSchema).max(32).optional().describe("Taints the build pods tolerate."),
      serviceAccountName: ObjectNameSchema.optional().describe(
        "ServiceAccount the build pods run as; its token is never mounted. Default: the one kiln is configured with.",
      ),
      secrets: withRule(
        z.array(SecretMountSchema).max(64),
        { rule: "self.all(s, self.exists_one(t, t.id == s.id))", message: "must not repeat a secret id" },
        (ss) => new Set(ss.map((s) => s.id)).size === ss.length,
      )
        .optional()
        .describe("Secrets for RUN --mount=type=secret,id=<id>, each a key of a Secret."),
      pullSecretRefs: z
        .array(LocalObjectReferenceSchema)
        .max(16)
        .optional()
        .describe(
          "Secrets of type kubernetes.io/dockerconfigjson for pulling base images and the oci source, as a pod's imagePullSecrets.",
        ),
    }),
    {
      rule: "has(self.dockerfile) != has(self.layers)",
      message: "exactly one of dockerfile or layers must be set",
    },
    (s) => (s.dockerfile === undefined) !== (s.layers === undefined),
  ),
  {
    rule: "!has(self.layers) || !has(self.layers.base) || !self.layers.base.startsWith('oci:')",
    message: "layers.base cannot be a local oci: layout in a cluster; push the base image to a registry",
    fieldPath: ".layers.base",
  },
  (s) => !s.layers?.base.startsWith("oci:"),
).describe("What to build and where to push it.");
export type ImageBuildSpec = z.infer<typeof ImageBuildSpecSchema>;

export const Phase = {
  Pending: "Pending",
  Building: "Building",
  Succeeded: "Succeeded",
  Failed: "Failed",
} as const;
export type Phase = (typeof Phase)[keyof typeof Phase];

const TimeSchema = z.iso.datetime();
const PlatformString = z.string().describe("os/arch[/variant].");

export const StepStatusSchema = z
  .object({
    line: z
      .number()
      .int()
      .positive()
      .optional()
      .describe("Dockerfile line of the step (layer-spec steps have none)."),
    instruction: z.string().describe("The instruction as written, possibly shortened."),
    cached: z.boolean().describe("The step's result came from the cache."),
    durationMs: z.number().int().nonnegative().describe("How long the step ran, in milliseconds."),
    layerDigest: DigestSchema.optional().describe("Digest of the layer the step added, if any."),
  })
  .describe("One step of a stage.");
export type StepStatus = z.infer<typeof StepStatusSchema>;

export const StageStatusSchema = z
  .object({
    name: z.string().describe("Stage name: FROM ... AS <name>, or its index."),
    platform: PlatformString,
    podName: z.string().optional().describe("The pod that ran the stage."),
    digest: DigestSchema.optional().describe("Manifest digest of the stage's image."),
    startTime: TimeSchema.optional().describe("When the stage's pod started."),
    completionTime: TimeSchema.optional().describe("When the stage finished."),
    steps: z.array(StepStatusSchema).optional().describe("The stage's steps in order."),
  })
  .describe("One stage on one platform.");
export type StageStatus = z.infer<typeof StageStatusSchema>;

export const FailureSchema = z
  .object({
    reason: z.string().describe("CamelCase cause, such as StepFailed, Timeout, PullFailed or InvalidSpec."),
    message: z.string().describe("What went wrong, for a person."),
    stage: z.string().optional().describe("The stage that failed."),
    line: z.number().int().positive().optional().describe("Dockerfile line of the failing step."),
    logSnippet: z.string().optional().describe("The last lines the failing step wrote."),
  })
  .describe("Why the build failed.");
export type Failure = z.infer<typeof FailureSchema>;

export const ImageBuildStatusSchema = z
  .object({
    phase: z.enum(Phase).optional().describe("Pending, Building, Succeeded or Failed."),
    conditions: z
      .array(ConditionSchema)
      .optional()
      .meta({ "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"] })
      .describe("Succeeded (True when done, False when failed, Unknown while building) and Ready."),
    observedGeneration: z
      .number()
      .int()
      .nonnegative()
      .optional()
      .describe("The metadata.generation this status describes."),
    image: z.string().optional().describe("The pushed image as repository@digest."),
    digest: DigestSchema.optional().describe(
      "Digest of the pushed manifest, or of the index for several platforms.",
    ),
    platforms: z
      .array(
        z
          .object({
            platform: PlatformString,
            digest: DigestSchema.describe("Manifest digest of the platform's image."),
          })
          .describe("The image of one platform."),
      )
      .optional()
      .describe("Per-platform manifests inside the image index."),
    stages: z.array(StageStatusSchema).optional().describe("Each stage's pod, digest and steps."),
    startTime: TimeSchema.optional().describe("When the build started."),
    completionTime: TimeSchema.optional().describe("When the build succeeded or failed."),
    failure: FailureSchema.optional(),
  })
  .describe("What the controller observed of the build.");
export type ImageBuildStatus = z.infer<typeof ImageBuildStatusSchema>;

export const ObjectMetaSchema = z.looseObject({
  name: z.string(),
  namespace: z.string().optional(),
  uid: z.string().optional(),
  generation: z.number().int().optional(),
  resourceVersion: z.string().optional(),
  creationTimestamp: z.string().optional(),
  deletionTimestamp: z.string().optional(),
  labels: z.record(z.string(), z.string()).optional(),
  annotations: z.record(z.string(), z.string()).optional(),
  finalizers: z.array(z.string()).optional(),
});

/** An ImageBuild as the API server returns it, or as a file `kiln build` reads. */
export const ImageBuildSchema = z.object({
  apiVersion: z.literal(`${API_GROUP}/${API_VERSION}`),
  kind: z.literal(IMAGE_BUILD_KIND),
  metadata: ObjectMetaSchema,
  spec: ImageBuildSpecSchema,
  status: ImageBuildStatusSchema.optional(),
});
export type ImageBuild = z.infer<typeof ImageBuildSchema>;
