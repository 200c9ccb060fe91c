import { connect } from 'node:net'
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client'
import { sql } from 'drizzle-orm'
import t, { type Test } from 'tap'
import { revokeApiToken, setPrincipalDisabled, listApiTokens } from '../../src/principals/store.ts'
import { callTool, principalWithToken, rpc, startTestServer, type TestServer } from '../helpers/server.ts'

/**
 * The live bus (DESIGN.md, "Channels as resources"): channels and the inbox as resources in both
 * eras, subscriptions/listen streams in the 2026-07-28 era (what they carry, what they refuse,
 * when they end, how much they may hold), and long-polls that wait for a channel's first
 * message and end when cancelled.
 */

const MODERN = '2026-07-28'
const META = {
  'io.modelcontextprotocol/protocolVersion': MODERN,
  'io.modelcontextprotocol/clientCapabilities': {}
}
const SUBSCRIPTION_ID = 'io.modelcontextprotocol/subscriptionId'
const MESSAGE_ID = 'bus-mcp/messageId'

async function until (what: string, condition: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<number> {
  const started = Date.now()
  while (!(await condition())) {
    if (Date.now() - started > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  return Date.now() - started
}

function modernHeaders (token: string, method: string, name?: string): Record<string, string> {
  return {
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    authorization: `Bearer ${token}`,
    'mcp-protocol-version': MODERN,
    'mcp-method': method,
    ...(name === undefined ? {} : { 'mcp-name': name })
  }
}

async function modern (server: TestServer, token: string, method: string, params: Record<string, unknown> = {}, id: string | number = 1): Promise<{ status: number, headers: Record<string, unknown>, body: any }> {
  const name = typeof params.uri === 'string' ? params.uri : undefined
  const response = await server.app.inject({ method: 'POST', url: '/mcp', headers: modernHeaders(token, method, name), payload: { jsonrpc: '2.0', id, method, params: { ...params, _meta: META } } })
  return { status: response.statusCode, headers: response.headers, body: response.body === '' ? undefined : JSON.parse(response.body) }
}

/** A v2 SDK client on the 2026-07-28 revision, with a static bearer token. */
async function modernClient (t: Test, server: TestServer, token: string): Promise<Client> {
  const client = new Client({ name: 'live-bus-test', version: '1.0.0' }, { versionNegotiation: { mode: 'auto' } })
  await client.connect(new StreamableHTTPClientTransport(new URL(`${server.baseUrl}/mcp`), { authProvider: { token: async () => token } }))
  t.teardown(async () => { await client.close().catch(() => {}) })
  t.equal(client.getProtocolEra(), 'modern')
  return client
}

/** Opens a listen stream with fetch and collects its SSE messages. */
async function rawListen (server: TestServer, token: string, notifications: unknown, id: string | number = 'sub-1') {
  const controller = new AbortController()
  const response = await fetch(`${server.baseUrl}/mcp`, {
    method: 'POST',
    headers: modernHeaders(token, 'subscriptions/listen'),
    body: JSON.stringify({ jsonrpc: '2.0', id, method: 'subscriptions/listen', params: { _meta: META, notifications } }),
    signal: controller.signal
  })
  const messages: any[] = []
  let ended = false
  if (response.headers.get('content-type')?.startsWith('text/event-stream') === true && response.body !== null) {
    void (async () => {
      const decoder = new TextDecoder()
      let buffer = ''
      try {
        for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
          buffer += decoder.decode(chunk, { stream: true })
          let cut
          while ((cut = buffer.indexOf('\n\n')) !== -1) {
            const frame = buffer.slice(0, cut)
            buffer = buffer.slice(cut + 2)
            const data = frame.split('\n').filter((line) => line.startsWith('data: ')).map((line) => line.slice(6)).join('\n')
            if (data !== '') messages.push(JSON.parse(data))
          }
        }
      } catch {}
      ended = true
    })()
  }
  return { response, messages, get ended () { return ended }, abort: () => { controller.abort() } }
}

t.test('resources in both eras', async (t) => {
  const server = await startTestServer(t)
  const alice = await principalWithToken(server, 'alice')
  const writer = await principalWithToken(server, 'writer', 'bus:write')
  for (let i = 1; i <= 25; i++) await callTool(server, alice, 'bus_send', { channel: 'deploys', body: `deploy ${i}` })
  await callTool(server, alice, 'bus_send', { channel: 'alerts', body: 'disk full' })
  await callTool(server, alice, 'bus_send', { to: 'alice', body: 'note to self' })
  await callTool(server, alice, 'bus_ack', { channel: 'deploys', up_to: 3 })

  await t.test('capabilities: resources in both eras, subscriptions only where a stream can carry them', async (t) => {
    const discover = await modern(server, alice, 'server/discover')
    t.same(discover.body.result.capabilities.resources, { subscribe: true, listChanged: true })
    const init = await rpc(server, alice, 'initialize', { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'x', version: '1' } })
    t.same(init.body.result.capabilities.resources, { subscribe: false, listChanged: false }, 'a stateless 2025 server cannot push')
  })

  await t.test('resources/list: the inbox and every channel, private and never cached', async (t) => {
    const list = await modern(server, alice, 'resources/list')
    t.equal(list.status, 200)
    t.same(list.body.result.resources.map((r: { uri: string }) => r.uri), ['bus://inbox', 'bus://channels/alerts', 'bus://channels/deploys'])
    t.match(list.body.result.resources[0], { name: 'inbox', mimeType: 'application/json', description: /alice/ })
    t.match(list.body.result.resources[2], { name: 'deploys', description: /25 messages, newest id 25/ })
    t.equal(list.body.result.ttlMs, 0)
    t.equal(list.body.result.cacheScope, 'private')
    t.equal(list.body.result.nextCursor, undefined)
    const legacy = await rpc(server, alice, 'resources/list')
    t.same(legacy.body.result.resources.map((r: { uri: string }) => r.uri), ['bus://inbox', 'bus://channels/alerts', 'bus://channels/deploys'], 'the same in the 2025 era')
    const none = await modern(server, writer, 'resources/list')
    t.same(none.body.result.resources, [], 'a token without bus:read can read nothing, so it lists nothing')
  })

  await t.test('resources/list pages by channel name', async (t) => {
    for (let i = 0; i < 101; i++) await callTool(server, alice, 'bus_send', { channel: `page-${String(i).padStart(3, '0')}`, body: 'x' })
    const first = await modern(server, alice, 'resources/list')
    t.equal(first.body.result.resources.length, 101, 'the inbox and 100 channels')
    t.type(first.body.result.nextCursor, 'string')
    const second = await modern(server, alice, 'resources/list', { cursor: first.body.result.nextCursor })
    t.same(second.body.result.resources.map((r: { name: string }) => r.name), ['page-098', 'page-099', 'page-100'], 'alerts, deploys and page-000 to page-097 were on the first page')
    t.equal(second.body.result.nextCursor, undefined)
    const bad = await modern(server, alice, 'resources/list', { cursor: 'not a cursor!' })
    t.equal(bad.body.error.code, -32602, 'a forged cursor is invalid params')
  })

  await t.test('resources/templates/list: the channel template, the same for everyone', async (t) => {
    const templates = await modern(server, alice, 'resources/templates/list')
    t.match(templates.body.result.resourceTemplates, [{ uriTemplate: 'bus://channels/{name}{?after,limit}', name: 'channel' }])
    t.equal(templates.body.result.cacheScope, 'public')
  })

  await t.test('resources/read: the latest messages with the newest id and the caller\'s cursor', async (t) => {
    const read = await modern(server, alice, 'resources/read', { uri: 'bus://channels/deploys' })
    t.equal(read.status, 200)
    t.equal(read.body.result.ttlMs, 0)
    t.equal(read.body.result.cacheScope, 'private')
    const [content] = read.body.result.contents
    t.match(content, { uri: 'bus://channels/deploys', mimeType: 'application/json' })
    const page = JSON.parse(content.text)
    t.equal(page.stream, 'deploys')
    t.equal(page.newest_id, 25)
    t.equal(page.cursor, 3)
    t.same(page.messages.map((m: { body: string }) => m.body), Array.from({ length: 20 }, (_, i) => `deploy ${i + 6}`), 'the 20 newest, oldest first')

    const inbox = JSON.parse((await modern(server, alice, 'resources/read', { uri: 'bus://inbox' })).body.result.contents[0].text)
    t.match(inbox, { stream: '@inbox', messages: [{ body: 'note to self', from: 'alice', to: 'alice' }] })
  })

  await t.test('resources/read from a cursor: ?after=ID&limit=N pages forward', async (t) => {
    const read = await modern(server, alice, 'resources/read', { uri: 'bus://channels/deploys?after=3&limit=2' })
    const page = JSON.parse(read.body.result.contents[0].text)
    t.same(page.messages.map((m: { id: number }) => m.id), [4, 5])
    t.equal(page.next_after, 5)
    t.equal(page.waited_ms, undefined)
    const legacy = await rpc(server, alice, 'resources/read', { uri: 'bus://channels/deploys?after=23' })
    t.same(JSON.parse(legacy.body.result.contents[0].text).messages.map((m: { id: number }) => m.id), [24, 25])
  })

  await t.test('unknown resources: -32602 with the URI (SEP-2164), in both eras; no read scope is refused', async (t) => {
    for (const uri of ['bus://channels/nobody-posted-here', 'bus://channels/deploys?after=x', 'bus://channels/deploys?sort=desc', 'bus://channels/a%20b', 'file:///etc/passwd', 'bus://inbox/2', 'bus://channels/deploys?limit=100000']) {
      const read = await modern(server, alice, 'resources/read', { uri })
      t.equal(read.status, 200, uri)
      t.equal(read.body.error?.code, -32602, uri)
      t.same(read.body.error?.data, { uri }, uri)
    }
    const legacy = await rpc(server, alice, 'resources/read', { uri: 'bus://channels/nobody-posted-here' })
    t.equal(legacy.body.error.code, -32602)
    const refused = await modern(server, writer, 'resources/read', { uri: 'bus://channels/deploys' })
    t.equal(refused.body.error.code, -32602)
    t.match(refused.body.error.message, /bus:read/)
  })

  await t.test('resources/subscribe is not on the 2026-07-28 path (subscriptions/listen replaced it)', async (t) => {
    const subscribe = await modern(server, alice, 'resources/subscribe', { uri: 'bus://inbox' })
    t.equal(subscribe.body.error.code, -32601)
  })
})

t.test('subscriptions/listen', async (t) => {
  const server = await startTestServer(t, { listen: true, env: { MAX_LISTEN_STREAMS: '6' }, runtime: { listen: { keepAliveMs: 200, recheckMs: 60_000 } } })
  const alice = await principalWithToken(server, 'alice')
  const bob = await principalWithToken(server, 'bob')
  const writer = await principalWithToken(server, 'writer', 'bus:write')

  await t.test('an SDK v2 client hears a send to its channel and its own inbox, nothing else', async (t) => {
    const client = await modernClient(t, server, alice)
    const heard: any[] = []
    client.setNotificationHandler('notifications/resources/updated', (notification) => { heard.push(notification.params) })
    // Subscribed before the channel's first message: the channel need not exist yet.
    const subscription = await client.listen({ resourceSubscriptions: ['bus://channels/deploys', 'bus://inbox'] })
    t.same(subscription.honoredFilter, { resourceSubscriptions: ['bus://channels/deploys', 'bus://inbox'] })
    const started = Date.now()
    const deploy = await callTool(server, writer, 'bus_send', { channel: 'deploys', body: 'v1 is out' })
    await until('the channel update', () => heard.length === 1, 1000)
    t.ok(Date.now() - started < 1000, 'within a second of the send')
    t.same(heard[0], { uri: 'bus://channels/deploys', _meta: { [MESSAGE_ID]: deploy.data.id, [SUBSCRIPTION_ID]: heard[0]._meta[SUBSCRIPTION_ID] } })

    await callTool(server, writer, 'bus_send', { channel: 'elsewhere', body: 'not subscribed' })
    await callTool(server, writer, 'bus_send', { to: 'bob', body: 'for bob only' })
    const direct = await callTool(server, writer, 'bus_send', { to: 'alice', body: 'for alice' })
    await until('the inbox update', () => heard.length === 2, 1000)
    t.same(heard[1], { uri: 'bus://inbox', _meta: { [MESSAGE_ID]: direct.data.id, [SUBSCRIPTION_ID]: heard[1]._meta[SUBSCRIPTION_ID] } }, 'bob\'s direct message did not reach alice\'s inbox stream')
    await new Promise((resolve) => setTimeout(resolve, 200))
    t.equal(heard.length, 2, 'no notification for another channel or another principal\'s inbox')
    await subscription.close()
    await until('the stream to be gone', () => server.runtime.listen.size === 0)
  })

  await t.test('on the wire: ack first, the subscription id everywhere, keep-alives, list changes only when asked', async (t) => {
    const listen = await rawListen(server, alice, { resourceSubscriptions: ['bus://channels/wire'], resourcesListChanged: true, toolsListChanged: true, promptsListChanged: true }, 'wire-1')
    t.equal(listen.response.status, 200)
    t.match(listen.response.headers.get('content-type'), /^text\/event-stream/)
    t.equal(listen.response.headers.get('x-accel-buffering'), 'no')
    await until('the ack', () => listen.messages.length === 1)
    t.same(listen.messages[0], {
      jsonrpc: '2.0',
      method: 'notifications/subscriptions/acknowledged',
      params: { notifications: { resourceSubscriptions: ['bus://channels/wire'], resourcesListChanged: true }, _meta: { [SUBSCRIPTION_ID]: 'wire-1' } }
    }, 'what the server cannot deliver (tools, prompts) is not acknowledged')
    const plain = await rawListen(server, alice, { resourceSubscriptions: ['bus://channels/wire'] }, 7)
    await until('the second ack', () => plain.messages.length === 1)

    await callTool(server, writer, 'bus_send', { channel: 'wire', body: 'creates the channel' })
    await until('both notifications', () => listen.messages.length === 3 && plain.messages.length === 2)
    const methods = listen.messages.slice(1).map((m) => m.method).sort()
    t.same(methods, ['notifications/resources/list_changed', 'notifications/resources/updated'])
    for (const message of listen.messages) t.equal(message.params._meta[SUBSCRIPTION_ID], 'wire-1')
    t.equal(plain.messages[1].method, 'notifications/resources/updated', 'no list change for a stream that did not ask')
    t.equal(plain.messages[1].params._meta[SUBSCRIPTION_ID], 7)

    // Keep-alives are SSE comments: they keep proxies from cutting the stream and are not messages.
    const response = await fetch(`${server.baseUrl}/mcp`, { method: 'POST', headers: modernHeaders(alice, 'subscriptions/listen'), body: JSON.stringify({ jsonrpc: '2.0', id: 'ka', method: 'subscriptions/listen', params: { _meta: META, notifications: { resourceSubscriptions: ['bus://inbox'] } } }) })
    const reader = (response.body as ReadableStream<Uint8Array>).getReader()
    let text = ''
    while (!text.includes(': keepalive')) text += new TextDecoder().decode((await reader.read()).value)
    t.pass('a keep-alive comment arrived')
    await reader.cancel()
    listen.abort()
    plain.abort()
    await until('the streams to be gone', () => server.runtime.listen.size === 0)
  })

  await t.test('refused in-band with no stream: unknown URIs, no read scope, malformed filters, the limit', async (t) => {
    const cases: Array<[string, string, unknown, RegExp]> = [
      ['unknown URI', alice, { resourceSubscriptions: ['file:///etc/passwd'] }, /Resource not found/],
      ['a query is not a resource', alice, { resourceSubscriptions: ['bus://channels/deploys?after=1'] }, /Resource not found/],
      ['no bus:read', writer, { resourceSubscriptions: ['bus://channels/deploys'] }, /bus:read/],
      ['no filter', alice, undefined, /notifications/],
      ['a filter of the wrong shape', alice, { resourceSubscriptions: 'bus://inbox' }, /notifications/],
      ['too many resources', alice, { resourceSubscriptions: Array.from({ length: 101 }, (_, i) => `bus://channels/c${i}`) }, /at most 100/]
    ]
    for (const [what, token, filter, message] of cases) {
      const params: Record<string, unknown> = { _meta: META }
      if (filter !== undefined) params.notifications = filter
      const response = await server.app.inject({ method: 'POST', url: '/mcp', headers: modernHeaders(token, 'subscriptions/listen'), payload: { jsonrpc: '2.0', id: 'bad', method: 'subscriptions/listen', params } })
      t.equal(response.statusCode, 200, what)
      t.match(response.headers['content-type'], /application\/json/, `${what}: no stream`)
      const body = JSON.parse(response.body)
      t.equal(body.id, 'bad', what)
      t.equal(body.error.code, -32602, what)
      t.match(body.error.message, message, what)
    }
    t.equal(server.runtime.listen.size, 0)

    const headers = modernHeaders(alice, 'subscriptions/listen')
    delete headers['mcp-method']
    const headerless = await server.app.inject({ method: 'POST', url: '/mcp', headers, payload: { jsonrpc: '2.0', id: 'h', method: 'subscriptions/listen', params: { _meta: META, notifications: { resourceSubscriptions: ['bus://inbox'] } } } })
    t.equal(headerless.statusCode, 400, 'no Mcp-Method header: 400, no stream')
    t.match(JSON.parse(headerless.body), { id: 'h', error: { code: -32020 } })
    const mismatched = await server.app.inject({ method: 'POST', url: '/mcp', headers: modernHeaders(alice, 'tools/list'), payload: { jsonrpc: '2.0', id: 'm', method: 'subscriptions/listen', params: { _meta: META, notifications: { resourceSubscriptions: ['bus://inbox'] } } } })
    t.match({ status: mismatched.statusCode, body: JSON.parse(mismatched.body) }, { status: 400, body: { id: 'm', error: { code: -32020 } } }, 'a header naming another method: -32020')
    const legacy = await server.app.inject({ method: 'POST', url: '/mcp', headers: { 'content-type': 'application/json', accept: 'application/json', authorization: `Bearer ${alice}` }, payload: { jsonrpc: '2.0', id: 'l', method: 'subscriptions/listen', params: { notifications: {} } } })
    t.equal(JSON.parse(legacy.body).error.code, -32601, 'the 2025 era has no subscriptions/listen')

    const open = []
    for (let i = 0; i < 6; i++) open.push(await rawListen(server, bob, { resourceSubscriptions: ['bus://inbox'] }, `s${i}`))
    await until('six streams', () => server.runtime.listen.size === 6)
    const refused = await server.app.inject({ method: 'POST', url: '/mcp', headers: modernHeaders(bob, 'subscriptions/listen'), payload: { jsonrpc: '2.0', id: 'seventh', method: 'subscriptions/listen', params: { _meta: META, notifications: { resourceSubscriptions: ['bus://inbox'] } } } })
    t.equal(JSON.parse(refused.body).error.code, -32603)
    t.match(JSON.parse(refused.body).error.message, /MAX_LISTEN_STREAMS/)
    for (const stream of open) stream.abort()
    await until('the streams to be gone', () => server.runtime.listen.size === 0)
  })

  await t.test('a stream ends gracefully when its token is revoked, its principal disabled, or the token expires', async (t) => {
    await principalWithToken(server, 'carol')
    const carolToken = await principalWithToken(server, 'carol')
    const revokedClient = await modernClient(t, server, carolToken)
    const revokedSubscription = await revokedClient.listen({ resourceSubscriptions: ['bus://inbox'] })
    for (const token of await listApiTokens(server.database.db, 'carol')) await revokeApiToken(server.database.db, token.id)
    const revokedEnd = await Promise.race([revokedSubscription.closed, new Promise((resolve) => setTimeout(() => { resolve('still open') }, 2000))])
    t.equal(revokedEnd, 'graceful', 'revoked: the empty result ends the stream')

    const daveToken = await principalWithToken(server, 'dave')
    const disabledClient = await modernClient(t, server, daveToken)
    const disabledSubscription = await disabledClient.listen({ resourceSubscriptions: ['bus://channels/deploys'] })
    await setPrincipalDisabled(server.database.db, 'dave', true)
    t.equal(await Promise.race([disabledSubscription.closed, new Promise((resolve) => setTimeout(() => { resolve('still open') }, 2000))]), 'graceful', 'disabled principal')

    const erinToken = await principalWithToken(server, 'erin')
    await server.database.db.execute(sql`update api_tokens set expires_at = now() + interval '1500 milliseconds' where principal_id = (select id from principals where name = 'erin')`)
    const expiringClient = await modernClient(t, server, erinToken)
    const expiring = await expiringClient.listen({ resourceSubscriptions: ['bus://inbox'] })
    t.equal(await Promise.race([expiring.closed, new Promise((resolve) => setTimeout(() => { resolve('still open') }, 4000))]), 'graceful', 'expired token')
    await until('the streams to be gone', () => server.runtime.listen.size === 0)
  })

  await t.test('a client that stops reading cannot grow the server\'s memory: the stream is closed with a reason', async (t) => {
    const small = await startTestServer(t, { listen: true, logLevel: 'warn', runtime: { listen: { maxBufferedBytes: 64 * 1024, closeGraceMs: 500 } } })
    const token = await principalWithToken(small, 'sleepy')
    const port = new URL(small.baseUrl).port
    const socket = connect(Number(port), '127.0.0.1')
    await new Promise((resolve) => socket.once('connect', resolve))
    socket.pause()
    const body = JSON.stringify({ jsonrpc: '2.0', id: 'slow', method: 'subscriptions/listen', params: { _meta: META, notifications: { resourceSubscriptions: ['bus://channels/flood'] } } })
    const headers = { ...modernHeaders(token, 'subscriptions/listen'), host: `localhost:${port}`, 'content-length': String(Buffer.byteLength(body)) }
    socket.write(`POST /mcp HTTP/1.1\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n\r\n${body}`)
    await until('the stream to open', () => small.runtime.listen.size === 1)
    // 40,000 notifications of ~180 bytes: far more than the socket buffers and the bound hold.
    // One statement, so the flood costs the test nothing but the delivery itself.
    await small.database.db.execute(sql`select pg_notify('bus_events', 'u bus://channels/flood ' || g) from generate_series(1, 40000) g`)
    await until('the stream to be closed for not reading', () => small.runtime.listen.size === 0, 20_000)
    t.ok(small.logs.some((line) => line.includes('the client is not reading')), 'the reason is logged')
    // What the server still held went to the kernel's socket buffers (or the connection was cut
    // when even that could not be flushed): reading now gets the notifications that fitted, then
    // the reason, then the end of the response.
    let received = ''
    socket.on('data', (chunk: Buffer) => { received += chunk.toString('latin1') })
    socket.resume()
    await until('the end of the response', () => received.endsWith('0\r\n\r\n') || socket.destroyed, 10_000)
    if (!socket.destroyed) {
      t.match(received, /"id":"slow","error":\{"code":-32000,"message":"Subscription closed: more than 65536 bytes of notifications were waiting/, 'the stream ends with its reason')
      t.ok(received.indexOf('notifications/resources/updated') < received.indexOf('Subscription closed'), 'after the notifications that fitted')
    }
    socket.destroy()
  })

  await t.test('shutdown ends every stream gracefully', async (t) => {
    const other = await startTestServer(t, { listen: true })
    const token = await principalWithToken(other, 'frank')
    const client = await modernClient(t, other, token)
    const subscription = await client.listen({ resourceSubscriptions: ['bus://inbox'] })
    other.runtime.release()
    t.equal(await subscription.closed, 'graceful')
    const late = await other.app.inject({ method: 'POST', url: '/mcp', headers: modernHeaders(token, 'subscriptions/listen'), payload: { jsonrpc: '2.0', id: 'late', method: 'subscriptions/listen', params: { _meta: META, notifications: { resourceSubscriptions: ['bus://inbox'] } } } })
    t.match(JSON.parse(late.body).error.message, /shutting down/)
  })
})

t.test('long-polls: waiting for a channel\'s first message, and cancellation', async (t) => {
  const server = await startTestServer(t, { listen: true })
  const alice = await principalWithToken(server, 'alice')

  await t.test('bus_read with wait_seconds on a channel nobody has posted to yet waits for its first message', async (t) => {
    const waiting = callTool(server, alice, 'bus_read', { channel: 'reviews', wait_seconds: 10 })
    await until('the long-poll to wait', () => server.runtime.bus.waiters.size === 1)
    await callTool(server, alice, 'bus_send', { channel: 'reviews', body: 'first review' })
    const read = await waiting
    t.equal(read.isError, false)
    t.match(read.data.messages, [{ body: 'first review' }])
    t.ok(read.data.waited_ms < 5000)
    const empty = await callTool(server, alice, 'bus_read', { channel: 'still-nobody', wait_seconds: 0.3 })
    t.equal(empty.isError, false, 'the wait ends as on an empty channel')
    t.same(empty.data.messages, [])
    t.equal(empty.data.stream, 'still-nobody')
    const now = await callTool(server, alice, 'bus_read', { channel: 'still-nobody' })
    t.equal(now.isError, true, 'without waiting, a channel that does not exist is still an error (typos show at once)')
  })

  await t.test('2025: notifications/cancelled releases the long-poll it names at once', async (t) => {
    const post = async (body: unknown): Promise<Response> => await fetch(`${server.baseUrl}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${alice}`, 'mcp-protocol-version': '2025-11-25' },
      body: JSON.stringify(body)
    })
    const started = Date.now()
    const waiting = post({ jsonrpc: '2.0', id: 'poll-7', method: 'tools/call', params: { name: 'bus_read', arguments: { channel: 'quiet', wait_seconds: 20 } } })
    await until('the long-poll to wait', () => server.runtime.bus.waiters.size === 1)
    const bob = await principalWithToken(server, 'bob')
    const foreign = await fetch(`${server.baseUrl}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${bob}`, 'mcp-protocol-version': '2025-11-25' },
      body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 'poll-7' } })
    })
    t.equal(foreign.status, 202)
    await new Promise((resolve) => setTimeout(resolve, 200))
    t.equal(server.runtime.bus.waiters.size, 1, 'another credential cannot cancel it')
    const cancel = await post({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 'poll-7', reason: 'user gave up' } })
    t.equal(cancel.status, 202)
    const answer = await waiting
    t.ok(Date.now() - started < 5000, 'answered long before wait_seconds ran out')
    t.equal(answer.status, 200)
    t.equal(server.runtime.bus.waiters.size, 0)
    t.equal(server.runtime.pending.size, 0)
  })

  await t.test('2026-07-28: ending the HTTP exchange releases the long-poll at once', async (t) => {
    const controller = new AbortController()
    const waiting = fetch(`${server.baseUrl}/mcp`, {
      method: 'POST',
      headers: modernHeaders(alice, 'tools/call', 'bus_read'),
      body: JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'bus_read', arguments: { channel: 'quiet', wait_seconds: 20 }, _meta: META } }),
      signal: controller.signal
    }).catch(() => 'aborted')
    await until('the long-poll to wait', () => server.runtime.bus.waiters.size === 1)
    controller.abort()
    t.equal(await waiting, 'aborted')
    const released = await until('the waiter to go', () => server.runtime.bus.waiters.size === 0, 2000)
    t.ok(released < 2000, `released ${released} ms after the exchange ended`)
  })
})
