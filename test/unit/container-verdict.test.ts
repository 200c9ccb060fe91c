import { execFile } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { REPO_ROOT } from '../helpers/processes.ts'
import { machine, testNeeding } from '../helpers/requirements.ts'

// The container test must never read as a pass when it checked nothing (issue 16, item 1):
// scripts/container-test.sh exits 3 when it cannot run here, .ci/run's verdict counts that as a
// failure unless ALLOW_CONTAINER_SKIP=1, and container-check fails (not skips) when the OAuth
// metadata is missing through Caddy.

interface Run { code: number, stdout: string, stderr: string }

async function run (file: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return await new Promise((resolve, reject) => {
    execFile(file, args, { cwd: REPO_ROOT, env: { PATH: process.env.PATH ?? '', ...env }, timeout: 60_000 }, (error, stdout, stderr) => {
      if (error !== null && typeof error.code !== 'number') reject(error)
      else resolve({ code: error === null ? 0 : Number(error.code), stdout, stderr })
    })
  })
}

/** .ci/run's verdict on a container-test exit status: its line and its return (0 passed, 1 failed, 2 not run, allowed). */
async function verdictOf (rc: number, allowSkip?: string): Promise<Run> {
  return await run('/bin/bash', ['-c', `source .ci/container-verdict.sh; container_verdict ${rc}`], allowSkip === undefined ? {} : { ALLOW_CONTAINER_SKIP: allowSkip })
}

t.test('.ci/run: passed only on exit 0; "cannot run here" is a failure unless ALLOW_CONTAINER_SKIP=1', async (t) => {
  t.match(await verdictOf(0), { code: 0, stdout: 'container test passed\n' })
  t.match(await verdictOf(1), { code: 1, stdout: /^container test FAILED \(exit 1\)/ })
  t.match(await verdictOf(124), { code: 1, stdout: /^container test FAILED \(exit 124\)/ }, 'a timeout')
  t.match(await verdictOf(3), { code: 1, stdout: /^container test FAILED: cannot run here \(exit 3; nothing was checked/ })
  t.match(await verdictOf(3, '0'), { code: 1, stdout: /FAILED: cannot run here/ })
  t.match(await verdictOf(3, '1'), { code: 2, stdout: /^container test CANNOT RUN HERE \(allowed by ALLOW_CONTAINER_SKIP=1; nothing was checked\)/ })
  t.match(await verdictOf(1, '1'), { code: 1, stdout: /FAILED \(exit 1\)/ }, 'the allowance covers "cannot run here" only')
})

// As root the script would install podman or run it; as nobody it stops at its first check.
const root = process.getuid?.() === 0
testNeeding(t, 'container-test.sh where it cannot run (not root) exits 3, which .ci/run reports as a failure', [machine('root (to run the script as nobody)', root, 'run the tests as root, as .ci/run does')], async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bus-ct-verdict-'))
  chmodSync(dir, 0o777)
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const script = await run('/usr/bin/setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '/bin/bash', 'scripts/container-test.sh'], {
    CONTAINER_TEST_LOCK: join(dir, 'lock'),
    CONTAINER_TEST_CACHE: join(dir, 'cache'),
    HOME: dir
  })
  t.equal(script.code, 3, `exit 3 (${script.stderr.trim().split('\n').at(-1) ?? ''})`)
  t.match(script.stdout, /^container test cannot run here \(nothing was checked\): (runs rootful podman|needs root)/)
  t.match(await verdictOf(script.code), { code: 1, stdout: /FAILED: cannot run here/ })
})

/** A stand-in for Caddy in front of the bus: answers every path with `status` and `body`. */
async function listen (t: Test, status: number, body: (url: string) => object): Promise<string> {
  const server: Server = createServer((request, response) => {
    response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body(request.url ?? '')))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

/** container-check's OAuth discovery check alone, in its own process (its TAP-like lines stay out of this file's output). */
async function discovery (publicUrl: string): Promise<{ ran: boolean, passed: number, failed: number, output: string }> {
  const script = `
    const { checkOAuthDiscovery, results } = await import('./scripts/container-check.mjs')
    const ran = await checkOAuthDiscovery()
    console.log(JSON.stringify({ ran, ...results() }))`
  const result = await run(process.execPath, ['--input-type=module', '-e', script], {
    CT_PUBLIC_URL: publicUrl, CT_BUS_URL: publicUrl, CT_PREFIX: 'bus-ct-verdict', CT_PODMAN_ARGS: '--unused'
  })
  const lines = result.stdout.trim().split('\n')
  return { ...JSON.parse(lines.at(-1) ?? '{}'), output: lines.slice(0, -1).join('\n') }
}

t.test('container-check: OAuth metadata missing through Caddy is a failed check, not a skip', async (t) => {
  const missing = await discovery(await listen(t, 404, () => ({ error: 'not found' })))
  t.match(missing, { ran: false, passed: 0, failed: 1 })
  t.match(missing.output, /^not ok - OAuth discovery through Caddy: .*HTTP 404 .*the OAuth flow through Caddy was not run/)

  let base = ''
  base = await listen(t, 200, (url) => url.startsWith('/.well-known/oauth-protected-resource')
    ? { resource: `${base}/mcp`, authorization_servers: [base] }
    : { issuer: base, authorization_endpoint: `${base}/oauth/authorize`, token_endpoint: `${base}/oauth/token`, registration_endpoint: `${base}/oauth/register` })
  const present = await discovery(base)
  t.match(present, { ran: true, passed: 1, failed: 0 }, 'the same check passes when the metadata is there')
})
