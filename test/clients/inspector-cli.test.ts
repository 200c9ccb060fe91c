import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { delimiter, dirname, join } from 'node:path'
import { auth } from '@modelcontextprotocol/sdk/client/auth.js'
import t, { type Test } from 'tap'
import { TestOAuthProvider, visitAuthorization } from '../helpers/oauth.ts'
import { freePort, principalWithToken, startTestServer, type TestServer } from '../helpers/server.ts'
import { BUS_TOOLS } from './support.ts'

/**
 * MCP Inspector's command-line mode against the bus on a real port, as a child process:
 * - `@modelcontextprotocol/inspector-cli` 1.0.3 (a devDependency; bin `mcp-inspector-cli`, the
 *   deprecated v1 line on the SDK v1 client): bearer tokens through `--header`, no OAuth of its own;
 * - `@modelcontextprotocol/inspector` 2.12 (`mcp-inspector --cli`, on the SDK v2 client; Node >=
 *   22.19): `--header`, its own OAuth flow (registration, a loopback callback listener, PKCE), and
 *   `--protocol-era` to negotiate 2026-07-28. A devDependency (MCP_INSPECTOR_DIR may point at
 *   another copy).
 */

const require = createRequire(import.meta.url)
const INSPECTOR_V1_DIR = dirname(require.resolve('@modelcontextprotocol/inspector-cli/package.json'))
// A devDependency: when it is missing, the test fails (a skip would read as a pass).
const INSPECTOR_V2_DIR = process.env.MCP_INSPECTOR_DIR ?? dirname(require.resolve('@modelcontextprotocol/inspector/package.json'))
const INSPECTOR_V2_LAUNCHER = join(INSPECTOR_V2_DIR, 'clients', 'launcher', 'build', 'index.js')

interface Run { code: number | null, stdout: string, stderr: string }

/**
 * Runs `node <script> args…` and collects its output. `onStderr` sees each chunk as it comes (to
 * answer an OAuth prompt). The child is killed if it outlives `timeoutMs`.
 */
async function run (script: string, args: string[], options: { cwd: string, env: NodeJS.ProcessEnv, timeoutMs?: number, onStderr?: (chunk: string) => void }): Promise<Run> {
  return await new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { cwd: options.cwd, env: options.env, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk })
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk
      options.onStderr?.(chunk)
    })
    const timer = setTimeout(() => { child.kill('SIGKILL') }, options.timeoutMs ?? 20_000)
    child.on('error', (err) => { clearTimeout(timer); reject(err) })
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }) })
  })
}

/** The environment a CLI child gets: Node 24 first on PATH (the v1 launcher spawns `node`). */
function childEnv (extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, PATH: `${dirname(process.execPath)}${delimiter}${process.env.PATH ?? ''}`, NO_COLOR: '1', ...extra }
}

/** The JSON a successful run printed; a failed run is already reported by its exit-code assertion. */
function parseJson (t: Test, what: string, result: Run): any {
  if (result.code !== 0) return undefined
  try {
    return JSON.parse(result.stdout)
  } catch {
    t.fail(`${what}: stdout is not JSON (exit ${String(result.code)})`, { stdout: result.stdout.slice(0, 2000), stderr: result.stderr.slice(0, 2000) })
    return undefined
  }
}

/** An OAuth access token obtained beforehand (SDK v1 auth(), auto-approved), as a user would paste it. */
async function preObtainedAccessToken (server: TestServer): Promise<{ accessToken: string, clientId: string }> {
  const mcpUrl = new URL(`${server.baseUrl}/mcp`)
  const provider = new TestOAuthProvider()
  if (await auth(provider, { serverUrl: mcpUrl }) !== 'REDIRECT') throw new Error('auth() did not ask for authorization')
  const visit = await visitAuthorization(provider.authorizationUrl as URL)
  const code = visit.location?.searchParams.get('code')
  if (code === undefined || code === null) throw new Error(`no code from the authorization endpoint (HTTP ${visit.status})`)
  if (await auth(provider, { serverUrl: mcpUrl, authorizationCode: code }) !== 'AUTHORIZED') throw new Error('code exchange failed')
  return { accessToken: provider.savedTokens?.access_token ?? '', clientId: provider.client?.client_id ?? '' }
}

t.test('MCP Inspector CLI against the bus', async (t) => {
  const server = await startTestServer(t, { listen: true, env: { AUTO_APPROVE_PRINCIPAL: 'brain' } })
  const mcpUrl = `${server.baseUrl}/mcp`
  const writerToken = await principalWithToken(server, 'brain')
  const readerToken = await principalWithToken(server, 'reader', 'bus:read')
  const oauth = await preObtainedAccessToken(server)

  t.test('@modelcontextprotocol/inspector-cli 1.0.3 (mcp-inspector-cli --cli)', async (t) => {
    const launcher = join(INSPECTOR_V1_DIR, 'build', 'cli.js')
    // build/index.js looks for "../package.json" relative to the working directory but imports it
    // relative to itself: run it from its own build directory, where both resolve to its package.json.
    const cwd = join(INSPECTOR_V1_DIR, 'build')
    const inspect = async (token: string, ...args: string[]): Promise<Run> =>
      await run(launcher, ['--cli', mcpUrl, '--transport', 'http', '--header', `Authorization: Bearer ${token}`, ...args], { cwd, env: childEnv() })

    t.test('API token: tools/list and tools/call whoami', async (t) => {
      const listed = await inspect(writerToken, '--method', 'tools/list')
      t.equal(listed.code, 0, 'tools/list exits 0', { stderr: listed.stderr })
      t.same(parseJson(t, 'tools/list', listed)?.tools?.map((tool: { name: string }) => tool.name).sort(), BUS_TOOLS)
      const whoami = await inspect(writerToken, '--method', 'tools/call', '--tool-name', 'whoami')
      t.equal(whoami.code, 0, 'tools/call whoami exits 0', { stderr: whoami.stderr })
      t.match(parseJson(t, 'whoami', whoami)?.structuredContent, { principal: 'brain', auth: 'api_token', client_id: null, scopes: ['bus:read', 'bus:write'] })
    })

    t.test('a pre-obtained OAuth access token as the Authorization header', async (t) => {
      const whoami = await inspect(oauth.accessToken, '--method', 'tools/call', '--tool-name', 'whoami')
      t.equal(whoami.code, 0, 'tools/call whoami exits 0', { stderr: whoami.stderr })
      t.match(parseJson(t, 'whoami', whoami)?.structuredContent, { principal: 'brain', auth: 'oauth', client_id: oauth.clientId })
    })

    t.test('a read-only API token: bus_send is refused with 403 insufficient_scope', async (t) => {
      const sent = await inspect(readerToken, '--method', 'tools/call', '--tool-name', 'bus_send', '--tool-arg', 'channel=inspector-v1', 'body=refused')
      t.equal(sent.code, 1, 'exits 1')
      t.match(sent.stderr, /Failed to call tool bus_send: .*Insufficient scope: this call needs bus:write/)
    })
  })

  t.test('@modelcontextprotocol/inspector 2.12 (mcp-inspector --cli)', async (t) => {
    t.ok(existsSync(INSPECTOR_V2_LAUNCHER), `the Inspector's launcher is at ${INSPECTOR_V2_LAUNCHER}`)
    const launcher = INSPECTOR_V2_LAUNCHER
    // Its state (catalog, OAuth store, client config) goes to a directory of this test, never ~.
    const home = mkdtempSync(join(tmpdir(), 'bus-inspector-'))
    t.teardown(() => { rmSync(home, { recursive: true, force: true }) })
    const env = childEnv({
      HOME: home,
      MCP_STORAGE_DIR: join(home, 'storage'),
      MCP_CATALOG_PATH: join(home, 'mcp.json'),
      MCP_CLIENT_CONFIG_PATH: join(home, 'client.json'),
      MCP_INSPECTOR_OAUTH_STATE_PATH: join(home, 'oauth-state.json'),
      MCP_INSPECTOR_SECRET_STORE: 'memory'
    })
    const inspect = async (args: string[], options: { env?: NodeJS.ProcessEnv, onStderr?: (chunk: string) => void } = {}): Promise<Run> =>
      await run(launcher, ['--cli', mcpUrl, '--format', 'json', ...args], { cwd: home, env: options.env ?? env, onStderr: options.onStderr })
    const bearer = (token: string): string[] => ['--header', `Authorization: Bearer ${token}`]

    t.test('API token: tools/list and tools/call whoami', async (t) => {
      const listed = await inspect([...bearer(writerToken), '--method', 'tools/list'])
      t.equal(listed.code, 0, 'tools/list exits 0', { stderr: listed.stderr })
      t.same(parseJson(t, 'tools/list', listed)?.result?.tools?.map((tool: { name: string }) => tool.name).sort(), BUS_TOOLS)
      const whoami = await inspect([...bearer(writerToken), '--method', 'tools/call', '--tool-name', 'whoami'])
      t.equal(whoami.code, 0, 'tools/call whoami exits 0', { stderr: whoami.stderr })
      t.match(parseJson(t, 'whoami', whoami)?.result?.structuredContent, { principal: 'brain', auth: 'api_token', client_id: null, scopes: ['bus:read', 'bus:write'] })
    })

    t.test('a pre-obtained OAuth access token as the Authorization header', async (t) => {
      const whoami = await inspect([...bearer(oauth.accessToken), '--method', 'tools/call', '--tool-name', 'whoami'])
      t.equal(whoami.code, 0, 'tools/call whoami exits 0', { stderr: whoami.stderr })
      t.match(parseJson(t, 'whoami', whoami)?.result?.structuredContent, { principal: 'brain', auth: 'oauth', client_id: oauth.clientId })
    })

    t.test('its own OAuth flow: registration, authorization (auto-approved), callback on loopback, PKCE', async (t) => {
      const callbackUrl = `http://127.0.0.1:${await freePort()}/oauth/callback`
      let browser: Promise<{ authorize: number, callback: number }> | undefined
      let prompt = ''
      let authorizeUrl: URL | undefined
      const whoami = await inspect(['--callback-url', callbackUrl, '--method', 'tools/call', '--tool-name', 'whoami'], {
        // No TTY here: MCP_AUTO_OPEN_ENABLED makes it prompt anyway; BROWSER=true keeps the
        // browser it then tries to open a no-op. The test is the browser, reading the prompt.
        env: { ...env, MCP_AUTO_OPEN_ENABLED: 'true', BROWSER: 'true' },
        onStderr: (chunk) => {
          prompt += chunk
          const url = /Please navigate to: (\S+)\r?\n/.exec(prompt)?.[1]
          if (url === undefined || browser !== undefined) return
          authorizeUrl = new URL(url)
          browser = (async () => {
            const visit = await visitAuthorization(url)
            if (visit.location === undefined) throw new Error(`authorization did not redirect (HTTP ${visit.status}): ${visit.body.slice(0, 300)}`)
            const callback = await fetch(visit.location)
            await callback.text()
            return { authorize: visit.status, callback: callback.status }
          })()
        }
      })
      t.ok(browser, 'the CLI asked the user to open the authorization URL', { stderr: whoami.stderr })
      t.equal(authorizeUrl?.searchParams.get('code_challenge_method'), 'S256', 'a PKCE S256 challenge')
      t.equal(authorizeUrl?.searchParams.get('redirect_uri'), callbackUrl, 'redirecting to its loopback callback listener')
      if (browser !== undefined) t.same(await browser, { authorize: 302, callback: 200 }, 'approved at once, code delivered to its callback listener')
      t.equal(whoami.code, 0, 'tools/call whoami exits 0', { stderr: whoami.stderr })
      const me = parseJson(t, 'whoami', whoami)?.result?.structuredContent
      t.match(me, { principal: 'brain', auth: 'oauth', client_id: /^client_/, scopes: ['bus:read', 'bus:write'] })
      t.not(me?.client_id, oauth.clientId, 'a client of its own, registered dynamically')
    })

    t.test('a read-only API token: bus_send is refused with 403 insufficient_scope', async (t) => {
      const sent = await inspect([...bearer(readerToken), '--method', 'tools/call', '--tool-name', 'bus_send', '--tool-args-json', '{"channel":"inspector-v2","body":"refused"}'])
      t.equal(sent.code, 1, 'exits 1')
      t.match(sent.stderr, /Insufficient scope: required \\?"bus:write\\?"/)
    })

    t.test('negotiating 2026-07-28 (--protocol-era modern): tools/list and whoami', async (t) => {
      const listed = await inspect([...bearer(writerToken), '--protocol-era', 'modern', '--method', 'tools/list'])
      t.equal(listed.code, 0, 'tools/list on the modern era exits 0', { stderr: listed.stderr })
      t.same(parseJson(t, 'tools/list', listed)?.result?.tools?.map((tool: { name: string }) => tool.name).sort(), BUS_TOOLS)
      const whoami = await inspect([...bearer(writerToken), '--protocol-era', 'modern', '--method', 'tools/call', '--tool-name', 'whoami'])
      t.equal(whoami.code, 0, 'tools/call whoami on the modern era exits 0', { stderr: whoami.stderr })
      t.match(parseJson(t, 'whoami', whoami)?.result?.structuredContent, { principal: 'brain', auth: 'api_token' })
    })
  })
})
