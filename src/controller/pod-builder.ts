import type { V1Container, V1OwnerReference, V1Pod, V1Volume, V1VolumeMount } from "@kubernetes/client-node";
import { API_GROUP, API_VERSION, IMAGE_BUILD_KIND, type ImageBuild } from "../api/image-build.ts";
import { JOB_ANNOTATION, type StageJob } from "../api/stage-job.ts";
import { Annotation, Label, labelValue } from "./names.ts";

/** What every build pod shares, from the controller's configuration. */
export interface BuilderConfig {
  /** The kiln image the executor and pusher containers run (`kiln stage ...` is its entrypoint's argument). */
  readonly image: string;
  readonly imagePullPolicy?: "Always" | "IfNotPresent" | "Never";
  /** ServiceAccount for build pods when the ImageBuild names none. */
  readonly serviceAccountName?: string;
  readonly logLevel?: string;
  /** The builder image's platform: file-only work runs there, whatever platform it builds for. */
  readonly platform?: string;
}

/** Where the containers find things; the volumes below are mounted here. */
export const PodPath = {
  Job: "/kiln/job",
  JobFile: "/kiln/job/job.json",
  Work: "/kiln/work",
  PushSecret: "/kiln/push-secret",
  PushAuthFile: "/kiln/push-secret/config.json",
} as const;

export interface PodUnit {
  readonly name: string;
  readonly job: StageJob;
  /** The exact stage name and platform; for the index pod, `index` and the first platform. */
  readonly stage: string;
  readonly platform: string;
  /** The work runs programs built for `platform` (RUN), so the pod needs a node of that platform. */
  readonly runsCode: boolean;
}

export function controllerRef(ib: ImageBuild): V1OwnerReference {
  return {
    apiVersion: `${API_GROUP}/${API_VERSION}`,
    kind: IMAGE_BUILD_KIND,
    name: ib.metadata.name,
    uid: ib.metadata.uid ?? "",
    controller: true,
    blockOwnerDeletion: true,
  };
}

/**
 * The pod for one unit of a build (DESIGN decisions 4, 5, 8). A stage pod runs the executor as an init
 * container — it builds the stage into an OCI layout on the shared `work` volume and holds no credentials —
 * then the pusher, the only container that mounts the push secret, uploads the layout and writes the
 * StageResult as its termination message. The index pod is a pusher alone. The job travels in an annotation
 * read through a downward-API volume, so the pod is the only object a build creates.
 */
export function buildPod(ib: ImageBuild, unit: PodUnit, cfg: BuilderConfig): V1Pod {
  const spec = ib.spec;
  // File-only work is the same on any node (DESIGN decision 5); only RUN needs the platform's own nodes.
  const nodePlatform = unit.runsCode ? unit.platform : (cfg.platform ?? "linux/amd64");
  const [os = "linux", arch = "amd64"] = nodePlatform.split("/");
  const secret = spec.output.pushSecretRef;
  const volumes: V1Volume[] = [
    {
      name: "job",
      downwardAPI: {
        items: [{ path: "job.json", fieldRef: { fieldPath: `metadata.annotations['${JOB_ANNOTATION}']` } }],
      },
    },
    { name: "work", emptyDir: {} },
    ...(secret !== undefined
      ? [
          {
            name: "push-secret",
            secret: { secretName: secret.name, items: [{ key: ".dockerconfigjson", path: "config.json" }] },
          },
        ]
      : []),
  ];
  const jobMount: V1VolumeMount = { name: "job", mountPath: PodPath.Job, readOnly: true };
  const workMount: V1VolumeMount = { name: "work", mountPath: PodPath.Work };
  const container = (name: string, args: string[], mounts: V1VolumeMount[]): V1Container => ({
    name,
    image: cfg.image,
    ...(cfg.imagePullPolicy !== undefined ? { imagePullPolicy: cfg.imagePullPolicy } : {}),
    args,
    env: [{ name: "LOG_LEVEL", value: cfg.logLevel ?? "info" }],
    volumeMounts: mounts,
    ...(spec.resources !== undefined ? { resources: spec.resources as V1Container["resources"] } : {}),
    terminationMessagePath: "/dev/termination-log",
    terminationMessagePolicy: "File",
  });
  const pushArgs = ["stage", unit.job.kind === "index" ? "index" : "push", "--job", PodPath.JobFile];
  if (secret !== undefined) pushArgs.push("--authfile", PodPath.PushAuthFile);
  const pusherMounts = [
    jobMount,
    workMount,
    ...(secret !== undefined ? [{ name: "push-secret", mountPath: PodPath.PushSecret, readOnly: true }] : []),
  ];
  const serviceAccountName = spec.serviceAccountName ?? cfg.serviceAccountName;
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name: unit.name,
      namespace: ib.metadata.namespace ?? "default",
      labels: {
        [Label.ImageBuildUid]: ib.metadata.uid ?? "",
        [Label.ImageBuild]: labelValue(ib.metadata.name),
        [Label.Generation]: String(ib.metadata.generation ?? 0),
        [Label.Role]: unit.job.kind,
      },
      annotations: {
        [Annotation.Stage]: unit.stage,
        [Annotation.Platform]: unit.platform,
        [JOB_ANNOTATION]: JSON.stringify(unit.job),
      },
      ownerReferences: [controllerRef(ib)],
    },
    spec: {
      restartPolicy: "Never",
      automountServiceAccountToken: false,
      enableServiceLinks: false,
      ...(serviceAccountName !== undefined ? { serviceAccountName } : {}),
      nodeSelector: { ...spec.nodeSelector, "kubernetes.io/os": os, "kubernetes.io/arch": arch },
      ...(spec.tolerations !== undefined ? { tolerations: spec.tolerations } : {}),
      ...(spec.pullSecretRefs !== undefined ? { imagePullSecrets: spec.pullSecretRefs } : {}),
      volumes,
      ...(unit.job.kind === "stage"
        ? {
            initContainers: [
              container(
                "executor",
                ["stage", "build", "--job", PodPath.JobFile, "--out", PodPath.Work],
                [jobMount, workMount],
              ),
            ],
          }
        : {}),
      containers: [
        container(
          "pusher",
          [...pushArgs, ...(unit.job.kind === "stage" ? ["--out", PodPath.Work] : [])],
          pusherMounts,
        ),
      ],
    },
  };
}
