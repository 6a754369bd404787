import type {
  V1Container,
  V1LocalObjectReference,
  V1OwnerReference,
  V1Pod,
  V1Volume,
  V1VolumeMount,
} from "@kubernetes/client-node";
import type { ResourceRequirements } from "../api/core-v1.ts";
import { API_GROUP, API_VERSION, IMAGE_BUILD_KIND, type ImageBuild } from "../api/image-build.ts";
import { JOB_ANNOTATION, SourceSecretPath, type StageJob, stageBaseImage } from "../api/stage-job.ts";
import {
  CACHE_MOUNTS_MOUNT,
  RUNTIME_EXECUTOR_ARGV,
  RUNTIME_MOUNT,
  SECRETS_MOUNT,
  WORKSPACE_MOUNT,
} from "../plan/container-layout.ts";

import { Annotation, Label, labelValue } from "./names.ts";

/** What every build pod shares, from the controller's configuration. */
export interface BuilderConfig {
  /** The kiln image (entrypoint `kiln`, runtime at /kiln): it runs `kiln stage ...` and lends stage containers its runtime. */
  readonly image: string;
  readonly imagePullPolicy?: "Always" | "IfNotPresent" | "Never";
  /** ServiceAccount for build pods when the ImageBuild names none. */
  readonly serviceAccountName?: string;
  readonly logLevel?: string;
  /** The builder image's platform: file-only work runs there, whatever platform it builds for. */
  readonly platform?: string;
  /** `FROM=TO` registry mirrors and plain-HTTP registries, for every pull and push the pods make. */
  readonly registryMirrors?: readonly string[];
  readonly insecureRegistries?: readonly string[];
  /** Resources of build pods whose ImageBuild sets none. */
  readonly resources?: ResourceRequirements;
  /**
   * PEM certificates kiln's containers trust for registries next to the system's. They travel in an
   * annotation, read as a file through the job volume, so a build in any namespace gets them with no
   * ConfigMap of its own; Node reads that file through NODE_EXTRA_CA_CERTS.
   */
  readonly registryCa?: string;
}

export const REGISTRY_CA_ANNOTATION = "kiln.dev/registry-ca";

/** Where the containers find things; the volumes below are mounted here. */
export const PodPath = {
  Job: "/kiln-job",
  JobFile: "/kiln-job/job.json",
  RegistryCaFile: "/kiln-job/registry-ca.crt",
  /** The work volume: the file-only build's output, or the executor's workspace (the same path in every container). */
  Work: WORKSPACE_MOUNT,
  PushSecret: "/kiln-push-secret",
  PushAuthFile: "/kiln-push-secret/config.json",
  /** Where the kiln image holds its runtime (the image's contract), and where the init container copies it. */
  ImageRuntime: "/kiln",
  RuntimeCopy: "/kiln-runtime",
} as const;

/**
 * Containers that unpack images (the roots of `COPY --from` sources) keep their files' owners, which takes
 * root; the kiln image's own user is not.
 */
const AS_ROOT = { runAsUser: 0, runAsGroup: 0 } as const;

export interface PodUnit {
  readonly name: string;
  readonly job: StageJob;
  /** The exact stage name and platform; for the index and plan pods, their role and the first platform. */
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
 * The pod for one unit of a build (DESIGN decisions 2, 4, 5, 8). Every pod ends with a container that writes
 * the unit's result as its termination message: the pusher (the only container that mounts the push
 * secret) or, for a plan, the planner. A file-only stage is built by an init container in the kiln image.
 * A stage with RUN runs the executor in the stage's own base image (pinned by digest), started from kiln's
 * runtime, which an init container copies in, over a workspace another init container prepared; the pusher
 * runs beside it and uploads each layer as it appears. The job travels in an annotation read through a
 * downward-API volume, so the pod is the only object a build creates.
 */
export function buildPod(ib: ImageBuild, unit: PodUnit, cfg: BuilderConfig): V1Pod {
  const spec = ib.spec;
  const job = unit.job;
  // File-only work is the same on any node (DESIGN decision 5); only RUN needs nodes of the platform the
  // stage runs on: its own (`FROM --platform=$BUILDPLATFORM` in a build for another platform), not the build's.
  const runsOn = job.kind === "stage" ? job.stage.platform : unit.platform;
  const nodePlatform = unit.runsCode ? runsOn : (cfg.platform ?? "linux/amd64");
  const [os = "linux", arch = "amd64"] = nodePlatform.split("/");
  const secret = spec.output.pushSecretRef;
  const runs = job.kind === "stage" && unit.runsCode;
  const buildSecrets = runs ? (spec.secrets ?? []) : [];
  const volumes: V1Volume[] = [
    {
      name: "job",
      downwardAPI: {
        items: [
          { path: "job.json", fieldRef: { fieldPath: `metadata.annotations['${JOB_ANNOTATION}']` } },
          ...(cfg.registryCa !== undefined
            ? [
                {
                  path: "registry-ca.crt",
                  fieldRef: { fieldPath: `metadata.annotations['${REGISTRY_CA_ANNOTATION}']` },
                },
              ]
            : []),
        ],
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
    ...(runs
      ? [
          { name: "runtime", emptyDir: {} },
          { name: "run-cache", emptyDir: {} },
        ]
      : []),
    ...(buildSecrets.length > 0
      ? [
          {
            name: "build-secrets",
            projected: {
              sources: buildSecrets.map((s) => ({
                secret: { name: s.secretRef.name, items: [{ key: s.secretRef.key, path: s.id }] },
              })),
            },
          },
        ]
      : []),
  ];
  // The source's Secrets reach only the containers that fetch it (planner, file-only build, prepare).
  const gitSecret = spec.source.git?.secretRef;
  const pullSecrets = spec.source.oci !== undefined ? (spec.pullSecretRefs ?? []) : [];
  if (gitSecret !== undefined) volumes.push({ name: "git-secret", secret: { secretName: gitSecret.name } });
  if (pullSecrets.length > 0)
    volumes.push({
      name: "pull-secrets",
      projected: {
        sources: pullSecrets.map((r, i) => ({
          secret: { name: r.name, items: [{ key: ".dockerconfigjson", path: `${i}.json` }] },
        })),
      },
    });
  const sourceMounts: V1VolumeMount[] = [
    ...(gitSecret !== undefined
      ? [{ name: "git-secret", mountPath: SourceSecretPath.Git, readOnly: true }]
      : []),
    ...(pullSecrets.length > 0
      ? [{ name: "pull-secrets", mountPath: SourceSecretPath.Pull, readOnly: true }]
      : []),
  ];
  const jobMount: V1VolumeMount = { name: "job", mountPath: PodPath.Job, readOnly: true };
  const workMount: V1VolumeMount = { name: "work", mountPath: PodPath.Work };
  const registryArgs = [
    ...(cfg.registryMirrors ?? []).flatMap((m) => ["--registry-mirror", m]),
    ...(cfg.insecureRegistries ?? []).flatMap((h) => ["--insecure-registry", h]),
  ];
  const podResources = spec.resources ?? cfg.resources;
  const resources = podResources !== undefined ? { resources: podResources as V1Container["resources"] } : {};
  const kiln = (name: string, args: string[], mounts: V1VolumeMount[]): V1Container => ({
    name,
    image: cfg.image,
    ...(cfg.imagePullPolicy !== undefined ? { imagePullPolicy: cfg.imagePullPolicy } : {}),
    args,
    env: [
      { name: "LOG_LEVEL", value: cfg.logLevel ?? "info" },
      ...(cfg.registryCa !== undefined
        ? [{ name: "NODE_EXTRA_CA_CERTS", value: PodPath.RegistryCaFile }]
        : []),
    ],
    volumeMounts: mounts,
    ...resources,
    terminationMessagePath: "/dev/termination-log",
    terminationMessagePolicy: "File",
  });
  const stageArgs = (sub: string) => [
    "stage",
    sub,
    "--job",
    PodPath.JobFile,
    "--out",
    PodPath.Work,
    ...registryArgs,
  ];
  const withSecret = (args: string[]) =>
    secret !== undefined ? [...args, "--authfile", PodPath.PushAuthFile] : args;
  const secretMounts: V1VolumeMount[] =
    secret !== undefined ? [{ name: "push-secret", mountPath: PodPath.PushSecret, readOnly: true }] : [];

  let initContainers: V1Container[] = [];
  let containers: V1Container[];
  if (job.kind === "plan") {
    containers = [
      kiln("planner", withSecret(stageArgs("plan")), [jobMount, workMount, ...secretMounts, ...sourceMounts]),
    ];
  } else if (job.kind === "index") {
    containers = [kiln("pusher", withSecret(stageArgs("index")), [jobMount, workMount, ...secretMounts])];
  } else if (!runs) {
    // A file-only stage runs no user code, so one container builds and pushes it: a second container would
    // start only after the kubelet noticed the first one's end, up to a second later. It is the stage's
    // pusher, the one container with the push secret; root, to unpack COPY --from roots with their owners.
    containers = [
      {
        ...kiln("pusher", withSecret(stageArgs("build")), [
          jobMount,
          workMount,
          ...secretMounts,
          ...sourceMounts,
        ]),
        securityContext: AS_ROOT,
      },
    ];
  } else {
    const runtimeMount: V1VolumeMount = { name: "runtime", mountPath: RUNTIME_MOUNT, readOnly: true };
    initContainers = [
      {
        ...kiln("runtime", [], [{ name: "runtime", mountPath: PodPath.RuntimeCopy }]),
        // -R, not -a: the kiln image runs as a non-root user, who may not set owners or times.
        command: ["cp", "-R", `${PodPath.ImageRuntime}/.`, `${PodPath.RuntimeCopy}/`],
      },
      {
        ...kiln("prepare", stageArgs("prepare"), [jobMount, workMount, ...sourceMounts]),
        securityContext: AS_ROOT,
      },
    ];
    containers = [
      {
        name: "executor",
        image: stageBaseImage(job),
        command: [...RUNTIME_EXECUTOR_ARGV, "--workspace", PodPath.Work],
        args: [],
        env: [
          { name: "LOG_LEVEL", value: cfg.logLevel ?? "info" },
          { name: "TMPDIR", value: `${PodPath.Work}/tmp` },
        ],
        // Root in the container and the mount namespace kiln-run needs to give each RUN its mounts; the
        // step itself runs as the Dockerfile's USER. No credentials are mounted here.
        securityContext: { ...AS_ROOT, capabilities: { add: ["SYS_ADMIN"] } },
        volumeMounts: [
          runtimeMount,
          workMount,
          { name: "run-cache", mountPath: CACHE_MOUNTS_MOUNT },
          ...(buildSecrets.length > 0
            ? [{ name: "build-secrets", mountPath: SECRETS_MOUNT, readOnly: true }]
            : []),
        ],
        ...resources,
        terminationMessagePath: "/dev/termination-log",
        terminationMessagePolicy: "File",
      },
      kiln("pusher", withSecret(stageArgs("push")), [jobMount, workMount, ...secretMounts]),
    ];
  }
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
        [Label.Role]: job.kind,
      },
      annotations: {
        [Annotation.Stage]: unit.stage,
        [Annotation.Platform]: unit.platform,
        [JOB_ANNOTATION]: JSON.stringify(job),
        ...(cfg.registryCa !== undefined ? { [REGISTRY_CA_ANNOTATION]: cfg.registryCa } : {}),
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
      ...(imagePullSecrets(spec, runs) ?? {}),
      volumes,
      ...(initContainers.length > 0 ? { initContainers } : {}),
      containers,
    },
  };
}

/**
 * The pull secrets the kubelet uses: the ImageBuild's, and for a stage container whose base is an earlier
 * stage in the output repository, the push secret too (the kubelet reads it; no container does).
 */
function imagePullSecrets(
  spec: ImageBuild["spec"],
  runs: boolean,
): { imagePullSecrets: V1LocalObjectReference[] } | undefined {
  const refs = [...(spec.pullSecretRefs ?? [])];
  const push = spec.output.pushSecretRef;
  if (runs && push !== undefined && !refs.some((r) => r.name === push.name)) refs.push({ name: push.name });
  return refs.length > 0 ? { imagePullSecrets: refs } : undefined;
}
