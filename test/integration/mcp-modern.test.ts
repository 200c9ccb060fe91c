import { test } from 'tap'
import { principalWithToken, startTestServer, type TestServer } from '../helpers/server.ts'

/**
 * The 2026-07-28 revision on /mcp, request by request over inject: the per-request `_meta`
 * envelope, the Mcp-Method / Mcp-Name headers, the revision's error codes and HTTP statuses
 * (each echoing the request id), cache hints, and that a refused request writes nothing.
 */

const MODERN = '2026-07-28'
const META = {
  'io.modelcontextprotocol/protocolVersion': MODERN,
  'io.modelcontextprotocol/clientCapabilities': {},
  'io.modelcontextprotocol/clientInfo': { name: 'mcp-modern-test', version: '1.0.0' }
}

interface Exchange { status: number, headers: Record<string, unknown>, body: any }

let nextId = 100
async function modern (server: TestServer, token: string | undefined, method: string, params: Record<string, unknown> = {}, options: { headers?: Record<string, string | undefined>, meta?: Record<string, unknown> | null, id?: string | number } = {}): Promise<Exchange> {
  const id = options.id ?? nextId++
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    'mcp-protocol-version': MODERN,
    'mcp-method': method,
    ...(typeof params.name === 'string' ? { 'mcp-name': params.name } : {}),
    ...(token !== undefined ? { authorization: `Bearer ${token}` } : {})
  }
  for (const [name, value] of Object.entries(options.headers ?? {})) {
    if (value === undefined) delete headers[name]
    else headers[name] = value
  }
  const meta = options.meta === null ? undefined : (options.meta ?? META)
  const response = await server.app.inject({
    method: 'POST',
    url: '/mcp',
    headers,
    payload: { jsonrpc: '2.0', id, method, params: meta === undefined ? params : { ...params, _meta: meta } }
  })
  return { status: response.statusCode, headers: response.headers, body: response.body === '' ? undefined : JSON.parse(response.body) }
}

test('the 2026-07-28 revision beside the 2025 ones', async (t) => {
  const server = await startTestServer(t)
  const alice = await principalWithToken(server, 'alice')
  const reader = await principalWithToken(server, 'reader', 'bus:read')

  await t.test('server/discover names the revisions, capabilities, cache hints and serverInfo', async (t) => {
    const { status, body } = await modern(server, alice, 'server/discover')
    t.equal(status, 200)
    t.ok(body.result.supportedVersions.includes(MODERN))
    t.same(body.result.capabilities.tools, { listChanged: false })
    t.equal(body.result.resultType, 'complete')
    t.equal(body.result.ttlMs, 300_000)
    t.equal(body.result.cacheScope, 'public')
    t.match(body.result._meta['io.modelcontextprotocol/serverInfo'], { name: 'bus-mcp-server' })
  })

  await t.test('tools/list carries cache hints; tools/call answers with resultType and serverInfo', async (t) => {
    const list = await modern(server, alice, 'tools/list')
    t.equal(list.status, 200)
    t.same(list.body.result.tools.map((tool: { name: string }) => tool.name), ['whoami', 'bus_send', 'bus_read', 'bus_ack', 'bus_channels', 'bus_principals'])
    t.equal(list.body.result.ttlMs, 300_000)
    t.equal(list.body.result.cacheScope, 'private', 'the list depends on the caller\'s scopes')

    const me = await modern(server, alice, 'tools/call', { name: 'whoami', arguments: {} }, { id: 'who-1' })
    t.equal(me.status, 200)
    t.equal(me.body.id, 'who-1')
    t.equal(me.body.result.resultType, 'complete')
    t.match(me.body.result._meta['io.modelcontextprotocol/serverInfo'], { name: 'bus-mcp-server' })
    t.match(me.body.result.structuredContent, { principal: 'alice', auth: 'api_token' })

    const sent = await modern(server, alice, 'tools/call', { name: 'bus_send', arguments: { channel: 'modern', body: 'hello from 2026' } })
    t.equal(sent.body.result.isError, undefined)
    const read = await modern(server, alice, 'tools/call', { name: 'bus_read', arguments: { channel: 'modern', after: 0 } })
    t.match(read.body.result.structuredContent.messages, [{ body: 'hello from 2026', from: 'alice' }])
  })

  await t.test('the revision\'s errors: HTTP status, JSON-RPC code, the request id echoed', async (t) => {
    const cases: Array<[string, () => Promise<Exchange>, number, number]> = [
      ['Mcp-Method header missing', async () => await modern(server, alice, 'tools/list', {}, { id: 'e1', headers: { 'mcp-method': undefined } }), 400, -32020],
      ['Mcp-Method header disagreeing', async () => await modern(server, alice, 'tools/list', {}, { id: 'e2', headers: { 'mcp-method': 'tools/call' } }), 400, -32020],
      ['Mcp-Name header missing', async () => await modern(server, alice, 'tools/call', { name: 'whoami', arguments: {} }, { id: 'e3', headers: { 'mcp-name': undefined } }), 400, -32020],
      ['Mcp-Name header disagreeing', async () => await modern(server, alice, 'tools/call', { name: 'whoami', arguments: {} }, { id: 'e4', headers: { 'mcp-name': 'bus_send' } }), 400, -32020],
      ['MCP-Protocol-Version header missing', async () => await modern(server, alice, 'tools/list', {}, { id: 'e5', headers: { 'mcp-protocol-version': undefined } }), 400, -32020],
      ['_meta missing', async () => await modern(server, alice, 'tools/list', {}, { id: 'e6', meta: null }), 400, -32602],
      ['clientCapabilities missing', async () => await modern(server, alice, 'tools/list', {}, { id: 'e7', meta: { 'io.modelcontextprotocol/protocolVersion': MODERN } }), 400, -32602],
      ['a revision not served', async () => await modern(server, alice, 'tools/list', {}, { id: 'e8', headers: { 'mcp-protocol-version': '2099-01-01' }, meta: { ...META, 'io.modelcontextprotocol/protocolVersion': '2099-01-01' } }), 400, -32022],
      ['unknown method', async () => await modern(server, alice, 'bus/explode', {}, { id: 'e9' }), 404, -32601],
      ['ping (not in the revision)', async () => await modern(server, alice, 'ping', {}, { id: 'e10' }), 404, -32601],
      ['resources/subscribe (not in the revision)', async () => await modern(server, alice, 'resources/subscribe', { uri: 'bus://inbox' }, { id: 'e11' }), 404, -32601],
      ['unknown tool', async () => await modern(server, alice, 'tools/call', { name: 'bus_delete_everything', arguments: {} }, { id: 'e12' }), 200, -32602],
      ['tool name of the wrong type', async () => await modern(server, alice, 'tools/call', { name: 7, arguments: {} }, { id: 'e13', headers: { 'mcp-name': '7' } }), 200, -32602]
    ]
    for (const [what, send, status, code] of cases) {
      const { status: got, body } = await send()
      t.equal(got, status, `${what}: HTTP ${status}`)
      t.equal(body?.error?.code, code, `${what}: ${code} (${String(body?.error?.message).slice(0, 120)})`)
      t.match(body?.id, /^e\d+$/, `${what}: the request id is echoed`)
      t.type(body?.error?.message, 'string')
    }
    const unsupported = await modern(server, alice, 'tools/list', {}, { headers: { 'mcp-protocol-version': '2099-01-01' }, meta: { ...META, 'io.modelcontextprotocol/protocolVersion': '2099-01-01' } })
    t.same(unsupported.body.error.data, { supported: [MODERN], requested: '2099-01-01' }, '-32022 names what is served and what was asked')
  })

  await t.test('bad tool arguments are a tool error; a batch is refused', async (t) => {
    const bad = await modern(server, alice, 'tools/call', { name: 'bus_send', arguments: { channel: 'modern' } })
    t.equal(bad.status, 200)
    t.equal(bad.body.result.isError, true)
    t.match(bad.body.result.content[0].text, /"body" is required/)

    const payload = [1, 2].map((id) => ({ jsonrpc: '2.0', id, method: 'tools/list', params: { _meta: META } }))
    const batch = await server.app.inject({
      method: 'POST',
      url: '/mcp',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${alice}`, 'mcp-protocol-version': MODERN, 'mcp-method': 'tools/list' },
      payload
    })
    t.equal(batch.statusCode, 400)
    t.equal(JSON.parse(batch.body).error.code, -32600)
  })

  await t.test('mixing eras is a clear 400', async (t) => {
    const initialize = await server.app.inject({
      method: 'POST',
      url: '/mcp',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${alice}`, 'mcp-protocol-version': MODERN, 'mcp-method': 'initialize' },
      payload: { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'x', version: '1' } } }
    })
    t.equal(initialize.statusCode, 400, 'a 2026 header with an initialize')
    t.match(JSON.parse(initialize.body).error, { code: -32020, message: /initialize/ })

    const envelope = await modern(server, alice, 'tools/list', {}, { headers: { 'mcp-protocol-version': '2025-11-25' } })
    t.equal(envelope.status, 400, 'a 2025 header with a _meta envelope')
    t.match(envelope.body.error, { code: -32020, message: /protocol version/ })
  })

  await t.test('authentication and step-up are the same in both eras', async (t) => {
    const anonymous = await modern(server, undefined, 'server/discover')
    t.equal(anonymous.status, 401)
    t.match(String(anonymous.headers['www-authenticate']), /^Bearer resource_metadata="/)

    const refused = await modern(server, reader, 'tools/call', { name: 'bus_send', arguments: { channel: 'modern', body: 'nope' } }, { id: 'up-1' })
    t.equal(refused.status, 403)
    t.match(String(refused.headers['www-authenticate']), /error="insufficient_scope".*scope="bus:write"/)
    t.equal(refused.body.id, 'up-1')

    const badOrigin = await modern(server, alice, 'tools/list', {}, { headers: { origin: 'https://evil.example' } })
    t.equal(badOrigin.status, 403)
    t.equal(badOrigin.body.error.code, -32000)
  })

  await t.test('a refused send writes nothing, and the server keeps serving', async (t) => {
    const before = await modern(server, alice, 'tools/call', { name: 'bus_read', arguments: { channel: 'modern', after: 0 } })
    const count = before.body.result.structuredContent.messages.length
    const refusals = [
      await modern(server, alice, 'tools/call', { name: 'bus_send', arguments: { channel: 'modern', body: 'x' } }, { headers: { 'mcp-name': 'whoami' } }),
      await modern(server, alice, 'tools/call', { name: 'bus_send', arguments: { channel: 'modern', body: 'x' } }, { meta: null }),
      await modern(server, alice, 'tools/call', { name: 'bus_send', arguments: { channel: 'modern', body: 'x' } }, { headers: { 'mcp-protocol-version': '2099-01-01' }, meta: { ...META, 'io.modelcontextprotocol/protocolVersion': '2099-01-01' } })
    ]
    t.same(refusals.map((r) => r.status), [400, 400, 400])
    const after = await modern(server, alice, 'tools/call', { name: 'bus_read', arguments: { channel: 'modern', after: 0 } })
    t.equal(after.body.result.structuredContent.messages.length, count, 'no message was written')
    t.equal((await modern(server, alice, 'tools/call', { name: 'whoami', arguments: {} })).status, 200)
  })
})
