import type { KubernetesListObject, KubernetesObject } from "@kubernetes/client-node";
import type { Logger } from "../log.ts";
import { KubeApiError, type KubeClient } from "./client.ts";

export interface InformerOptions<T> {
  /** The collection's path, such as `/api/v1/pods` or `/apis/kiln.dev/v1alpha1/namespaces/ns/imagebuilds`. */
  readonly path: string;
  readonly labelSelector?: string;
  /**
   * What the cache keeps of each object the API server sends, as client-go's SetTransform: only what the
   * cache's readers use. The parsed original is garbage at once; a cache of whole objects is promoted to
   * the old generation and churned there by every update.
   */
  readonly transform: (obj: KubernetesObject) => T;
  /** Called for every add, update and delete, and for every object a relist adds, changes or removes. */
  readonly onChange: (obj: T, verb: "add" | "update" | "delete") => void;
  readonly log: Logger;
  /** First and longest wait before trying again after an error. */
  readonly backoffMs?: { readonly initial: number; readonly max: number };
}

/**
 * An object without managedFields (server-side-apply bookkeeping, often the largest part of an object)
 * and without kubectl's copy of the whole object in an annotation: a transform for caches that keep the
 * rest. Modifies `obj`.
 */
export function trimMetadata<T extends KubernetesObject>(obj: T): T {
  const meta = obj.metadata;
  if (meta?.managedFields !== undefined) delete meta.managedFields;
  if (meta?.annotations?.[LAST_APPLIED] !== undefined) delete meta.annotations[LAST_APPLIED];
  return obj;
}

const LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration";

const keyOf = (o: KubernetesObject) => `${o.metadata?.namespace ?? ""}/${o.metadata?.name ?? ""}`;

/**
 * A cache of one collection kept by list+watch, as client-go's reflector: list, then watch from the list's
 * resourceVersion with bookmarks; a watch the server ends is resumed from the last version seen; a 410
 * (the version is too old) lists again and reports what changed meanwhile; any other error is retried with
 * exponential backoff — the informer never stops by itself.
 */
export class Informer<T extends KubernetesObject> {
  readonly #client: KubeClient;
  readonly #opts: InformerOptions<T>;
  readonly #objects = new Map<string, T>();
  readonly #abort = new AbortController();
  readonly #ready = Promise.withResolvers<void>();
  #resourceVersion = "";
  #synced = false;
  #loop: Promise<void> | undefined;

  constructor(client: KubeClient, opts: InformerOptions<T>) {
    this.#client = client;
    this.#opts = opts;
  }

  /** Starts the loop; resolves once the first list is in the cache. */
  async start(): Promise<void> {
    this.#loop ??= this.#run();
    await this.#ready.promise;
  }

  get synced(): boolean {
    return this.#synced;
  }

  get(name: string, namespace?: string): T | undefined {
    return this.#objects.get(`${namespace ?? ""}/${name}`);
  }

  list(): readonly T[] {
    return [...this.#objects.values()];
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    await this.#loop;
  }

  async #run(): Promise<void> {
    const { initial, max } = this.#opts.backoffMs ?? { initial: 500, max: 30_000 };
    let failures = 0;
    const signal = this.#abort.signal;
    while (!signal.aborted) {
      try {
        if (this.#resourceVersion === "") await this.#relist();
        await this.#client.watch(
          this.#opts.path,
          {
            labelSelector: this.#opts.labelSelector,
            resourceVersion: this.#resourceVersion,
            allowWatchBookmarks: "true",
            timeoutSeconds: String(240 + Math.floor(Math.random() * 120)),
          },
          (e) => this.#event(e.type, e.object as KubernetesObject & { code?: number }),
          signal,
        );
        failures = 0;
      } catch (err) {
        if (signal.aborted) return;
        if (err instanceof KubeApiError && err.status === 410) this.#resourceVersion = "";
        const delay = Math.min(max, initial * 2 ** failures++);
        this.#opts.log.warn({ err, path: this.#opts.path, retryInMs: delay }, "Watch failed; retrying");
        await new Promise((r) => setTimeout(r, delay).unref());
      }
    }
  }

  async #relist(): Promise<void> {
    const list = await this.#client.request<KubernetesListObject<KubernetesObject>>("GET", this.#opts.path, {
      query: { labelSelector: this.#opts.labelSelector },
    });
    const seen = new Set<string>();
    for (const item of list.items) {
      const obj = this.#opts.transform(item);
      const key = keyOf(obj);
      seen.add(key);
      const prev = this.#objects.get(key);
      this.#objects.set(key, obj);
      if (prev?.metadata?.resourceVersion !== obj.metadata?.resourceVersion)
        this.#opts.onChange(obj, prev === undefined ? "add" : "update");
    }
    for (const [key, obj] of this.#objects) {
      if (seen.has(key)) continue;
      this.#objects.delete(key);
      this.#opts.onChange(obj, "delete");
    }
    this.#resourceVersion = list.metadata?.resourceVersion ?? "";
    this.#synced = true;
    this.#ready.resolve();
  }

  #event(type: string, raw: KubernetesObject & { code?: number }): void {
    switch (type) {
      case "ADDED":
      case "MODIFIED": {
        const obj = this.#opts.transform(raw);
        const key = keyOf(obj);
        const existed = this.#objects.has(key);
        this.#objects.set(key, obj);
        this.#opts.onChange(obj, existed ? "update" : "add");
        break;
      }
      case "DELETED": {
        const obj = this.#opts.transform(raw);
        this.#objects.delete(keyOf(obj));
        this.#opts.onChange(obj, "delete");
        break;
      }
      case "ERROR":
        // A Status inside the stream: 410 Gone means list again; the stream ends right after.
        if (raw.code === 410) this.#resourceVersion = "";
        return;
    }
    const rv = raw.metadata?.resourceVersion;
    if (rv !== undefined && this.#resourceVersion !== "") this.#resourceVersion = rv;
  }
}
