import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";
import { JOB_ANNOTATION } from "../../src/api/stage-job.ts";
import { indexPodName, stagePodName } from "../../src/controller/names.ts";
import { buildPod } from "../../src/controller/pod-builder.ts";
import { imageBuild, runStep, stageJob } from "./fixtures.ts";

/** The name's hash, computed here from its definition: sha256 over uid, generation, stage and platform. */
const hash = (...parts: string[]) => createHash("sha256").update(parts.join("\0")).digest("hex").slice(0, 8);
const UID = "0d6f7a39-5a4e-4a43-9d7e-2f1b8f5c9a10";

const job = stageJob(
  { name: "image", base: { kind: "scratch" }, platform: "linux/arm64", steps: [], config: {} },
  { "a.txt": "a" },
);

test("buildPod: a file-only stage is one pusher container, root, with the push secret; the job in an annotation", () => {
  const ib = imageBuild({
    spec: {
      resources: { limits: { memory: "1Gi" } },
      nodeSelector: { pool: "builds" },
      tolerations: [{ key: "builds", operator: "Exists", effect: "NoSchedule" }],
      serviceAccountName: "builder",
      pullSecretRefs: [{ name: "pull" }],
    },
  });
  const name = stagePodName(ib, "image", "linux/arm64");
  const pod = buildPod(
    ib,
    { name, job, stage: "image", platform: "linux/arm64", runsCode: false },
    {
      image: "registry:5000/kiln/kiln@sha256:" + "f".repeat(64),
      logLevel: "debug",
    },
  );
  const container = (n: string, args: string[], mounts: object[]) => ({
    name: n,
    image: `registry:5000/kiln/kiln@sha256:${"f".repeat(64)}`,
    args,
    env: [{ name: "LOG_LEVEL", value: "debug" }],
    volumeMounts: mounts,
    resources: { limits: { memory: "1Gi" } },
    terminationMessagePath: "/dev/termination-log",
    terminationMessagePolicy: "File",
  });
  const jobMount = { name: "job", mountPath: "/kiln-job", readOnly: true };
  const workMount = { name: "work", mountPath: "/.kiln/workspace" };
  assert.deepEqual(pod, {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name: `hello-${hash(UID, "1", "image", "linux/arm64")}-image-arm64`,
      namespace: "team",
      labels: {
        "kiln.dev/imagebuild-uid": "0d6f7a39-5a4e-4a43-9d7e-2f1b8f5c9a10",
        "kiln.dev/imagebuild": "hello",
        "kiln.dev/generation": "1",
        "kiln.dev/role": "stage",
      },
      annotations: {
        "kiln.dev/stage": "image",
        "kiln.dev/platform": "linux/arm64",
        [JOB_ANNOTATION]: JSON.stringify(job),
      },
      ownerReferences: [
        {
          apiVersion: "kiln.dev/v1alpha1",
          kind: "ImageBuild",
          name: "hello",
          uid: "0d6f7a39-5a4e-4a43-9d7e-2f1b8f5c9a10",
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
    },
    spec: {
      restartPolicy: "Never",
      automountServiceAccountToken: false,
      enableServiceLinks: false,
      serviceAccountName: "builder",
      // File-only work runs on the builder's platform: no arm64 node is needed to build for arm64.
      nodeSelector: { pool: "builds", "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64" },
      tolerations: [{ key: "builds", operator: "Exists", effect: "NoSchedule" }],
      imagePullSecrets: [{ name: "pull" }],
      volumes: [
        {
          name: "job",
          downwardAPI: {
            items: [{ path: "job.json", fieldRef: { fieldPath: "metadata.annotations['kiln.dev/job']" } }],
          },
        },
        { name: "work", emptyDir: {} },
        {
          name: "push-secret",
          secret: { secretName: "push", items: [{ key: ".dockerconfigjson", path: "config.json" }] },
        },
      ],
      containers: [
        {
          ...container(
            "pusher",
            [
              "stage",
              "build",
              "--job",
              "/kiln-job/job.json",
              "--out",
              "/.kiln/workspace",
              "--authfile",
              "/kiln-push-secret/config.json",
            ],
            [jobMount, workMount, { name: "push-secret", mountPath: "/kiln-push-secret", readOnly: true }],
          ),
          securityContext: { runAsUser: 0, runAsGroup: 0 },
        },
      ],
    },
  });
});

test("buildPod: a stage with RUN runs the executor in its pinned base with kiln's runtime; secrets reach only the executor", () => {
  const base = `registry:5000/library/busybox@sha256:${"b".repeat(64)}`;
  const runJob = stageJob(
    {
      name: "build",
      base: { kind: "image", image: base },
      platform: "linux/arm64",
      steps: [runStep("make")],
      config: {},
    },
    { Makefile: "all:\n" },
  );
  const ib = imageBuild({
    spec: {
      output: { image: "registry:5000/team/hello", insecure: true, pushSecretRef: { name: "push" } },
      secrets: [{ id: "token", secretRef: { name: "api", key: "token" } }],
    },
  });
  const pod = buildPod(
    ib,
    { name: "p", job: runJob, stage: "build", platform: "linux/arm64", runsCode: true },
    { image: "kiln", registryMirrors: ["docker.io=registry:5000"], insecureRegistries: ["registry:5000"] },
  );
  const registry = ["--registry-mirror", "docker.io=registry:5000", "--insecure-registry", "registry:5000"];
  const kiln = (name: string, args: string[], mounts: object[]) => ({
    name,
    image: "kiln",
    args,
    env: [{ name: "LOG_LEVEL", value: "info" }],
    volumeMounts: mounts,
    terminationMessagePath: "/dev/termination-log",
    terminationMessagePolicy: "File",
  });
  const jobMount = { name: "job", mountPath: "/kiln-job", readOnly: true };
  const workMount = { name: "work", mountPath: "/.kiln/workspace" };
  const stageArgs = (sub: string) => [
    "stage",
    sub,
    "--job",
    "/kiln-job/job.json",
    "--out",
    "/.kiln/workspace",
    ...registry,
  ];
  assert.deepEqual(pod.spec?.nodeSelector, { "kubernetes.io/os": "linux", "kubernetes.io/arch": "arm64" });
  // A stage FROM --platform=$BUILDPLATFORM of an arm64 build runs on the build platform's nodes.
  const onAmd64 = buildPod(
    ib,
    {
      name: "p",
      job:
        runJob.kind === "stage"
          ? { ...runJob, stage: { ...runJob.stage, platform: "linux/amd64", buildFor: "linux/arm64" } }
          : runJob,
      stage: "build",
      platform: "linux/arm64",
      runsCode: true,
    },
    { image: "kiln" },
  );
  assert.deepEqual(onAmd64.spec?.nodeSelector, {
    "kubernetes.io/os": "linux",
    "kubernetes.io/arch": "amd64",
  });
  // The kubelet pulls a base that is an earlier stage with the push secret; no container reads it for that.
  assert.deepEqual(pod.spec?.imagePullSecrets, [{ name: "push" }]);
  assert.deepEqual(pod.spec?.volumes?.slice(1), [
    { name: "work", emptyDir: {} },
    {
      name: "push-secret",
      secret: { secretName: "push", items: [{ key: ".dockerconfigjson", path: "config.json" }] },
    },
    { name: "runtime", emptyDir: {} },
    { name: "run-cache", emptyDir: {} },
    {
      name: "build-secrets",
      projected: { sources: [{ secret: { name: "api", items: [{ key: "token", path: "token" }] } }] },
    },
  ]);
  assert.deepEqual(pod.spec?.initContainers, [
    {
      ...kiln("runtime", [], [{ name: "runtime", mountPath: "/kiln-runtime" }]),
      command: ["cp", "-R", "/kiln/.", "/kiln-runtime/"],
    },
    {
      ...kiln("prepare", stageArgs("prepare"), [jobMount, workMount]),
      securityContext: { runAsUser: 0, runAsGroup: 0 },
    },
  ]);
  assert.deepEqual(pod.spec?.containers, [
    {
      name: "executor",
      image: base,
      command: [
        "/.kiln/runtime/lib/ld-linux-x86-64.so.2",
        "--library-path",
        "/.kiln/runtime/lib",
        "/.kiln/runtime/bin/node",
        "--disable-warning=ExperimentalWarning",
        "/.kiln/runtime/src/main.ts",
        "executor",
        "--workspace",
        "/.kiln/workspace",
      ],
      args: [],
      env: [
        { name: "LOG_LEVEL", value: "info" },
        { name: "TMPDIR", value: "/.kiln/workspace/tmp" },
      ],
      securityContext: { runAsUser: 0, runAsGroup: 0, capabilities: { add: ["SYS_ADMIN"] } },
      volumeMounts: [
        { name: "runtime", mountPath: "/.kiln/runtime", readOnly: true },
        workMount,
        { name: "run-cache", mountPath: "/.kiln/cache" },
        { name: "build-secrets", mountPath: "/.kiln/secrets", readOnly: true },
      ],
      terminationMessagePath: "/dev/termination-log",
      terminationMessagePolicy: "File",
    },
    kiln(
      "pusher",
      [...stageArgs("push"), "--authfile", "/kiln-push-secret/config.json"],
      [jobMount, workMount, { name: "push-secret", mountPath: "/kiln-push-secret", readOnly: true }],
    ),
  ]);
});

test("pod names: at most 63 characters, stable, different per generation, stage and platform", () => {
  const long = imageBuild({ name: `a-very-long-image-build-name-${"x".repeat(200)}` });
  const names = [
    stagePodName(long, "image", "linux/amd64"),
    stagePodName(long, "Builder_Stage.With-A-Long-Name-Indeed", "linux/arm/v7"),
    stagePodName(long, "Builder_Stage.With-A-Long-Name-Indeed-2", "linux/arm/v7"),
    indexPodName(long),
  ];
  for (const n of names) {
    assert.ok(n.length <= 63, n);
    assert.match(n, /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
  }
  assert.equal(new Set(names).size, names.length);
  const h = hash(UID, "1", "Builder_Stage.With-A-Long-Name-Indeed", "linux/arm/v7");
  assert.equal(names[1], `a-very-long-image-build-nam-${h}-builder-stage-with-a-armv7`);
  assert.equal(stagePodName(long, "image", "linux/amd64"), names[0]);
  const next = imageBuild({ name: long.metadata.name, generation: 2 });
  assert.notEqual(stagePodName(next, "image", "linux/amd64"), names[0]);
});

test("buildPod: the controller's default resources and registry CA reach every kiln container", () => {
  const pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  const defaults = { requests: { cpu: "500m", memory: "512Mi" }, limits: { memory: "2Gi" } };
  const cfg = { image: "kiln", resources: defaults, registryCa: pem };
  const unit = { name: "p", job, stage: "image", platform: "linux/arm64", runsCode: false };
  const containersOf = (p: ReturnType<typeof buildPod>) => [
    ...(p.spec?.initContainers ?? []),
    ...(p.spec?.containers ?? []),
  ];
  const jobItem = { path: "job.json", fieldRef: { fieldPath: "metadata.annotations['kiln.dev/job']" } };

  const pod = buildPod(imageBuild(), unit, cfg);
  // The CA travels in the pod itself, read as a file through the job volume every kiln container mounts.
  assert.equal(pod.metadata?.annotations?.["kiln.dev/registry-ca"], pem);
  assert.deepEqual(pod.spec?.volumes?.[0], {
    name: "job",
    downwardAPI: {
      items: [
        jobItem,
        { path: "registry-ca.crt", fieldRef: { fieldPath: "metadata.annotations['kiln.dev/registry-ca']" } },
      ],
    },
  });
  assert.deepEqual(
    containersOf(pod).map((c) => c.name),
    ["pusher"],
  );
  for (const c of containersOf(pod)) {
    assert.deepEqual(c.env, [
      { name: "LOG_LEVEL", value: "info" },
      { name: "NODE_EXTRA_CA_CERTS", value: "/kiln-job/registry-ca.crt" },
    ]);
    assert.deepEqual(c.volumeMounts?.[0], { name: "job", mountPath: "/kiln-job", readOnly: true });
    assert.deepEqual(c.resources, defaults);
  }

  // The ImageBuild's own resources win over the defaults.
  const own = buildPod(imageBuild({ spec: { resources: { limits: { memory: "1Gi" } } } }), unit, cfg);
  for (const c of containersOf(own)) assert.deepEqual(c.resources, { limits: { memory: "1Gi" } });

  // Without either: no annotation, no file, no variable, no resources.
  const plain = buildPod(imageBuild(), unit, { image: "kiln" });
  assert.equal(plain.metadata?.annotations?.["kiln.dev/registry-ca"], undefined);
  assert.deepEqual(plain.spec?.volumes?.[0], { name: "job", downwardAPI: { items: [jobItem] } });
  for (const c of containersOf(plain)) {
    assert.deepEqual(c.env, [{ name: "LOG_LEVEL", value: "info" }]);
    assert.equal(c.resources, undefined);
  }
});
