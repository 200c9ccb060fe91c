import { sql } from 'drizzle-orm'
import t from 'tap'
import { issueApiToken, revokeApiToken, setPrincipalDisabled } from '../../src/principals/store.ts'
import { principalWithToken, rpc, startTestServer, type TestServer } from '../helpers/server.ts'

const BOTH_SCOPES = 'bus:read bus:write'
const prmOf = (server: TestServer): string => `${server.config.publicUrl}/.well-known/oauth-protected-resource/mcp`
const invalidTokenChallenge = (server: TestServer): string =>
  `Bearer error="invalid_token", error_description="The access token is invalid, expired or revoked", resource_metadata="${prmOf(server)}"`

const INITIALIZE = {
  protocolVersion: '2025-06-18',
  capabilities: {},
  clientInfo: { name: 'mcp-http-test', version: '1.0.0' }
}

interface Raw { status: number, headers: Record<string, unknown>, body: string, json: any }

/** A raw request to /mcp through inject, for the cases the rpc helper cannot express. */
async function raw (server: TestServer, options: { method?: string, headers?: Record<string, string>, payload?: string | Buffer | object, url?: string }): Promise<Raw> {
  const response = await server.app.inject({
    method: (options.method ?? 'POST') as 'POST',
    url: options.url ?? '/mcp',
    headers: options.headers ?? {},
    ...(options.payload === undefined ? {} : { payload: options.payload as string })
  })
  let json: unknown
  try { json = response.body === '' ? undefined : JSON.parse(response.body) } catch { json = undefined }
  return { status: response.statusCode, headers: response.headers, body: response.body, json }
}

const jsonHeaders = (token?: string): Record<string, string> => ({
  'content-type': 'application/json',
  accept: 'application/json, text/event-stream',
  ...(token === undefined ? {} : { authorization: `Bearer ${token}` })
})

t.test('401 without credentials: a challenge with resource_metadata and scope, no error code', async (t) => {
  const server = await startTestServer(t, { listen: true })
  const port = server.config.port
  const expected = `Bearer resource_metadata="http://localhost:${port}/.well-known/oauth-protected-resource/mcp", scope="bus:read bus:write"`

  // Over a real port, as clients see it.
  const response = await fetch(`http://127.0.0.1:${port}/mcp`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: {} })
  })
  t.equal(response.status, 401)
  t.equal(response.headers.get('www-authenticate'), expected)
  t.match(await response.json(), { jsonrpc: '2.0', error: { code: Number, message: /Authentication required/ }, id: null })

  const init = await rpc(server, undefined, 'initialize', INITIALIZE)
  t.equal(init.status, 401, 'an unauthenticated initialize is 401, never 200')
  t.equal(init.headers['www-authenticate'], expected)
  t.notOk(String(init.headers['www-authenticate']).includes('error='), 'no error code')

  for (const authorization of ['', 'Basic dXNlcjpwYXNz', 'Digest username="x"']) {
    const other = await raw(server, { headers: { ...jsonHeaders(), authorization }, payload: { jsonrpc: '2.0', id: 1, method: 'tools/list' } })
    t.equal(other.status, 401, `Authorization: ${JSON.stringify(authorization)}`)
    t.equal(other.headers['www-authenticate'], expected, 'another scheme counts as no credentials (RFC 6750 §3.1)')
  }

  const get = await fetch(`http://127.0.0.1:${port}/mcp`, { headers: { accept: 'text/event-stream' } })
  t.equal(get.status, 401, 'GET without credentials is 401 too')
  t.equal(get.headers.get('www-authenticate'), expected)
})

t.test('401 invalid_token: unknown, malformed, expired, revoked, or a disabled principal', async (t) => {
  const server = await startTestServer(t)
  const good = await principalWithToken(server, 'alice')
  t.equal((await rpc(server, good, 'tools/list')).status, 200, 'the good token works')

  const expectInvalid = async (token: string, what: string, headers: Record<string, string> = {}): Promise<void> => {
    const response = await raw(server, { headers: { ...jsonHeaders(token), ...headers }, payload: { jsonrpc: '2.0', id: 1, method: 'tools/list' } })
    t.equal(response.status, 401, `${what}: 401`)
    t.equal(response.headers['www-authenticate'], invalidTokenChallenge(server), `${what}: invalid_token challenge`)
    t.match(response.json, { jsonrpc: '2.0', error: { message: /Invalid token/ }, id: null }, `${what}: JSON-RPC error body`)
  }

  await expectInvalid('bus_api_' + 'A'.repeat(43), 'unknown API token')
  await expectInvalid('no-prefix-legacy-looking-token', 'unknown unprefixed token')
  await expectInvalid(good.slice(0, -1), 'a token one character short')
  await expectInvalid('bus_rt_' + 'A'.repeat(43), 'a refresh-token-shaped secret')
  await expectInvalid('bus_ac_' + 'A'.repeat(43), 'an authorization-code-shaped secret')
  const malformed = await raw(server, { headers: { ...jsonHeaders(), authorization: 'Bearer a"b' }, payload: { jsonrpc: '2.0', id: 1, method: 'tools/list' } })
  t.equal(malformed.status, 401, 'a malformed bearer token')
  t.equal(malformed.headers['www-authenticate'], invalidTokenChallenge(server))
  const twoWords = await raw(server, { headers: { ...jsonHeaders(), authorization: `Bearer ${good} extra` }, payload: { jsonrpc: '2.0', id: 1, method: 'tools/list' } })
  t.equal(twoWords.status, 401, 'a bearer header with two words')
  t.equal(twoWords.headers['www-authenticate'], invalidTokenChallenge(server))

  // Expired: issued with a lifetime, then moved into the past.
  const expiring = await issueApiToken(server.database.db, { principal: 'alice', expiresIn: 60 })
  await server.database.db.execute(sql`update api_tokens set expires_at = now() - interval '1 second' where id = ${expiring.id}`)
  await expectInvalid(expiring.token, 'expired token')

  // Revoked before it was ever used.
  const unused = await issueApiToken(server.database.db, { principal: 'alice' })
  await revokeApiToken(server.database.db, unused.id)
  await expectInvalid(unused.token, 'revoked token')

  // Revoked while in use (cached by the authenticator): NOTIFY drops the cache at once.
  const used = await issueApiToken(server.database.db, { principal: 'alice' })
  t.equal((await rpc(server, used.token, 'tools/list')).status, 200)
  await revokeApiToken(server.database.db, used.id)
  const deadline = Date.now() + 1000
  let status = 200
  while (status === 200 && Date.now() < deadline) {
    status = (await rpc(server, used.token, 'tools/list')).status
    if (status === 200) await new Promise((resolve) => setTimeout(resolve, 20))
  }
  t.equal(status, 401, 'a revoked token in use stops working within 1 s')

  // Disabled principal: every one of its tokens stops; enabling restores them.
  const bob = await principalWithToken(server, 'bob')
  t.equal((await rpc(server, bob, 'tools/list')).status, 200)
  await setPrincipalDisabled(server.database.db, 'bob', true)
  const until = Date.now() + 1000
  while ((await rpc(server, bob, 'tools/list')).status === 200 && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 20))
  await expectInvalid(bob, 'disabled principal')
  await setPrincipalDisabled(server.database.db, 'bob', false)
  const back = Date.now() + 1000
  let again = 401
  while (again === 401 && Date.now() < back) {
    again = (await rpc(server, bob, 'tools/list')).status
    if (again === 401) await new Promise((resolve) => setTimeout(resolve, 20))
  }
  t.equal(again, 200, 'enabled again, the token works')

  t.equal((await rpc(server, good, 'tools/list')).status, 200, 'the good token still works')
})

t.test('403 insufficient_scope names the scope the call needs (step-up); the scheme is case-insensitive', async (t) => {
  const server = await startTestServer(t)
  const token = await principalWithToken(server, 'alice')
  for (const scheme of ['Bearer', 'bearer', 'BEARER', 'bEaReR']) {
    const response = await raw(server, { headers: { ...jsonHeaders(), authorization: `${scheme} ${token}` }, payload: { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'whoami', arguments: {} } } })
    t.equal(response.status, 200, scheme)
    t.equal(response.json.result.structuredContent.principal, 'alice')
  }
  const reader = await principalWithToken(server, 'reader', 'bus:read')
  const writer = await principalWithToken(server, 'writer', 'bus:write')
  const narrowed = (await issueApiToken(server.database.db, { principal: 'writer', scopes: 'bus:write' })).token
  const full = await principalWithToken(server, 'full', BOTH_SCOPES)
  const challenge = (scope: string, missing: string): string =>
    `Bearer error="insufficient_scope", error_description="This call needs the ${missing} scope", resource_metadata="${prmOf(server)}", scope="${scope}"`

  const send = await rpc(server, reader, 'tools/call', { name: 'bus_send', arguments: { channel: 'x', body: 'hi' } })
  t.equal(send.status, 403)
  t.equal(send.headers['www-authenticate'], challenge('bus:write', 'bus:write'))
  t.match(send.body, { jsonrpc: '2.0', error: { message: /Insufficient scope: this call needs bus:write/ } })

  const ack = await rpc(server, reader, 'tools/call', { name: 'bus_ack', arguments: { up_to: 0 } })
  t.equal(ack.status, 200, 'bus_ack needs only bus:read (it moves the caller\'s own cursor)')
  t.equal(ack.headers['www-authenticate'], undefined)

  for (const name of ['bus_read', 'bus_channels', 'bus_principals']) {
    const response = await rpc(server, writer, 'tools/call', { name, arguments: {} })
    t.equal(response.status, 403, `${name} needs bus:read`)
    t.equal(response.headers['www-authenticate'], challenge('bus:read', 'bus:read'))
  }

  // A batch needing both scopes names both, as one challenge.
  const batch = await raw(server, {
    headers: jsonHeaders(reader),
    payload: [
      { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'bus_channels', arguments: {} } },
      { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'bus_send', arguments: { channel: 'x', body: 'hi' } } }
    ]
  })
  t.equal(batch.status, 403)
  t.equal(batch.headers['www-authenticate'], challenge(BOTH_SCOPES, 'bus:write'))

  // What the token does hold works; whoami and tools/list need no scope.
  t.equal((await rpc(server, reader, 'tools/call', { name: 'bus_channels', arguments: {} })).status, 200)
  t.equal((await rpc(server, reader, 'tools/call', { name: 'whoami', arguments: {} })).status, 200)
  t.equal((await rpc(server, narrowed, 'tools/list')).status, 200)
  t.equal((await rpc(server, writer, 'tools/call', { name: 'bus_send', arguments: { channel: 'x', body: 'hi' } })).status, 200)
  t.equal((await rpc(server, full, 'tools/call', { name: 'bus_read', arguments: { channel: 'x' } })).status, 200)
  const count = await server.database.db.execute(sql`select count(*)::int as n from messages`)
  t.equal(Number((Array.isArray(count) ? count : (count as unknown as { rows: Array<{ n: number }> }).rows)[0]?.n), 1, 'the refused sends wrote nothing')
})

t.test('Origin and CORS', async (t) => {
  const server = await startTestServer(t, { env: { ALLOWED_ORIGINS: 'https://app.example' } })
  const token = await principalWithToken(server, 'alice')
  const body = { jsonrpc: '2.0', id: 1, method: 'tools/list' }

  t.test('OPTIONS needs no auth and answers the preflight', async (t) => {
    const preflight = await raw(server, {
      method: 'OPTIONS',
      headers: { origin: 'https://claude.ai', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type, mcp-protocol-version' }
    })
    t.equal(preflight.status, 204)
    t.equal(preflight.headers['access-control-allow-origin'], 'https://claude.ai')
    t.match(preflight.headers['access-control-allow-methods'], /POST/)
    t.match(String(preflight.headers['access-control-allow-headers']).toLowerCase(), /authorization/)
    t.match(String(preflight.headers['access-control-allow-headers']).toLowerCase(), /mcp-protocol-version/)
    t.notOk(preflight.headers['www-authenticate'], 'no challenge on a preflight')
    const bare = await raw(server, { method: 'OPTIONS', headers: {} })
    t.equal(bare.status, 204, 'OPTIONS without Origin')
  })

  t.test('responses expose WWW-Authenticate and Mcp-Session-Id to browsers', async (t) => {
    const unauthenticated = await raw(server, { headers: { ...jsonHeaders(), origin: 'https://claude.ai' }, payload: body })
    t.equal(unauthenticated.status, 401)
    t.equal(unauthenticated.headers['access-control-allow-origin'], 'https://claude.ai', 'a browser can read the 401')
    const exposed = String(unauthenticated.headers['access-control-expose-headers']).toLowerCase().split(/\s*,\s*/)
    t.ok(exposed.includes('www-authenticate'), 'WWW-Authenticate is exposed')
    t.ok(exposed.includes('mcp-session-id'), 'Mcp-Session-Id is exposed')
    const ok = await raw(server, { headers: { ...jsonHeaders(token), origin: 'https://chatgpt.com' }, payload: body })
    t.equal(ok.status, 200)
    t.equal(ok.headers['access-control-allow-origin'], 'https://chatgpt.com')
    t.match(String(ok.headers.vary), /Origin/)
  })

  t.test('a present but unlisted Origin is refused with 403; listed ones pass', async (t) => {
    for (const origin of ['https://evil.example', 'null', 'http://localhost:8088.evil.example', 'https://claude.ai.evil.example', 'https://app.example:444']) {
      const refused = await raw(server, { headers: { ...jsonHeaders(token), origin }, payload: body })
      t.equal(refused.status, 403, origin)
      t.match(refused.json, { error: { message: /is not allowed; add it to ALLOWED_ORIGINS/ } })
      t.notOk(refused.headers['access-control-allow-origin'])
    }
    const preflight = await raw(server, { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' } })
    t.equal(preflight.status, 403, 'an unlisted preflight is refused too')
    for (const origin of ['https://app.example', 'https://claude.ai', 'https://claude.com', 'https://chatgpt.com', 'http://localhost:6274', server.config.publicUrl]) {
      const allowed = await raw(server, { headers: { ...jsonHeaders(token), origin }, payload: body })
      t.equal(allowed.status, 200, origin)
    }
    t.equal((await raw(server, { headers: jsonHeaders(token), payload: body })).status, 200, 'no Origin is fine')
  })
})

t.test('protocol errors are clear 4xx answers, and the server keeps serving', async (t) => {
  const server = await startTestServer(t)
  const token = await principalWithToken(server, 'alice')

  t.test('initialize works with a token, statelessly', async (t) => {
    const init = await rpc(server, token, 'initialize', INITIALIZE)
    t.equal(init.status, 200)
    t.match(init.body, { jsonrpc: '2.0', result: { protocolVersion: '2025-06-18', serverInfo: { name: 'bus-mcp-server' }, capabilities: { tools: {} } } })
    t.notOk(init.headers['mcp-session-id'], 'no session id: stateless')
    t.equal(init.headers['cache-control'], 'no-store')
    const ping = await rpc(server, token, 'ping', {}, { 'mcp-protocol-version': '2025-06-18' })
    t.same(ping.body.result, {})
  })

  t.test('malformed JSON is 400 Parse error', async (t) => {
    for (const payload of ['{"jsonrpc":', '{not json}', '']) {
      const response = await raw(server, { headers: jsonHeaders(token), payload })
      t.equal(response.status, 400, JSON.stringify(payload))
      t.match(response.json, { jsonrpc: '2.0', error: { code: -32700, message: /Parse error/ }, id: null })
    }
  })

  t.test('a JSON value that is not JSON-RPC is 400 Invalid Request', async (t) => {
    for (const payload of [{ hello: 'world' }, { jsonrpc: '1.0', id: 1, method: 'x' }, '"just a string"', '42', 'null']) {
      const response = await raw(server, { headers: jsonHeaders(token), payload })
      t.equal(response.status, 400, JSON.stringify(payload))
      t.equal(response.json?.error?.code, -32600)
    }
  })

  t.test('a wrong content type is 415', async (t) => {
    for (const type of ['text/plain', 'application/xml', 'multipart/form-data; boundary=x']) {
      const response = await raw(server, { headers: { ...jsonHeaders(token), 'content-type': type }, payload: '{"jsonrpc":"2.0","id":1,"method":"ping"}' })
      t.equal(response.status, 415, type)
      t.match(response.json, { error: { message: /Content-Type must be application\/json/ } })
    }
  })

  t.test('a body over the limit is 413', async (t) => {
    const huge = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'bus_send', arguments: { channel: 'x', body: 'x'.repeat(600 * 1024) } } })
    const response = await raw(server, { headers: jsonHeaders(token), payload: huge })
    t.equal(response.status, 413)
    t.match(response.json, { error: { message: /Payload Too Large/ } })
  })

  t.test('Accept without JSON is 406', async (t) => {
    const response = await raw(server, { headers: { ...jsonHeaders(token), accept: 'text/html' }, payload: { jsonrpc: '2.0', id: 1, method: 'ping' } })
    t.equal(response.status, 406)
  })

  t.test('a batch gets an array of replies in order; its bounds are enforced', async (t) => {
    const batch = await raw(server, {
      headers: jsonHeaders(token),
      payload: [
        { jsonrpc: '2.0', id: 'a', method: 'tools/call', params: { name: 'whoami', arguments: {} } },
        { jsonrpc: '2.0', method: 'notifications/initialized' },
        { jsonrpc: '2.0', id: 7, method: 'ping' },
        { jsonrpc: '2.0', id: 'c', method: 'no/such/method' }
      ]
    })
    t.equal(batch.status, 200)
    t.ok(Array.isArray(batch.json))
    t.same(batch.json.map((r: { id: unknown }) => r.id), ['a', 7, 'c'], 'one reply per request, none for the notification')
    t.equal(batch.json[0].result.structuredContent.principal, 'alice')
    t.equal(batch.json[2].error.code, -32601)

    const empty = await raw(server, { headers: jsonHeaders(token), payload: [] })
    t.equal(empty.status, 400)
    t.match(empty.json, { error: { code: -32600, message: /empty batch/ } })
    const tooMany = await raw(server, { headers: jsonHeaders(token), payload: Array.from({ length: 101 }, (_v, i) => ({ jsonrpc: '2.0', id: i, method: 'ping' })) })
    t.equal(tooMany.status, 400)
    t.match(tooMany.json, { error: { code: -32600, message: /at most 100/ } })
    const withInit = await raw(server, { headers: jsonHeaders(token), payload: [{ jsonrpc: '2.0', id: 1, method: 'initialize', params: INITIALIZE }, { jsonrpc: '2.0', id: 2, method: 'ping' }] })
    t.equal(withInit.status, 400)
    t.match(withInit.json, { error: { message: /Only one initialization request/ } })
    const oneBad = await raw(server, { headers: jsonHeaders(token), payload: [{ jsonrpc: '2.0', id: 1, method: 'ping' }, { nope: true }] })
    t.equal(oneBad.status, 400, 'a batch with an invalid member')
  })

  t.test('notifications and responses only: 202 with no body', async (t) => {
    const one = await raw(server, { headers: jsonHeaders(token), payload: { jsonrpc: '2.0', method: 'notifications/initialized' } })
    t.equal(one.status, 202)
    t.equal(one.body, '')
    const several = await raw(server, {
      headers: jsonHeaders(token),
      payload: [{ jsonrpc: '2.0', method: 'notifications/initialized' }, { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 1 } }]
    })
    t.equal(several.status, 202)
    const response = await raw(server, { headers: jsonHeaders(token), payload: { jsonrpc: '2.0', id: 5, result: {} } })
    t.equal(response.status, 202, 'a JSON-RPC response from the client')
  })

  t.test('GET and DELETE are 405 with Allow (stateless server)', async (t) => {
    for (const method of ['GET', 'DELETE']) {
      const response = await raw(server, { method, headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' } })
      t.equal(response.status, 405, method)
      t.match(response.headers.allow, /POST/)
      t.match(response.json, { error: { message: /Method not allowed/ } })
    }
  })

  t.test('an unsupported MCP-Protocol-Version is 400; supported ones pass', async (t) => {
    const bad = await rpc(server, token, 'ping', {}, { 'mcp-protocol-version': '1999-01-01' })
    t.equal(bad.status, 400)
    t.match(bad.body, { error: { message: /Unsupported protocol version: 1999-01-01/ } })
    for (const version of ['2025-03-26', '2025-06-18', '2025-11-25']) {
      t.equal((await rpc(server, token, 'ping', {}, { 'mcp-protocol-version': version })).status, 200, version)
    }
  })

  t.test('after all that, the server still serves', async (t) => {
    const response = await rpc(server, token, 'tools/call', { name: 'whoami', arguments: {} })
    t.equal(response.status, 200)
    const health = await server.app.inject({ method: 'GET', url: '/healthz' })
    t.equal(health.statusCode, 200)
  })
})

t.test('tokens never reach the log', async (t) => {
  const server = await startTestServer(t, { logLevel: 'trace' })
  const token = await principalWithToken(server, 'alice')
  await rpc(server, token, 'tools/call', { name: 'whoami', arguments: {} })
  await rpc(server, 'bus_api_' + 'Z'.repeat(43), 'tools/list')
  await raw(server, { headers: { ...jsonHeaders(token), 'content-type': 'text/plain' }, payload: 'x' })
  t.ok(server.logs.length > 0, 'something was logged')
  const all = server.logs.join('\n')
  t.notOk(all.includes(token), 'not the good token')
  t.notOk(all.includes('Z'.repeat(43)), 'not the bad token')
  t.notOk(all.includes(token.slice('bus_api_'.length, 'bus_api_'.length + 20)), 'not even a part of it')
})
