import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createServer, request as forward, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import { checkUrl, type CheckResult } from '../../src/doctor/checks.ts'
import type { FetchLike } from '../../src/doctor/probe.ts'
import { formatReport, runDoctor, type DoctorReport } from '../../src/doctor/run.ts'
import { listClients } from '../../src/admin/client-views.ts'
import { freePort, startTestServer } from '../helpers/server.ts'
import { opensslBinary, testNeeding } from '../helpers/requirements.ts'

const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url))

function failed (report: DoctorReport): CheckResult[] {
  return report.results.filter((r) => r.status === 'fail')
}

function check (report: DoctorReport, name: string): CheckResult {
  const found = report.results.find((r) => r.name === name)
  if (found === undefined) throw new Error(`no check named ${name} in ${report.results.map((r) => r.name).join(', ')}`)
  return found
}

/** `node bin/bus-mcp.js doctor …` as a user would run it; exit code and output. */
async function runCli (args: string[], env: Record<string, string> = {}): Promise<{ code: number, stdout: string, stderr: string }> {
  return await new Promise((resolve, reject) => {
    execFile(process.execPath, ['bin/bus-mcp.js', 'doctor', ...args], {
      cwd: REPO_ROOT, env: { ...process.env, ...env }, timeout: 120_000
    }, (err, stdout, stderr) => {
      if (err !== null && typeof err.code !== 'number') { reject(err); return }
      resolve({ code: err === null ? 0 : Number(err.code), stdout, stderr })
    })
  })
}

async function listen (t: Test, server: Server): Promise<number> {
  await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', resolve) })
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
  })
  return (server.address() as AddressInfo).port
}

// ---------------------------------------------------------------------------------------------
// The real server

t.test('a correctly configured server passes every check (in process, with --register)', async (t) => {
  const server = await startTestServer(t, { listen: true })
  const report = await runDoctor(`${server.baseUrl}/mcp`)
  t.same(failed(report), [], 'no check fails', { report: formatReport(report) })
  t.equal(report.ok, true)
  t.equal(report.mcpUrl, `${server.baseUrl}/mcp`)
  t.equal(check(report, 'url').status, 'warn', 'plain http on loopback is a warning: claude.ai needs public https')
  for (const name of ['unauthenticated-initialize', 'challenge', 'prm-path', 'prm-root', 'as-metadata', 'issuer', 'pkce-s256',
    'response-type-code', 'as-endpoints', 'public-clients', 'iss-parameter', 'oidc-alias', 'authorization-endpoint',
    'token-endpoint', 'registration-endpoint', 'cors-prm', 'cors-as-metadata', 'cors-token', 'cors-mcp-preflight',
    'cors-mcp-expose', 'fallback-authorize']) {
    t.equal(check(report, name).status, 'pass', `${name}: ${check(report, name).detail}`)
  }
  const text = formatReport(report)
  t.match(text, /^WARN {2}url: /m)
  t.match(text, /^PASS {2}issuer: /m)
  t.match(text, /0 failed/)

  // A bare origin: /mcp is assumed, and said so.
  const bare = await runDoctor(server.baseUrl)
  t.equal(bare.mcpUrl, `${server.baseUrl}/mcp`)
  t.match(check(bare, 'url').detail, /assuming \/mcp/)
  t.equal(bare.ok, true)

  // --register: claude.ai's exact registration; the secret never reaches the output.
  const secrets: string[] = []
  const recording: FetchLike = async (url, init) => {
    const response = await fetch(url, init)
    if (init?.method === 'POST' && String(url).endsWith('/oauth/register') && response.status === 201) {
      const body = await response.clone().json() as { client_secret?: string }
      if (body.client_secret !== undefined) secrets.push(body.client_secret)
    }
    return response
  }
  const registered = await runDoctor(`${server.baseUrl}/mcp`, { register: true, fetch: recording })
  const registration = check(registered, 'registration')
  t.equal(registration.status, 'pass', registration.detail)
  t.equal(secrets.length, 1, 'the server issued a secret (claude.ai asks for client_secret_post)')
  const secret = secrets[0] ?? 'none'
  t.notOk(JSON.stringify(registered).includes(secret), 'the secret is not in the report')
  t.notOk(formatReport(registered).includes(secret), 'the secret is not in the printed output')
  const clientId = /client_id (\S+),/.exec(registration.detail)?.[1] ?? ''
  t.match(registration.detail, `bus-mcp client remove ${clientId}`, 'says how to remove the throwaway client')
  const clients = await listClients(server.database.db)
  const created = clients.find((c) => c.client_id === clientId)
  t.equal(created?.client_name, 'Claude', 'a real client named Claude was created')
  t.equal(created?.token_endpoint_auth_method, 'client_secret_post')
  t.notOk(registered.results.some((r) => r.name === 'registration-endpoint'), 'the invalid-JSON probe is replaced by the real registration')
})

t.test('a trailing slash (…/mcp/): checked without it, and the fix says to drop it', async (t) => {
  const server = await startTestServer(t, { listen: true })
  const report = await runDoctor(`${server.baseUrl}/mcp/`)
  t.equal(report.mcpUrl, `${server.baseUrl}/mcp`, 'the slash-less endpoint is the one checked')
  t.same(failed(report), [], 'no check fails: the server is fine, only the URL given was not', { report: formatReport(report) })
  t.equal(report.ok, true)
  const url = check(report, 'url')
  t.equal(url.status, 'warn')
  t.match(url.detail, `checking ${server.baseUrl}/mcp (not ${server.baseUrl}/mcp/: the trailing slash is dropped)`)
  t.match(url.fix, new RegExp(`^give claude\\.ai \\(and every client\\) ${server.baseUrl}/mcp, without the trailing slash`))
  t.match(url.fix, /also: claude\.ai needs a public https URL/, 'the loopback http warning is kept')
  t.equal(check(report, 'prm-path').status, 'pass', 'the PRM resource matches the slash-less URL')
  const text = formatReport(report)
  t.notMatch(text, /"resource": "[^"]*\/mcp\/"/, 'never tells the user to publish a resource with a trailing slash')

  // The command, human-readable: exit 0 and the advice on the url line.
  const { code, stdout } = await runCli([`${server.baseUrl}/mcp//`])
  t.equal(code, 0)
  t.match(stdout, new RegExp(`^WARN {2}url: checking ${server.baseUrl}/mcp \\(not ${server.baseUrl}/mcp//: .* → fix: give claude\\.ai \\(and every client\\) ${server.baseUrl}/mcp, without the trailing slash`, 'm'))
})

t.test('the url check: trailing slashes on public https and plain http hosts', async (t) => {
  const https = checkUrl('https://bus.example.com/mcp/')
  t.equal(https.mcpUrl?.href, 'https://bus.example.com/mcp')
  t.equal(https.result.status, 'warn', 'a correct https URL with a slash is a warning, not a pass')
  t.equal(https.result.fix, 'give claude.ai (and every client) https://bus.example.com/mcp, without the trailing slash: the protected resource is PUBLIC_URL/mcp, and clients compare it with the URL they were given byte for byte')
  const http = checkUrl('http://bus.example.com/mcp/')
  t.equal(http.result.status, 'fail', 'plain http on a public host still fails')
  t.match(http.result.fix, /require https.*and give clients the URL without the trailing slash/)
  t.equal(checkUrl('https://bus.example.com//').mcpUrl?.href, 'https://bus.example.com/mcp', 'only slashes: /mcp is assumed')
  t.equal(checkUrl('https://bus.example.com/mcp').result.status, 'pass', 'control: no slash, no warning')
})

t.test('as a command: doctor URL --json prints an array and exits 0', async (t) => {
  const server = await startTestServer(t, { listen: true })
  const { code, stdout, stderr } = await runCli([`${server.baseUrl}/mcp`, '--json'])
  t.equal(code, 0, stderr)
  const results = JSON.parse(stdout) as CheckResult[]
  t.ok(Array.isArray(results) && results.length >= 20, `${results.length} checks`)
  t.same(results.filter((r) => !r.ok), [])
  for (const r of results) t.same(Object.keys(r).sort(), ['detail', 'fix', 'name', 'ok', 'status'])
})

// ---------------------------------------------------------------------------------------------
// Broken setups: each must name the exact problem

t.test('wrong PUBLIC_URL: the metadata names another origin than the one checked', async (t) => {
  const otherPort = await freePort()
  const server = await startTestServer(t, { listen: true, env: { PUBLIC_URL: `http://localhost:${otherPort}` } })
  const report = await runDoctor(`${server.baseUrl}/mcp`)
  t.equal(report.ok, false)
  const challenge = check(report, 'challenge')
  t.equal(challenge.status, 'fail')
  t.match(challenge.detail, `resource_metadata "http://localhost:${otherPort}/.well-known/oauth-protected-resource/mcp" is on another origin than ${server.baseUrl}`)
  t.match(challenge.fix, `set PUBLIC_URL=${server.baseUrl}`)
  const prm = check(report, 'prm-path')
  t.equal(prm.status, 'fail')
  t.match(prm.detail, `"resource" is "http://localhost:${otherPort}/mcp", not "${server.baseUrl}/mcp"`)
  t.match(prm.fix, `set PUBLIC_URL=${server.baseUrl}`)
  const as = check(report, 'as-metadata')
  t.equal(as.status, 'fail', 'the issuer (PUBLIC_URL) is unreachable')
  t.match(as.detail, `connection refused at localhost:${otherPort}`)
  t.match(as.fix, `set PUBLIC_URL=${server.baseUrl}`)

  // The same through the command, human-readable: exit 1 and the problem on a FAIL line.
  const { code, stdout } = await runCli([`${server.baseUrl}/mcp`])
  t.equal(code, 1)
  t.match(stdout, new RegExp(`^FAIL {2}prm-path: .*"resource" is "http://localhost:${otherPort}/mcp".* → fix: PUBLIC_URL must be the origin clients use: set PUBLIC_URL=${server.baseUrl}`, 'm'))
  t.match(stdout, /claude\.ai would not connect/)
})

t.test('PRM missing: a proxy in front answers 404 for /.well-known/oauth-protected-resource*', async (t) => {
  let upstreamPort = 0
  const proxy = createServer((req, res) => {
    if (req.url?.startsWith('/.well-known/oauth-protected-resource') === true) {
      req.resume()
      res.writeHead(404, { 'content-type': 'text/plain' }).end('Not Found')
      return
    }
    const upstream = forward({ host: '127.0.0.1', port: upstreamPort, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers)
      answer.pipe(res)
    })
    upstream.on('error', () => { res.writeHead(502).end() })
    req.pipe(upstream)
  })
  const proxyPort = await listen(t, proxy)
  const publicUrl = `http://127.0.0.1:${proxyPort}`
  const server = await startTestServer(t, { listen: true, env: { PUBLIC_URL: publicUrl } })
  upstreamPort = Number(new URL(server.baseUrl).port)

  const report = await runDoctor(`${publicUrl}/mcp`)
  t.equal(report.ok, false)
  t.same(failed(report).map((r) => r.name).sort(), ['cors-prm', 'prm-path', 'prm-root'], 'the PRM checks fail (and the PRM preflight)', { report: formatReport(report) })
  for (const name of ['prm-path', 'prm-root']) {
    const r = check(report, name)
    t.match(r.detail, /^no protected resource metadata at .* 404$/)
    t.match(r.fix, /claude\.ai requires PRM/)
    t.match(r.fix, /route \/\.well-known\/\* to the service/)
  }
  t.equal(check(report, 'challenge').status, 'pass', 'the challenge itself is right')
  t.match(check(report, 'as-metadata').detail, /no PRM found: tried the MCP origin/)
})

/**
 * A stand-in MCP server with its own authorization server, correct in every way the doctor
 * checks unless told otherwise. `origin()` is its URL once listening.
 */
function fakeServer (options: { issuerTrailingSlash?: boolean, openInitialize?: boolean, tokenRedirect?: boolean }, origin: () => string) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    req.resume()
    const path = (req.url ?? '/').split('?')[0]
    const json = (status: number, body: unknown, headers: Record<string, string> = {}): void => {
      res.writeHead(status, { 'content-type': 'application/json', 'access-control-allow-origin': '*', ...headers }).end(JSON.stringify(body))
    }
    if (req.method === 'OPTIONS') {
      res.writeHead(204, {
        'access-control-allow-origin': req.headers.origin ?? '*',
        'access-control-allow-methods': 'GET, POST, OPTIONS',
        'access-control-allow-headers': 'Authorization, Content-Type, MCP-Protocol-Version'
      }).end()
      return
    }
    const mcpCors = { 'access-control-allow-origin': req.headers.origin ?? '*', 'access-control-expose-headers': 'WWW-Authenticate, Mcp-Session-Id' }
    if (path === '/mcp' && req.method === 'POST') {
      if (options.openInitialize === true) {
        json(200, { jsonrpc: '2.0', id: 1, result: { protocolVersion: '2025-06-18', capabilities: {}, serverInfo: { name: 'open', version: '1' } } }, mcpCors)
      } else {
        json(401, { jsonrpc: '2.0', error: { code: -32000, message: 'auth' }, id: null }, {
          ...mcpCors,
          'www-authenticate': `Bearer resource_metadata="${origin()}/.well-known/oauth-protected-resource/mcp", scope="bus:read bus:write"`
        })
      }
      return
    }
    if (path === '/.well-known/oauth-protected-resource/mcp' || path === '/.well-known/oauth-protected-resource') {
      json(200, { resource: `${origin()}/mcp`, authorization_servers: [origin()], scopes_supported: ['bus:read', 'bus:write'] })
      return
    }
    if (path === '/.well-known/oauth-authorization-server' || path === '/.well-known/openid-configuration') {
      json(200, {
        issuer: options.issuerTrailingSlash === true ? `${origin()}/` : origin(),
        authorization_endpoint: `${origin()}/oauth/authorize`,
        token_endpoint: `${origin()}/oauth/token`,
        registration_endpoint: `${origin()}/oauth/register`,
        response_types_supported: ['code'],
        code_challenge_methods_supported: ['S256'],
        token_endpoint_auth_methods_supported: ['none', 'client_secret_post'],
        authorization_response_iss_parameter_supported: true
      })
      return
    }
    if (path === '/oauth/token' && req.method === 'POST') {
      if (options.tokenRedirect === true) {
        res.writeHead(308, { location: `${origin()}/oauth/token/` }).end()
        return
      }
      json(400, { error: 'invalid_request', error_description: 'grant_type is required' })
      return
    }
    if (path === '/oauth/register' && req.method === 'POST') {
      json(400, { error: 'invalid_client_metadata', error_description: 'bad JSON' })
      return
    }
    if ((path === '/oauth/authorize' || path === '/authorize') && req.method === 'GET') {
      res.writeHead(400, { 'content-type': 'text/html' }).end('<p>missing client_id</p>')
      return
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('Not Found')
  }
}

async function startFake (t: Test, options: Parameters<typeof fakeServer>[0]): Promise<string> {
  let origin = ''
  const port = await listen(t, createServer(fakeServer(options, () => origin)))
  origin = `http://127.0.0.1:${port}`
  return origin
}

t.test('the fake server is itself healthy (control for the cases below)', async (t) => {
  const origin = await startFake(t, {})
  const report = await runDoctor(`${origin}/mcp`)
  t.same(failed(report), [], 'no check fails', { report: formatReport(report) })
})

t.test('issuer with a trailing slash: AS metadata says "http://…/", the PRM says without', async (t) => {
  const origin = await startFake(t, { issuerTrailingSlash: true })
  const report = await runDoctor(`${origin}/mcp`)
  t.same(failed(report).map((r) => r.name), ['issuer'], 'only the issuer check fails', { report: formatReport(report) })
  const issuer = check(report, 'issuer')
  t.equal(issuer.detail, `issuer "${origin}/" differs from the PRM authorization_servers entry "${origin}" by a trailing slash`)
  t.match(issuer.fix, /without the trailing slash/)
  t.match(issuer.fix, /compare byte for byte/)
})

t.test('200 to an unauthenticated initialize: claude.ai would pick no auth', async (t) => {
  const origin = await startFake(t, { openInitialize: true })
  const report = await runDoctor(`${origin}/mcp`)
  t.same(failed(report).map((r) => r.name), ['unauthenticated-initialize'], 'only the initialize check fails', { report: formatReport(report) })
  t.match(check(report, 'unauthenticated-initialize').detail, 'POST initialize without credentials → 200: claude.ai would pick "no auth"')
})

t.test('a redirect on the token endpoint POST', async (t) => {
  const origin = await startFake(t, { tokenRedirect: true })
  const report = await runDoctor(`${origin}/mcp`)
  t.same(failed(report).map((r) => r.name), ['token-endpoint'], 'only the token endpoint check fails', { report: formatReport(report) })
  const token = check(report, 'token-endpoint')
  t.match(token.detail, `POST ${origin}/oauth/token answered 308 redirecting to ${origin}/oauth/token/`)
  t.match(token.fix, /^no redirects on POST/)
})

t.test('https to a plain http port: the TLS handshake fails, and the fix says why', async (t) => {
  const origin = await startFake(t, {})
  const report = await runDoctor(`${origin.replace('http:', 'https:')}/mcp`)
  t.same(report.results.map((r) => r.name), ['url', 'unauthenticated-initialize'])
  const tls = check(report, 'unauthenticated-initialize')
  t.match(tls.detail, /TLS handshake .* failed \(wrong version number\)/)
  t.match(tls.fix, /serves plain http/)
})

t.test('nothing listening: one failure, nothing else tried', async (t) => {
  const port = await freePort()
  const report = await runDoctor(`http://127.0.0.1:${port}/mcp`)
  t.same(report.results.map((r) => r.name), ['url', 'unauthenticated-initialize'])
  t.match(check(report, 'unauthenticated-initialize').detail, `connection refused at 127.0.0.1:${port}`)
})

t.test('not a URL', async (t) => {
  const report = await runDoctor('bus.example.com/mcp')
  t.equal(report.ok, false)
  t.equal(report.mcpUrl, null)
  t.match(check(report, 'url').fix, 'https://bus.example.com/mcp')
})

// ---------------------------------------------------------------------------------------------
// https: a certificate the process trusts only through NODE_EXTRA_CA_CERTS

testNeeding(t, 'over https with a private CA: untrusted in process, passing with NODE_EXTRA_CA_CERTS', [opensslBinary()], async (t) => {
  const dir = t.testdir()
  const key = join(dir, 'key.pem')
  const cert = join(dir, 'cert.pem')
  await new Promise<void>((resolve, reject) => {
    execFile('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1',
      '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], (err) => { if (err === null) resolve(); else reject(err) })
  })
  let origin = ''
  const server = createHttpsServer({ key: readFileSync(key), cert: readFileSync(cert) }, fakeServer({}, () => origin))
  const port = await listen(t, server)
  origin = `https://127.0.0.1:${port}`

  const untrusted = await runDoctor(`${origin}/mcp`)
  t.same(untrusted.results.map((r) => r.name), ['url', 'unauthenticated-initialize'])
  const tls = check(untrusted, 'unauthenticated-initialize')
  t.match(tls.detail, `the TLS certificate of 127.0.0.1:${port} is not trusted`)
  t.match(tls.fix, /NODE_EXTRA_CA_CERTS/)

  const { code, stdout, stderr } = await runCli([`${origin}/mcp`, '--json'], { NODE_EXTRA_CA_CERTS: cert })
  t.equal(code, 0, stderr)
  const results = JSON.parse(stdout) as CheckResult[]
  t.same(results.filter((r) => !r.ok), [])
  t.equal(results.find((r) => r.name === 'url')?.status, 'warn', 'https on a loopback host: claude.ai cannot reach it')
})
