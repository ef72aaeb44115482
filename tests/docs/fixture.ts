/**
 * The upstreams the documented commands run against: the standard index plus the two micropython-lib packages the
 * docs name that it lacks (`aioble`, `umqtt.simple`), and the GitHub layout that holds `acme/sensorkit` (at `main`
 * and `v1.0`) with its dependencies. GitLab and PyPI point at a closed port: nothing the docs run needs them, and
 * nothing may reach the internet.
 */
import { buildIndex, type FixturePackage, STANDARD_PACKAGES } from "../fixtures/index_fixture.ts";
import { FakeUpstream } from "../fixtures/fake_upstream.ts";
import { buildGithub } from "../fixtures/repo_fixture.ts";
import { freePort } from "../helpers.ts";

/** `aioble` as a package with a folder and two modules, like micropython-lib's. */
export const AIOBLE: FixturePackage = {
  name: "aioble",
  description: "Asyncio-based wrapper for MicroPython's bluetooth API (fixture)",
  versions: [{
    version: "0.6.1",
    files: {
      "aioble/__init__.py": `from .core import ready\n\nVERSION = "0.6.1"\n`,
      "aioble/core.py": `def ready():\n    return "aioble ready"\n`,
    },
  }],
};

/** `umqtt.simple`: a dotted name installing one module in a folder. */
export const UMQTT_SIMPLE: FixturePackage = {
  name: "umqtt.simple",
  description: "Lightweight MQTT client for MicroPython (fixture)",
  versions: [{
    version: "1.4.0",
    files: {
      "umqtt/simple.py":
        `class MQTTClient:\n    def __init__(self, client_id, server):\n        self.server = server\n`,
    },
  }],
};

/** The running fake upstreams and the `upstreams` and `packages` config sections that point at them. */
export interface DocsUpstreams {
  index: FakeUpstream;
  github: FakeUpstream;
  upstreams: Record<string, unknown>;
  packages: Record<string, unknown>;
  stop(): Promise<void>;
}

/** Starts the fixture index and GitHub on 127.0.0.1. */
export async function startDocsUpstreams(): Promise<DocsUpstreams> {
  const built = await buildIndex([...STANDARD_PACKAGES, AIOBLE, UMQTT_SIMPLE]);
  const index = new FakeUpstream(built.root).start();
  const github = new FakeUpstream(buildGithub(), "").start();
  const closed = `http://127.0.0.1:${freePort()}`;
  return {
    index,
    github,
    upstreams: {
      index: index.url,
      github: github.url,
      gitlab: closed,
      pypi: `${closed}/pypi`,
      pypi_files: closed,
      retries: 0,
    },
    packages: { sensorkit: { source: "github:acme/sensorkit" } },
    async stop() {
      await Promise.all([index.stop(), github.stop()]);
    },
  };
}
