import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { InvalidInputError } from "../errors.ts";

/**
 * Where the API server is and how to prove who we are. Read from a kubeconfig file or from the pod's
 * service account. client-node's KubeConfig would do it, but loading client-node costs a controller ~85 MiB
 * of its 150 MiB budget (every generated API and model is loaded with it), so kiln reads the few fields
 * it supports itself: CA, client certificate and key, bearer token or token file.
 */
export interface KubeEndpoint {
  readonly server: string;
  readonly ca?: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
  readonly skipTLSVerify?: boolean;
  /** The bearer token, read again on each call (service-account tokens are rotated under a running pod). */
  readonly token?: () => string;
}

const SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount";

/** The pod's own service account, as client-go's rest.InClusterConfig. */
export function inClusterEndpoint(host: string, port: string): KubeEndpoint {
  const tokenFile = `${SERVICE_ACCOUNT}/token`;
  return {
    server: `https://${host.includes(":") ? `[${host}]` : host}:${port}`,
    ca: readFileSync(`${SERVICE_ACCOUNT}/ca.crt`),
    token: () => readFileSync(tokenFile, "utf8").trim(),
  };
}

const ClusterSchema = z.object({
  server: z.string(),
  "certificate-authority": z.string().optional(),
  "certificate-authority-data": z.string().optional(),
  "insecure-skip-tls-verify": z.boolean().optional(),
});
const UserSchema = z.object({
  "client-certificate": z.string().optional(),
  "client-certificate-data": z.string().optional(),
  "client-key": z.string().optional(),
  "client-key-data": z.string().optional(),
  token: z.string().optional(),
  tokenFile: z.string().optional(),
});
const KubeconfigSchema = z.object({
  "current-context": z.string().optional(),
  contexts: z
    .array(
      z.object({ name: z.string(), context: z.object({ cluster: z.string(), user: z.string().optional() }) }),
    )
    .default([]),
  clusters: z.array(z.object({ name: z.string(), cluster: ClusterSchema })).default([]),
  users: z.array(z.object({ name: z.string(), user: UserSchema.default({}) })).default([]),
});

/** The current context of a kubeconfig file; file paths in it are relative to the file. */
export function loadKubeconfig(file: string): KubeEndpoint {
  let doc: z.infer<typeof KubeconfigSchema>;
  try {
    doc = KubeconfigSchema.parse(parseYaml(readFileSync(file, "utf8")));
  } catch (err) {
    throw new InvalidInputError(`cannot read kubeconfig ${file}: ${(err as Error).message}`, { cause: err });
  }
  const ctxName = doc["current-context"] ?? doc.contexts[0]?.name;
  const ctx = doc.contexts.find((c) => c.name === ctxName)?.context;
  if (ctx === undefined) throw new InvalidInputError(`kubeconfig ${file}: no context ${ctxName ?? ""}`);
  const cluster = doc.clusters.find((c) => c.name === ctx.cluster)?.cluster;
  if (cluster === undefined) throw new InvalidInputError(`kubeconfig ${file}: no cluster ${ctx.cluster}`);
  const user = doc.users.find((u) => u.name === ctx.user)?.user ?? {};
  const dir = dirname(file);
  const bytes = (data: string | undefined, path: string | undefined): Buffer | undefined =>
    data !== undefined
      ? Buffer.from(data, "base64")
      : path !== undefined
        ? readFileSync(resolve(dir, path))
        : undefined;
  const ca = bytes(cluster["certificate-authority-data"], cluster["certificate-authority"]);
  const cert = bytes(user["client-certificate-data"], user["client-certificate"]);
  const key = bytes(user["client-key-data"], user["client-key"]);
  const { token, tokenFile } = user;
  return {
    server: cluster.server,
    ...(ca !== undefined ? { ca } : {}),
    ...(cert !== undefined ? { cert } : {}),
    ...(key !== undefined ? { key } : {}),
    ...(cluster["insecure-skip-tls-verify"] ? { skipTLSVerify: true } : {}),
    ...(token !== undefined
      ? { token: () => token }
      : tokenFile !== undefined
        ? { token: () => readFileSync(resolve(dir, tokenFile), "utf8").trim() }
        : {}),
  };
}
