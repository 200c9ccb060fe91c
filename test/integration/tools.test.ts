import { fromJsonSchema } from '@modelcontextprotocol/server'
import { sql } from 'drizzle-orm'
import t from 'tap'
import { rowsOf } from '../../src/db/client.ts'
import { ToolListings } from '../../src/mcp/tool-call.ts'
import { TOOLS } from '../../src/mcp/tools.ts'
import { createPrincipal, setPrincipalDisabled } from '../../src/principals/store.ts'
import { callTool, principalWithToken, rpc, startTestServer, type TestServer } from '../helpers/server.ts'

/** Row counts of everything a tool call can write. */
async function counts (server: TestServer): Promise<{ messages: number, channels: number, cursors: number }> {
  const rows = rowsOf<{ messages: number, channels: number, cursors: number }>(await server.database.db.execute(sql`
    select (select count(*)::int from messages) as messages,
      (select count(*)::int from channels) as channels,
      (select count(*)::int from cursors) as cursors`))
  const row = rows[0]
  if (row === undefined) throw new Error('no counts')
  return { messages: Number(row.messages), channels: Number(row.channels), cursors: Number(row.cursors) }
}

const MODERN = '2026-07-28'
const MODERN_META = {
  'io.modelcontextprotocol/protocolVersion': MODERN,
  'io.modelcontextprotocol/clientCapabilities': {},
  'io.modelcontextprotocol/clientInfo': { name: 'tools-test', version: '1.0.0' }
}

/** The same request in the 2026-07-28 era: the _meta envelope and the headers it requires. */
async function modernRpc (server: TestServer, token: string, method: string, params: Record<string, unknown> = {}) {
  return await rpc(server, token, method, { ...params, _meta: MODERN_META }, {
    'mcp-protocol-version': MODERN,
    'mcp-method': method,
    ...(typeof params.name === 'string' ? { 'mcp-name': params.name } : {})
  })
}

interface Listed { name: string, description: string, inputSchema: Record<string, any> }

const LACKS = (scope: string): RegExp => new RegExp(`Your token lacks ${scope}: this call will be refused; re-authorize with that scope`)

t.test('the bus tools, end to end through app.inject', async (t) => {
  const server = await startTestServer(t)
  const alice = await principalWithToken(server, 'alice')
  const bob = await principalWithToken(server, 'bob')
  const carol = await principalWithToken(server, 'carol')

  t.test('whoami', async (t) => {
    const { isError, data, result } = await callTool(server, alice, 'whoami')
    t.equal(isError, false)
    t.same(data, { principal: 'alice', auth: 'api_token', provider: null, client_id: null, scopes: ['bus:read', 'bus:write'], token_expires_at: null })
    t.same(result.structuredContent, data, 'structuredContent matches the text')
  })

  t.test('tools/list names the six tools with their schemas', async (t) => {
    const response = await rpc(server, alice, 'tools/list')
    t.equal(response.status, 200)
    const tools = response.body.result.tools as Array<{ name: string, inputSchema: { type: string, properties?: Record<string, unknown> }, description: string }>
    t.same(tools.map((tool) => tool.name).sort(), ['bus_ack', 'bus_channels', 'bus_principals', 'bus_read', 'bus_send', 'whoami'])
    for (const tool of tools) t.equal(tool.inputSchema.type, 'object', `${tool.name} has an object schema`)
    const read = tools.find((tool) => tool.name === 'bus_read')
    t.ok(read?.inputSchema.properties?.wait_seconds, 'bus_read declares wait_seconds')
    t.match(tools.find((tool) => tool.name === 'bus_send')?.description, /bus:write/)
    for (const tool of tools) t.notMatch(tool.description, /Your token lacks/, `${tool.name}: a read-write token is told of no refusal`)
  })

  t.test('bus_send to a channel; bus_read on another token; after, limit and the default cursor', async (t) => {
    const first = await callTool(server, alice, 'bus_send', { channel: 'general', body: 'one', metadata: { n: 1, tags: ['a'] } })
    t.equal(first.isError, false, first.text)
    t.match(first.data, { id: Number, channel: 'general', to: null, created_at: String })
    const second = await callTool(server, bob, 'bus_send', { channel: 'general', body: 'two ✓ 👋' })
    const third = await callTool(server, alice, 'bus_send', { channel: 'general', body: 'three' })
    t.ok(first.data.id < second.data.id && second.data.id < third.data.id, 'ids increase')

    const all = await callTool(server, carol, 'bus_read', { channel: 'general' })
    t.equal(all.isError, false, all.text)
    t.same(all.data.messages.map((m: { body: string }) => m.body), ['one', 'two ✓ 👋', 'three'])
    t.match(all.data.messages[0], { id: first.data.id, channel: 'general', from: 'alice', to: null, body: 'one', metadata: { n: 1, tags: ['a'] }, created_at: String })
    t.equal(all.data.messages[1].metadata, null)
    t.equal(all.data.stream, 'general')
    t.equal(all.data.next_after, third.data.id)
    t.equal(all.data.cursor, 0)

    const after = await callTool(server, carol, 'bus_read', { channel: 'general', after: first.data.id })
    t.same(after.data.messages.map((m: { body: string }) => m.body), ['two ✓ 👋', 'three'])
    const limited = await callTool(server, carol, 'bus_read', { channel: 'general', limit: 2 })
    t.same(limited.data.messages.map((m: { body: string }) => m.body), ['one', 'two ✓ 👋'])
    t.equal(limited.data.next_after, second.data.id)
    const none = await callTool(server, carol, 'bus_read', { channel: 'general', after: third.data.id })
    t.same(none.data.messages, [])
    t.equal(none.data.next_after, third.data.id, 'next_after stays at the cursor when nothing is new')
    const empty = await callTool(server, carol, 'bus_read', { channel: 'general', wait_seconds: 0.2, after: third.data.id })
    t.same(empty.data.messages, [], 'a short wait with nothing new returns empty')
    t.ok(empty.data.waited_ms >= 150, `waited ${empty.data.waited_ms} ms`)
  })

  t.test('bus_ack moves the caller\'s own cursor; reading does not', async (t) => {
    const before = await callTool(server, bob, 'bus_read', { channel: 'general' })
    t.equal(before.data.messages.length, 3)
    const again = await callTool(server, bob, 'bus_read', { channel: 'general' })
    t.equal(again.data.messages.length, 3, 'reading alone does not move the cursor')

    const secondId = before.data.messages[1].id as number
    const ack = await callTool(server, bob, 'bus_ack', { channel: 'general', up_to: secondId })
    t.equal(ack.isError, false, ack.text)
    t.same(ack.data, { stream: 'general', cursor: secondId, previous: 0 })
    const next = await callTool(server, bob, 'bus_read', { channel: 'general' })
    t.same(next.data.messages.map((m: { body: string }) => m.body), ['three'])
    t.equal(next.data.cursor, secondId)

    const carols = await callTool(server, carol, 'bus_read', { channel: 'general' })
    t.equal(carols.data.messages.length, 3, 'another principal\'s cursor is untouched')

    const back = await callTool(server, bob, 'bus_ack', { channel: 'general', up_to: 0 })
    t.same(back.data, { stream: 'general', cursor: 0, previous: secondId }, 'a cursor may move back')
    await callTool(server, bob, 'bus_ack', { channel: 'general', up_to: before.data.next_after })
    const done = await callTool(server, bob, 'bus_read', { channel: 'general' })
    t.same(done.data.messages, [])
  })

  t.test('bus_ack beyond the newest message is a tool error and writes nothing', async (t) => {
    const latest = (await callTool(server, carol, 'bus_read', { channel: 'general' })).data.next_after as number
    const before = await counts(server)
    const ack = await callTool(server, carol, 'bus_ack', { channel: 'general', up_to: latest + 1 })
    t.equal(ack.isError, true)
    t.match(ack.text, /past the newest message on channel "general"/)
    const inbox = await callTool(server, carol, 'bus_ack', { up_to: 1_000_000 })
    t.equal(inbox.isError, true)
    t.match(inbox.text, /past the newest message on your inbox/)
    t.same(await counts(server), before)
    const read = await callTool(server, carol, 'bus_read', { channel: 'general' })
    t.equal(read.data.cursor, 0, 'the cursor did not move')
  })

  t.test('direct messages are visible only to their recipient', async (t) => {
    const dm = await callTool(server, alice, 'bus_send', { to: 'bob', body: 'psst, bob' })
    t.equal(dm.isError, false, dm.text)
    t.match(dm.data, { id: Number, channel: null, to: 'bob' })

    const bobs = await callTool(server, bob, 'bus_read', {})
    t.equal(bobs.data.stream, '@inbox')
    t.same(bobs.data.messages.map((m: { body: string, from: string, to: string }) => [m.body, m.from, m.to]), [['psst, bob', 'alice', 'bob']])
    t.equal(bobs.data.messages[0].channel, null)

    t.same((await callTool(server, carol, 'bus_read', {})).data.messages, [], 'carol sees nothing')
    t.same((await callTool(server, alice, 'bus_read', {})).data.messages, [], 'the sender\'s inbox does not hold it either')
    const general = await callTool(server, carol, 'bus_read', { channel: 'general', after: 0 })
    t.notOk(general.data.messages.some((m: { body: string }) => m.body === 'psst, bob'), 'not on any channel')

    const ack = await callTool(server, bob, 'bus_ack', { up_to: dm.data.id })
    t.same(ack.data, { stream: '@inbox', cursor: dm.data.id, previous: 0 })
    t.same((await callTool(server, bob, 'bus_read', {})).data.messages, [])
  })

  t.test('bus_channels: message counts and the caller\'s unread counts', async (t) => {
    await callTool(server, carol, 'bus_send', { channel: 'alerts', body: 'a1' })
    await callTool(server, carol, 'bus_send', { channel: 'alerts', body: 'a2' })
    await callTool(server, alice, 'bus_send', { to: 'carol', body: 'dm for carol' })
    const carols = await callTool(server, carol, 'bus_channels')
    t.equal(carols.isError, false, carols.text)
    t.match(carols.data, {
      channels: [
        { name: 'alerts', messages: 2, unread: 2, last_message_id: Number, created_at: String },
        { name: 'general', messages: 3, unread: 3 }
      ],
      inbox: { unread: 1 }
    })
    t.equal(carols.data.channels.length, 2)
    const bobs = await callTool(server, bob, 'bus_channels')
    t.match(bobs.data, { channels: [{ name: 'alerts', unread: 2 }, { name: 'general', messages: 3, unread: 0 }], inbox: { unread: 0 } })
    const alerts = await callTool(server, bob, 'bus_read', { channel: 'alerts' })
    await callTool(server, bob, 'bus_ack', { channel: 'alerts', up_to: alerts.data.messages[0].id })
    t.match((await callTool(server, bob, 'bus_channels')).data.channels[0], { name: 'alerts', messages: 2, unread: 1 })
  })

  t.test('bus_principals lists who is on the bus', async (t) => {
    await setPrincipalDisabled(server.database.db, (await createPrincipal(server.database.db, 'dave', 'bus:read')).name, true)
    const { isError, data } = await callTool(server, bob, 'bus_principals')
    t.equal(isError, false)
    t.match(data.principals, [
      { name: 'alice', scopes: ['bus:read', 'bus:write'], disabled: false, created_at: String },
      { name: 'bob', disabled: false },
      { name: 'carol', disabled: false },
      { name: 'dave', scopes: ['bus:read'], disabled: true }
    ])
    t.equal(data.principals.length, 4)
    t.notOk(JSON.stringify(data).includes('token'), 'no token data')
  })

  t.test('a direct message to a disabled principal is refused', async (t) => {
    const before = await counts(server)
    const sent = await callTool(server, alice, 'bus_send', { to: 'dave', body: 'hi' })
    t.equal(sent.isError, true)
    t.match(sent.text, /"dave" is disabled/)
    t.same(await counts(server), before)
  })
})

t.test('tool input errors are tool errors or JSON-RPC errors with a clear message, never 500, and write nothing', async (t) => {
  const server = await startTestServer(t)
  const alice = await principalWithToken(server, 'alice')
  await principalWithToken(server, 'bob')
  const seed = await callTool(server, alice, 'bus_send', { channel: 'general', body: 'seed' })
  t.equal(seed.isError, false)
  const before = await counts(server)

  const toolErrors: Array<[string, string, Record<string, unknown>, RegExp]> = [
    ['empty body', 'bus_send', { channel: 'general', body: '' }, /"body": body must not be empty/],
    ['missing body', 'bus_send', { channel: 'general' }, /"body" is required/],
    ['body of the wrong type', 'bus_send', { channel: 'general', body: 42 }, /"body": .*expected string, received number/],
    ['body over 64 KiB (ASCII)', 'bus_send', { channel: 'general', body: 'x'.repeat(64 * 1024 + 1) }, /^body is 65537 bytes as UTF-8 \(65537 characters\); the limit is 65536 bytes/],
    ['body over 64 KiB (2-byte characters)', 'bus_send', { channel: 'general', body: 'é'.repeat(40_000) }, /^body is 80000 bytes as UTF-8 \(40000 characters\); the limit is 65536 bytes/],
    ['body over 64 KiB (4-byte characters)', 'bus_send', { channel: 'general', body: '👋'.repeat(16_385) }, /^body is 65540 bytes as UTF-8 \(16385 characters\); the limit is 65536 bytes/],
    ['a null body (null means absent; body is required)', 'bus_send', { channel: 'general', body: null }, /"body": .*received null/],
    ['a null up_to', 'bus_ack', { channel: 'general', up_to: null }, /"up_to": .*received null/],
    ['"@inbox" as a channel to post to', 'bus_send', { channel: '@inbox', body: 'x' }, /"channel": "@inbox" is an inbox, not a channel: to send a direct message, omit "channel" and give the recipient's name as "to"/],
    ['"to" on bus_read', 'bus_read', { to: 'bob' }, /unknown argument "to" \(bus_read reads a channel or your own inbox: omit "channel" to read your inbox; "to" is for bus_send\)/],
    ['"to" on bus_ack', 'bus_ack', { to: 'bob', up_to: 1 }, /unknown argument "to" \(bus_ack moves your position on a channel or your own inbox: omit "channel" for your inbox; "to" is for bus_send\)/],
    ['"next_after" on bus_ack', 'bus_ack', { next_after: 1 }, /unknown argument "next_after" \(give bus_read's "next_after" as "up_to"\)/],
    ['a hinted and a plain unknown argument', 'bus_read', { to: 'bob', from: 'alice' }, /unknown argument "from"; unknown argument "to" \(bus_read reads/],
    ['an inbox name that is not "@inbox"', 'bus_read', { channel: '@bob' }, /"channel": channel names are 1-64 characters.*\(or "@inbox" for your inbox\)/],
    ['both channel and to', 'bus_send', { channel: 'general', to: 'bob', body: 'x' }, /exactly one of "channel".*or "to"/],
    ['neither channel nor to', 'bus_send', { body: 'x' }, /exactly one of "channel".*or "to"/],
    ['unknown recipient', 'bus_send', { to: 'nobody', body: 'x' }, /principal "nobody" does not exist/],
    ['recipient that is not a name', 'bus_send', { to: 'a b', body: 'x' }, /"to" must be a principal name/],
    ['bad channel name', 'bus_send', { channel: 'has space', body: 'x' }, /"channel": channel names are 1-64 characters/],
    ['NUL in the body', 'bus_send', { channel: 'general', body: 'a\u0000b' }, /body must not contain NUL/],
    ['NUL in a new channel\'s message', 'bus_send', { channel: 'fresh', body: '\u0000' }, /body must not contain NUL/],
    ['NUL in metadata', 'bus_send', { channel: 'general', body: 'x', metadata: { note: 'a\u0000' } }, /metadata\.note must not contain NUL/],
    ['NUL in a metadata key', 'bus_send', { channel: 'general', body: 'x', metadata: { 'k\u0000': 1 } }, /metadata key must not contain NUL/],
    ['NUL in a channel name', 'bus_send', { channel: 'gen\u0000eral', body: 'x' }, /"channel": channel names/],
    ['NUL in a recipient', 'bus_send', { to: 'bob\u0000', body: 'x' }, /"to" must be a principal name/],
    ['lone surrogate', 'bus_send', { channel: 'general', body: 'a\ud800' }, /well-formed Unicode/],
    ['metadata that is not an object', 'bus_send', { channel: 'general', body: 'x', metadata: [1, 2] }, /"metadata": /],
    ['metadata over 16 KiB', 'bus_send', { channel: 'general', body: 'x', metadata: { big: 'y'.repeat(17_000) } }, /metadata is \d+ bytes as JSON; the limit is 16384/],
    ['unknown argument', 'bus_send', { channel: 'general', body: 'x', priority: 'high' }, /unknown argument "priority"/],
    ['wait_seconds 26', 'bus_read', { channel: 'general', wait_seconds: 26 }, /"wait_seconds": .*25/],
    ['wait_seconds -1', 'bus_read', { channel: 'general', wait_seconds: -1 }, /"wait_seconds": .*0/],
    ['wait_seconds as a string', 'bus_read', { channel: 'general', wait_seconds: '5' }, /"wait_seconds": .*number/i],
    ['limit 0', 'bus_read', { channel: 'general', limit: 0 }, /"limit": /],
    ['limit 501', 'bus_read', { channel: 'general', limit: 501 }, /"limit": .*500/],
    ['fractional after', 'bus_read', { channel: 'general', after: 1.5 }, /"after": .*int/i],
    ['negative after', 'bus_read', { channel: 'general', after: -1 }, /"after": /],
    ['unknown channel', 'bus_read', { channel: 'nowhere' }, /channel "nowhere" does not exist/],
    ['ack of an unknown channel', 'bus_ack', { channel: 'nowhere', up_to: 1 }, /channel "nowhere" does not exist/],
    ['ack without up_to', 'bus_ack', { channel: 'general' }, /"up_to" is required/],
    ['ack with a string up_to', 'bus_ack', { channel: 'general', up_to: '1' }, /"up_to": .*number/i],
    ['arguments to a tool that takes none', 'whoami', { verbose: true }, /unknown argument "verbose"/]
  ]
  for (const [what, tool, args, message] of toolErrors) {
    const { isError, text } = await callTool(server, alice, tool, args)
    t.equal(isError, true, `${what}: is a tool error`)
    t.match(text, message, `${what}: ${text.slice(0, 160)}`)
  }

  const rpcErrors: Array<[string, unknown, RegExp]> = [
    ['unknown tool', { name: 'bus_delete_everything', arguments: {} }, /Unknown tool: "bus_delete_everything"/],
    ['tool name of the wrong type', { name: 7, arguments: {} }, /^Invalid params for tools\/call: "name": .*expected string/],
    ['arguments that are not an object', { name: 'bus_send', arguments: 'hello' }, /^Invalid params for tools\/call: "arguments": .*expected record/],
    ['no tool name', {}, /^Invalid params for tools\/call: "name": .*expected string/]
  ]
  for (const [what, params, message] of rpcErrors) {
    const response = await rpc(server, alice, 'tools/call', params)
    t.equal(response.status, 200, `${what}: HTTP 200 carrying a JSON-RPC error`)
    t.equal(response.body.error?.code, -32602, `${what}: Invalid params`)
    t.match(response.body.error?.message, message, `${what}: ${String(response.body.error?.message).slice(0, 160)}`)
  }
  const unknownMethod = await rpc(server, alice, 'bus/explode')
  t.equal(unknownMethod.status, 200)
  t.equal(unknownMethod.body.error?.code, -32601, 'unknown method: Method not found')

  t.same(await counts(server), before, 'nothing was written by any failed call')
  const read = await callTool(server, alice, 'bus_read', { channel: 'general' })
  t.same(read.data.messages.map((m: { body: string }) => m.body), ['seed'], 'and the server keeps serving')
  const boundary = await callTool(server, alice, 'bus_send', { channel: 'general', body: 'z'.repeat(64 * 1024) })
  t.equal(boundary.isError, false, 'a body of exactly 64 KiB is accepted')
  const wide = await callTool(server, alice, 'bus_send', { channel: 'general', body: '👋'.repeat(16_384) })
  t.equal(wide.isError, false, 'and so is one of exactly 65536 bytes in 4-byte characters')
})

t.test('every tool call lands in the audit log, without arguments', async (t) => {
  const server = await startTestServer(t)
  const alice = await principalWithToken(server, 'alice')
  const reader = await principalWithToken(server, 'reader', 'bus:read')
  const secret = 'TOP-SECRET-BODY-7f3a'
  await callTool(server, alice, 'whoami')
  await callTool(server, alice, 'bus_send', { channel: 'ops', body: secret, metadata: { secret } })
  await callTool(server, alice, 'bus_read', { channel: 'ops' })
  await callTool(server, alice, 'bus_ack', { channel: 'ops', up_to: 1 })
  await callTool(server, alice, 'bus_channels')
  await callTool(server, alice, 'bus_principals')
  await callTool(server, alice, 'bus_send', { to: 'nobody', body: secret })
  await callTool(server, alice, 'bus_read', { channel: 'ops', wait_seconds: 99 })
  const denied = await rpc(server, reader, 'tools/call', { name: 'bus_send', arguments: { channel: 'ops', body: secret } })
  t.equal(denied.status, 403)
  await server.runtime.audit.flush()

  const rows = rowsOf<Record<string, unknown>>(await server.database.db.execute(sql`
    select principal_id, principal_name, auth_kind, client_id, kind, action, outcome, duration_ms, detail, at
    from audit_log where kind = 'tool' order by id`))
  t.match(rows.map((r) => [r.principal_name, r.action, r.outcome, r.detail]), [
    ['alice', 'whoami', 'ok', null],
    ['alice', 'bus_send', 'ok', null],
    ['alice', 'bus_read', 'ok', null],
    ['alice', 'bus_ack', 'ok', null],
    ['alice', 'bus_channels', 'ok', null],
    ['alice', 'bus_principals', 'ok', null],
    ['alice', 'bus_send', 'error', 'invalid_input'],
    ['alice', 'bus_read', 'error', 'invalid_arguments'],
    ['reader', 'bus_send', 'denied', 'insufficient_scope']
  ])
  t.equal(rows.length, 9)
  for (const row of rows) {
    t.equal(row.auth_kind, 'api_token')
    t.equal(row.client_id, null)
    t.type(Number(row.principal_id), 'number')
    t.ok(row.at !== null)
  }
  t.ok(rows.slice(0, 8).every((r) => typeof r.duration_ms === 'number' && r.duration_ms >= 0), 'tool calls record their duration')
  const everything = JSON.stringify(rowsOf(await server.database.db.execute(sql`select * from audit_log`)))
  t.notOk(everything.includes(secret), 'no arguments in the audit log')
  t.notOk(everything.includes(alice), 'no tokens in the audit log')
  t.notOk(everything.includes('bus_api_'), 'no token prefixes in the audit log')
})

t.test('tools/list per token: every tool listed, the ones the token lacks the scope for say they will be refused (both eras)', async (t) => {
  const server = await startTestServer(t)
  const full = await principalWithToken(server, 'full')
  const reader = await principalWithToken(server, 'reader', 'bus:read')
  const writer = await principalWithToken(server, 'writer', 'bus:write')
  const names = ['whoami', 'bus_send', 'bus_read', 'bus_ack', 'bus_channels', 'bus_principals']
  const needs: Record<string, string | null> = { whoami: null, bus_send: 'bus:write', bus_read: 'bus:read', bus_ack: 'bus:read', bus_channels: 'bus:read', bus_principals: 'bus:read' }

  for (const era of ['2025', MODERN]) {
    const list = async (token: string): Promise<{ tools: Listed[], result: any }> => {
      const response = era === MODERN ? await modernRpc(server, token, 'tools/list') : await rpc(server, token, 'tools/list')
      t.equal(response.status, 200, `${era}: tools/list answers`)
      return { tools: response.body.result.tools, result: response.body.result }
    }
    const lists = { full: await list(full), reader: await list(reader), writer: await list(writer) }
    const granted = { full: ['bus:read', 'bus:write'], reader: ['bus:read'], writer: ['bus:write'] }
    for (const [who, { tools }] of Object.entries(lists) as Array<[keyof typeof granted, { tools: Listed[] }]>) {
      t.same(tools.map((tool) => tool.name), names, `${era}, ${who}: all six tools, in order (hiding one would stop OAuth clients stepping up)`)
      for (const tool of tools) {
        const scope = needs[tool.name] ?? null
        if (scope === null || granted[who].includes(scope)) {
          t.notMatch(tool.description, /Your token lacks/, `${era}, ${who}: ${tool.name} is callable and says nothing of a refusal`)
        } else {
          t.match(tool.description, LACKS(scope), `${era}, ${who}: ${tool.name} says it will be refused without ${scope}`)
        }
      }
      t.same(tools.map((tool) => tool.inputSchema), lists.full.tools.map((tool) => tool.inputSchema), `${era}, ${who}: the same schemas for every token`)
    }
    t.match(lists.reader.tools.find((tool) => tool.name === 'bus_ack')?.description, /Requires the bus:read scope\.$/, `${era}: bus_ack needs only bus:read`)
    if (era === MODERN) {
      for (const { result } of Object.values(lists)) {
        t.equal(result.cacheScope, 'private', 'the list depends on the caller: only the caller may reuse it')
        t.equal(result.ttlMs, 300_000)
      }
      const discover = await modernRpc(server, reader, 'server/discover')
      t.equal(discover.body.result.cacheScope, 'public', 'server/discover is the same for everyone')
    }
  }

  // Computed once per process, one list per set of scopes a token can hold (four).
  const listings = new ToolListings(TOOLS)
  t.equal(listings.listFor(['bus:read']), listings.listFor(['bus:read']), 'the same precomputed list each time')
  t.equal(listings.listFor(['bus:write', 'bus:read']), listings.listFor(['bus:read', 'bus:write']), 'whatever the order of the scopes')
  const none = listings.listFor([])
  t.same(none.map((tool) => tool.name), names, 'a token with no bus scope sees every tool too')
  t.same(none.filter((tool) => /Your token lacks/.test(String(tool.description))).map((tool) => tool.name), names.slice(1), 'each one it cannot call says so')
})

t.test('a read-only principal keeps up: bus_ack needs only bus:read; bus_send is still a 403 step-up (both eras)', async (t) => {
  const server = await startTestServer(t)
  const alice = await principalWithToken(server, 'alice')
  const reader = await principalWithToken(server, 'reader', 'bus:read')
  const one = await callTool(server, alice, 'bus_send', { channel: 'news', body: 'one' })
  const two = await callTool(server, alice, 'bus_send', { channel: 'news', body: 'two' })
  const dm = await callTool(server, alice, 'bus_send', { to: 'reader', body: 'for the reader' })

  const ack = await callTool(server, reader, 'bus_ack', { channel: 'news', up_to: one.data.id })
  t.equal(ack.isError, false, ack.text)
  t.same(ack.data, { stream: 'news', cursor: one.data.id, previous: 0 })
  t.same((await callTool(server, reader, 'bus_read', { channel: 'news' })).data.messages.map((m: { body: string }) => m.body), ['two'])

  const modernAck = await modernRpc(server, reader, 'tools/call', { name: 'bus_ack', arguments: { channel: 'news', up_to: two.data.id } })
  t.equal(modernAck.status, 200)
  t.equal(modernAck.body.result.isError, undefined, JSON.stringify(modernAck.body))
  t.same(modernAck.body.result.structuredContent, { stream: 'news', cursor: two.data.id, previous: one.data.id })
  const inbox = await modernRpc(server, reader, 'tools/call', { name: 'bus_ack', arguments: { up_to: dm.data.id } })
  t.same(inbox.body.result.structuredContent, { stream: '@inbox', cursor: dm.data.id, previous: 0 }, 'its own inbox too')
  t.match((await callTool(server, reader, 'bus_channels')).data, { channels: [{ name: 'news', messages: 2, unread: 0 }], inbox: { unread: 0 } }, 'caught up')

  const alicesView = await callTool(server, alice, 'bus_read', { channel: 'news' })
  t.equal(alicesView.data.messages.length, 2, 'another principal\'s position is untouched')

  for (const send of [
    async () => await rpc(server, reader, 'tools/call', { name: 'bus_send', arguments: { channel: 'news', body: 'no' } }),
    async () => await modernRpc(server, reader, 'tools/call', { name: 'bus_send', arguments: { channel: 'news', body: 'no' } })
  ]) {
    const refused = await send()
    t.equal(refused.status, 403, 'bus_send without bus:write is still refused with the step-up challenge')
    t.match(String(refused.headers['www-authenticate']), /error="insufficient_scope".*scope="bus:write"/)
  }
})

t.test('null for an optional argument means the argument is absent', async (t) => {
  const server = await startTestServer(t)
  const alice = await principalWithToken(server, 'alice')
  const bob = await principalWithToken(server, 'bob')

  const sent = await callTool(server, alice, 'bus_send', { channel: 'general', to: null, body: 'posted', metadata: null })
  t.equal(sent.isError, false, sent.text)
  t.match(sent.data, { channel: 'general', to: null })
  const dm = await callTool(server, alice, 'bus_send', { channel: null, to: 'bob', body: 'direct', metadata: null })
  t.equal(dm.isError, false, dm.text)
  t.match(dm.data, { channel: null, to: 'bob' })
  const neither = await callTool(server, alice, 'bus_send', { channel: null, to: null, body: 'x' })
  t.match(neither.text, /exactly one of "channel".*or "to"/, 'null for both is neither')

  // A message read back carries "metadata": null; sending what was read must work.
  const read = await callTool(server, alice, 'bus_read', { channel: 'general', after: null, limit: null, wait_seconds: null })
  t.equal(read.isError, false, read.text)
  const message = read.data.messages[0]
  t.equal(message.metadata, null)
  const echoed = await callTool(server, alice, 'bus_send', { channel: message.channel, to: message.to, body: message.body, metadata: message.metadata })
  t.equal(echoed.isError, false, `a read message's own fields go back in: ${echoed.text}`)

  const bobsInbox = await callTool(server, bob, 'bus_read', { channel: null })
  t.equal(bobsInbox.data.stream, '@inbox', 'channel null is the inbox')
  t.same(bobsInbox.data.messages.map((m: { body: string }) => m.body), ['direct'])

  const modern = await modernRpc(server, alice, 'tools/call', { name: 'bus_ack', arguments: { channel: null, up_to: 0 } })
  t.same(modern.body.result.structuredContent, { stream: '@inbox', cursor: 0, previous: 0 }, 'the same in the 2026-07-28 era')
})

t.test('"@inbox" is the inbox for bus_read and bus_ack (the name their answers give it)', async (t) => {
  const server = await startTestServer(t)
  const alice = await principalWithToken(server, 'alice')
  const bob = await principalWithToken(server, 'bob')
  const dm = await callTool(server, alice, 'bus_send', { to: 'bob', body: 'to bob' })

  const read = await callTool(server, bob, 'bus_read', { channel: '@inbox' })
  t.equal(read.isError, false, read.text)
  t.equal(read.data.stream, '@inbox')
  t.same(read.data.messages.map((m: { body: string }) => m.body), ['to bob'])
  const ack = await callTool(server, bob, 'bus_ack', { channel: read.data.stream, up_to: read.data.next_after })
  t.same(ack.data, { stream: '@inbox', cursor: dm.data.id, previous: 0 }, 'the stream name bus_read returned goes straight back to bus_ack')
  t.same((await callTool(server, bob, 'bus_read', {})).data.messages, [], 'and it moved the inbox position')

  const before = await counts(server)
  const send = await callTool(server, alice, 'bus_send', { channel: '@inbox', body: 'x' })
  t.equal(send.isError, true)
  t.match(send.text, /"@inbox" is an inbox, not a channel: to send a direct message, omit "channel" and give the recipient's name as "to"/)
  t.same(await counts(server), before, 'nothing written')
})

t.test('the published input schemas: null allowed for optional arguments, as anyOf (never a type array), limits in bytes', async (t) => {
  const server = await startTestServer(t)
  const alice = await principalWithToken(server, 'alice')
  for (const era of ['2025', MODERN]) {
    const response = era === MODERN ? await modernRpc(server, alice, 'tools/list') : await rpc(server, alice, 'tools/list')
    const tools = response.body.result.tools as Listed[]
    const typeArrays: string[] = []
    const visit = (node: unknown, path: string): void => {
      if (node === null || typeof node !== 'object') return
      if (Array.isArray((node as { type?: unknown }).type)) typeArrays.push(path)
      for (const [key, value] of Object.entries(node)) visit(value, `${path}/${key}`)
    }
    for (const tool of tools) {
      visit(tool.inputSchema, tool.name)
      t.equal(tool.inputSchema.$schema, undefined, `${era}, ${tool.name}: no $schema (the MCP default, 2020-12)`)
      const required = new Set<string>(tool.inputSchema.required ?? [])
      // The SDK's own JSON Schema validator (what its clients use) must accept null for each optional argument.
      const validator = fromJsonSchema(tool.inputSchema as any)
      const valid = async (args: Record<string, unknown>): Promise<boolean> => (await validator['~standard'].validate(args) as { issues?: unknown }).issues === undefined
      const minimal = Object.fromEntries([...required].map((name) => [name, tool.inputSchema.properties[name].type === 'string' ? 'x' : 1]))
      t.ok(await valid(minimal), `${era}, ${tool.name}: its required arguments alone are valid`)
      for (const name of Object.keys(tool.inputSchema.properties ?? {})) {
        if (required.has(name)) {
          t.notOk(await valid({ ...minimal, [name]: null }), `${era}, ${tool.name}.${name} is required: null is not valid`)
        } else {
          t.ok(await valid({ ...minimal, [name]: null }), `${era}, ${tool.name}.${name} is optional: null is valid`)
          t.ok(Array.isArray(tool.inputSchema.properties[name].anyOf), `${era}, ${tool.name}.${name}: anyOf [T, null]`)
        }
      }
    }
    t.same(typeArrays, [], `${era}: no "type": [...] anywhere (Gemini and strict gateways refuse them)`)

    const send = tools.find((tool) => tool.name === 'bus_send')
    t.equal(send?.inputSchema.properties.body.maxLength, undefined, `${era}: no character limit on body: the limit is in bytes`)
    t.match(send?.inputSchema.properties.body.description, /at most 65536 bytes as UTF-8/)
    t.match(send?.inputSchema.properties.metadata.description, /at most 16384 bytes as JSON/)
    const read = tools.find((tool) => tool.name === 'bus_read')
    t.match(read?.inputSchema.properties.channel.anyOf[0].pattern, /@inbox/, `${era}: bus_read's channel pattern admits "@inbox"`)
    t.notMatch(send?.inputSchema.properties.channel.anyOf[0].pattern, /@inbox/, `${era}: bus_send's does not`)
  }
})
