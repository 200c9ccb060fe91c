import t from 'tap'
import { createTestDatabase, encodeParams, obtainTokens, postForm, register, registerClient, serverFactory, whoami } from '../helpers/oauth-inject.ts'
import { principalWithToken, type TestServer } from '../helpers/server.ts'

/**
 * Discovery (RFC 8414, RFC 9728) and the HTTP edges of the OAuth endpoints: CORS for browser
 * clients, the 2025-03-26 fallback paths, trailing slashes. client-interop.md §4 items 2–5, 11,
 * 19–22.
 */

const startTestServer = serverFactory(await createTestDatabase(t))

const AS_PATHS = ['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration']
const PRM_PATHS = ['/.well-known/oauth-protected-resource/mcp', '/.well-known/oauth-protected-resource']

async function getJson (server: TestServer, url: string) {
  const response = await server.app.inject({ method: 'GET', url })
  return { status: response.statusCode, headers: response.headers, raw: response.body, body: JSON.parse(response.body) }
}

t.test('AS metadata: every field clients need, at both paths, byte-identical', async (t) => {
  const server = await startTestServer(t)
  const issuer = server.config.publicUrl
  t.equal(issuer, 'http://localhost:8088', 'the test server\'s PUBLIC_URL')
  const documents = []
  for (const path of AS_PATHS) {
    const response = await getJson(server, path)
    t.equal(response.status, 200, path)
    t.match(response.headers['content-type'], /^application\/json/, `${path}: JSON`)
    documents.push(response.raw)
    const as = response.body
    t.equal(as.issuer, issuer, `${path}: issuer is PUBLIC_URL exactly, no trailing slash`)
    t.equal(as.authorization_endpoint, `${issuer}/oauth/authorize`)
    t.equal(as.token_endpoint, `${issuer}/oauth/token`)
    t.equal(as.registration_endpoint, `${issuer}/oauth/register`)
    t.equal(as.revocation_endpoint, `${issuer}/oauth/revoke`)
    t.same(as.response_types_supported, ['code'])
    t.ok(as.grant_types_supported.includes('authorization_code'), 'authorization_code')
    t.ok(as.grant_types_supported.includes('refresh_token'), 'refresh_token')
    t.same(as.code_challenge_methods_supported, ['S256'], 'S256 only (plain is not offered)')
    t.same([...as.token_endpoint_auth_methods_supported].sort(), ['client_secret_basic', 'client_secret_post', 'none'])
    t.equal(as.client_id_metadata_document_supported, true)
    t.equal(as.authorization_response_iss_parameter_supported, true)
    t.same(as.scopes_supported, ['bus:read', 'bus:write'])
    t.notOk(as.scopes_supported.includes('offline_access'), 'offline_access is not advertised')
  }
  t.equal(documents[0], documents[1], 'the OpenID alias serves the same bytes')
})

t.test('PRM at both paths: resource is PUBLIC_URL/mcp and names the issuer byte for byte', async (t) => {
  const server = await startTestServer(t)
  const as = await getJson(server, AS_PATHS[0] as string)
  const documents = []
  for (const path of PRM_PATHS) {
    const response = await getJson(server, path)
    t.equal(response.status, 200, path)
    documents.push(response.raw)
    t.equal(response.body.resource, 'http://localhost:8088/mcp', `${path}: resource`)
    t.equal(response.body.resource, server.config.resourceUrl)
    t.same(response.body.authorization_servers, [as.body.issuer], `${path}: authorization_servers[0] === issuer`)
    // Byte-identical as the strings appear in the two documents (not just equal after parsing).
    t.ok(response.raw.includes(`"authorization_servers":[${JSON.stringify(as.body.issuer)}]`), 'same bytes in the PRM')
    t.ok(as.raw.includes(`"issuer":${JSON.stringify(as.body.issuer)}`), 'same bytes in the AS metadata')
    t.same(response.body.scopes_supported, ['bus:read', 'bus:write'])
  }
  t.equal(documents[0], documents[1])
})

t.test('PUBLIC_URL=https://bus.example.com: the documents say exactly that', async (t) => {
  const server = await startTestServer(t, { env: { PUBLIC_URL: 'https://bus.example.com' } })
  for (const path of AS_PATHS) {
    const { body } = await getJson(server, path)
    t.equal(body.issuer, 'https://bus.example.com', path)
    t.equal(body.authorization_endpoint, 'https://bus.example.com/oauth/authorize')
    t.equal(body.token_endpoint, 'https://bus.example.com/oauth/token')
    t.equal(body.registration_endpoint, 'https://bus.example.com/oauth/register')
    t.equal(body.revocation_endpoint, 'https://bus.example.com/oauth/revoke')
  }
  for (const path of PRM_PATHS) {
    const { body } = await getJson(server, path)
    t.equal(body.resource, 'https://bus.example.com/mcp', path)
    t.same(body.authorization_servers, ['https://bus.example.com'])
  }
  const unauthenticated = await server.app.inject({
    method: 'POST',
    url: '/mcp',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    payload: { jsonrpc: '2.0', id: 1, method: 'initialize', params: {} }
  })
  t.equal(unauthenticated.statusCode, 401)
  t.match(unauthenticated.headers['www-authenticate'], 'resource_metadata="https://bus.example.com/.well-known/oauth-protected-resource/mcp"')
})

t.test('CORS: * and preflights allowing MCP-Protocol-Version on the browser-facing endpoints, not on authorize', async (t) => {
  const server = await startTestServer(t)
  const origin = 'http://localhost:6274'
  const corsPaths = [...AS_PATHS, ...PRM_PATHS, '/oauth/register', '/oauth/token', '/oauth/revoke', '/register', '/token']
  for (const path of corsPaths) {
    const preflight = await server.app.inject({
      method: 'OPTIONS',
      url: path,
      headers: { origin, 'access-control-request-method': path.startsWith('/.well-known') ? 'GET' : 'POST', 'access-control-request-headers': 'mcp-protocol-version, content-type' }
    })
    t.ok(preflight.statusCode === 204 || preflight.statusCode === 200, `${path}: preflight answered (${preflight.statusCode})`)
    t.equal(preflight.headers['access-control-allow-origin'], '*', `${path}: preflight allows any origin`)
    t.match(String(preflight.headers['access-control-allow-headers']), /MCP-Protocol-Version/i, `${path}: MCP-Protocol-Version allowed`)
    t.match(String(preflight.headers['access-control-allow-headers']), /Content-Type/i, `${path}: Content-Type allowed`)
    t.notOk(preflight.headers['access-control-allow-credentials'], `${path}: never credentials`)
  }
  for (const path of [...AS_PATHS, ...PRM_PATHS]) {
    const response = await server.app.inject({ method: 'GET', url: path, headers: { origin, 'mcp-protocol-version': '2025-06-18' } })
    t.equal(response.statusCode, 200, `${path} with MCP-Protocol-Version`)
    t.equal(response.headers['access-control-allow-origin'], '*', `${path}: response readable from any origin`)
  }
  // The actual (non-preflight) POST responses carry the header too, errors included.
  const registration = await register(server, { redirect_uris: ['http://localhost:6274/oauth/callback'], token_endpoint_auth_method: 'none' }, { headers: { origin } })
  t.equal(registration.status, 201)
  t.equal(registration.headers['access-control-allow-origin'], '*', 'register response')
  const tokenError = await postForm(server, { grant_type: 'authorization_code' }, { headers: { origin } })
  t.equal(tokenError.status, 401)
  t.equal(tokenError.headers['access-control-allow-origin'], '*', 'token error response')
  t.match(String(tokenError.headers['access-control-expose-headers']), /WWW-Authenticate/i)
  const revoke = await postForm(server, { token: 'x', client_id: registration.body.client_id }, { path: '/oauth/revoke', headers: { origin } })
  t.equal(revoke.status, 200)
  t.equal(revoke.headers['access-control-allow-origin'], '*', 'revoke response')

  // The authorization endpoint is a top-level navigation, never a cross-origin fetch.
  const authorizeGet = await server.app.inject({ method: 'GET', url: `/oauth/authorize?client_id=${registration.body.client_id}`, headers: { origin } })
  t.notOk(authorizeGet.headers['access-control-allow-origin'], 'no CORS on authorize responses')
  for (const path of ['/oauth/authorize', '/authorize']) {
    const preflight = await server.app.inject({
      method: 'OPTIONS', url: path, headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' }
    })
    t.notOk(preflight.headers['access-control-allow-origin'], `${path}: no CORS preflight`)
    t.notOk(preflight.headers['access-control-allow-headers'], `${path}: no allowed headers`)
  }
})

t.test('2025-03-26 fallback paths /register, /authorize, /token complete a flow', async (t) => {
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 'brain' } })
  await principalWithToken(server, 'brain')
  const redirectUri = 'http://127.0.0.1:49152/callback'
  const registration = await register(server, { redirect_uris: [redirectUri], token_endpoint_auth_method: 'none', client_name: 'Legacy client' }, { path: '/register' })
  t.equal(registration.status, 201, '/register')
  const clientId = registration.body.client_id as string
  const { createHash, randomBytes } = await import('node:crypto')
  const verifier = randomBytes(32).toString('base64url')
  const challenge = createHash('sha256').update(verifier).digest('base64url')
  const authorization = await server.app.inject({
    method: 'GET',
    url: `/authorize?${encodeParams({ response_type: 'code', client_id: clientId, redirect_uri: redirectUri, code_challenge: challenge, code_challenge_method: 'S256', state: 's' })}`
  })
  t.equal(authorization.statusCode, 302, '/authorize')
  const location = new URL(String(authorization.headers.location))
  t.equal(location.searchParams.get('state'), 's')
  t.equal(location.searchParams.get('iss'), server.config.publicUrl)
  const code = location.searchParams.get('code') as string
  t.ok(code)
  const token = await postForm(server, { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: redirectUri, client_id: clientId }, { path: '/token' })
  t.equal(token.status, 200, '/token')
  t.equal((await whoami(server, token.body.access_token)).me.principal, 'brain')
  const revoke = await postForm(server, { token: token.body.access_token, client_id: clientId }, { path: '/revoke' })
  t.equal(revoke.status, 200, '/revoke')
  t.equal((await whoami(server, token.body.access_token)).status, 401)
})

t.test('trailing slashes on OAuth POSTs are served, never redirected', async (t) => {
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 'brain' } })
  await principalWithToken(server, 'brain')
  const registration = await register(server, { redirect_uris: ['https://claude.ai/api/mcp/auth_callback'], token_endpoint_auth_method: 'none' }, { path: '/oauth/register/' })
  t.equal(registration.status, 201, 'POST /oauth/register/ registers')
  t.notOk(registration.headers.location)
  const client = await registerClient(server)
  const tokens = await obtainTokens(server, client)
  const refreshed = await postForm(server, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id: client.clientId }, { path: '/oauth/token/' })
  t.equal(refreshed.status, 200, 'POST /oauth/token/ answers')
  t.notOk(refreshed.headers.location)
  const wellKnown = await server.app.inject({ method: 'GET', url: '/.well-known/oauth-authorization-server/' })
  t.equal(wellKnown.statusCode, 200, 'well-known with a trailing slash too')
})
