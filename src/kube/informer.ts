import { type KubernetesListObject, type KubernetesObject, ListWatch, Watch } from "@kubernetes/client-node";
import type { Logger } from "../log.ts";
import type { KubeClient } from "./client.ts";

export interface InformerOptions<T> {
  /** The collection's path, such as `/api/v1/pods` or `/apis/kiln.dev/v1alpha1/namespaces/ns/imagebuilds`. */
  readonly path: string;
  readonly labelSelector?: string;
  /** Called for every add, update and delete, and for every object of a relist. */
  readonly onChange: (obj: T, verb: "add" | "update" | "delete") => void;
  readonly log: Logger;
  /** First and longest wait before restarting after an error. */
  readonly backoffMs?: { readonly initial: number; readonly max: number };
}

/**
 * A cache of one collection kept by list+watch. client-node's ListWatch relists by itself after a 410 and
 * reconnects after a timeout, but stops for good on any other error (a refused connection, a 500, a list
 * that fails); this restarts it with exponential backoff so the cache keeps converging.
 */
export class Informer<T extends KubernetesObject> {
  readonly #lw: ListWatch<T>;
  readonly #opts: InformerOptions<T>;
  #stopped = false;
  #synced = false;
  readonly #ready = Promise.withResolvers<void>();
  #failures = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(client: KubeClient, opts: InformerOptions<T>) {
    this.#opts = opts;
    // ListWatch swallows a failed list into its error callback, so "synced" is known only here; the cache
    // is filled right after this promise settles, hence the setImmediate.
    const list = async () => {
      const items = await client.request<KubernetesListObject<T>>("GET", opts.path, {
        query: { labelSelector: opts.labelSelector },
      });
      setImmediate(() => {
        this.#synced = true;
        this.#ready.resolve();
      });
      return items;
    };
    this.#lw = new ListWatch<T>(opts.path, new Watch(client.kubeConfig), list, false, opts.labelSelector);
    for (const verb of ["add", "update", "delete"] as const) {
      this.#lw.on(verb, (obj) => {
        this.#failures = 0;
        opts.onChange(obj, verb);
      });
    }
    this.#lw.on("error", (err) => this.#restart(err));
  }

  /** Resolves once the first list is in the cache and the watch is open. */
  async start(): Promise<void> {
    this.#lw.start().catch((err: unknown) => this.#restart(err));
    await this.#ready.promise;
  }

  get synced(): boolean {
    return this.#synced;
  }

  get(name: string, namespace?: string): T | undefined {
    return this.#lw.get(name, namespace);
  }

  list(namespace?: string): readonly T[] {
    return this.#lw.list(namespace);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#lw.stop();
  }

  #restart(err: unknown): void {
    if (this.#stopped) return;
    const { initial, max } = this.#opts.backoffMs ?? { initial: 500, max: 30_000 };
    const delay = Math.min(max, initial * 2 ** this.#failures++);
    this.#opts.log.warn({ err, path: this.#opts.path, retryInMs: delay }, "Watch failed; restarting");
    this.#timer = setTimeout(() => {
      if (this.#stopped) return;
      this.#lw.start().catch((e: unknown) => this.#restart(e));
    }, delay);
  }
}
