import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import { pino } from "pino";
import { KubeClient } from "../../src/kube/client.ts";
import { loadKubeconfig } from "../../src/kube/kubeconfig.ts";
import { LeaderElector, type Lease, microTime } from "../../src/kube/lease.ts";
import { loadClusterEnv } from "../cluster/cluster-env.ts";

const log = pino({ level: "silent" });

test("microTime writes six fractional digits, as metav1.MicroTime", () => {
  assert.equal(microTime(new Date("2026-01-02T03:04:05.678Z")), "2026-01-02T03:04:05.678000Z");
});

test("Lease election against the API server: one holder, no takeover before expiry, release hands over", async (t) => {
  const client = new KubeClient(loadKubeconfig(loadClusterEnv().KUBECONFIG));
  t.after(() => client.close());
  const name = `kiln-test-${randomBytes(4).toString("hex")}`;
  const path = `/apis/coordination.k8s.io/v1/namespaces/default/leases/${name}`;
  t.after(() => client.request("DELETE", path).catch(() => {}));
  const elector = (identity: string) =>
    new LeaderElector(client, {
      namespace: "default",
      name,
      identity,
      leaseDurationMs: 3000,
      renewDeadlineMs: 2000,
      retryPeriodMs: 500,
      log,
    });
  const a = elector("a");
  const b = elector("b");
  assert.equal(await a.tryAcquireOrRenew(), true);
  const created = await client.request<Lease>("GET", path);
  assert.equal(created.spec.holderIdentity, "a");
  assert.equal(created.spec.leaseDurationSeconds, 3);
  assert.equal(created.spec.leaseTransitions, 0);
  assert.match(created.spec.renewTime ?? "", /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
  assert.equal(await b.tryAcquireOrRenew(), false); // held and fresh
  assert.equal(await a.tryAcquireOrRenew(), true); // renews
  const renewed = await client.request<Lease>("GET", path);
  assert.equal(renewed.spec.acquireTime, created.spec.acquireTime);
  assert.notEqual(renewed.spec.renewTime, created.spec.renewTime);
  assert.equal(await b.tryAcquireOrRenew(), false); // b saw a change: its clock starts again

  // a stops renewing: b takes over only after b has seen no change for the lease's duration.
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(await b.tryAcquireOrRenew(), false);
  await new Promise((r) => setTimeout(r, 1700));
  assert.equal(await b.tryAcquireOrRenew(), true);
  const taken = await client.request<Lease>("GET", path);
  assert.deepEqual([taken.spec.holderIdentity, taken.spec.leaseTransitions], ["b", 1]);

  // run() + release(): b leads, gives the lease up, and a gets it on its next try without waiting it out.
  const started = Promise.withResolvers<void>();
  b.run(() => started.resolve(), assert.fail);
  await started.promise;
  assert.equal(b.leading, true);
  await b.release();
  const released = await client.request<Lease>("GET", path);
  assert.deepEqual([released.spec.holderIdentity, released.spec.leaseDurationSeconds], ["", 1]);
  assert.equal(await a.tryAcquireOrRenew(), true);
  assert.equal((await client.request<Lease>("GET", path)).spec.leaseTransitions, 2);
});
