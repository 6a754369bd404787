import { isDeepStrictEqual } from "node:util";
import type { V1Pod } from "@kubernetes/client-node";
import {
  API_GROUP,
  API_VERSION,
  IMAGE_BUILD_PLURAL,
  type ImageBuild,
  type ImageBuildStatus,
} from "../api/image-build.ts";
import { isConflict, isNotFound, type KubeClient, PatchType } from "./client.ts";

/** The API paths and writes the controller uses; each is one request, errors as KubeApiError. */

export function imageBuildsPath(namespace?: string): string {
  const ns = namespace !== undefined ? `/namespaces/${namespace}` : "";
  return `/apis/${API_GROUP}/${API_VERSION}${ns}/${IMAGE_BUILD_PLURAL}`;
}

export function podsPath(namespace?: string): string {
  return namespace !== undefined ? `/api/v1/namespaces/${namespace}/pods` : "/api/v1/pods";
}

const ibPath = (ib: ImageBuild) => `${imageBuildsPath(ib.metadata.namespace)}/${ib.metadata.name}`;

/**
 * Writes `status` with a merge patch on the status subresource unless it equals what the ImageBuild holds
 * (STYLE R8). Fields the new status lacks are removed (null in a merge patch). Returns the API server's
 * answer (the ImageBuild as written), or undefined when there was nothing to write.
 */
export async function writeStatus(
  client: KubeClient,
  ib: ImageBuild,
  status: ImageBuildStatus,
): Promise<unknown> {
  const current = ib.status ?? {};
  if (isDeepStrictEqual(current, status)) return undefined;
  const patch: Record<string, unknown> = { ...status };
  for (const k of Object.keys(current)) if (!(k in status)) patch[k] = null;
  return client.request("PATCH", `${ibPath(ib)}/status`, {
    body: { status: patch },
    contentType: PatchType.Merge,
  });
}

/**
 * Sets finalizers and annotations, conditional on the resourceVersion read (a merge patch carrying
 * metadata.resourceVersion fails with 409 when the object changed). Returns the updated ImageBuild.
 */
export async function patchMetadata(
  client: KubeClient,
  ib: ImageBuild,
  change: { finalizers?: string[]; annotations?: Record<string, string | null> },
): Promise<ImageBuild> {
  return client.request<ImageBuild>("PATCH", ibPath(ib), {
    body: { metadata: { resourceVersion: ib.metadata.resourceVersion, ...change } },
    contentType: PatchType.Merge,
  });
}

/** Creates a pod; a pod of that name already there (409) is the same pod made by an earlier reconcile. */
export async function createPod(client: KubeClient, pod: V1Pod): Promise<"created" | "exists"> {
  try {
    await client.request("POST", podsPath(pod.metadata?.namespace), { body: pod, discard: true });
    return "created";
  } catch (err) {
    if (isConflict(err)) return "exists";
    throw err;
  }
}

/** Deletes a pod in the background; one already gone is fine. */
export async function deletePod(client: KubeClient, namespace: string, name: string): Promise<void> {
  try {
    await client.request("DELETE", `${podsPath(namespace)}/${name}`, {
      discard: true,
      body: { apiVersion: "v1", kind: "DeleteOptions", propagationPolicy: "Background" },
    });
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
}

/** The last lines a container wrote, for a failure's log snippet. */
export async function readPodLog(
  client: KubeClient,
  namespace: string,
  name: string,
  container: string,
  limits: { readonly tailLines?: number; readonly limitBytes?: number } = {
    tailLines: 200,
    limitBytes: 32_768,
  },
): Promise<string> {
  return client.request<string>("GET", `${podsPath(namespace)}/${name}/log`, {
    query: {
      container,
      ...(limits.tailLines !== undefined ? { tailLines: String(limits.tailLines) } : {}),
      ...(limits.limitBytes !== undefined ? { limitBytes: String(limits.limitBytes) } : {}),
    },
    text: true,
  });
}

/** The messages of a pod's Events of one reason (the kubelet's FailedMount, say), oldest first. */
export async function podEventMessages(
  client: KubeClient,
  namespace: string,
  pod: string,
  reason: string,
): Promise<string[]> {
  const list = await client.request<{ items: { message?: string }[] }>(
    "GET",
    `/api/v1/namespaces/${namespace}/events`,
    { query: { fieldSelector: `involvedObject.kind=Pod,involvedObject.name=${pod},reason=${reason}` } },
  );
  return list.items.map((e) => e.message ?? "");
}
