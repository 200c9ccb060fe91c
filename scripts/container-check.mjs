#!/usr/bin/env node
// Checks the container stack that scripts/container-test.sh starts with podman (PostgreSQL, the
// bus image built from the Dockerfile, Caddy with the repo's Caddyfile), end to end through Caddy
// over HTTPS. Run it through container-test.sh, which sets the CT_* variables below and
// NODE_EXTRA_CA_CERTS to a bundle that includes Caddy's local root CA.
//
// Each check prints "ok - …" or "not ok - …"; the last line is "container-check: N passed, N failed".
// Plain Node (no dependencies), so it runs before or without `npm ci`.
import { execFile } from 'node:child_process'
import { randomBytes, createHash } from 'node:crypto'
import { readFileSync, realpathSync } from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const env = (name) => {
  const value = process.env[name]
  if (value === undefined || value === '') throw new Error(`${name} is not set (run scripts/container-test.sh)`)
  return value
}
const PUBLIC_URL = env('CT_PUBLIC_URL') // https://localhost:PORT: Caddy, and the bus's PUBLIC_URL
const BUS_URL = env('CT_BUS_URL') // the bus container's own listener, for comparison only
const PREFIX = env('CT_PREFIX')
const BUS = `${PREFIX}-bus`
const PODMAN_ARGS = env('CT_PODMAN_ARGS').split(' ')
const STOP_GRACE = Number(process.env.CT_BUS_STOP_GRACE ?? '10')

const run = promisify(execFile)
async function podman (...args) {
  try {
    const { stdout } = await run('podman', [...PODMAN_ARGS, ...args], { maxBuffer: 32 * 1024 * 1024 })
    return stdout
  } catch (err) {
    const out = `${err.stdout ?? ''}${err.stderr ?? ''}`.trim().split('\n').slice(-5).join(' | ')
    throw new Error(`podman ${args.slice(0, 3).join(' ')} … failed (exit ${err.code}): ${out}`)
  }
}
async function busCli (...args) {
  const out = await podman('exec', BUS, 'bus-mcp', '--json', ...args)
  return JSON.parse(out)
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

let passed = 0
let failed = 0
async function check (name, fn) {
  const started = Date.now()
  try {
    const note = await fn()
    passed++
    console.log(`ok - ${name}${note ? ` (${note})` : ''} [${Date.now() - started} ms]`)
  } catch (err) {
    failed++
    console.log(`not ok - ${name}: ${err instanceof Error ? err.message : String(err)}`)
  }
}
function assert (condition, message) {
  if (!condition) throw new Error(message)
}

/** One HTTPS (or HTTP) request with node:https, so a local source address can be chosen. */
function request (url, { method = 'GET', headers = {}, body, localAddress, timeoutMs = 60_000 } = {}) {
  return new Promise((resolve, reject) => {
    const u = new URL(url)
    const lib = u.protocol === 'https:' ? https : http
    const req = lib.request(u, { method, headers, localAddress, timeout: timeoutMs }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error(`timed out after ${timeoutMs} ms`)))
    req.on('error', reject)
    req.end(body)
  })
}

let rpcId = 1
/** JSON-RPC POST to PUBLIC_URL/mcp (through Caddy); parses a JSON or an SSE answer. */
async function mcp (token, method, params = {}, opts = {}) {
  const res = await request(`${PUBLIC_URL}/mcp`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...opts.headers
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: rpcId++, method, params }),
    timeoutMs: opts.timeoutMs
  })
  let json
  if (/text\/event-stream/.test(res.headers['content-type'] ?? '')) {
    const data = res.text.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).pop()
    json = data ? JSON.parse(data) : undefined
  } else if (res.text !== '') {
    try { json = JSON.parse(res.text) } catch { json = undefined }
  }
  return { ...res, json }
}
async function callTool (token, name, args = {}, opts = {}) {
  const res = await mcp(token, 'tools/call', { name, arguments: args }, opts)
  assert(res.status === 200, `tools/call ${name}: HTTP ${res.status} ${res.text.slice(0, 300)}`)
  const result = res.json?.result
  assert(result !== undefined, `tools/call ${name}: no result in ${res.text.slice(0, 300)}`)
  assert(result.isError !== true, `tools/call ${name} failed: ${result.content?.[0]?.text}`)
  return JSON.parse(result.content[0].text)
}

// ---- the image and the container --------------------------------------------------------------

async function checkImage () {
  await check('image: runs as the unprivileged user "node", tini as entrypoint, HEALTHCHECK on /healthz, port 8088, volume /data', async () => {
    const [config] = JSON.parse(await podman('image', 'inspect', env('CT_APP_IMAGE')))
    const c = config.Config
    assert(c.User === 'node', `User is ${JSON.stringify(c.User)}`)
    assert(JSON.stringify(c.Entrypoint) === '["/usr/bin/tini","--"]', `Entrypoint is ${JSON.stringify(c.Entrypoint)}`)
    const hc = (config.Healthcheck ?? c.Healthcheck)?.Test?.join(' ') ?? ''
    assert(hc.includes('/healthz'), `no HEALTHCHECK on /healthz: ${JSON.stringify(config.Healthcheck ?? c.Healthcheck)}`)
    assert(Object.keys(c.ExposedPorts ?? {}).includes('8088/tcp'), 'port 8088 not exposed')
    assert(Object.keys(c.Volumes ?? {}).includes('/data'), '/data is not a volume')
    const envs = Object.fromEntries((c.Env ?? []).map((e) => e.split(/=(.*)/s).slice(0, 2)))
    assert(envs.HOST === '0.0.0.0' && envs.DATA_DIR === '/data', `HOST=${envs.HOST} DATA_DIR=${envs.DATA_DIR}`)
    return `${Math.round(config.Size / 1e6)} MB`
  })

  await check('image: production dependencies only, bin/, src/ and drizzle/ present, no dist/ or dev files', async () => {
    // No build step: Node runs src/*.ts as it is, so src/ ships and dist/ must not exist. The
    // application must sit outside any node_modules folder (type stripping refuses those).
    const script = [
      'cd /app || exit 1',
      'for f in package.json bin/server.js bin/bus-mcp.js src/server.ts src/cli.ts drizzle/meta/_journal.json node_modules/fastify/package.json; do [ -f "$f" ] || { echo "missing $f"; exit 1; }; done',
      'ls drizzle/*.sql >/dev/null 2>&1 || { echo "no migrations in drizzle/"; exit 1; }',
      'grep -q "/app/bin/bus-mcp.js" /usr/local/bin/bus-mcp && [ -x /usr/local/bin/bus-mcp ] || { echo "bus-mcp on PATH does not run /app/bin/bus-mcp.js"; exit 1; }',
      'for d in typescript tap tsx drizzle-kit fast-check @types/node; do [ ! -e node_modules/$d ] || { echo "dev dependency $d present in node_modules"; exit 1; }; done',
      'for d in dist test bench docs scripts tsconfig.json tsconfig.build.json; do [ ! -e $d ] || { echo "$d present in /app"; exit 1; }; done',
      'echo "node $(node --version), node_modules $(du -sm node_modules | cut -f1) MB"'
    ].join('\n')
    const note = (await podman('exec', BUS, 'sh', '-c', script)).trim()
    // Every package the repo's lockfile marks dev-only (needed by devDependencies alone) is absent,
    // whatever package.json lists today; a package also needed in production is not marked.
    const lock = JSON.parse(readFileSync(new URL('../package-lock.json', import.meta.url), 'utf8'))
    const devOnly = Object.entries(lock.packages ?? {}).filter(([path, p]) => path && p.dev === true).map(([path]) => path)
    assert(devOnly.length > 0, 'package-lock.json marks no package dev-only: cannot check')
    const present = JSON.parse(await podman('exec', BUS, 'node', '-e',
      'const fs = require("fs"); console.log(JSON.stringify(JSON.parse(process.argv[1]).filter((p) => fs.existsSync("/app/" + p))))',
      JSON.stringify(devOnly)))
    assert(present.length === 0, `dev-only packages in the image: ${present.slice(0, 10).join(', ')}${present.length > 10 ? ', …' : ''}`)
    return `${note}, none of the lockfile's ${devOnly.length} dev-only packages`
  })

  await check('container: tini is PID 1 and Node its child, every process runs as uid 1000 (non-root)', async () => {
    const out = await podman('exec', BUS, 'node', '-e', `
      const fs = require('fs')
      const procs = fs.readdirSync('/proc').filter((p) => /^[0-9]+$/.test(p)).map((pid) => {
        try {
          const status = fs.readFileSync('/proc/' + pid + '/status', 'utf8')
          return { pid: Number(pid), uid: Number(/^Uid:\\s+(\\d+)/m.exec(status)[1]), ppid: Number(/^PPid:\\s+(\\d+)/m.exec(status)[1]),
            cmd: fs.readFileSync('/proc/' + pid + '/cmdline', 'utf8').split('\\0').filter(Boolean).join(' ') }
        } catch { return null }
      }).filter(Boolean)
      console.log(JSON.stringify(procs))`)
    const procs = JSON.parse(out)
    const pid1 = procs.find((p) => p.pid === 1)
    assert(pid1 && /tini/.test(pid1.cmd), `PID 1 is ${pid1?.cmd}`)
    const server = procs.find((p) => p.ppid === 1 && /^node bin\/server\.js$/.test(p.cmd))
    assert(server, `no "node bin/server.js" child of PID 1: ${JSON.stringify(procs)}`)
    const root = procs.filter((p) => p.uid === 0)
    assert(root.length === 0, `running as root: ${root.map((p) => p.cmd).join(', ')}`)
    return `PID 1 "${pid1.cmd}", server "${server.cmd}", uid ${server.uid}`
  })

  await check("container: the image's HEALTHCHECK passes (podman healthcheck run)", async () => {
    const out = await podman('healthcheck', 'run', BUS)
    return out.trim() || 'healthy'
  })
}

// ---- through Caddy -------------------------------------------------------------------------------

let token

async function checkThroughCaddy () {
  await check(`GET ${PUBLIC_URL}/healthz through Caddy over HTTPS (trusting Caddy's local root CA)`, async () => {
    const res = await request(`${PUBLIC_URL}/healthz`)
    assert(res.status === 200 && JSON.parse(res.text).status === 'ok', `HTTP ${res.status} ${res.text}`)
  })

  await check('GET /readyz through Caddy: PostgreSQL reachable, migrations applied', async () => {
    const res = await request(`${PUBLIC_URL}/readyz`)
    assert(res.status === 200, `HTTP ${res.status} ${res.text}`)
    return res.text
  })

  await check('the admin API is not reachable through Caddy (GET /principals is 404 on the public listener)', async () => {
    const res = await request(`${PUBLIC_URL}/principals`)
    assert(res.status === 404 && !res.text.includes('"principals"'), `HTTP ${res.status} ${res.text.slice(0, 200)}`)
  })

  await check('unauthenticated POST /mcp through Caddy: 401 with resource_metadata under PUBLIC_URL', async () => {
    const res = await mcp(undefined, 'initialize', { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'container-check', version: '1' } })
    const challenge = res.headers['www-authenticate'] ?? ''
    assert(res.status === 401, `HTTP ${res.status}`)
    const metadata = /resource_metadata="([^"]+)"/.exec(challenge)?.[1]
    assert(metadata?.startsWith(`${PUBLIC_URL}/.well-known/oauth-protected-resource`), `WWW-Authenticate: ${challenge}`)
    return metadata
  })

  await check('bus-mcp principal add + token issue --json via podman exec (CLI → admin API on the container loopback)', async () => {
    const principal = await busCli('principal', 'add', 'ct-agent', '--scopes', 'bus:read bus:write')
    assert(principal.name === 'ct-agent', `principal add printed ${JSON.stringify(principal)}`)
    const issued = await busCli('token', 'issue', '--principal', 'ct-agent', '--label', 'container-check')
    assert(typeof issued.token === 'string' && issued.token.length > 20, `token issue printed ${JSON.stringify(issued)}`)
    token = issued.token
    // The principal AUTO_APPROVE_PRINCIPAL names, for the OAuth flow below.
    await busCli('principal', 'add', 'ct-oauth', '--scopes', 'bus:read bus:write')
    return `token id ${issued.id}`
  })

  await check('tools/call whoami through Caddy with the API token returns the principal', async () => {
    assert(token, 'no token (previous check failed)')
    const me = await callTool(token, 'whoami')
    assert(me.principal === 'ct-agent', `whoami: ${JSON.stringify(me)}`)
    return JSON.stringify(me)
  })

  await check('a long-poll through Caddy wakes on a send (bus_read wait_seconds 20, bus_send 1 s later)', async () => {
    const channel = `ct-${randomBytes(3).toString('hex')}`
    const first = await callTool(token, 'bus_send', { channel, body: 'creates the channel' })
    const started = Date.now()
    const reading = callTool(token, 'bus_read', { channel, after: first.id, wait_seconds: 20 }).catch((err) => err)
    await sleep(1000)
    await callTool(token, 'bus_send', { channel, body: 'wake up' })
    const read = await reading
    if (read instanceof Error) throw read
    const elapsed = Date.now() - started
    assert(read.messages?.[0]?.body === 'wake up', `bus_read returned ${JSON.stringify(read)}`)
    assert(elapsed < 10_000, `woke after ${elapsed} ms`)
    return `woke after ${elapsed} ms`
  })
}

/** Started early, awaited late: a full 25 s bus_read must come back through Caddy untouched. */
async function startFullLongPoll () {
  const sent = await callTool(token, 'bus_send', { channel: 'ct-quiet', body: 'creates the channel' })
  const started = Date.now()
  const pending = callTool(token, 'bus_read', { channel: 'ct-quiet', after: sent.id, wait_seconds: 25 }, { timeoutMs: 90_000 })
    .then((read) => ({ read, elapsed: Date.now() - started }), (err) => ({ err, elapsed: Date.now() - started }))
  return { pending } // not awaited here: the other checks run meanwhile
}

async function checkForwardedFor () {
  await check('X-Forwarded-For reaches the bus through Caddy (TRUST_PROXY): a request from 127.0.0.2 is logged as 127.0.0.2, a spoofed header is dropped', async () => {
    const marker = randomBytes(6).toString('hex')
    const since = new Date(Date.now() - 2000).toISOString()
    const res = await request(`${PUBLIC_URL}/healthz?ct=${marker}`, { localAddress: '127.0.0.2', headers: { 'x-forwarded-for': '203.0.113.7' } })
    assert(res.status === 200, `HTTP ${res.status}`)
    await sleep(500)
    const logs = await podman('logs', '--since', since, BUS)
    const line = logs.split('\n').find((l) => l.includes(marker))
    assert(line, 'no log line for the request (is request logging off?)')
    const remote = JSON.parse(line).req?.remoteAddress
    assert(remote === '127.0.0.2', `logged remoteAddress ${remote}: ${line}`)
  })
}

// ---- the Caddyfile's proxying, against an echo upstream -----------------------------------------

async function checkCaddyProxying () {
  // A second Caddy from the same image and Caddyfile, in front of an upstream in this process, to
  // see exactly what the bus receives: forwarded headers and streaming in both directions.
  const httpPort = Number(env('CT_ECHO_HTTP_PORT'))
  const httpsPort = Number(env('CT_ECHO_HTTPS_PORT'))
  const upstreamPort = Number(env('CT_ECHO_UPSTREAM_PORT'))
  const name = `${PREFIX}-caddy-echo`
  const firstBodyChunk = { resolve: () => {} }
  const echo = http.createServer((req, res) => {
    if (req.url === '/healthz') return res.end('ok')
    if (req.url === '/stream-response') {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.write('data: first\n\n')
      setTimeout(() => res.end('data: last\n\n'), 3000)
      return
    }
    if (req.url === '/stream-request') {
      req.once('data', () => firstBodyChunk.resolve())
      req.resume()
      req.on('end', () => res.end('done'))
      return
    }
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ url: req.url, headers: req.headers, remote: req.socket.remoteAddress }))
  })
  await new Promise((resolve) => echo.listen(upstreamPort, '127.0.0.1', resolve))
  const base = `https://localhost:${httpsPort}`
  try {
    await podman('run', '-d', '--name', name, '--network=host',
      '-e', `DOMAIN=localhost:${httpsPort}`, '-e', `BUS_UPSTREAMS=127.0.0.1:${upstreamPort}`,
      '-e', `CADDY_HTTP_PORT=${httpPort}`, '-e', `CADDY_HTTPS_PORT=${httpsPort}`,
      '-e', `CADDY_GLOBAL_OPTIONS=${env('CT_CADDY_GLOBAL_OPTIONS')}`,
      '-v', `${env('CT_CADDYFILE')}:/etc/caddy/Caddyfile:ro`, '-v', `${PREFIX}-caddy-data:/data`,
      env('CT_CADDY_IMAGE'))
    let ready = false
    for (let i = 0; i < 60 && !ready; i++) {
      ready = await request(`${base}/healthz`).then((r) => r.status === 200, () => false)
      if (!ready) await sleep(250)
    }
    assert(ready, `the echo Caddy did not answer on ${base}`)

    await check('Caddyfile: forwards X-Forwarded-For (client address, spoofed value replaced), X-Forwarded-Proto https, X-Forwarded-Host, keeps Host', async () => {
      const res = await request(`${base}/echo?x=1`, { localAddress: '127.0.0.2', headers: { 'x-forwarded-for': '203.0.113.7', 'x-forwarded-proto': 'http' } })
      const seen = JSON.parse(res.text)
      const h = seen.headers
      assert(h['x-forwarded-for'] === '127.0.0.2', `X-Forwarded-For: ${h['x-forwarded-for']}`)
      assert(h['x-forwarded-proto'] === 'https', `X-Forwarded-Proto: ${h['x-forwarded-proto']}`)
      assert(h['x-forwarded-host'] === `localhost:${httpsPort}`, `X-Forwarded-Host: ${h['x-forwarded-host']}`)
      assert(h.host === `localhost:${httpsPort}`, `Host: ${h.host}`)
      assert(seen.url === '/echo?x=1', `path: ${seen.url}`)
      return `X-Forwarded-For ${h['x-forwarded-for']}, X-Forwarded-Proto ${h['x-forwarded-proto']}, Host ${h.host}`
    })

    await check('Caddyfile: responses stream through unbuffered (flush_interval -1)', async () => {
      const started = Date.now()
      const firstAt = await new Promise((resolve, reject) => {
        const req = https.get(`${base}/stream-response`, (res) => {
          res.once('data', () => { resolve(Date.now() - started); res.resume() })
          res.on('error', reject)
        })
        req.on('error', reject)
      })
      assert(firstAt < 2000, `first event arrived after ${firstAt} ms (upstream sent it at once, the rest at 3 s)`)
      return `first event after ${firstAt} ms`
    })

    await check('Caddyfile: request bodies stream through unbuffered', async () => {
      const arrived = new Promise((resolve) => { firstBodyChunk.resolve = resolve })
      const req = https.request(`${base}/stream-request`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' } })
      const done = new Promise((resolve, reject) => {
        req.on('response', (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)) })
        req.on('error', reject)
      })
      req.write('first chunk of a body that is not finished yet\n')
      const first = await Promise.race([arrived.then(() => true), sleep(3000).then(() => false)])
      req.end('rest\n')
      const status = await done
      assert(first, 'the upstream saw nothing of the body before the client finished it')
      assert(status === 200, `HTTP ${status}`)
    })
  } finally {
    await podman('rm', '-f', '-v', '-t', '1', name).catch(() => {})
    echo.close()
  }
}

// ---- OAuth -------------------------------------------------------------------------------------

/** Discovery through Caddy, as claude.ai does it: PRM and AS metadata name PUBLIC_URL exactly. */
async function checkOAuthDiscovery () {
  const as = await request(`${PUBLIC_URL}/.well-known/oauth-authorization-server`)
  if (as.status !== 200) {
    // Never a skip: this build has an authorization server, so a 404 here means the image, the
    // Caddyfile or the routing lost it, and the OAuth flow below cannot run. Counted as a failure.
    await check('OAuth discovery through Caddy: /.well-known/oauth-authorization-server answers', async () => {
      assert(false, `HTTP ${as.status} ${as.text.slice(0, 200)}: the authorization server metadata is missing through Caddy, so the OAuth flow through Caddy was not run`)
    })
    return false
  }
  await check('OAuth discovery through Caddy: PRM resource is PUBLIC_URL/mcp, issuer is PUBLIC_URL byte for byte', async () => {
    const prm = await request(`${PUBLIC_URL}/.well-known/oauth-protected-resource/mcp`)
    assert(prm.status === 200, `PRM: HTTP ${prm.status}`)
    const resource = JSON.parse(prm.text)
    assert(resource.resource === `${PUBLIC_URL}/mcp`, `PRM resource ${resource.resource}`)
    assert(as.status === 200, `AS metadata: HTTP ${as.status}`)
    const meta = JSON.parse(as.text)
    assert(meta.issuer === PUBLIC_URL, `issuer ${meta.issuer}`)
    assert(JSON.stringify(resource.authorization_servers) === JSON.stringify([meta.issuer]), `authorization_servers ${JSON.stringify(resource.authorization_servers)}`)
    for (const key of ['authorization_endpoint', 'token_endpoint', 'registration_endpoint']) {
      assert(typeof meta[key] === 'string' && meta[key].startsWith(`${PUBLIC_URL}/`), `${key}: ${meta[key]}`)
    }
    return `issuer ${meta.issuer}`
  })
  return true
}

/**
 * The full OAuth 2.1 flow through Caddy against the container,
 * as a chat client does it: dynamic registration, authorization with PKCE (the bus runs with
 * AUTO_APPROVE_PRINCIPAL=ct-oauth, so no consent page), code exchange, whoami with the access
 * token (principal ct-oauth, auth kind OAuth), a refresh. Kept to the DESIGN.md contract; it runs
 * only when the build serves the authorization server metadata.
 */
async function checkOAuthFlow () {
  await check('OAuth flow through Caddy: register, authorize (auto-approve, PKCE S256), token, whoami, refresh', async () => {
    const meta = JSON.parse((await request(`${PUBLIC_URL}/.well-known/oauth-authorization-server`)).text)
    const redirectUri = 'http://127.0.0.1:53682/callback'
    const reg = await request(meta.registration_endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ client_name: 'container-check', redirect_uris: [redirectUri], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'] })
    })
    assert(reg.status === 201 || reg.status === 200, `register: HTTP ${reg.status} ${reg.text.slice(0, 300)}`)
    const client = JSON.parse(reg.text)
    const verifier = randomBytes(32).toString('base64url')
    const challenge = createHash('sha256').update(verifier).digest('base64url')
    const state = randomBytes(8).toString('hex')
    const authorize = new URL(meta.authorization_endpoint)
    for (const [k, v] of Object.entries({ response_type: 'code', client_id: client.client_id, redirect_uri: redirectUri, scope: 'bus:read bus:write', state, code_challenge: challenge, code_challenge_method: 'S256', resource: `${PUBLIC_URL}/mcp` })) authorize.searchParams.set(k, v)
    const auth = await request(authorize.href)
    assert(auth.status === 302 || auth.status === 303, `authorize: HTTP ${auth.status} (expected a redirect: AUTO_APPROVE_PRINCIPAL is set) ${auth.text.slice(0, 200)}`)
    const back = new URL(auth.headers.location)
    assert(back.searchParams.get('state') === state, `redirect ${back.href}`)
    assert(back.searchParams.get('iss') === PUBLIC_URL, `iss ${back.searchParams.get('iss')}`)
    const code = back.searchParams.get('code')
    assert(code, `no code in ${back.href}`)
    const form = (o) => new URLSearchParams(o).toString()
    const tokenRes = await request(meta.token_endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: form({ grant_type: 'authorization_code', code, redirect_uri: redirectUri, client_id: client.client_id, code_verifier: verifier, resource: `${PUBLIC_URL}/mcp` })
    })
    assert(tokenRes.status === 200, `token: HTTP ${tokenRes.status} ${tokenRes.text.slice(0, 300)}`)
    const tokens = JSON.parse(tokenRes.text)
    const me = await callTool(tokens.access_token, 'whoami')
    assert(me.principal === 'ct-oauth', `whoami with the OAuth access token: ${JSON.stringify(me)}`)
    assert(me.client_id === client.client_id, `whoami client_id ${me.client_id}`)
    const refreshed = await request(meta.token_endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: form({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id: client.client_id, resource: `${PUBLIC_URL}/mcp` })
    })
    assert(refreshed.status === 200, `refresh: HTTP ${refreshed.status} ${refreshed.text.slice(0, 300)}`)
    const me2 = await callTool(JSON.parse(refreshed.text).access_token, 'whoami')
    assert(me2.principal === 'ct-oauth', `whoami after refresh: ${JSON.stringify(me2)}`)
    return `client ${client.client_id}, whoami ${me.auth}`
  })
}

// ---- doctor, from inside the container ------------------------------------------------------------

async function checkDoctor () {
  await check(`bus-mcp doctor ${PUBLIC_URL}/mcp from inside the bus container passes (through Caddy)`, async () => {
    // The container trusts Caddy's local root through NODE_EXTRA_CA_CERTS, as the README says.
    await podman('cp', env('CT_CADDY_ROOT_CRT'), `${BUS}:/tmp/caddy-root.crt`)
    let out
    try {
      out = await podman('exec', '-e', 'NODE_EXTRA_CA_CERTS=/tmp/caddy-root.crt', BUS, 'bus-mcp', 'doctor', `${PUBLIC_URL}/mcp`)
    } catch (err) {
      throw new Error(`doctor failed: ${err.message}`)
    }
    const lines = out.trim().split('\n')
    assert(!lines.some((l) => /\bFAIL\b/.test(l)), out)
    return `${lines.filter((l) => /\bPASS\b/.test(l)).length} PASS, ${lines.filter((l) => /\bWARN\b/.test(l)).length} WARN`
  })
}

// ---- shutdown and the embedded database ----------------------------------------------------------

async function checkSigterm () {
  await check('SIGTERM (podman stop) ends the bus cleanly within seconds, answering an in-flight long-poll', async () => {
    const sent = await callTool(token, 'bus_send', { channel: 'ct-stop', body: 'creates the channel' })
    const polling = callTool(token, 'bus_read', { channel: 'ct-stop', after: sent.id, wait_seconds: 25 }, { timeoutMs: 60_000 }).then((r) => ({ r }), (err) => ({ err }))
    await sleep(1500)
    const started = Date.now()
    await podman('stop', '-t', String(STOP_GRACE), BUS)
    const stopMs = Date.now() - started
    const [state] = JSON.parse(await podman('inspect', BUS))
    const exitCode = state.State.ExitCode
    const poll = await polling
    const logs = await podman('logs', '--tail', '20', BUS)
    assert(exitCode === 0, `exit code ${exitCode} (137 would mean SIGKILL after the grace period)`)
    assert(stopMs < 10_000, `stop took ${stopMs} ms`)
    assert(/shutting down/.test(logs), 'no "shutting down" log line')
    assert(poll.r !== undefined, `the in-flight long-poll failed: ${poll.err?.message}`)
    return `stopped in ${stopMs} ms, exit code ${exitCode}`
  })
}

async function checkEmbedded () {
  const port = env('CT_EMBEDDED_PORT')
  const name = `${PREFIX}-bus-embedded`
  await check('the image without DATABASE_URL: embedded database in the /data volume (owned by the non-root user), ready', async () => {
    try {
      await podman('run', '-d', '--name', name, '--network=host', '-e', 'HOST=127.0.0.1', '-e', `PORT=${port}`,
        '-e', `ADMIN_PORT=${env('CT_EMBEDDED_ADMIN_PORT')}`, '-v', `${PREFIX}-bus-data:/data`, env('CT_APP_IMAGE'))
      let res
      for (let i = 0; i < 360; i++) {
        res = await request(`http://127.0.0.1:${port}/readyz`).catch(() => undefined)
        if (res?.status === 200) break
        await sleep(250)
      }
      assert(res?.status === 200, `/readyz: ${res ? `HTTP ${res.status} ${res.text}` : 'no answer'}\n${await podman('logs', '--tail', '15', name).catch(() => '')}`)
      const files = await podman('exec', name, 'sh', '-c', 'stat -c %U /data; ls /data | head -3')
      return files.replace(/\n/g, ' ').trim()
    } finally {
      await podman('rm', '-f', '-v', '-t', '5', name).catch(() => {})
    }
  })
}

// ---- main ----------------------------------------------------------------------------------------

/** What the checks run so far came to (test/unit/container-verdict.test.ts runs single checks). */
export function results () { return { passed, failed } }
export { checkOAuthDiscovery }

async function main () {
  console.log(`# container check: PUBLIC_URL ${PUBLIC_URL} (Caddy), bus ${BUS_URL}`)
  await checkImage()
  await checkThroughCaddy()
  const fullPoll = token ? await startFullLongPoll().catch((err) => ({ pending: Promise.resolve({ err, elapsed: 0 }) })) : undefined
  await checkForwardedFor()
  await checkCaddyProxying()
  if (await checkOAuthDiscovery()) await checkOAuthFlow()
  await checkDoctor()
  if (fullPoll) {
    await check('a full 25 s long-poll (bus_read wait_seconds 25) comes back through Caddy, not cut by a proxy timeout', async () => {
      const { read, err, elapsed } = await fullPoll.pending
      if (err) throw new Error(`after ${elapsed} ms: ${err.message}`)
      assert(Array.isArray(read.messages) && read.messages.length === 0, `bus_read: ${JSON.stringify(read)}`)
      assert(elapsed >= 20_000, `answered after ${elapsed} ms, before the wait was over`)
      return `answered after ${elapsed} ms`
    })
  }
  await checkSigterm()
  await checkEmbedded()
  console.log(`container-check: ${passed} passed, ${failed} failed`)
  process.exit(failed === 0 ? 0 : 1)
}

// Run as a script (container-test.sh); imported, it only defines the checks.
if (process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) await main()
