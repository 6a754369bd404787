import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { CRD_FILE, imageBuildCrd, imageBuildCrdYaml } from "../../src/api/crd.ts";
import { parseControllerArgs } from "../../src/controller/controller-command.ts";
import { CHART, helm, type KubeObject, renderChart, withValuesFile } from "./helm.ts";

/** What the controller does to the API (src/kube): the rules must be exactly these, and no secrets. */
const CONTROLLER_RULES = [
  { apiGroups: ["kiln.dev"], resources: ["imagebuilds"], verbs: ["list", "watch", "patch"] },
  { apiGroups: ["kiln.dev"], resources: ["imagebuilds/status"], verbs: ["patch"] },
  { apiGroups: ["kiln.dev"], resources: ["imagebuilds/finalizers"], verbs: ["update"] },
  { apiGroups: [""], resources: ["pods"], verbs: ["create", "delete", "list", "watch"] },
  { apiGroups: [""], resources: ["pods/log"], verbs: ["get"] },
  { apiGroups: [""], resources: ["events"], verbs: ["create", "list"] },
];

const leaseRules = (lease: string) => [
  {
    apiGroups: ["coordination.k8s.io"],
    resources: ["leases"],
    resourceNames: [lease],
    verbs: ["get", "update"],
  },
];

const labels = (release: string) => ({
  "helm.sh/chart": "kiln-0.1.0",
  "app.kubernetes.io/name": "kiln",
  "app.kubernetes.io/instance": release,
  "app.kubernetes.io/version": "0.1.0",
  "app.kubernetes.io/managed-by": "Helm",
});

const selector = (release: string) => ({
  "app.kubernetes.io/name": "kiln",
  "app.kubernetes.io/instance": release,
  "app.kubernetes.io/component": "controller",
});

const NON_DEFAULT = {
  replicaCount: 3,
  watchNamespace: "team",
  logLevel: "debug",
  workers: 8,
  image: { repository: "registry.example/kiln/kiln", digest: `sha256:${"1".repeat(64)}` },
  builderImage: { repository: "registry.example/kiln/runtime", tag: "v9", pullPolicy: "Always" },
  imagePullSecrets: ["regcred"],
  leaderElection: { leaseName: "kiln-lock", leaseDurationSeconds: 30 },
  builds: {
    maxBuilds: 20,
    maxBuildsPerNamespace: 5,
    maxAttempts: 2,
    resources: { requests: { cpu: "500m", memory: "512Mi" }, limits: { memory: "2Gi" } },
    serviceAccount: { name: "builder", namespaces: ["team", "other"] },
  },
  registryCA: { bundle: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n" },
  insecureRegistries: ["10.0.0.1:5000", "registry.local"],
  registryMirrors: ["docker.io=10.0.0.1:5000"],
  metrics: { port: 9090, serviceMonitor: { enabled: true, labels: { release: "prom" } } },
  nodeSelector: { pool: "system" },
  tolerations: [{ key: "system", operator: "Exists", effect: "NoSchedule" }],
  affinity: {
    nodeAffinity: {
      requiredDuringSchedulingIgnoredDuringExecution: {
        nodeSelectorTerms: [
          { matchExpressions: [{ key: "kubernetes.io/arch", operator: "In", values: ["amd64"] }] },
        ],
      },
    },
  },
};

function find(objects: readonly KubeObject[], kind: string, name: string, namespace?: string): KubeObject {
  const found = objects.filter(
    (o) => o.kind === kind && o.metadata.name === name && o.metadata.namespace === namespace,
  );
  assert.equal(found.length, 1, `one ${kind} ${namespace ?? ""}/${name}`);
  return found[0]!;
}

const ids = (objects: readonly KubeObject[]) =>
  objects.map((o) => `${o.kind} ${o.metadata.namespace ?? ""}/${o.metadata.name}`).sort();

type PodSpec = {
  containers: { args: string[]; [k: string]: unknown }[];
  [k: string]: unknown;
};
const podSpecOf = (d: KubeObject) => (d["spec"] as { template: { spec: PodSpec } }).template.spec;

/** What the controller parses from the Deployment's args, without the per-process lease identity. */
function parsedArgs(args: readonly string[]) {
  assert.equal(args[0], "controller");
  const { options, kubeconfig, ...files } = parseControllerArgs(args.slice(1));
  assert.equal(kubeconfig, undefined, "in-cluster config");
  const { leaderElection, ...rest } = options;
  if (leaderElection === undefined) return { ...files, ...rest };
  const { identity, ...lease } = leaderElection;
  assert.match(identity, /^.+_[0-9a-f]{8}$/);
  return { ...files, ...rest, leaderElection: lease };
}

test("the chart's CRD is the file kiln crd generates, and helm installs it as such", async () => {
  const inChart = await readFile(join(CHART, "crds", CRD_FILE), "utf8");
  assert.ok(inChart === imageBuildCrdYaml(), `charts/kiln/crds/${CRD_FILE} is stale: run ./bin/kiln crd`);
  const crds = (await renderChart({}, { includeCrds: true })).filter(
    (o) => o.kind === "CustomResourceDefinition",
  );
  assert.deepEqual(crds, [imageBuildCrd()]);
});

test("helm lint --strict passes with default and non-default values", async () => {
  for (const values of [{}, NON_DEFAULT]) {
    const { stdout } = await withValuesFile(values, (file) =>
      helm(["lint", "--strict", CHART, "--values", file]),
    );
    assert.match(stdout, /^1 chart\(s\) linted, 0 chart\(s\) failed$/m);
    assert.doesNotMatch(stdout, /\[(WARNING|ERROR)\]/);
  }
});

test("default values: ClusterRole with exactly the controller's rules, Lease Role, build ServiceAccount, Deployment", async () => {
  const objects = await renderChart({}, { release: "kiln", namespace: "kiln-system" });
  assert.deepEqual(ids(objects), [
    "ClusterRole /kiln",
    "ClusterRoleBinding /kiln",
    "Deployment kiln-system/kiln",
    "Lease kiln-system/kiln",
    "Role kiln-system/kiln-leader-election",
    "RoleBinding kiln-system/kiln-leader-election",
    "Service kiln-system/kiln-metrics",
    "ServiceAccount kiln-system/kiln",
    "ServiceAccount kiln-system/kiln-build",
  ]);

  assert.deepEqual(find(objects, "ClusterRole", "kiln")["rules"], CONTROLLER_RULES);
  assert.deepEqual(find(objects, "ClusterRoleBinding", "kiln"), {
    apiVersion: "rbac.authorization.k8s.io/v1",
    kind: "ClusterRoleBinding",
    metadata: { name: "kiln", labels: labels("kiln") },
    roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "kiln" },
    subjects: [{ kind: "ServiceAccount", name: "kiln", namespace: "kiln-system" }],
  });
  assert.deepEqual(find(objects, "Role", "kiln-leader-election", "kiln-system")["rules"], leaseRules("kiln"));
  assert.deepEqual(find(objects, "RoleBinding", "kiln-leader-election", "kiln-system")["subjects"], [
    { kind: "ServiceAccount", name: "kiln", namespace: "kiln-system" },
  ]);
  assert.deepEqual(find(objects, "Lease", "kiln", "kiln-system")["spec"], {});
  assert.deepEqual(find(objects, "ServiceAccount", "kiln-build", "kiln-system"), {
    apiVersion: "v1",
    kind: "ServiceAccount",
    metadata: {
      name: "kiln-build",
      namespace: "kiln-system",
      labels: { ...labels("kiln"), "app.kubernetes.io/component": "build" },
    },
    automountServiceAccountToken: false,
  });
  assert.deepEqual(find(objects, "Service", "kiln-metrics", "kiln-system")["spec"], {
    selector: selector("kiln"),
    ports: [{ name: "metrics", port: 8080, targetPort: "metrics", protocol: "TCP" }],
  });

  const deployment = find(objects, "Deployment", "kiln", "kiln-system");
  assert.equal((deployment["spec"] as { replicas: number }).replicas, 1);
  const pod = podSpecOf(deployment);
  const args = pod.containers[0]?.args ?? [];
  assert.deepEqual(args, [
    "controller",
    "--builder-image=kiln/kiln:0.1.0",
    "--workers=4",
    "--max-builds=100",
    "--max-attempts=4",
    "--service-account=kiln-build",
    "--port=8080",
    "--lease-namespace=kiln-system",
    "--lease-name=kiln",
    "--lease-duration-seconds=15",
  ]);
  assert.deepEqual(parsedArgs(args), {
    builder: {
      image: "kiln/kiln:0.1.0",
      serviceAccountName: "kiln-build",
      registryMirrors: [],
      insecureRegistries: [],
    },
    workers: 4,
    maxConcurrentBuilds: 100,
    maxConcurrentBuildsPerNamespace: 100,
    maxAttempts: 4,
    port: 8080,
    leaderElection: { namespace: "kiln-system", name: "kiln", leaseDurationMs: 15_000 },
  });
  assert.deepEqual(pod, {
    serviceAccountName: "kiln",
    securityContext: {
      runAsNonRoot: true,
      runAsUser: 65532,
      runAsGroup: 65532,
      seccompProfile: { type: "RuntimeDefault" },
    },
    terminationGracePeriodSeconds: 30,
    containers: [
      {
        name: "controller",
        image: "kiln/kiln:0.1.0",
        imagePullPolicy: "IfNotPresent",
        args,
        env: [{ name: "LOG_LEVEL", value: "info" }],
        ports: [{ name: "metrics", containerPort: 8080, protocol: "TCP" }],
        livenessProbe: {
          httpGet: { path: "/healthz", port: "metrics" },
          periodSeconds: 10,
          failureThreshold: 3,
        },
        readinessProbe: {
          httpGet: { path: "/readyz", port: "metrics" },
          periodSeconds: 5,
          failureThreshold: 3,
        },
        securityContext: {
          allowPrivilegeEscalation: false,
          readOnlyRootFilesystem: true,
          capabilities: { drop: ["ALL"] },
        },
        resources: { requests: { cpu: "100m", memory: "128Mi" }, limits: { memory: "512Mi" } },
        volumeMounts: [{ name: "tmp", mountPath: "/tmp" }],
      },
    ],
    volumes: [{ name: "tmp", emptyDir: { sizeLimit: "64Mi" } }],
  });
  assert.deepEqual((deployment["spec"] as { selector: object }).selector, { matchLabels: selector("kiln") });
});

test("non-default values: Roles in the watched namespace, every value passed as its controller flag", async () => {
  const objects = await renderChart(NON_DEFAULT, { release: "r", namespace: "ops" });
  assert.deepEqual(ids(objects), [
    "ConfigMap ops/r-kiln-registry-ca",
    "Deployment ops/r-kiln",
    "Lease ops/kiln-lock",
    "Role ops/r-kiln-leader-election",
    "Role team/r-kiln",
    "RoleBinding ops/r-kiln-leader-election",
    "RoleBinding team/r-kiln",
    "Service ops/r-kiln-metrics",
    "ServiceAccount ops/r-kiln",
    "ServiceAccount other/builder",
    "ServiceAccount team/builder",
    "ServiceMonitor ops/r-kiln",
  ]);
  assert.deepEqual(find(objects, "Role", "r-kiln", "team")["rules"], CONTROLLER_RULES);
  assert.deepEqual(find(objects, "RoleBinding", "r-kiln", "team")["roleRef"], {
    apiGroup: "rbac.authorization.k8s.io",
    kind: "Role",
    name: "r-kiln",
  });
  assert.deepEqual(find(objects, "RoleBinding", "r-kiln", "team")["subjects"], [
    { kind: "ServiceAccount", name: "r-kiln", namespace: "ops" },
  ]);
  assert.deepEqual(find(objects, "Role", "r-kiln-leader-election", "ops")["rules"], leaseRules("kiln-lock"));
  for (const ns of ["team", "other"]) {
    const sa = find(objects, "ServiceAccount", "builder", ns);
    assert.equal(sa["automountServiceAccountToken"], false);
    assert.deepEqual(sa["imagePullSecrets"], [{ name: "regcred" }]);
  }
  assert.deepEqual(find(objects, "ConfigMap", "r-kiln-registry-ca", "ops")["data"], {
    "ca.crt": NON_DEFAULT.registryCA.bundle,
  });
  assert.deepEqual(find(objects, "ServiceMonitor", "r-kiln", "ops")["spec"], {
    selector: {
      matchLabels: {
        "app.kubernetes.io/name": "kiln",
        "app.kubernetes.io/instance": "r",
        "app.kubernetes.io/component": "metrics",
      },
    },
    namespaceSelector: { matchNames: ["ops"] },
    endpoints: [{ port: "metrics", path: "/metrics", interval: "30s" }],
  });
  assert.equal(find(objects, "ServiceMonitor", "r-kiln", "ops").metadata.labels?.["release"], "prom");

  const deployment = find(objects, "Deployment", "r-kiln", "ops");
  assert.equal((deployment["spec"] as { replicas: number }).replicas, 3);
  const template = (deployment["spec"] as { template: { metadata: { annotations: object } } }).template;
  // sha256 of the bundle, as `printf %s "$bundle" | sha256sum` gives it.
  assert.deepEqual(template.metadata.annotations, {
    "kiln.dev/registry-ca-sha256": "8010bfcee1842b2a4ce8f67c3e9455f0188f7a15bf39ec61a26feb75cd785821",
  });
  const pod = podSpecOf(deployment);
  const container = pod.containers[0]!;
  const args = container.args;
  assert.deepEqual(args, [
    "controller",
    "--builder-image=registry.example/kiln/runtime:v9",
    "--image-pull-policy=Always",
    "--namespace=team",
    "--workers=8",
    "--max-builds=20",
    "--max-builds-per-namespace=5",
    "--max-attempts=2",
    '--default-build-resources={"limits":{"memory":"2Gi"},"requests":{"cpu":"500m","memory":"512Mi"}}',
    "--service-account=builder",
    "--registry-ca-file=/etc/kiln/registry-ca/ca.crt",
    "--insecure-registry=10.0.0.1:5000",
    "--insecure-registry=registry.local",
    "--registry-mirror=docker.io=10.0.0.1:5000",
    "--port=9090",
    "--lease-namespace=ops",
    "--lease-name=kiln-lock",
    "--lease-duration-seconds=30",
  ]);
  assert.deepEqual(parsedArgs(args), {
    registryCaFile: "/etc/kiln/registry-ca/ca.crt",
    builder: {
      image: "registry.example/kiln/runtime:v9",
      imagePullPolicy: "Always",
      serviceAccountName: "builder",
      registryMirrors: ["docker.io=10.0.0.1:5000"],
      insecureRegistries: ["10.0.0.1:5000", "registry.local"],
      resources: { requests: { cpu: "500m", memory: "512Mi" }, limits: { memory: "2Gi" } },
    },
    namespace: "team",
    workers: 8,
    maxConcurrentBuilds: 20,
    maxConcurrentBuildsPerNamespace: 5,
    maxAttempts: 2,
    port: 9090,
    leaderElection: { namespace: "ops", name: "kiln-lock", leaseDurationMs: 30_000 },
  });
  assert.equal(container["image"], `registry.example/kiln/kiln@sha256:${"1".repeat(64)}`);
  assert.deepEqual(container["env"], [{ name: "LOG_LEVEL", value: "debug" }]);
  assert.deepEqual(container["ports"], [{ name: "metrics", containerPort: 9090, protocol: "TCP" }]);
  assert.deepEqual(container["volumeMounts"], [
    { name: "tmp", mountPath: "/tmp" },
    { name: "registry-ca", mountPath: "/etc/kiln/registry-ca", readOnly: true },
  ]);
  assert.deepEqual(pod["volumes"], [
    { name: "tmp", emptyDir: { sizeLimit: "64Mi" } },
    {
      name: "registry-ca",
      configMap: { name: "r-kiln-registry-ca", items: [{ key: "ca.crt", path: "ca.crt" }] },
    },
  ]);
  assert.deepEqual(pod["imagePullSecrets"], [{ name: "regcred" }]);
  assert.deepEqual(pod["nodeSelector"], NON_DEFAULT.nodeSelector);
  assert.deepEqual(pod["tolerations"], NON_DEFAULT.tolerations);
  assert.deepEqual(pod["affinity"], NON_DEFAULT.affinity);
});

test("no Role or ClusterRole of any rendering grants anything on secrets, or a wildcard", async () => {
  const renderings = [
    await renderChart({}),
    await renderChart(NON_DEFAULT),
    await renderChart({ leaderElection: { enabled: false }, watchNamespace: "a" }),
  ];
  let roles = 0;
  for (const objects of renderings) {
    for (const o of objects.filter((x) => x.kind === "Role" || x.kind === "ClusterRole")) {
      roles++;
      for (const rule of o["rules"] as { apiGroups: string[]; resources: string[]; verbs: string[] }[]) {
        assert.ok(!rule.resources.includes("secrets"), `${o.metadata.name} grants secrets`);
        assert.ok(![...rule.apiGroups, ...rule.resources, ...rule.verbs].includes("*"));
      }
    }
  }
  assert.equal(roles, 2 + 2 + 1);
});

test("a registry CA from an existing ConfigMap or Secret is mounted from it", async () => {
  for (const [values, volume] of [
    [
      { registryCA: { configMap: { name: "corp-ca", key: "bundle.pem" } } },
      { configMap: { name: "corp-ca", items: [{ key: "bundle.pem", path: "ca.crt" }] } },
    ],
    [
      { registryCA: { secret: { name: "corp-ca" } } },
      { secret: { secretName: "corp-ca", items: [{ key: "ca.crt", path: "ca.crt" }] } },
    ],
  ] as const) {
    const objects = await renderChart(values);
    assert.ok(!objects.some((o) => o.kind === "ConfigMap"), "no ConfigMap of the chart's own");
    const pod = podSpecOf(find(objects, "Deployment", "kiln", "kiln-system"));
    assert.deepEqual(pod["volumes"], [
      { name: "tmp", emptyDir: { sizeLimit: "64Mi" } },
      { name: "registry-ca", ...volume },
    ]);
    assert.ok(pod.containers[0]?.args.includes("--registry-ca-file=/etc/kiln/registry-ca/ca.crt"));
  }
});

test("without leader election: no Lease, no Lease Role, --no-leader-election; more replicas are refused", async () => {
  const objects = await renderChart({ leaderElection: { enabled: false } });
  assert.ok(!objects.some((o) => o.kind === "Lease" || o.metadata.name.endsWith("-leader-election")));
  const args = podSpecOf(find(objects, "Deployment", "kiln", "kiln-system")).containers[0]?.args ?? [];
  assert.equal(args.at(-1), "--no-leader-election");
  assert.equal("leaderElection" in parsedArgs(args), false);

  await assert.rejects(renderChart({ replicaCount: 2, leaderElection: { enabled: false } }), {
    message: /replicaCount > 1 needs leaderElection\.enabled/,
  });
  await assert.rejects(
    renderChart({ registryCA: { bundle: "x", secret: { name: "s" } } }),
    /registryCA: set one of bundle, configMap\.name and secret\.name/,
  );
});

test("the flags the chart adds refuse malformed values with a message", () => {
  const parse =
    (...flags: string[]) =>
    () =>
      parseControllerArgs(["--builder-image=kiln", ...flags]);
  assert.throws(parse("--default-build-resources={limits"), {
    code: "KILN_ERR_INVALID_INPUT",
    message: /^--default-build-resources is not JSON: /,
  });
  assert.throws(parse('--default-build-resources={"limit":{"memory":"1Gi"}}'), {
    code: "KILN_ERR_INVALID_INPUT",
    message: /^--default-build-resources:\n.*limit/,
  });
  assert.deepEqual(
    parseControllerArgs(["--builder-image=kiln", "--registry-ca-file=/ca.crt"]).registryCaFile,
    "/ca.crt",
  );
});
