import t from 'tap'
import {
  authorizationParams, authorize, createTestDatabase, locationOf, obtainTokens, postForm, register, serverFactory, whoami
} from '../helpers/oauth-inject.ts'
import { principalWithToken } from '../helpers/server.ts'

/**
 * RFC 7591 dynamic client registration, with the bodies real MCP clients send
 * (client-interop.md §2–§4) and every refusal with its exact error.
 */

const startTestServer = serverFactory(await createTestDatabase(t))

/** claude.ai's registration, byte for byte as observed (client-interop.md §2). */
const CLAUDE_AI_DCR = '{"redirect_uris":["https://claude.ai/api/mcp/auth_callback"],"token_endpoint_auth_method":"client_secret_post","grant_types":["authorization_code","refresh_token"],"response_types":["code"],"client_name":"Claude"}'

t.test('claude.ai\'s exact DCR body registers, then completes a flow with client_secret_post', async (t) => {
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 'claude-brain' } })
  await principalWithToken(server, 'claude-brain')
  const registration = await register(server, CLAUDE_AI_DCR)
  t.equal(registration.status, 201)
  t.equal(registration.headers['cache-control'], 'no-store')
  const body = registration.body
  t.match(body.client_id, /^\S+$/)
  t.equal(body.token_endpoint_auth_method, 'client_secret_post', 'echoes the method it issued')
  t.match(body.client_secret, /^bus_cs_/, 'a secret for a confidential method')
  t.equal(body.client_secret_expires_at, 0, 'the secret does not expire')
  t.type(body.client_id_issued_at, 'number')
  t.same(body.redirect_uris, ['https://claude.ai/api/mcp/auth_callback'])
  t.same(body.grant_types, ['authorization_code', 'refresh_token'])
  t.same(body.response_types, ['code'])
  t.equal(body.client_name, 'Claude')
  t.notOk('scope' in body, 'no scope was asked for, none is invented')

  // The flow: authorize (auto-approved) → token with client_secret_post → /mcp.
  const client = { clientId: body.client_id as string, clientSecret: body.client_secret as string, redirectUri: 'https://claude.ai/api/mcp/auth_callback' }
  const { params, verifier } = authorizationParams(server, client, { scope: undefined })
  const authorization = await authorize(server, params)
  t.equal(authorization.statusCode, 302)
  const location = locationOf(authorization) as URL
  t.equal(location.origin + location.pathname, 'https://claude.ai/api/mcp/auth_callback')
  t.equal(location.searchParams.get('state'), 'state-123')
  t.equal(location.searchParams.get('iss'), server.config.publicUrl)
  const code = location.searchParams.get('code') as string
  const tokens = await postForm(server, {
    grant_type: 'authorization_code',
    code,
    code_verifier: verifier,
    redirect_uri: client.redirectUri,
    client_id: client.clientId,
    client_secret: client.clientSecret,
    resource: server.config.resourceUrl
  })
  t.equal(tokens.status, 200, tokens.raw)
  t.equal(tokens.body.token_type, 'Bearer')
  t.equal(tokens.body.scope, 'bus:read bus:write', 'no scope requested: every scope the principal holds')
  t.match(tokens.body.refresh_token, /^bus_rt_/)
  const me = await whoami(server, tokens.body.access_token)
  t.equal(me.status, 200)
  t.equal(me.me.principal, 'claude-brain')
  t.equal(me.me.auth, 'oauth')
  t.equal(me.me.client_id, client.clientId)

  // Without its secret the same client is refused (401 invalid_client makes claude.ai re-register).
  const refreshWithoutSecret = await postForm(server, { grant_type: 'refresh_token', refresh_token: tokens.body.refresh_token, client_id: client.clientId })
  t.equal(refreshWithoutSecret.status, 401)
  t.equal(refreshWithoutSecret.body.error, 'invalid_client')
  const refreshed = await postForm(server, { grant_type: 'refresh_token', refresh_token: tokens.body.refresh_token, client_id: client.clientId, client_secret: client.clientSecret })
  t.equal(refreshed.status, 200, 'refresh with client_secret_post')
})

t.test('Claude Code style: public client, portless loopback redirects, scope with offline_access', async (t) => {
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 'code-brain' } })
  await principalWithToken(server, 'code-brain')
  const registration = await register(server, {
    client_name: 'Claude Code (bus)',
    redirect_uris: ['http://localhost/callback', 'http://127.0.0.1/callback'],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
    scope: 'bus:read bus:write offline_access'
  })
  t.equal(registration.status, 201, registration.raw)
  t.equal(registration.body.token_endpoint_auth_method, 'none')
  t.notOk('client_secret' in registration.body, 'a public client gets no secret')
  t.equal(registration.body.scope, 'bus:read bus:write', 'offline_access accepted (refresh tokens are always issued)')
  // Claude Code then listens on an ephemeral port and asks for offline_access again.
  const client = { clientId: registration.body.client_id as string, clientSecret: undefined, redirectUri: 'http://localhost:41234/callback' }
  const tokens = await obtainTokens(server, client, { scope: 'bus:read bus:write offline_access' })
  t.equal(tokens.scope, 'bus:read bus:write')
  t.ok(tokens.refresh_token)
  t.equal((await whoami(server, tokens.access_token)).me.principal, 'code-brain')
})

t.test('redirect URIs of ChatGPT, Cursor, VS Code and Inspector register', async (t) => {
  const server = await startTestServer(t, { env: { RATE_LIMIT_MULTIPLIER: '0' } })
  const cases: Record<string, string[]> = {
    'ChatGPT (connector platform)': ['https://chatgpt.com/connector_platform_oauth_redirect'],
    'ChatGPT (per connector)': ['https://chatgpt.com/connector/oauth/c_6f1d2a3b4c'],
    Cursor: ['cursor://anysphere.cursor-mcp/oauth/callback', 'http://localhost:3000/callback', 'https://cursor.com/oauth/callback'],
    'VS Code': ['https://vscode.dev/redirect', 'https://insiders.vscode.dev/redirect', 'http://127.0.0.1/', 'http://127.0.0.1:33418/'],
    'MCP Inspector': ['http://localhost:6274/oauth/callback', 'http://localhost:6274/oauth/callback/debug'],
    'MCP Inspector CLI': ['http://127.0.0.1:6276/oauth/callback'],
    'IPv6 loopback': ['http://[::1]:8080/cb'],
    'reverse-DNS private-use scheme': ['com.example.app:/oauth2redirect']
  }
  for (const [name, uris] of Object.entries(cases)) {
    const response = await register(server, { client_name: name, redirect_uris: uris, token_endpoint_auth_method: 'none' })
    t.equal(response.status, 201, `${name}: ${response.raw}`)
    t.same(response.body.redirect_uris, uris, `${name}: stored exactly as sent`)
  }
})

t.test('missing scope, application_type native/web, default auth method', async (t) => {
  const server = await startTestServer(t, { env: { RATE_LIMIT_MULTIPLIER: '0' } })
  const noScope = await register(server, { redirect_uris: ['https://app.example.com/cb'], token_endpoint_auth_method: 'none' })
  t.equal(noScope.status, 201)
  t.notOk('scope' in noScope.body)
  for (const applicationType of ['native', 'web']) {
    const response = await register(server, { redirect_uris: ['http://127.0.0.1/callback'], token_endpoint_auth_method: 'none', application_type: applicationType })
    t.equal(response.status, 201, `application_type ${applicationType}`)
    t.equal(response.body.application_type, applicationType, 'echoed')
  }
  const bogus = await register(server, { redirect_uris: ['http://127.0.0.1/callback'], token_endpoint_auth_method: 'none', application_type: 'desktop' })
  t.equal(bogus.status, 400)
  t.equal(bogus.body.error, 'invalid_client_metadata')
  // RFC 7591 §2: without token_endpoint_auth_method the client is client_secret_basic.
  const defaulted = await register(server, { redirect_uris: ['https://app.example.com/cb'] })
  t.equal(defaulted.status, 201)
  t.equal(defaulted.body.token_endpoint_auth_method, 'client_secret_basic')
  t.match(defaulted.body.client_secret, /^bus_cs_/)
  for (const method of ['client_secret_basic', 'client_secret_post']) {
    const response = await register(server, { redirect_uris: ['https://app.example.com/cb'], token_endpoint_auth_method: method })
    t.equal(response.body.token_endpoint_auth_method, method, `${method} echoed`)
    t.ok(response.body.client_secret, `${method} has a secret`)
  }
  const unicode = await register(server, { redirect_uris: ['https://app.example.com/cb'], token_endpoint_auth_method: 'none', client_name: 'Café ☕ 日本語 App' })
  t.equal(unicode.body.client_name, 'Café ☕ 日本語 App', 'non-ASCII names are fine')
  // Unknown metadata members are ignored (RFC 7591 §2), not refused.
  const extra = await register(server, { redirect_uris: ['https://app.example.com/cb'], token_endpoint_auth_method: 'none', software_statement_foo: 1, contacts: ['a@example.com'] })
  t.equal(extra.status, 201)
})

t.test('dangerous and non-loopback redirect URIs: invalid_redirect_uri in every variant', async (t) => {
  const server = await startTestServer(t, { env: { RATE_LIMIT_MULTIPLIER: '0' } })
  const refused = [
    'javascript:alert(1)',
    'JavaScript:alert(1)',
    'JAVASCRIPT:alert(1)',
    'javascript://example.com/%0aalert(1)',
    ' javascript:alert(1)',
    'javascript:alert(1) ',
    '\tjavascript:alert(1)',
    '\njavascript:alert(1)',
    'java\tscript:alert(1)',
    'java\nscript:alert(1)',
    'java\rscript:alert(1)',
    '\u0000javascript:alert(1)',
    'javascript\u0000:alert(1)',
    '\u00a0javascript:alert(1)',
    '\ufeffjavascript:alert(1)',
    'vbscript:msgbox(1)',
    'VBScript:msgbox(1)',
    'data:text/html,<script>alert(1)</script>',
    'DATA:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==',
    ' data:text/html,x',
    'file:///etc/passwd',
    'FILE:///etc/passwd',
    'file://localhost/etc/passwd',
    'blob:https://example.com/uuid',
    'about:blank',
    '%6Aavascript:alert(1)',
    'http://example.com/callback',
    'http://192.168.1.10/callback',
    'https://example.com/cb#fragment',
    'https://user:pass@example.com/cb',
    '/relative/callback',
    'callback',
    'https://exa mple.com/cb',
    'https://example.com\\@evil.com/cb',
    ''
  ]
  for (const uri of refused) {
    const response = await register(server, { redirect_uris: [uri], token_endpoint_auth_method: 'none' })
    t.equal(response.status, 400, `${JSON.stringify(uri)} → 400`)
    t.equal(response.body?.error, 'invalid_redirect_uri', `${JSON.stringify(uri)} → invalid_redirect_uri`)
    t.type(response.body?.error_description, 'string')
  }
  // One bad URI next to good ones refuses the registration (nothing is half-registered).
  const mixed = await register(server, { redirect_uris: ['https://good.example.com/cb', 'javascript:alert(1)'], token_endpoint_auth_method: 'none' })
  t.equal(mixed.body.error, 'invalid_redirect_uri')
  for (const value of [[], undefined, 'https://app.example.com/cb']) {
    const response = await register(server, { redirect_uris: value, token_endpoint_auth_method: 'none' })
    t.equal(response.status, 400, `redirect_uris ${JSON.stringify(value)}`)
    t.match(response.body.error, /^invalid_(redirect_uri|client_metadata)$/)
  }
  const empty = await register(server, { redirect_uris: [], token_endpoint_auth_method: 'none' })
  t.equal(empty.body.error, 'invalid_redirect_uri', 'an empty list is a redirect URI problem')
})

t.test('unsupported metadata: invalid_client_metadata', async (t) => {
  const server = await startTestServer(t, { env: { RATE_LIMIT_MULTIPLIER: '0' } })
  const base = { redirect_uris: ['https://app.example.com/cb'] }
  const cases: Array<[string, Record<string, unknown>]> = [
    ['private_key_jwt', { token_endpoint_auth_method: 'private_key_jwt' }],
    ['client_secret_jwt', { token_endpoint_auth_method: 'client_secret_jwt' }],
    ['tls_client_auth', { token_endpoint_auth_method: 'tls_client_auth' }],
    ['auth method not a string', { token_endpoint_auth_method: 42 }],
    ['implicit grant', { grant_types: ['authorization_code', 'implicit'] }],
    ['password grant', { grant_types: ['authorization_code', 'password'] }],
    ['client_credentials grant (dynamic clients cannot)', { grant_types: ['client_credentials'] }],
    ['device code grant', { grant_types: ['authorization_code', 'urn:ietf:params:oauth:grant-type:device_code'] }],
    ['refresh_token without authorization_code', { grant_types: ['refresh_token'] }],
    ['grant_types not an array', { grant_types: 'authorization_code' }],
    ['response type token', { response_types: ['token'] }],
    ['response type id_token', { response_types: ['code', 'id_token'] }],
    ['unknown scope', { scope: 'admin' }],
    ['scope not a string', { scope: ['bus:read'] }],
    ['client_name not a string', { client_name: { en: 'x' } }],
    // The consent page shows the name: it must read as what it is.
    ['client_name with a right-to-left override', { client_name: 'Claude\u202Etxt.exe' }],
    ['client_name with a bidi isolate', { client_name: 'Claude\u2067x\u2069' }],
    ['client_name with a control character', { client_name: 'Claude\u0007' }],
    ['client_name with an embedded newline', { client_name: 'Claude\nVerified by the server admin' }],
    // JSON.stringify writes a lone surrogate as "\ud800", which jsonb refuses: a 400, not a failed insert.
    ['client_name with a lone surrogate', { client_name: 'Claude\ud800' }],
    ['client_uri with a lone surrogate', { client_uri: '\ud800' }],
    ['software_version with a lone low surrogate', { software_version: '1\udc00' }]
  ]
  for (const [name, metadata] of cases) {
    const response = await register(server, { ...base, ...metadata })
    t.equal(response.status, 400, `${name} → 400`)
    t.equal(response.body?.error, 'invalid_client_metadata', `${name} → invalid_client_metadata (${response.raw})`)
  }
})

t.test('bounded sizes and counts', async (t) => {
  const server = await startTestServer(t, { env: { RATE_LIMIT_MULTIPLIER: '0' } })
  const uris = (n: number): string[] => Array.from({ length: n }, (_, i) => `https://app.example.com/cb/${i}`)
  t.equal((await register(server, { redirect_uris: uris(20), token_endpoint_auth_method: 'none' })).status, 201, '20 redirect URIs are fine')
  const tooMany = await register(server, { redirect_uris: uris(21), token_endpoint_auth_method: 'none' })
  t.equal(tooMany.status, 400, '21 redirect URIs refused')
  t.equal(tooMany.body.error, 'invalid_client_metadata')
  const manyGrants = await register(server, { redirect_uris: uris(1), grant_types: Array.from({ length: 11 }, () => 'authorization_code') })
  t.equal(manyGrants.body.error, 'invalid_client_metadata', 'grant_types array too long')
  const manyResponseTypes = await register(server, { redirect_uris: uris(1), response_types: Array.from({ length: 6 }, () => 'code') })
  t.equal(manyResponseTypes.body.error, 'invalid_client_metadata', 'response_types array too long')

  t.equal((await register(server, { redirect_uris: uris(1), client_name: 'n'.repeat(200) })).status, 201, 'a 200-character name is fine')
  const longName = await register(server, { redirect_uris: uris(1), client_name: 'n'.repeat(201) })
  t.equal(longName.body.error, 'invalid_client_metadata', 'client_name too long')
  const longUri = await register(server, { redirect_uris: [`https://app.example.com/${'a'.repeat(2000)}`] })
  t.equal(longUri.status, 400, 'a redirect URI over 2000 characters')
  t.match(longUri.body.error, /^invalid_(client_metadata|redirect_uri)$/)
  const longScope = await register(server, { redirect_uris: uris(1), scope: 'bus:read '.repeat(200) })
  t.equal(longScope.body.error, 'invalid_client_metadata', 'scope too long')
  const longUrl = await register(server, { redirect_uris: uris(1), client_uri: `https://app.example.com/${'a'.repeat(2000)}` })
  t.equal(longUrl.body.error, 'invalid_client_metadata', 'client_uri too long')

  // Over the 16 KiB registration body limit: refused before parsing, as a JSON 4xx.
  const huge = await register(server, { redirect_uris: uris(1), padding: 'x'.repeat(20_000) })
  t.ok(huge.status === 413 || huge.status === 400, `oversized body → ${huge.status}`)
  t.match(huge.headers['content-type'], /^application\/json/)
  t.equal(huge.body.error, 'invalid_client_metadata', 'RFC 7591 §3.2.2 has no invalid_request')
  t.type(huge.body.error_description, 'string')
})

t.test('bodies that are not a JSON object', async (t) => {
  const server = await startTestServer(t, { env: { RATE_LIMIT_MULTIPLIER: '0' } })
  const cases: Array<[string, string, string]> = [
    ['malformed JSON', 'application/json', '{"redirect_uris": ['],
    ['a JSON array', 'application/json', '[{"redirect_uris":["https://app.example.com/cb"]}]'],
    ['a JSON string', 'application/json', '"hello"'],
    ['JSON null', 'application/json', 'null'],
    ['a form body', 'application/x-www-form-urlencoded', 'redirect_uris=https%3A%2F%2Fapp.example.com%2Fcb'],
    ['text/plain', 'text/plain', '{"redirect_uris":["https://app.example.com/cb"]}']
  ]
  for (const [name, contentType, payload] of cases) {
    const response = await server.app.inject({ method: 'POST', url: '/oauth/register', headers: { 'content-type': contentType }, payload })
    t.equal(response.statusCode, 400, `${name} → 400`)
    t.match(response.headers['content-type'], /^application\/json/, `${name}: JSON error`)
    const body = JSON.parse(response.body)
    t.equal(body.error, 'invalid_client_metadata', `${name} → invalid_client_metadata (${response.body})`)
  }
  const noBody = await server.app.inject({ method: 'POST', url: '/oauth/register' })
  t.equal(noBody.statusCode, 400, 'no body at all')
  t.equal(JSON.parse(noBody.body).error, 'invalid_client_metadata')
})

t.test('rate limit: the 21st registration from one address within the hour is 429', async (t) => {
  const server = await startTestServer(t)
  const body = { redirect_uris: ['https://app.example.com/cb'], token_endpoint_auth_method: 'none' }
  for (let i = 1; i <= 20; i++) {
    const response = await register(server, body)
    if (response.status !== 201) t.fail(`registration ${i} → ${response.status}`)
  }
  const limited = await register(server, body)
  t.equal(limited.status, 429, 'the 21st is refused')
  t.match(limited.headers['retry-after'], /^\d+$/, 'Retry-After in seconds')
  t.ok(Number(limited.headers['retry-after']) > 0 && Number(limited.headers['retry-after']) <= 3600)
  t.match(limited.headers['content-type'], /^application\/json/)
  t.equal(limited.body.error, 'too_many_requests')
  t.type(limited.body.error_description, 'string')
  const otherAddress = await server.app.inject({
    method: 'POST', url: '/oauth/register', remoteAddress: '192.0.2.7', headers: { 'content-type': 'application/json' }, payload: body
  })
  t.equal(otherAddress.statusCode, 201, 'another address is not limited')
})

t.test('RATE_LIMIT_MULTIPLIER scales the limit (0.1 → 2 registrations)', async (t) => {
  const server = await startTestServer(t, { env: { RATE_LIMIT_MULTIPLIER: '0.1' } })
  const body = { redirect_uris: ['https://app.example.com/cb'], token_endpoint_auth_method: 'none' }
  t.equal((await register(server, body)).status, 201)
  t.equal((await register(server, body)).status, 201)
  const limited = await register(server, body)
  t.equal(limited.status, 429)
  t.ok(limited.headers['retry-after'])
  t.equal(limited.body.error, 'too_many_requests')
  t.equal(limited.headers['access-control-allow-origin'], '*', 'a browser client can read the 429')
})
