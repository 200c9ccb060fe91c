/**
 * The official MCP conformance suite (@modelcontextprotocol/conformance) against the whole server
 * on real loopback ports, with a real token: the server scenarios of the requirement sets
 * 2025-11-25 and 2026-07-28, and the authorization-server scenarios for a public client
 * pre-registered by the admin. Three CLI runs, in parallel; every scenario is a subtest judged
 * against expected-failures.json (see suite.ts for the rules).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { freePort, startTestServer } from '../helpers/server.ts'
import { startBearerProxy } from './bearer-proxy.ts'
import { judge, runConformance, type CliRun, type ExpectedScenarios } from './suite.ts'

const REVISIONS = ['2025-11-25', '2026-07-28'] as const
const expectedFile = JSON.parse(readFileSync(new URL('./expected-failures.json', import.meta.url), 'utf8')) as Record<string, ExpectedScenarios | string>
const expectedFor = (run: string): ExpectedScenarios => {
  const entry = expectedFile[run]
  return typeof entry === 'object' ? entry : {}
}

const PRINCIPAL = 'conformance'
/** Per scenario (the CLI's --timeout), and for a whole CLI run. */
const SCENARIO_TIMEOUT_MS = 15_000
const RUN_TIMEOUT_MS = 120_000

const results = mkdtempSync(join(tmpdir(), 'bus-conformance-'))
t.teardown(() => { rmSync(results, { recursive: true, force: true }) })

// The suite sends Origin: http://127.0.0.1:<its port> on the valid-Origin probe: that is the
// proxy's origin here, as it would be the server's own without a proxy.
const proxyPort = await freePort()
const server = await startTestServer(t, {
  listen: true,
  env: { RATE_LIMIT_MULTIPLIER: '0', ALLOWED_ORIGINS: `http://127.0.0.1:${proxyPort}` }
})

/** The admin API, as `bus-mcp principal add` / `token issue` / `client add` use it. */
async function admin<T> (path: string, body: unknown): Promise<T> {
  const response = await fetch(`${server.adminUrl}/${path}`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body)
  })
  if (response.status !== 201) throw new Error(`admin POST /${path}: HTTP ${response.status} ${await response.text()}`)
  return await response.json() as T
}
await admin('principals', { name: PRINCIPAL, scopes: 'bus:read bus:write' })
const { token } = await admin<{ token: string }>('tokens', { principal: PRINCIPAL, label: 'conformance suite' })
// A public client bound to the principal: approved at once, no consent page. Loopback redirect
// URIs match on any port, so the suite's callback port need not be known here.
const { client_id: clientId } = await admin<{ client_id: string }>('clients', {
  name: 'MCP conformance suite', redirect_uris: ['http://127.0.0.1/callback'], principal: PRINCIPAL
})

const proxy = await startBearerProxy(server.baseUrl, token, proxyPort)
t.teardown(proxy.close)

const serverRuns = REVISIONS.map(async (revision) => await runConformance(
  ['server', '--url', `${proxy.url}/mcp`, '--requirements', revision, '--timeout', String(SCENARIO_TIMEOUT_MS)],
  { outputDir: join(results, revision), kind: 'server', timeoutMs: RUN_TIMEOUT_MS }
))

/**
 * authorization-code-grant prints the authorize URL and waits for the redirect on its callback
 * port: the test plays the browser, follows the URL without following the redirect, and delivers
 * the Location to the callback.
 */
let browserError: string | undefined
const callbackPort = await freePort()
const authorizationRun = runConformance(
  ['authorization', '--url', server.config.publicUrl, '--client-id', clientId, '--resource', `${server.config.publicUrl}/mcp`, '--port', String(callbackPort)],
  {
    outputDir: join(results, 'authorization'),
    kind: 'authorization-server',
    timeoutMs: RUN_TIMEOUT_MS,
    onLine: (line, stop) => {
      if (!/^https?:\/\/\S+\?\S*response_type=code/.test(line)) return
      playBrowser(line).catch((err: Error) => {
        browserError = err.message
        stop(`the authorization could not be completed: ${err.message}`)
      })
    }
  }
)

async function playBrowser (authorizeUrl: string): Promise<void> {
  const response = await fetch(authorizeUrl, { redirect: 'manual' })
  const location = response.headers.get('location')
  if (response.status < 300 || response.status > 399 || location === null) {
    throw new Error(`GET ${authorizeUrl} answered HTTP ${response.status} without a redirect: ${(await response.text()).slice(0, 300)}`)
  }
  const callback = new URL(location, authorizeUrl)
  // The suite's callback listener starts as it prints the URL; give it a moment if need be.
  for (let attempt = 0; ; attempt++) {
    try {
      const delivered = await fetch(callback)
      await delivered.arrayBuffer()
      return
    } catch (err) {
      if (attempt >= 20) throw new Error(`delivering ${callback.origin}${callback.pathname} failed: ${(err as Error).message}`)
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }
}

function judgeRun (t: Test, run: CliRun, expected: ExpectedScenarios): void {
  t.ok(run.scenarios.length > 0, 'the CLI ran scenarios', { output: run.output.slice(-4000) })
  for (const result of run.scenarios) {
    t.test(result.scenario, async (t) => {
      const verdict = judge(result, expected[result.scenario])
      t.ok(verdict.unexpected.length === 0, verdict.unexpected.length === 0
        ? `no unexpected failures (${result.checks.length} checks, ${verdict.expected.length} expected failures)`
        : `${verdict.unexpected.length} unexpected failure(s): ${verdict.unexpected.join(' | ')}`,
      verdict.unexpected.length === 0 ? {} : { failures: verdict.unexpected })
      t.ok(verdict.stale.length === 0, verdict.stale.length === 0
        ? 'every listed failure still fails as listed'
        : `${verdict.stale.length} listed failure(s) no longer fail: ${verdict.stale.join(' | ')}`,
      verdict.stale.length === 0 ? {} : { stale: verdict.stale })
    })
  }
  const ran = new Set(run.scenarios.map((result) => result.scenario))
  const missing = Object.keys(expected).filter((scenario) => !ran.has(scenario))
  t.same(missing, [], missing.length === 0 ? 'every scenario listed in expected-failures.json ran' : `listed scenarios that did not run: ${missing.join(', ')}`)
}

for (const [index, revision] of REVISIONS.entries()) {
  t.test(`server scenarios, requirements ${revision}`, async (t) => {
    judgeRun(t, await (serverRuns[index] as Promise<CliRun>), expectedFor(revision))
  })
}

t.test('authorization-server scenarios, public client', async (t) => {
  const run = await authorizationRun
  t.equal(browserError, undefined, browserError === undefined ? 'the authorize URL redirected to the callback' : `the authorize step failed: ${browserError}`)
  t.same(run.scenarios.map((result) => result.scenario).sort(), ['authorization-code-grant', 'authorization-server-metadata-endpoint'], 'both authorization-server scenarios ran')
  judgeRun(t, run, expectedFor('authorization'))
})
