import { z } from "zod";

/**
 * The few core/v1 shapes an ImageBuild borrows, written as zod so the CRD describes and validates them like
 * the built-in types do (field names and meanings as in k8s.io/api/core/v1).
 */

const DNS1123_SUBDOMAIN_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** The name of an object in the ImageBuild's namespace (Secret, ServiceAccount). */
export const ObjectNameSchema = z
  .string()
  .max(253)
  .regex(
    DNS1123_SUBDOMAIN_RE,
    "must be a Kubernetes object name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
  );

export const LocalObjectReferenceSchema = z
  .strictObject({ name: ObjectNameSchema.describe("Name of the object in the ImageBuild's namespace.") })
  .describe("A reference to an object in the ImageBuild's namespace.");
export type LocalObjectReference = z.infer<typeof LocalObjectReferenceSchema>;

export const SecretKeySelectorSchema = z
  .strictObject({
    name: ObjectNameSchema.describe("Name of the Secret in the ImageBuild's namespace."),
    key: z
      .string()
      .max(253)
      .regex(/^[-._a-zA-Z0-9]+$/, "must be a Secret key: letters, digits, '-', '_' and '.'")
      .describe("Key of the value inside the Secret."),
  })
  .describe("One value of a Secret in the ImageBuild's namespace.");
export type SecretKeySelector = z.infer<typeof SecretKeySelectorSchema>;

// resource.Quantity's serialisation, as the API server's own types publish it.
const QUANTITY_RE =
  /^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$/;

export const QuantitySchema = z
  .union([
    z.number().int(),
    z.string().regex(QUANTITY_RE, "must be a quantity such as 500m, 2, 1Gi or 512Mi"),
  ])
  .meta({ "x-kubernetes-int-or-string": true })
  .describe("A resource quantity such as 500m, 2, 1Gi or 512Mi.");

const ResourceListSchema = z.record(z.string().max(253), QuantitySchema);

export const ResourceRequirementsSchema = z
  .strictObject({
    requests: ResourceListSchema.optional().describe(
      "Minimum resources per build pod (cpu, memory, ephemeral-storage); the scheduler reserves them.",
    ),
    limits: ResourceListSchema.optional().describe(
      "Maximum resources per build pod; a build exceeding its memory limit is killed.",
    ),
  })
  .describe("Compute resources of each build pod, as a container's resources.");
export type ResourceRequirements = z.infer<typeof ResourceRequirementsSchema>;

export const TolerationSchema = z
  .strictObject({
    key: z
      .string()
      .max(316)
      .optional()
      .describe("Taint key the toleration applies to; empty with operator Exists matches all taints."),
    operator: z
      .enum(["Exists", "Equal"])
      .optional()
      .describe("Exists matches any value; Equal (the default) matches value."),
    value: z.string().max(63).optional().describe("Taint value the toleration matches with operator Equal."),
    effect: z
      .enum(["NoSchedule", "PreferNoSchedule", "NoExecute"])
      .optional()
      .describe("Taint effect to match; empty matches all effects."),
    tolerationSeconds: z
      .number()
      .int()
      .optional()
      .describe("With effect NoExecute, how long the pod stays bound after the taint appears."),
  })
  .describe("Lets build pods schedule onto nodes with a matching taint.");
export type Toleration = z.infer<typeof TolerationSchema>;
