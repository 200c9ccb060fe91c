/**
 * The official MCP conformance suite (@modelcontextprotocol/conformance, a dev dependency) against
 * a deployment, judged as `npm test` judges it: the same runner, results and expected-failures
 * list (test/conformance/suite.ts, expected-failures.json), so what is "not applicable" here is
 * exactly what the test suite tolerates.
 *
 *   node scripts/conformance.ts https://bus.example.com/mcp --token <API token>
 *   BUS_MCP_TOKEN=<API token> node scripts/conformance.ts https://bus.example.com/mcp   (keeps it out of ps)
 *     [--requirements 2026-07-28|2025-11-25|both]   server requirement sets to run (default both)
 *     [--authorization --client-id ID]              also the authorization-server scenarios
 *
 * The server scenarios cannot send an Authorization header, so they go through the bearer proxy
 * (test/conformance/bearer-proxy.ts) on 127.0.0.1, which adds `Authorization: Bearer <token>`.
 * Two headers need care for a deployment:
 *
 * - Host: the proxy sends the deployment's own host (Caddy routes by Host, and https needs the
 *   name), whatever the suite sent.
 * - Origin: the suite sends one only in the dns-rebinding-protection scenario (checked by logging
 *   every request of both requirement sets): `Origin: http://evil.example.com` (with Host
 *   evil.example.com), which must be refused, and `Origin: http://127.0.0.1:<proxy port>`, the
 *   origin of the URL it was given, which must be accepted. A deployment refuses the second (403:
 *   not in ALLOWED_ORIGINS) though the suite means "this server's own origin", so the proxy
 *   replaces exactly that value by the deployment's origin, which the bus always allows (its
 *   PUBLIC_URL). The foreign Origin reaches the deployment unchanged and must be refused there.
 *   As Host is replaced, the rebinding check rests on the Origin alone, which is what the bus
 *   checks (src/mcp/origin.ts).
 *
 * --authorization runs `authorization-server-metadata-endpoint` and `authorization-code-grant`
 * against the issuer (the MCP URL's origin). The suite prints an authorize URL for the operator to
 * open in a browser on this machine and waits (up to 5 minutes) for the redirect on
 * http://127.0.0.1:<port>/callback. The client must be a pre-registered public client with the
 * redirect URI http://127.0.0.1/callback (loopback redirect URIs match on any port):
 *   npx bus-mcp client add --name conformance --redirect-uri http://127.0.0.1/callback --principal NAME
 *
 * Prints each scenario as passed, failed or not applicable (with the reason from
 * expected-failures.json), then the unexpected failures and a last line
 * `N passed, N failed (N not applicable)`, counting scenarios.
 * Exit 0: no unexpected failure; 1: unexpected failures (or the deployment could not be reached);
 * 2: bad arguments.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { startBearerProxy } from '../test/conformance/bearer-proxy.ts'
import { judge, runConformance, type CliRun, type ExpectedScenarios } from '../test/conformance/suite.ts'

const USAGE = 'usage: node scripts/conformance.ts <MCP URL> --token <API token> (or BUS_MCP_TOKEN=…) [--requirements 2026-07-28|2025-11-25|both] [--authorization --client-id ID]'
const REVISIONS = ['2025-11-25', '2026-07-28'] as const
/** The suite's own default per scenario; a deployment is further away than the test's server. */
const SCENARIO_TIMEOUT_MS = 30_000
const SERVER_RUN_TIMEOUT_MS = 15 * 60_000
/** The suite waits 5 minutes for the browser's redirect. */
const AUTHORIZATION_RUN_TIMEOUT_MS = 7 * 60_000
/** Checks every scenario makes about the wire, not about the scenario's subject. */
const CROSS_CUTTING_CHECKS = new Set(['wire-schema-valid'])

class UsageError extends Error {}

interface Options {
  mcpUrl: URL
  token: string
  revisions: string[]
  clientId: string | undefined
}

function parseOptions (argv: string[]): Options | 'help' {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        token: { type: 'string' },
        requirements: { type: 'string', default: 'both' },
        authorization: { type: 'boolean', default: false },
        'client-id': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false }
      }
    })
  } catch (err) {
    throw new UsageError((err as Error).message.split(/\n|\. /)[0] as string)
  }
  const { values, positionals } = parsed
  if (values.help) return 'help'
  if (positionals.length !== 1) throw new UsageError(positionals.length === 0 ? 'the MCP URL is missing (e.g. https://bus.example.com/mcp)' : `one MCP URL expected, got ${positionals.length} arguments`)
  let mcpUrl: URL
  try {
    mcpUrl = new URL(positionals[0] as string)
  } catch {
    throw new UsageError(`"${positionals[0]}" is not a URL (e.g. https://bus.example.com/mcp)`)
  }
  if (mcpUrl.protocol !== 'https:' && mcpUrl.protocol !== 'http:') throw new UsageError(`${mcpUrl.href}: only http and https URLs`)
  // A bare origin means its /mcp, as doctor assumes.
  if (mcpUrl.pathname === '/' && mcpUrl.search === '') mcpUrl.pathname = '/mcp'
  mcpUrl.hash = ''
  const token = values.token ?? process.env.BUS_MCP_TOKEN
  if (token === undefined || token.trim() === '') throw new UsageError('--token <API token> (or BUS_MCP_TOKEN) is required (npx bus-mcp token issue --principal NAME)')
  const requirements = values.requirements
  if (requirements !== 'both' && !(REVISIONS as readonly string[]).includes(requirements)) {
    throw new UsageError(`--requirements must be 2026-07-28, 2025-11-25 or both, not "${requirements}"`)
  }
  const clientId = values['client-id']
  if (values.authorization && (clientId === undefined || clientId === '')) {
    throw new UsageError('--authorization needs --client-id ID (npx bus-mcp client add --name conformance --redirect-uri http://127.0.0.1/callback --principal NAME)')
  }
  if (!values.authorization && clientId !== undefined) throw new UsageError('--client-id only goes with --authorization')
  return {
    mcpUrl,
    token: token.trim(),
    revisions: requirements === 'both' ? [...REVISIONS] : [requirements],
    clientId: values.authorization ? clientId : undefined
  }
}

const expectedFile = JSON.parse(readFileSync(new URL('../test/conformance/expected-failures.json', import.meta.url), 'utf8')) as Record<string, ExpectedScenarios | string>
const expectedFor = (run: string): ExpectedScenarios => {
  const entry = expectedFile[run]
  return typeof entry === 'object' ? entry : {}
}

interface Tally { passed: number, failed: number, notApplicable: number, unexpected: string[] }

/** Prints one run's scenarios and adds them to the tally. */
function report (title: string, run: CliRun, expected: ExpectedScenarios, tally: Tally): void {
  console.log(`\n${title}: ${run.scenarios.length} scenarios`)
  if (run.scenarios.length === 0) {
    const why = `${title}: the conformance CLI ran no scenarios (exit ${String(run.exitCode)}): ${run.output.trim().split('\n').slice(-5).join(' | ') || 'no output'}`
    console.log(`  FAILED          ${why}`)
    tally.failed++
    tally.unexpected.push(why)
    return
  }
  for (const result of run.scenarios) {
    const listed = expected[result.scenario] ?? {}
    const verdict = judge(result, listed)
    const reasons = (ids: string[]): string[] => ids.map((id) => `${id}: ${listed[id]?.reason ?? ''}`)
    if (verdict.unexpected.length > 0) {
      tally.failed++
      console.log(`  FAILED          ${result.scenario}`)
      for (const line of verdict.unexpected) {
        console.log(`                    ${line}`)
        tally.unexpected.push(`${title} ${result.scenario}: ${line}`)
      }
      for (const line of reasons(verdict.expected)) console.log(`                    not applicable: ${line}`)
    } else if (verdict.expected.length > 0 && !result.checks.some((check) => check.status === 'SUCCESS' && !CROSS_CUTTING_CHECKS.has(check.id) && !(check.id in listed))) {
      // Nothing of the scenario's own applied: the whole scenario is not applicable.
      tally.notApplicable++
      const why = [...new Set(verdict.expected.map((id) => listed[id]?.reason ?? ''))]
      if (why.length === 1) {
        console.log(`  not applicable  ${result.scenario}: ${why[0]}`)
      } else {
        console.log(`  not applicable  ${result.scenario}`)
        for (const line of why) console.log(`                    not applicable: ${line}`)
      }
    } else {
      tally.passed++
      console.log(`  passed          ${result.scenario}`)
      for (const line of reasons(verdict.expected)) console.log(`                    not applicable: ${line}`)
    }
    // A listed failure that passes here is good news about the deployment, not a failure of it.
    for (const line of verdict.stale) console.log(`                    note: ${line}`)
  }
}

async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => { resolve(typeof address === 'object' && address !== null ? address.port : 0) })
    })
  })
}

/**
 * One authenticated request before the suite, so that an unreachable deployment, a wrong URL or a
 * refused token shows as one line instead of every scenario failing. `{}` is no JSON-RPC message:
 * a bus that accepts the token answers 400, without side effects.
 */
async function preflight (mcpUrl: URL, token: string): Promise<string | undefined> {
  let response: Response
  try {
    response = await fetch(mcpUrl, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: '{}',
      signal: AbortSignal.timeout(15_000)
    })
  } catch (err) {
    const cause = (err as Error & { cause?: Error }).cause
    return `cannot reach ${mcpUrl.href}: ${cause?.message ?? (err as Error).message}`
  }
  await response.arrayBuffer().catch(() => {})
  if (response.status === 401) {
    const challenge = response.headers.get('www-authenticate') ?? ''
    const description = /error_description="([^"]*)"/.exec(challenge)?.[1]
    return `${mcpUrl.href} refused the token (HTTP 401${description !== undefined ? `: ${description}` : ''}); issue one with npx bus-mcp token issue --principal NAME`
  }
  if (response.status === 403 || response.status === 404 || response.status === 429 || response.status >= 500) {
    return `POST ${mcpUrl.href} answered HTTP ${response.status}${response.status === 404 ? ': is this the MCP endpoint?' : ''}`
  }
  return undefined
}

/**
 * The bus allows its own origin (PUBLIC_URL), which the proxy sends for the suite's own-origin
 * probe: an MCP URL that is not the deployment's public one fails dns-rebinding-protection.
 * Its protected resource metadata names the public URL; a note if it differs.
 */
async function publicUrlNote (mcpUrl: URL): Promise<string | undefined> {
  try {
    const response = await fetch(`${mcpUrl.origin}/.well-known/oauth-protected-resource${mcpUrl.pathname}`, { signal: AbortSignal.timeout(15_000) })
    const resource = response.ok ? ((await response.json()) as { resource?: unknown }).resource : undefined
    if (typeof resource !== 'string' || new URL(resource).href === mcpUrl.href) return undefined
    return `note: the deployment's protected resource is ${resource} (PUBLIC_URL), not ${mcpUrl.href}; run against that URL, or the own-origin check of dns-rebinding-protection fails with 403`
  } catch {
    return undefined
  }
}

async function runServer (options: Options, revision: string, results: string, tally: Tally): Promise<void> {
  const proxy = await startBearerProxy(options.mcpUrl.href, options.token, { upstreamHost: true, ownOriginAs: options.mcpUrl.origin })
  try {
    const url = `${proxy.url}${options.mcpUrl.pathname}${options.mcpUrl.search}`
    const run = await runConformance(
      ['server', '--url', url, '--requirements', revision, '--timeout', String(SCENARIO_TIMEOUT_MS)],
      { outputDir: join(results, revision), kind: 'server', timeoutMs: SERVER_RUN_TIMEOUT_MS }
    )
    report(`requirements ${revision}`, run, expectedFor(revision), tally)
  } finally {
    await proxy.close()
  }
}

async function runAuthorization (options: Options, results: string, tally: Tally): Promise<void> {
  const issuer = options.mcpUrl.origin
  const port = await freePort()
  console.log(`\nauthorization-server scenarios: issuer ${issuer}, client ${options.clientId ?? ''}`)
  const run = await runConformance(
    ['authorization', '--url', issuer, '--client-id', options.clientId ?? '', '--resource', options.mcpUrl.href, '--port', String(port)],
    {
      outputDir: join(results, 'authorization'),
      kind: 'authorization-server',
      timeoutMs: AUTHORIZATION_RUN_TIMEOUT_MS,
      onLine: (line) => {
        if (!/^https?:\/\/\S+\?\S*response_type=code/.test(line)) return
        console.log(`\nOpen this URL in a browser on this machine and sign in or approve; the suite waits up to 5 minutes for the redirect to http://127.0.0.1:${port}/callback:\n\n  ${line}\n`)
      }
    }
  )
  report('authorization', run, expectedFor('authorization'), tally)
}

async function main (): Promise<number> {
  let options
  try {
    options = parseOptions(process.argv.slice(2))
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    console.error(`conformance: ${err.message}`)
    return 2
  }
  if (options === 'help') {
    console.log(USAGE)
    return 0
  }
  const problem = await preflight(options.mcpUrl, options.token)
  if (problem !== undefined) {
    console.error(`conformance: ${problem}`)
    return 1
  }
  console.log(`MCP conformance suite against ${options.mcpUrl.href} (not applicable: what test/conformance/expected-failures.json lists)`)
  const note = await publicUrlNote(options.mcpUrl)
  if (note !== undefined) console.log(note)
  const results = mkdtempSync(join(tmpdir(), 'bus-conformance-'))
  // The suite's result files go however the script ends: done, Ctrl-C (say, while the suite waits
  // for the browser; the terminal signals the suite too) or a closed stdout.
  process.once('exit', () => { rmSync(results, { recursive: true, force: true }) })
  process.once('SIGINT', () => { process.exit(130) })
  const tally: Tally = { passed: 0, failed: 0, notApplicable: 0, unexpected: [] }
  for (const revision of options.revisions) await runServer(options, revision, results, tally)
  if (options.clientId !== undefined) await runAuthorization(options, results, tally)
  if (tally.unexpected.length > 0) {
    console.log(`\nUnexpected failures (${tally.unexpected.length}):`)
    for (const line of tally.unexpected) console.log(`  ${line}`)
  }
  console.log(`\n${tally.passed} passed, ${tally.failed} failed (${tally.notApplicable} not applicable)`)
  return tally.failed > 0 ? 1 : 0
}

// Output piped into `head` and the like: stop quietly when the reader goes away.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') throw err
  process.exit(process.exitCode ?? 0)
})
process.exitCode = await main()
