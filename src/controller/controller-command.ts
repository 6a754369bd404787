import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { hostname } from "node:os";
import { parseArgs } from "node:util";
import { type ResourceRequirements, ResourceRequirementsSchema } from "../api/core-v1.ts";
import type { Config } from "../config.ts";
import { describeIssues, InvalidInputError } from "../errors.ts";
import { inClusterEndpoint, type KubeEndpoint, loadKubeconfig } from "../kube/kubeconfig.ts";
import type { Logger } from "../log.ts";
import { Controller, type ControllerOptions } from "./controller.ts";

const USAGE = `usage: kiln controller --builder-image IMAGE [--kubeconfig FILE] [--namespace NS] [--workers N]
       [--max-builds N] [--max-builds-per-namespace N] [--max-attempts N] [--port PORT]
       [--lease-namespace NS] [--lease-name NAME] [--lease-duration-seconds N] [--no-leader-election]
       [--service-account NAME] [--image-pull-policy POLICY]
       [--registry-mirror FROM=TO]... [--insecure-registry HOST]...
       [--registry-ca-file FILE] [--default-build-resources JSON]`;

const positive = (name: string, v: string | undefined, dflt: number): number => {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0)
    throw new InvalidInputError(`--${name} must be a whole number, got ${v}`);
  return n;
};

/** `--default-build-resources`: a container's resources as JSON, e.g. {"limits":{"memory":"2Gi"}}. */
function parseResources(json: string): ResourceRequirements {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch (err) {
    throw new InvalidInputError(`--default-build-resources is not JSON: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const parsed = ResourceRequirementsSchema.strict().safeParse(value);
  if (!parsed.success)
    throw new InvalidInputError(`--default-build-resources:\n${describeIssues(parsed.error.issues)}`, {
      cause: parsed.error,
    });
  return parsed.data;
}

/** Parses `kiln controller` flags; the registry CA file is read when the controller starts. */
export function parseControllerArgs(args: readonly string[]): {
  kubeconfig?: string;
  registryCaFile?: string;
  options: ControllerOptions;
} {
  let v: Record<string, string | boolean | string[] | undefined>;
  try {
    v = parseArgs({
      args: [...args],
      options: {
        "builder-image": { type: "string" },
        kubeconfig: { type: "string" },
        namespace: { type: "string" },
        workers: { type: "string" },
        "max-builds": { type: "string" },
        "max-builds-per-namespace": { type: "string" },
        "max-attempts": { type: "string" },
        port: { type: "string" },
        "lease-namespace": { type: "string" },
        "lease-name": { type: "string" },
        "lease-duration-seconds": { type: "string" },
        "no-leader-election": { type: "boolean" },
        "service-account": { type: "string" },
        "image-pull-policy": { type: "string" },
        // Build pods pull bases and push through these; the controller itself never talks to a registry.
        "registry-mirror": { type: "string", multiple: true },
        "insecure-registry": { type: "string", multiple: true },
        // PEM certificates build pods trust for registries; the chart mounts them from a ConfigMap or Secret.
        "registry-ca-file": { type: "string" },
        "default-build-resources": { type: "string" },
      },
    }).values;
  } catch (err) {
    throw new InvalidInputError(`${(err as Error).message}\n${USAGE}`, { cause: err });
  }
  const image = v["builder-image"] as string | undefined;
  if (image === undefined) throw new InvalidInputError(`--builder-image is required\n${USAGE}`);
  const pullPolicy = v["image-pull-policy"] as string | undefined;
  if (pullPolicy !== undefined && !["Always", "IfNotPresent", "Never"].includes(pullPolicy))
    throw new InvalidInputError("--image-pull-policy must be Always, IfNotPresent or Never");
  const maxBuilds = positive("max-builds", v["max-builds"] as string | undefined, 100);
  const resourcesJson = v["default-build-resources"] as string | undefined;
  const options: ControllerOptions = {
    builder: {
      image,
      ...(pullPolicy !== undefined ? { imagePullPolicy: pullPolicy as "Always" } : {}),
      ...(v["service-account"] !== undefined ? { serviceAccountName: v["service-account"] as string } : {}),
      registryMirrors: (v["registry-mirror"] as string[] | undefined) ?? [],
      insecureRegistries: (v["insecure-registry"] as string[] | undefined) ?? [],
      ...(resourcesJson !== undefined ? { resources: parseResources(resourcesJson) } : {}),
    },
    ...(v.namespace !== undefined ? { namespace: v.namespace as string } : {}),
    workers: Math.max(1, positive("workers", v.workers as string | undefined, 4)),
    maxConcurrentBuilds: maxBuilds,
    maxConcurrentBuildsPerNamespace: positive(
      "max-builds-per-namespace",
      v["max-builds-per-namespace"] as string | undefined,
      maxBuilds,
    ),
    maxAttempts: Math.max(1, positive("max-attempts", v["max-attempts"] as string | undefined, 4)),
    port: positive("port", v.port as string | undefined, 8080),
    ...(v["no-leader-election"]
      ? {}
      : {
          leaderElection: {
            namespace:
              (v["lease-namespace"] as string | undefined) ??
              (v.namespace as string | undefined) ??
              "default",
            name: (v["lease-name"] as string | undefined) ?? "kiln-controller",
            identity: `${hostname()}_${randomBytes(4).toString("hex")}`,
            leaseDurationMs:
              1000 *
              Math.max(
                1,
                positive("lease-duration-seconds", v["lease-duration-seconds"] as string | undefined, 15),
              ),
          },
        }),
  };
  const registryCaFile = v["registry-ca-file"] as string | undefined;
  return {
    ...(v.kubeconfig !== undefined ? { kubeconfig: v.kubeconfig as string } : {}),
    ...(registryCaFile !== undefined ? { registryCaFile } : {}),
    options,
  };
}

/** The flag's or $KUBECONFIG's file, else the pod's service account, as kubectl and client-go choose. */
function endpointOf(kubeconfig: string | undefined, config: Config): KubeEndpoint {
  if (kubeconfig !== undefined) return loadKubeconfig(kubeconfig);
  const { KUBERNETES_SERVICE_HOST: host, KUBERNETES_SERVICE_PORT: port } = config;
  if (host === undefined || port === undefined)
    throw new InvalidInputError("no cluster: give --kubeconfig, set KUBECONFIG, or run in a pod");
  return inClusterEndpoint(host, port);
}

/** The bundle build pods get, read once at start; a file without a certificate is refused, not ignored. */
async function readRegistryCa(file: string): Promise<string> {
  let pem: string;
  try {
    pem = await readFile(file, "utf8");
  } catch (err) {
    throw new InvalidInputError(`--registry-ca-file: cannot read ${file}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (!pem.includes("-----BEGIN CERTIFICATE-----"))
    throw new InvalidInputError(`--registry-ca-file: ${file} holds no PEM certificate`);
  return pem;
}

/** `kiln controller`: runs until SIGTERM/SIGINT (graceful stop, exit 0) or lost leadership (exit 1). */
export async function runControllerCommand(
  args: readonly string[],
  config: Config,
  log: Logger,
): Promise<number> {
  const { kubeconfig, registryCaFile, options: parsed } = parseControllerArgs(args);
  const registryCa = registryCaFile !== undefined ? await readRegistryCa(registryCaFile) : undefined;
  const options: ControllerOptions =
    registryCa !== undefined ? { ...parsed, builder: { ...parsed.builder, registryCa } } : parsed;
  const controller = new Controller(endpointOf(kubeconfig ?? config.KUBECONFIG, config), options, log);
  const done = Promise.withResolvers<number>();
  controller.onLostLeadership = () => done.resolve(1);
  for (const signal of ["SIGTERM", "SIGINT"] as const) process.once(signal, () => done.resolve(0));
  await controller.start();
  log.info(
    { port: controller.address.port, leaderElection: options.leaderElection?.identity ?? false },
    "Controller started",
  );
  const code = await done.promise;
  await controller.stop();
  return code;
}
