import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import t from 'tap'
import type { Teardown } from '../helpers/database.ts'
import { principalWithToken, startTestServer, type TestServer } from '../helpers/server.ts'

/** A real MCP SDK client on its own HTTP connection, acting with one bearer token. */
async function connect (t: Teardown, server: TestServer, token: string, name: string): Promise<Client> {
  const client = new Client({ name, version: '1.0.0' })
  const transport = new StreamableHTTPClientTransport(new URL(`http://127.0.0.1:${server.config.port}/mcp`), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } }
  })
  await client.connect(transport)
  t.teardown(async () => { await client.close() })
  return client
}

/** Calls a tool and returns its structured result; fails the test on a tool error. */
async function call (client: Client, name: string, args: Record<string, unknown> = {}): Promise<any> {
  const result = await client.callTool({ name, arguments: args })
  if (result.isError === true) throw new Error(`${name} failed: ${JSON.stringify(result.content)}`)
  return result.structuredContent
}

/**
 * A long-poll's own wait. A wake-up, or a release, that comes well before it ends (half of it)
 * was caused by the send or by the client going away, not by the wait running out: that is the
 * meaningful bound on a loaded machine, not a fixed second.
 */
const WAIT_SECONDS = 10
const WELL_BEFORE_MS = WAIT_SECONDS * 1000 / 2

async function until (what: string, check: () => boolean, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

t.test('the MCP SDK client over a real port', async (t) => {
  const server = await startTestServer(t, { listen: true })
  const alice = await connect(t, server, await principalWithToken(server, 'alice'), 'alice-agent')
  const bob = await connect(t, server, await principalWithToken(server, 'bob'), 'bob-agent')
  const carol = await connect(t, server, await principalWithToken(server, 'carol'), 'carol-agent')

  t.test('initialize and tools/list', async (t) => {
    t.match(alice.getServerVersion(), { name: 'bus-mcp-server' })
    t.ok(alice.getServerCapabilities()?.tools, 'the server offers tools')
    const { tools } = await alice.listTools()
    t.same(tools.map((tool) => tool.name).sort(), ['bus_ack', 'bus_channels', 'bus_principals', 'bus_read', 'bus_send', 'whoami'])
    t.match(await call(alice, 'whoami'), { principal: 'alice', auth: 'api_token', scopes: ['bus:read', 'bus:write'] })
  })

  t.test('send on one token, read on another', async (t) => {
    const sent = await call(alice, 'bus_send', { channel: 'general', body: 'hello from alice', metadata: { kind: 'greeting' } })
    t.match(sent, { id: Number, channel: 'general' })
    const read = await call(bob, 'bus_read', { channel: 'general' })
    t.match(read.messages, [{ id: sent.id, from: 'alice', body: 'hello from alice', metadata: { kind: 'greeting' } }])
    t.equal(read.messages.length, 1)
    const channels = await call(bob, 'bus_channels')
    t.match(channels.channels, [{ name: 'general', messages: 1, unread: 1 }])
    const principals = await call(carol, 'bus_principals')
    t.same(principals.principals.map((p: { name: string }) => p.name), ['alice', 'bob', 'carol'])
  })

  t.test('direct messages are visible only to their recipient', async (t) => {
    const sent = await call(alice, 'bus_send', { to: 'bob', body: 'for bob only' })
    t.match(await call(bob, 'bus_read'), { stream: '@inbox', messages: [{ id: sent.id, from: 'alice', to: 'bob', body: 'for bob only' }] })
    t.same((await call(carol, 'bus_read')).messages, [], 'carol\'s inbox is empty')
    t.same((await call(alice, 'bus_read')).messages, [], 'the sender\'s inbox is empty')
  })

  t.test('ack moves the cursor', async (t) => {
    const before = await call(bob, 'bus_read', { channel: 'general' })
    t.equal(before.messages.length, 1)
    t.match(await call(bob, 'bus_ack', { channel: 'general', up_to: before.next_after }), { cursor: before.next_after, previous: 0 })
    t.same((await call(bob, 'bus_read', { channel: 'general' })).messages, [], 'nothing after the cursor')
    t.match((await call(bob, 'bus_channels')).channels, [{ name: 'general', unread: 0 }])
    const inbox = await call(bob, 'bus_read')
    await call(bob, 'bus_ack', { up_to: inbox.next_after })
    t.same((await call(bob, 'bus_read')).messages, [])
    t.equal((await call(carol, 'bus_read', { channel: 'general' })).messages.length, 1, 'carol\'s cursor did not move')
  })

  t.test('a tool error reaches the client as isError, and the connection keeps working', async (t) => {
    const result = await alice.callTool({ name: 'bus_send', arguments: { channel: 'general', body: '' } })
    t.equal(result.isError, true)
    t.match((result.content as Array<{ text: string }>)[0]?.text, /body must not be empty/)
    t.match(await call(alice, 'whoami'), { principal: 'alice' })
  })

  t.test('a long-poll bus_read is woken by a bus_send from another connection, long before its wait ends', async (t) => {
    t.equal(server.runtime.bus.waiters.size, 0)
    const started = Date.now()
    const polling = call(bob, 'bus_read', { channel: 'general', wait_seconds: WAIT_SECONDS }).then((result) => ({ result, at: Date.now() }))
    // Waiting (its waiter registered) before the send: the send is what must end it.
    await until('bob\'s long-poll to wait', () => server.runtime.bus.waiters.size === 1)
    const sentAt = Date.now()
    const sent = await call(alice, 'bus_send', { channel: 'general', body: 'wake up' })
    const { result, at } = await polling
    const latency = at - sentAt
    t.ok(latency < WELL_BEFORE_MS, `woke ${latency} ms after the send began (its wait is ${WAIT_SECONDS} s)`)
    t.ok(at - started < WELL_BEFORE_MS, `the whole read took ${at - started} ms, far less than its ${WAIT_SECONDS} s wait`)
    t.ok(result.waited_ms < WELL_BEFORE_MS, `the server says it waited ${result.waited_ms} ms`)
    t.match(result.messages, [{ id: sent.id, body: 'wake up', from: 'alice' }])
    t.equal(result.messages.length, 1)
    t.equal(server.runtime.bus.waiters.size, 0, 'no waiter left')

    // The inbox wakes too, on a direct message.
    const inboxPoll = call(carol, 'bus_read', { wait_seconds: WAIT_SECONDS }).then((r) => ({ r, at: Date.now() }))
    await until('carol\'s long-poll to wait', () => server.runtime.bus.waiters.size === 1)
    const dmAt = Date.now()
    await call(alice, 'bus_send', { to: 'carol', body: 'ping' })
    const inbox = await inboxPoll
    t.ok(inbox.at - dmAt < WELL_BEFORE_MS, `inbox woke ${inbox.at - dmAt} ms after the send began (its wait is ${WAIT_SECONDS} s)`)
    t.ok(inbox.r.waited_ms < WELL_BEFORE_MS, `the server says it waited ${inbox.r.waited_ms} ms`)
    t.match(inbox.r.messages, [{ body: 'ping', to: 'carol' }])
  })

  t.test('a message to another stream does not end the long-poll', async (t) => {
    await call(alice, 'bus_send', { channel: 'other', body: 'x' })
    const latest = (await call(carol, 'bus_read', { channel: 'general' })).next_after
    const polling = call(carol, 'bus_read', { channel: 'general', after: latest, wait_seconds: 1 })
    await until('carol\'s long-poll to wait', () => server.runtime.bus.waiters.size === 1)
    await call(alice, 'bus_send', { channel: 'other', body: 'not for general' })
    await call(alice, 'bus_send', { to: 'bob', body: 'not for general either' })
    const result = await polling
    t.same(result.messages, [], 'it waited its whole second and found nothing')
    t.ok(result.waited_ms >= 900, `waited ${result.waited_ms} ms`)
  })

  t.test('a client that goes away mid long-poll leaves no waiter behind', async (t) => {
    const dave = new Client({ name: 'dave-agent', version: '1.0.0' })
    await dave.connect(new StreamableHTTPClientTransport(new URL(`http://127.0.0.1:${server.config.port}/mcp`), {
      requestInit: { headers: { Authorization: `Bearer ${await principalWithToken(server, 'dave')}` } }
    }))
    const polling = dave.callTool({ name: 'bus_read', arguments: { wait_seconds: 2 * WAIT_SECONDS } }).catch((err: unknown) => err)
    await until('dave\'s long-poll to wait', () => server.runtime.bus.waiters.size === 1)
    const closedAt = Date.now()
    await dave.close()
    // Released by the close, long before its own 20 s wait would end it.
    await until('the waiter to go', () => server.runtime.bus.waiters.size === 0, WELL_BEFORE_MS)
    t.ok(Date.now() - closedAt < WELL_BEFORE_MS, `released ${Date.now() - closedAt} ms after the client closed (its wait is ${2 * WAIT_SECONDS} s)`)
    await until('the transport to forget the request', () => server.runtime.mcp.inFlight === 0, WELL_BEFORE_MS)
    t.type(await polling, Error, 'the client sees its request end')

    // The same with a bare HTTP request whose connection is aborted.
    const abort = new AbortController()
    const token = await principalWithToken(server, 'erin')
    const request = fetch(`http://127.0.0.1:${server.config.port}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${token}` },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'bus_read', arguments: { wait_seconds: 2 * WAIT_SECONDS } } }),
      signal: abort.signal
    }).catch((err: unknown) => err)
    await until('erin\'s long-poll to wait', () => server.runtime.bus.waiters.size === 1)
    abort.abort()
    await request
    const abortedAt = Date.now()
    await until('the waiter to go', () => server.runtime.bus.waiters.size === 0, WELL_BEFORE_MS)
    await until('the transport to forget the request', () => server.runtime.mcp.inFlight === 0, WELL_BEFORE_MS)
    t.pass(`released ${Date.now() - abortedAt} ms after the abort (its wait is ${2 * WAIT_SECONDS} s)`)

    // The server is unaffected: others still read and send.
    t.match(await call(alice, 'bus_send', { channel: 'general', body: 'still here' }), { id: Number })
    t.ok((await call(bob, 'bus_read', { channel: 'general' })).messages.some((m: { body: string }) => m.body === 'still here'))
  })
})
