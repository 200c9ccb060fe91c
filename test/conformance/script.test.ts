/**
 * scripts/conformance.ts, the operator's run of the conformance suite against a deployment, as a
 * child process against a whole server on real ports: requirements 2026-07-28 pass with nothing
 * unexpected. The server allows no extra origin, as a deployment would not: the script's proxy
 * must present the suite's own-origin probe as the server's origin (dns-rebinding-protection).
 */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { startTestServer } from '../helpers/server.ts'

const SCRIPT = fileURLToPath(new URL('../../scripts/conformance.ts', import.meta.url))

async function runScript (args: string[]): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const child = spawn(process.execPath, [SCRIPT, ...args], {
    env: { ...process.env, NODE_OPTIONS: '', NO_COLOR: '1' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (text: string) => { stdout += text })
  child.stderr.setEncoding('utf8').on('data', (text: string) => { stderr += text })
  const timer = setTimeout(() => { child.kill('SIGKILL') }, 60_000)
  const code = await new Promise<number | null>((resolve) => { child.once('close', resolve) })
  clearTimeout(timer)
  return { code, stdout, stderr }
}

const server = await startTestServer(t, { listen: true })

async function admin<T> (path: string, body: unknown): Promise<T> {
  const response = await fetch(`${server.adminUrl}/${path}`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body)
  })
  if (response.status !== 201) throw new Error(`admin POST /${path}: HTTP ${response.status} ${await response.text()}`)
  return await response.json() as T
}
await admin('principals', { name: 'operator', scopes: 'bus:read bus:write' })
const { token } = await admin<{ token: string }>('tokens', { principal: 'operator', label: 'conformance script' })

t.test('requirements 2026-07-28 against the server: exit 0, nothing unexpected', async (t) => {
  const run = await runScript([`${server.baseUrl}/mcp`, '--token', token, '--requirements', '2026-07-28'])
  const lines = run.stdout.trimEnd().split('\n')
  t.equal(run.code, 0, 'exit 0', { stdout: run.stdout.slice(-3000), stderr: run.stderr })
  t.match(lines.at(-1), /^\d+ passed, 0 failed \(\d+ not applicable\)$/, 'the last line sums up')
  t.match(run.stdout, /^requirements 2026-07-28: \d+ scenarios$/m, 'the requirement set ran')
  t.match(run.stdout, /^ {2}passed +dns-rebinding-protection$/m, 'the own-origin probe reached the server as its own origin')
  t.match(run.stdout, /^ {2}not applicable +prompts-list: prompts/m, 'listed failures show as not applicable, with the reason')
  t.notMatch(run.stdout, /requirements 2025-11-25/, 'only the requested set')
})

t.test('bad arguments: one line, exit 2', async (t) => {
  const run = await runScript([`${server.baseUrl}/mcp`, '--token', token, '--requirements', '2024-01-01'])
  t.equal(run.code, 2)
  t.equal(run.stdout, '')
  t.match(run.stderr, /^conformance: --requirements must be 2026-07-28, 2025-11-25 or both, not "2024-01-01"\n$/)
})
