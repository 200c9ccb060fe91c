import t from 'tap'
import { authorizationParams, authorize, encodeParams, locationOf, postForm, registerClient } from '../helpers/oauth-inject.ts'
import { principalWithToken, rpc, startTestServer, type TestServer } from '../helpers/server.ts'

/**
 * LOG_LEVEL=info on the whole server (issue 13, point 8): every request is exactly one log
 * line, on both listeners and on every kind of route, and the line never carries a secret.
 */

interface Line { level: number, msg: string, listener?: string, req?: { method: string, url: string }, res?: { statusCode: number }, responseTime?: number, rpc?: { method: string, tool?: string } }

/** Runs `request` and returns the log lines it produced (there must be exactly one). */
async function linesOf (server: TestServer, request: () => Promise<unknown>): Promise<Line[]> {
  const before = server.logs.length
  await request()
  return server.logs.slice(before).map((line) => JSON.parse(line) as Line)
}

t.test('one line per request at info, on every route and both listeners', async (t) => {
  const server = await startTestServer(t, { logLevel: 'info', env: { AUTO_APPROVE_PRINCIPAL: 'brain' } })
  const token = await principalWithToken(server, 'alice')
  await principalWithToken(server, 'brain')
  const secrets = [token]
  const mcp = (body: Record<string, unknown>, bearer: string | null = token) => async () => await server.app.inject({
    method: 'POST',
    url: '/mcp',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...(bearer !== null ? { authorization: `Bearer ${bearer}` } : {}) },
    payload: body
  })

  const cases: Array<{ what: string, request: () => Promise<unknown>, msg: RegExp, fields?: Partial<Line> }> = [
    { what: 'GET /', request: async () => await server.app.inject({ method: 'GET', url: '/' }), msg: /^GET \/ 200 \d+\.\dms$/ },
    { what: 'HEAD /healthz', request: async () => await server.app.inject({ method: 'HEAD', url: '/healthz' }), msg: /^HEAD \/healthz 200 / },
    { what: 'GET /readyz', request: async () => await server.app.inject({ method: 'GET', url: '/readyz' }), msg: /^GET \/readyz 200 / },
    { what: 'a 404', request: async () => await server.app.inject({ method: 'GET', url: '/nope?token=SECRET-IN-QUERY-1' }), msg: /^GET \/nope\?token=\[redacted\] 404 / },
    { what: 'PRM', request: async () => await server.app.inject({ method: 'GET', url: '/.well-known/oauth-protected-resource/mcp' }), msg: /^GET \/\.well-known\/oauth-protected-resource\/mcp 200 / },
    { what: 'CORS preflight of /mcp', request: async () => await server.app.inject({ method: 'OPTIONS', url: '/mcp', headers: { origin: 'https://claude.ai', 'access-control-request-method': 'POST' } }), msg: /^OPTIONS \/mcp 204 / },
    { what: '/mcp without credentials', request: mcp({ jsonrpc: '2.0', id: 1, method: 'initialize', params: {} }, null), msg: /^POST \/mcp 401 \d+\.\dms$/ },
    { what: '/mcp with a bad token', request: mcp({ jsonrpc: '2.0', id: 1, method: 'tools/list' }, 'bus_api_not-a-real-token-at-all-000000000000'), msg: /^POST \/mcp 401 / },
    { what: 'tools/call whoami (the direct path)', request: mcp({ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'whoami', arguments: {} } }), msg: /^POST \/mcp 200 \d+\.\dms tools\/call whoami$/, fields: { rpc: { method: 'tools/call', tool: 'whoami' } } },
    { what: 'tools/call bus_send', request: mcp({ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'bus_send', arguments: { channel: 'ops', text: 'PRIVATE-MESSAGE-BODY' } } }), msg: /tools\/call bus_send$/ },
    { what: 'tools/list (through the SDK)', request: mcp({ jsonrpc: '2.0', id: 4, method: 'tools/list' }), msg: /^POST \/mcp 200 \d+\.\dms tools\/list$/ },
    { what: 'initialize (through the SDK)', request: mcp({ jsonrpc: '2.0', id: 5, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'x', version: '1' } } }), msg: /initialize$/ },
    { what: 'a JSON-RPC error', request: mcp({ jsonrpc: '2.0', id: 6, method: 'no/such/method' }), msg: /no\/such\/method$/ },
    { what: 'GET /mcp (405)', request: async () => await server.app.inject({ method: 'GET', url: '/mcp', headers: { authorization: `Bearer ${token}` } }), msg: /^GET \/mcp 405 / },
    { what: 'admin: GET /principals', request: async () => await server.admin.inject({ method: 'GET', url: '/principals' }), msg: /^GET \/principals 200 /, fields: { listener: 'admin' } },
    { what: 'admin: a 404', request: async () => await server.admin.inject({ method: 'GET', url: '/nope' }), msg: /^GET \/nope 404 /, fields: { listener: 'admin' } }
  ]
  for (const c of cases) {
    const lines = await linesOf(server, c.request)
    t.equal(lines.length, 1, `${c.what}: one line`, { lines })
    t.match(lines[0], { level: 30, msg: c.msg, ...c.fields }, c.what)
    t.type(lines[0]?.responseTime, 'number')
  }

  // OAuth: registration, an authorization approved at once (code and state in the redirect),
  // code redemption and a bad token request: one line each, with no secret in them.
  const registration = await linesOf(server, async () => await registerClient(server))
  t.equal(registration.length, 1, 'registration: one line')
  const client = await registerClient(server, { token_endpoint_auth_method: 'client_secret_post' })
  secrets.push(client.clientSecret ?? '')
  const { params, verifier } = authorizationParams(server, client, { state: 'SECRET-STATE-VALUE-1' })
  let code = ''
  const authorization = await linesOf(server, async () => {
    const response = await authorize(server, params)
    code = locationOf(response)?.searchParams.get('code') ?? ''
  })
  t.ok(code.length > 20, 'a code was issued')
  secrets.push(code, verifier)
  t.equal(authorization.length, 1, 'authorize: one line')
  t.match(authorization[0]?.msg, /^GET \/oauth\/authorize\?.*state=\[redacted\].* 302 /)
  let tokens: { access_token?: string, refresh_token?: string } = {}
  const redemption = await linesOf(server, async () => {
    const response = await postForm(server, { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: client.redirectUri, client_id: client.clientId, client_secret: client.clientSecret, resource: server.config.resourceUrl })
    tokens = response.body
  })
  secrets.push(tokens.access_token ?? 'missing', tokens.refresh_token ?? 'missing')
  t.equal(redemption.length, 1, 'token: one line')
  t.match(redemption[0]?.msg, /^POST \/oauth\/token 200 /)
  const wrong = await linesOf(server, async () => await server.app.inject({ method: 'POST', url: `/oauth/token?${encodeParams({ code: 'SECRET-CODE-IN-QUERY', client_secret: 'SECRET-IN-QUERY-2' })}`, headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'grant_type=authorization_code' }))
  t.equal(wrong.length, 1)
  t.match(wrong[0]?.msg, /^POST \/oauth\/token\?code=\[redacted\]&client_secret=\[redacted\] 4\d\d /)
  const oauthWhoami = await linesOf(server, mcp({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'whoami' } }, tokens.access_token ?? 'missing'))
  t.match(oauthWhoami, [{ msg: /^POST \/mcp 200 .* tools\/call whoami$/ }], 'an OAuth access token: one line')

  const all = server.logs.join('\n')
  for (const secret of [...secrets, 'SECRET-IN-QUERY-1', 'SECRET-IN-QUERY-2', 'SECRET-CODE-IN-QUERY', 'SECRET-STATE-VALUE-1', 'PRIVATE-MESSAGE-BODY']) {
    t.notOk(secret !== '' && all.includes(secret), `${secret.slice(0, 12)}… is in no log line`)
  }
  t.notMatch(all, /authorization|bearer/i, 'no header value is logged')
})

t.test('LOG_LEVEL=warn: requests log nothing', async (t) => {
  const server = await startTestServer(t, { logLevel: 'warn' })
  const token = await principalWithToken(server, 'alice')
  await rpc(server, token, 'tools/call', { name: 'whoami', arguments: {} })
  await server.app.inject({ method: 'GET', url: '/' })
  await server.admin.inject({ method: 'GET', url: '/principals' })
  t.same(server.logs, [])
})

t.test('LOG_LEVEL=debug: the start of each request as well, at debug', async (t) => {
  const server = await startTestServer(t, { logLevel: 'debug' })
  const lines = await linesOf(server, async () => await server.app.inject({ method: 'GET', url: '/healthz?code=SECRET-CODE-DEBUG' }))
  t.same(lines.map((l) => [l.level, l.msg.replace(/\d+\.\dms/, 'Nms')]), [
    [20, 'incoming request: GET /healthz?code=[redacted]'],
    [30, 'GET /healthz?code=[redacted] 200 Nms']
  ])
  t.notMatch(server.logs.join('\n'), /SECRET-CODE-DEBUG/)
})
