import { existsSync, readFileSync } from "node:fs";
import { parseEnv } from "node:util";
import { KubeConfig } from "@kubernetes/client-node";
import { z } from "zod";

/** Where test/cluster/up writes what tests need to reach the cluster. */
export const CLUSTER_ENV_FILE = new URL("./.work/env", import.meta.url);

export const ClusterEnv = z.object({
  KUBECONFIG: z.string().min(1),
  /** https://127.0.0.1:6443 */
  KILN_TEST_API_SERVER: z.url(),
  /** host:port of the plain-HTTP registry that pods, containerd and this host all reach; docker.io mirrors it. */
  KILN_TEST_REGISTRY: z.string().regex(/^[0-9.]+:[0-9]+$/),
  KILN_TEST_NODE: z.string().min(1),
  KILN_TEST_POD_CIDR: z.string().min(1),
  KILN_TEST_SERVICE_CIDR: z.string().min(1),
  KILN_TEST_CLUSTER_STATE: z.string().min(1),
});
export type ClusterEnv = z.infer<typeof ClusterEnv>;

/** Reads the env file of the running test cluster; throws, naming the command to run, when it is not up. */
export function loadClusterEnv(): ClusterEnv {
  if (!existsSync(CLUSTER_ENV_FILE)) {
    throw new Error(
      "the test cluster is not up (no test/cluster/.work/env): start it with `sudo test/cluster/up`",
    );
  }
  return ClusterEnv.parse(parseEnv(readFileSync(CLUSTER_ENV_FILE, "utf8")));
}

/** A KubeConfig for the cluster's admin user (system:masters). */
export function clusterKubeConfig(env: ClusterEnv = loadClusterEnv()): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(env.KUBECONFIG);
  return kc;
}
