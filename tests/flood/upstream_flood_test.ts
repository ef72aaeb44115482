/**
 * Flood suite (see `flood.ts`): circuit breakers. A breaker is kept per configured upstream host only, however many
 * hosts, ports and redirect targets requests name: at most as many breakers as `allowedHosts` has entries.
 */
import assert from "node:assert/strict";
import { memoryLogger } from "../../src/log.ts";
import { Breakers } from "../../src/upstream/breaker.ts";
import { Fetcher, UpstreamError } from "../../src/upstream/fetcher.ts";
import { allowedHosts, configuredHost, hostAllowlist } from "../../src/upstream/hosts.ts";
import { freePort, testConfig } from "../helpers.ts";
import { assertAtMost, flood } from "./flood.ts";

Deno.test("breaker hosts: 2,000 unique ports and host names leave breakers for configured hosts only", async () => {
  // As app.ts wires them: the allowlist and breaker keys from the configuration.
  const config = testConfig({
    upstreams: { index: "http://127.0.0.1:9/none", retries: 0 },
    policy: { allow_hosts: ["127.0.0.1"] },
  });
  const hosts = allowedHosts(config);
  const breakers = new Breakers({
    failures: config.upstreams.breaker.failures,
    openFor: config.upstreams.breaker.open_for,
  });
  const fetcher = new Fetcher({
    connectTimeout: 2000,
    timeout: 5000,
    retries: 0,
    maxSize: 1024,
    logger: memoryLogger("error"),
    allowHost: hostAllowlist(hosts),
    breakers,
    breakerKey: configuredHost(hosts),
  });
  const first = freePort();
  let most = 0;
  await flood(2000, 20, async (i) => {
    // Every port of an entry without one is allowed; names outside the allowlist are refused before any connection.
    const url = i % 2 ? `http://127.0.0.1:${1024 + ((first + i * 53) % 64_000)}/flood.py` : `http://h${i}.invalid/x`;
    await assert.rejects(fetcher.get(url), UpstreamError);
    most = Math.max(most, breakers.size);
  });
  assertAtMost(most, hosts.size, "hosts with a breaker");
  assert.equal(breakers.size, 1);
  assert.equal(breakers.state("127.0.0.1"), "open", "the failures did not count against the configured host");
});
