import { execFile, spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { createPostgresDatabase } from '../helpers/database.ts'
import { admin, REPO_ROOT, startServerProcess, type ServerProcess } from '../helpers/processes.ts'
import { freePort } from '../helpers/server.ts'
import { caddyBinary, fileNeeds, postgres } from '../helpers/requirements.ts'

/**
 * Production shape on loopback: the repo's Caddyfile (real Caddy, HTTPS with its internal CA)
 * in front of two replicas sharing one PostgreSQL. Needs the caddy binary and TEST_DATABASE_URL.
 */
const needed = caddyBinary()
const CADDY = needed.path
const run = promisify(execFile)

// The replicas share PostgreSQL: this file runs in the PostgreSQL pass only.
if (fileNeeds(t, [needed, postgres()])) {
  t.test('two replicas behind Caddy over HTTPS', async (t) => {
    const databaseUrl = await createPostgresDatabase(t)
    const httpsPort = await freePort()
    const publicUrl = `https://localhost:${httpsPort}`
    const env = {
      DATABASE_URL: databaseUrl,
      PUBLIC_URL: publicUrl,
      TRUST_PROXY: 'loopback',
      AUTO_APPROVE_PRINCIPAL: 'brain'
    }
    // Migrations run on start under an advisory lock: start both at once, as compose would.
    const [one, two] = await Promise.all([startServerProcess(t, env), startServerProcess(t, env)]) as [ServerProcess, ServerProcess]
    await admin(one, 'principals', { name: 'brain' })

    const caddyHome = t.testdir({})
    const caddy = spawn(CADDY, ['run', '--config', join(REPO_ROOT, 'Caddyfile'), '--adapter', 'caddyfile'], {
      env: {
        ...process.env,
        HOME: caddyHome,
        XDG_DATA_HOME: join(caddyHome, 'data'),
        XDG_CONFIG_HOME: join(caddyHome, 'config'),
        DOMAIN: `localhost:${httpsPort}`,
        BUS_UPSTREAMS: `127.0.0.1:${one.port} 127.0.0.1:${two.port}`,
        CADDY_HTTP_PORT: String(await freePort()),
        CADDY_HTTPS_PORT: String(httpsPort),
        CADDY_GLOBAL_OPTIONS: 'local_certs\nskip_install_trust\nadmin off'
      },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    let caddyLog = ''
    caddy.stderr.on('data', (chunk: Buffer) => { caddyLog += chunk.toString() })
    t.teardown(() => { caddy.kill('SIGKILL') })
    const rootCa = join(caddyHome, 'data', 'caddy', 'pki', 'authorities', 'local', 'root.crt')
    const childEnv = { ...process.env, NODE_EXTRA_CA_CERTS: rootCa, NODE_OPTIONS: '' }
    // Ready when a client trusting Caddy's root gets /healthz over HTTPS.
    const deadline = Date.now() + 30_000
    for (;;) {
      if (existsSync(rootCa)) {
        const probe = await run(process.execPath, ['-e', `fetch(${JSON.stringify(`${publicUrl}/healthz`)}).then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))`], { env: childEnv }).then(() => true, () => false)
        if (probe) break
      }
      if (Date.now() > deadline) throw new Error(`caddy did not come up: ${caddyLog.slice(-2000)}`)
      await new Promise((resolve) => setTimeout(resolve, 250))
    }
    t.ok(readFileSync(rootCa, 'utf8').includes('BEGIN CERTIFICATE'), 'clients trust Caddy\'s local root, not an insecure flag')

    // 1. The MCP SDK client's own OAuth flow, through Caddy, over HTTPS.
    const { stdout } = await run(process.execPath, ['test/deployment/oauth-flow-client.ts', `${publicUrl}/mcp`], { cwd: REPO_ROOT, env: childEnv, timeout: 60_000 })
    const flow = JSON.parse(stdout) as { iss: string, accessToken: string, refreshToken: string, clientId: string, whoami: { principal: string, auth: string }, read: { messages: Array<{ body: string }> } }
    t.equal(flow.iss, publicUrl, 'the issuer is PUBLIC_URL, as the client saw it through the proxy')
    t.equal(flow.whoami.principal, 'brain')
    t.equal(flow.whoami.auth, 'oauth')
    t.equal(flow.read.messages[0]?.body, 'through the proxy')

    // 1b. doctor, run as users run it, passes against the proxied deployment.
    const doctor = await run(process.execPath, ['bin/bus-mcp.js', 'doctor', `${publicUrl}/mcp`, '--json'], { cwd: REPO_ROOT, env: childEnv, timeout: 60_000 })
      .then(({ stdout }) => ({ code: 0, stdout }), (err: { code: number, stdout: string }) => ({ code: err.code, stdout: err.stdout }))
    const checks = JSON.parse(doctor.stdout) as Array<{ name: string, status: string }>
    t.same(checks.filter((c) => c.status === 'fail').map((c) => c.name), [], 'doctor finds no problem through Caddy')
    t.equal(doctor.code, 0, 'doctor exits 0')

    const whoami = async (replica: ServerProcess, token: string): Promise<number> => (await fetch(`${replica.url}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${token}` },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'whoami', arguments: {} } })
    })).status

    // 2. A token issued through the proxy works on every replica.
    t.equal(await whoami(one, flow.accessToken), 200, 'replica one accepts it')
    t.equal(await whoami(two, flow.accessToken), 200, 'replica two accepts it (and now has it cached)')

    // 3. Revocation on one replica reaches the other at once (NOTIFY drops its cache).
    const revoked = await fetch(`${one.url}/oauth/revoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: flow.refreshToken, client_id: flow.clientId })
    })
    t.equal(revoked.status, 200)
    const revokedAt = Date.now()
    let status = await whoami(two, flow.accessToken)
    while (status === 200 && Date.now() - revokedAt < 2000) {
      await new Promise((resolve) => setTimeout(resolve, 20))
      status = await whoami(two, flow.accessToken)
    }
    t.equal(status, 401, `replica two refuses the revoked token after ${Date.now() - revokedAt} ms`)
    t.ok(Date.now() - revokedAt < 2000, 'within the stated bound')

    // 4. A long-poll on one replica wakes on a send through the other.
    const { token } = await admin<{ token: string }>(one, 'tokens', { principal: 'brain' })
    const call = async (replica: ServerProcess, name: string, args: Record<string, unknown>): Promise<any> => {
      const response = await fetch(`${replica.url}/mcp`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name, arguments: args } })
      })
      return (await response.json() as { result: { structuredContent: unknown } }).result.structuredContent
    }
    const { id: lastId } = await call(one, 'bus_send', { channel: 'wake', body: 'first' }) as { id: number }
    const started = Date.now()
    const waiting = call(one, 'bus_read', { channel: 'wake', after: lastId, wait_seconds: 10 })
    await new Promise((resolve) => setTimeout(resolve, 300))
    const sentAt = Date.now()
    await call(two, 'bus_send', { channel: 'wake', body: 'across replicas' })
    const woke = await waiting as { messages: Array<{ body: string }> }
    t.equal(woke.messages[0]?.body, 'across replicas')
    t.ok(Date.now() - sentAt < 1000, `woke ${Date.now() - sentAt} ms after the send (waited ${Date.now() - started} ms in all)`)

    // 4b. A subscriptions/listen stream through Caddy hears of a send through another replica
    // at once: Caddy passes the stream through unbuffered (flush_interval -1).
    {
      const { Agent, request } = await import('undici')
      const streamAgent = new Agent({ connect: { ca: readFileSync(rootCa, 'utf8') } })
      t.teardown(() => streamAgent.close())
      const meta = { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {} }
      const controller = new AbortController()
      const stream = await request(`${publicUrl}/mcp`, {
        method: 'POST',
        dispatcher: streamAgent,
        signal: controller.signal,
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${token}`, 'mcp-protocol-version': '2026-07-28', 'mcp-method': 'subscriptions/listen' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 'through-caddy', method: 'subscriptions/listen', params: { _meta: meta, notifications: { resourceSubscriptions: ['bus://channels/live'] } } })
      })
      t.match(String(stream.headers['content-type']), /^text\/event-stream/)
      let received = ''
      stream.body.on('data', (chunk: Buffer) => { received += chunk.toString() })
      stream.body.on('error', () => {})
      const ackDeadline = Date.now() + 5000
      while (!received.includes('subscriptions/acknowledged') && Date.now() < ackDeadline) await new Promise((resolve) => setTimeout(resolve, 20))
      t.match(received, /subscriptions\/acknowledged/, 'the acknowledgement arrives through Caddy before anything else happens')
      const sentLiveAt = Date.now()
      const { id: liveId } = await call(two, 'bus_send', { channel: 'live', body: 'pushed' }) as { id: number }
      while (!received.includes(`"bus-mcp/messageId":${liveId}`) && Date.now() - sentLiveAt < 5000) await new Promise((resolve) => setTimeout(resolve, 10))
      t.match(received, new RegExp(`"uri":"bus://channels/live","_meta":\\{"bus-mcp/messageId":${liveId}`), 'the notification came through Caddy')
      t.ok(Date.now() - sentLiveAt < 1000, `a send through replica two reached a listener through Caddy in ${Date.now() - sentLiveAt} ms`)
      controller.abort()
    }

    // 5. SIGKILL one replica mid-traffic: every acknowledged send is readable afterwards.
    const acknowledged: number[] = []
    let failures = 0
    // What each failed send got (status, tool error or exception), to tell a proxy's refusal from the bus's.
    const failureKinds = new Map<string, number>()
    const failed = (kind: string): void => {
      failures++
      failureKinds.set(kind, (failureKinds.get(kind) ?? 0) + 1)
    }
    // From this process, through Caddy, with an agent that trusts Caddy's root.
    const { Agent } = await import('undici')
    const dispatcher = new Agent({ connect: { ca: readFileSync(rootCa, 'utf8') } })
    t.teardown(() => dispatcher.close())
    const sendOne = async (i: number): Promise<void> => {
      try {
        const response = await fetch(`${publicUrl}/mcp`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', accept: 'application/json', authorization: `Bearer ${token}` },
          body: JSON.stringify({ jsonrpc: '2.0', id: i, method: 'tools/call', params: { name: 'bus_send', arguments: { channel: 'crash', body: `m${i}` } } }),
          dispatcher
        })
        const text = await response.text()
        const body = (text === '' ? {} : JSON.parse(text)) as { result?: { structuredContent?: { id?: number }, isError?: boolean, content?: Array<{ text?: string }> } }
        const id = body.result?.structuredContent?.id
        if (response.status === 200 && body.result?.isError !== true && typeof id === 'number') acknowledged.push(id)
        else failed(`HTTP ${response.status}${body.result?.isError === true ? ` tool error: ${body.result.content?.[0]?.text?.slice(0, 120) ?? ''}` : ''}${text === '' ? ' (empty body)' : ''}`)
      } catch (err) {
        failed(`${(err as Error).name}: ${(err as Error).message.slice(0, 120)}`)
      }
    }
    let next = 0
    const worker = async (): Promise<void> => { while (next < 300) await sendOne(next++) }
    const workers = [worker(), worker(), worker(), worker()]
    // eslint-disable-next-line no-unmodified-loop-condition -- the senders running beside this loop move it
    while (next < 100) await new Promise((resolve) => setTimeout(resolve, 5))
    two.kill('SIGKILL')
    await two.exited
    await Promise.all(workers)
    // What went wrong goes into the failure's own message: every reporter shows that (not all show
    // comments, and a test's stderr can be cut off when it ends).
    const diagnosis = (): string => `\ncaddy's log, last lines:\n${caddyLog.trim().split('\n').slice(-40).join('\n')}` +
      `\nreplica one: exit ${String(one.child.exitCode ?? one.child.signalCode ?? 'none (running)')}, output:\n${one.output().slice(-2000)}`
    if (failures > 0) t.comment(`failed sends: ${JSON.stringify(Object.fromEntries(failureKinds))}`)
    t.ok(acknowledged.length >= 200, `${acknowledged.length} sends acknowledged, ${failures} failed while a replica died` +
      (acknowledged.length >= 200 ? '' : `: ${JSON.stringify(Object.fromEntries(failureKinds))}${diagnosis()}`))
    const readBack = await call(one, 'bus_read', { channel: 'crash', after: 0, limit: 500 }) as { messages: Array<{ id: number }> }
    const stored = new Set(readBack.messages.map((m) => m.id))
    const lost = acknowledged.filter((id) => !stored.has(id))
    t.same(lost, [], 'no acknowledged message is lost')

    // 6. The long-poll through Caddy is neither buffered nor cut.
    const pollStarted = Date.now()
    const viaProxy = await fetch(`${publicUrl}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'bus_read', arguments: { channel: 'wake', after: 1_000_000_000, wait_seconds: 3 } } }),
      dispatcher
    })
    if (viaProxy.status !== 200) {
      t.fail(`a 3 s long-poll comes back through the proxy: it got ${viaProxy.status} after ${Date.now() - pollStarted} ms ${await viaProxy.text()}${diagnosis()}`)
      return
    }
    t.equal(((await viaProxy.json()) as { result: { structuredContent: { messages: unknown[] } } }).result.structuredContent.messages.length, 0)
  })
}
