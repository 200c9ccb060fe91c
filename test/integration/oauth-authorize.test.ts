import type { LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import {
  authorizationParams, authorize, createTestDatabase, encodeParams, locationOf, obtainTokens, postForm, query, registerClient,
  serverFactory, sql, whoami, type Params, type RegisteredTestClient
} from '../helpers/oauth-inject.ts'
import { parseConsentPage } from '../helpers/oauth.ts'
import { principalWithToken, type TestServer } from '../helpers/server.ts'

/**
 * The authorization endpoint (RFC 6749 §4.1, OAuth 2.1, RFC 7636, RFC 8252, RFC 8707, RFC 9207):
 * which errors are shown on a page and which go back to the client, with their exact codes;
 * loopback redirect matching; the consent page's protections and approval paths.
 */

const startTestServer = serverFactory(await createTestDatabase(t))

/** Shown to the user: a 400-range HTML page, never a redirect. */
function assertShown (t: Test, response: LightMyRequestResponse, status: number, what: string): void {
  t.equal(response.statusCode, status, `${what}: HTTP ${status}`)
  t.notOk(response.headers.location, `${what}: no Location (never redirected)`)
  t.match(response.headers['content-type'], /^text\/html/, `${what}: an HTML page`)
  t.equal(response.headers['cache-control'], 'no-store', `${what}: no-store`)
}

/** Sent back to the client: a 302 to the redirect URI with error, error_description, state and iss. */
function assertRedirectedError (t: Test, server: TestServer, response: LightMyRequestResponse, redirectUri: string, error: string, what: string, state: string | null = 'state-123'): URL | undefined {
  t.equal(response.statusCode, 302, `${what}: redirected (${response.statusCode} ${response.statusCode === 302 ? '' : response.body.slice(0, 200)})`)
  const location = locationOf(response)
  if (location === undefined) return undefined
  t.equal(`${location.origin}${location.pathname}`, redirectUri.replace(/\?.*$/, ''), `${what}: to the client's redirect URI`)
  t.equal(location.searchParams.get('error'), error, `${what}: error=${error}`)
  t.ok(location.searchParams.get('error_description'), `${what}: error_description`)
  t.equal(location.searchParams.get('state'), state, `${what}: state`)
  t.equal(location.searchParams.get('iss'), server.config.publicUrl, `${what}: iss (RFC 9207)`)
  t.notOk(location.searchParams.get('code'), `${what}: no code`)
  return location
}

async function codesOf (server: TestServer, clientId: string): Promise<number> {
  const [row] = await query<{ n: number }>(server, sql`
    select count(*)::int as n from oauth_codes c join oauth_grants g on g.id = c.grant_id join oauth_clients k on k.id = g.client_id
    where k.client_id = ${clientId}`)
  return Number(row?.n ?? 0)
}

t.test('errors before the client and redirect URI are verified are shown, never redirected', async (t) => {
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 'a-shown', RATE_LIMIT_MULTIPLIER: '0' } })
  await principalWithToken(server, 'a-shown')
  const client = await registerClient(server, { redirect_uris: ['https://app.example.com/cb', 'https://app.example.com/other'] })
  const good = authorizationParams(server, client).params

  assertShown(t, await authorize(server, { ...good, client_id: 'client_doesnotexist' }), 400, 'unknown client_id')
  assertShown(t, await authorize(server, { ...good, client_id: undefined }), 400, 'missing client_id')
  assertShown(t, await authorize(server, { ...good, redirect_uri: 'https://evil.example.com/cb' }), 400, 'unregistered redirect_uri')
  assertShown(t, await authorize(server, { ...good, redirect_uri: 'https://app.example.com/cb/' }), 400, 'redirect_uri with an extra slash')
  assertShown(t, await authorize(server, { ...good, redirect_uri: 'https://APP.example.com/cb' }), 400, 'redirect_uri in another letter case')
  assertShown(t, await authorize(server, { ...good, redirect_uri: 'https://app.example.com/cb?x=1' }), 400, 'redirect_uri with an added query')
  assertShown(t, await authorize(server, { ...good, redirect_uri: undefined }), 400, 'redirect_uri omitted with several registered')
  assertShown(t, await authorize(server, { ...good, client_id: [client.clientId, client.clientId] }), 400, 'client_id sent twice')
  assertShown(t, await authorize(server, { ...good, redirect_uri: [client.redirectUri, client.redirectUri] }), 400, 'redirect_uri sent twice')
  // Everything else wrong as well: the client is still unverified, so still a page.
  assertShown(t, await authorize(server, { client_id: 'client_nope', redirect_uri: 'https://evil.example.com/cb', response_type: 'token' }), 400, 'unknown client with bad parameters')
  t.equal(await codesOf(server, client.clientId), 0, 'no code was issued')

  // redirect_uri may be omitted when exactly one (non-loopback) URI is registered (RFC 6749 §3.1.2.3).
  const single = await registerClient(server, { redirect_uris: ['https://single.example.com/cb'] })
  const omitted = await authorize(server, authorizationParams(server, single, { redirect_uri: undefined }).params)
  t.equal(omitted.statusCode, 302, 'redirect_uri omitted with one registered')
  t.equal(locationOf(omitted)?.origin + (locationOf(omitted)?.pathname ?? ''), 'https://single.example.com/cb')
  t.ok(locationOf(omitted)?.searchParams.get('code'), 'approved with the registered URI')
  // A single loopback URI cannot be defaulted: its port is the client's choice.
  const loopback = await registerClient(server, { redirect_uris: ['http://localhost/callback'] })
  assertShown(t, await authorize(server, authorizationParams(server, loopback, { redirect_uri: undefined }).params), 400, 'redirect_uri omitted, the one registered is loopback')
})

t.test('errors after verification go back to the client with error, error_description, state and iss', async (t) => {
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 'a-redirect', RATE_LIMIT_MULTIPLIER: '0' } })
  await principalWithToken(server, 'a-redirect')
  const client = await registerClient(server, { redirect_uris: ['https://app.example.com/cb'] })
  const uri = client.redirectUri
  const good = authorizationParams(server, client).params
  const cases: Array<[string, Params, string, (string | null)?]> = [
    ['missing response_type', { response_type: undefined }, 'invalid_request'],
    ['response_type=token', { response_type: 'token' }, 'unsupported_response_type'],
    ['response_type=code id_token', { response_type: 'code id_token' }, 'unsupported_response_type'],
    ['missing code_challenge', { code_challenge: undefined }, 'invalid_request'],
    ['missing code_challenge and method', { code_challenge: undefined, code_challenge_method: undefined }, 'invalid_request'],
    ['code_challenge_method=plain', { code_challenge_method: 'plain' }, 'invalid_request'],
    ['code_challenge_method=plain with a verifier-shaped challenge', { code_challenge_method: 'plain', code_challenge: 'a'.repeat(43) }, 'invalid_request'],
    ['missing code_challenge_method (plain by default)', { code_challenge_method: undefined }, 'invalid_request'],
    ['code_challenge_method=s256 (case matters)', { code_challenge_method: 's256' }, 'invalid_request'],
    ['malformed code_challenge (too short)', { code_challenge: 'abc' }, 'invalid_request'],
    ['malformed code_challenge (too long)', { code_challenge: 'a'.repeat(44) }, 'invalid_request'],
    ['malformed code_challenge (padding)', { code_challenge: `${'a'.repeat(42)}=` }, 'invalid_request'],
    ['malformed code_challenge (not base64url)', { code_challenge: `${'a'.repeat(42)}+` }, 'invalid_request'],
    ['state sent twice', { state: ['one', 'two'] }, 'invalid_request', null],
    ['scope sent twice', { scope: ['bus:read', 'bus:write'] }, 'invalid_request'],
    ['code_challenge sent twice', { code_challenge: [good.code_challenge as string, good.code_challenge as string] }, 'invalid_request'],
    ['resource of another server', { resource: 'https://other.example.com/mcp' }, 'invalid_target'],
    ['resource on another path', { resource: `${server.config.publicUrl}/other` }, 'invalid_target'],
    ['resource with a path prefix trick', { resource: `${server.config.publicUrl}/mcp-other` }, 'invalid_target'],
    ['resource on another port', { resource: 'http://localhost:9999/mcp' }, 'invalid_target'],
    ['resource with https instead of http', { resource: 'https://localhost:8088/mcp' }, 'invalid_target'],
    ['resource with a fragment', { resource: `${server.config.resourceUrl}#x` }, 'invalid_target'],
    ['resource with a query', { resource: `${server.config.resourceUrl}?x=1` }, 'invalid_target'],
    ['resource not a URL', { resource: 'mcp' }, 'invalid_target'],
    ['unknown scope', { scope: 'bus:read bus:admin' }, 'invalid_scope'],
    ['only unknown scopes', { scope: 'openid profile' }, 'invalid_scope']
  ]
  for (const [name, overrides, error, state] of cases) {
    const response = await authorize(server, { ...good, ...overrides })
    assertRedirectedError(t, server, response, uri, error, name, state === undefined ? 'state-123' : state)
  }
  // Without state, the error comes back without one (never an invented value).
  const noState = await authorize(server, { ...good, state: undefined, response_type: 'token' })
  t.equal(locationOf(noState)?.searchParams.has('state'), false, 'no state sent: none returned')
  t.equal(locationOf(noState)?.searchParams.get('iss'), server.config.publicUrl)
  // The registered URI's own query survives; the response parameters are added to it.
  const withQuery = await registerClient(server, { redirect_uris: ['https://app.example.com/cb?tenant=7'] })
  const queried = await authorize(server, authorizationParams(server, withQuery, { response_type: 'token' }).params)
  t.equal(locationOf(queried)?.searchParams.get('tenant'), '7', 'the redirect URI\'s query is kept')
  t.equal(locationOf(queried)?.searchParams.get('error'), 'unsupported_response_type')
  t.equal(await codesOf(server, client.clientId), 0, 'no code was issued for any of them')

  // POST (RFC 6749 §3.1) behaves like GET.
  const posted = await server.app.inject({
    method: 'POST',
    url: '/oauth/authorize',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    payload: encodeParams({ ...good, code_challenge_method: 'plain' })
  })
  assertRedirectedError(t, server, posted, uri, 'invalid_request', 'POST with plain')
  const postedGood = await server.app.inject({
    method: 'POST', url: '/oauth/authorize', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: encodeParams(good)
  })
  t.equal(postedGood.statusCode, 302)
  t.ok(locationOf(postedGood)?.searchParams.get('code'), 'POST approves like GET')
})

t.test('resource variants clients send are accepted and bound to the canonical resource', async (t) => {
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 'a-resource', RATE_LIMIT_MULTIPLIER: '0' } })
  await principalWithToken(server, 'a-resource')
  const client = await registerClient(server)
  const variants = [
    'http://localhost:8088/mcp',
    'http://localhost:8088/mcp/',
    'http://localhost:8088',
    'http://localhost:8088/',
    'http://LOCALHOST:8088/mcp',
    'HTTP://localhost:8088/mcp',
    'http://localhost:8088/MCP'.replace('MCP', 'mcp'),
    undefined
  ]
  for (const resource of variants) {
    const tokens = await obtainTokens(server, client, { resource })
    const me = await whoami(server, tokens.access_token)
    t.equal(me.status, 200, `resource ${String(resource)}: the token works on /mcp`)
  }
  const [row] = await query<{ resources: string[] }>(server, sql`
    select array_agg(distinct g.resource) as resources from oauth_grants g join oauth_clients c on c.id = g.client_id where c.client_id = ${client.clientId}`)
  t.same(row?.resources, ['http://localhost:8088/mcp'], 'every grant is bound to PUBLIC_URL/mcp')
})

t.test('scopes: unknown refused, offline_access tolerated, narrowed to the client and the principal', async (t) => {
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 'a-reader', RATE_LIMIT_MULTIPLIER: '0' } })
  await principalWithToken(server, 'a-reader', 'bus:read')
  const client = await registerClient(server)
  const cases: Array<[string | undefined, string]> = [
    [undefined, 'bus:read'],
    ['bus:read bus:write', 'bus:read'],
    ['bus:read', 'bus:read'],
    ['offline_access', 'bus:read'],
    ['bus:read offline_access', 'bus:read'],
    [' offline_access', 'bus:read'],
    ['bus:read  bus:read', 'bus:read']
  ]
  for (const [scope, granted] of cases) {
    const tokens = await obtainTokens(server, client, { scope })
    t.equal(tokens.scope, granted, `scope ${JSON.stringify(scope)} → ${granted} (narrowed to the principal)`)
  }
  // The principal holds none of what was asked: access_denied, back to the client.
  const writeOnly = await authorize(server, authorizationParams(server, client, { scope: 'bus:write' }).params)
  assertRedirectedError(t, server, writeOnly, client.redirectUri, 'access_denied', 'principal holds none of the scopes')

  // A client registered for bus:read is narrowed to it, and refused what it may not hold.
  const readClient = await registerClient(server, { scope: 'bus:read' })
  const narrowed = await obtainTokens(server, readClient, { scope: 'bus:read bus:write' })
  t.equal(narrowed.scope, 'bus:read', 'narrowed to the client\'s registered scope')
  const beyond = await authorize(server, authorizationParams(server, readClient, { scope: 'bus:write' }).params)
  assertRedirectedError(t, server, beyond, readClient.redirectUri, 'invalid_scope', 'only a scope the client may not hold')
})

t.test('RFC 8252 loopback redirect URIs: any port, everything else exact', async (t) => {
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 'a-loopback', RATE_LIMIT_MULTIPLIER: '0' } })
  await principalWithToken(server, 'a-loopback')
  const portless = await registerClient(server, { redirect_uris: ['http://localhost/callback'] })
  const vscode = await registerClient(server, { redirect_uris: ['http://127.0.0.1:33418/'] })
  const ipv6 = await registerClient(server, { redirect_uris: ['http://[::1]/cb'] })
  const https = await registerClient(server, { redirect_uris: ['https://app.example.com/cb', 'https://app.example.com:8443/cb2'] })
  const withQuery = await registerClient(server, { redirect_uris: ['http://localhost/callback?app=1'] })

  const accepted: Array<[RegisteredTestClient, string]> = [
    [portless, 'http://localhost/callback'],
    [portless, 'http://localhost:1/callback'],
    [portless, 'http://localhost:41234/callback'],
    [portless, 'http://localhost:65535/callback'],
    [vscode, 'http://127.0.0.1:33418/'],
    [vscode, 'http://127.0.0.1:50123/'],
    [vscode, 'http://127.0.0.1/'],
    [ipv6, 'http://[::1]:8123/cb'],
    [https, 'https://app.example.com/cb'],
    [https, 'https://app.example.com:8443/cb2'],
    [withQuery, 'http://localhost:5000/callback?app=1']
  ]
  for (const [client, redirectUri] of accepted) {
    const response = await authorize(server, authorizationParams(server, { ...client, redirectUri }).params)
    t.equal(response.statusCode, 302, `${redirectUri} matches ${client === portless ? 'http://localhost/callback' : 'its registration'}`)
    const location = locationOf(response)
    t.equal(location === undefined ? undefined : `${location.protocol}//${location.host}${location.pathname}`, redirectUri.replace(/\?.*$/, ''), `${redirectUri}: redirected to exactly the requested URI (port included)`)
    t.ok(location?.searchParams.get('code'), `${redirectUri}: a code`)
  }

  const refused: Array<[RegisteredTestClient, string, string]> = [
    [portless, 'http://127.0.0.1:41234/callback', 'localhost ≠ 127.0.0.1'],
    [portless, 'http://[::1]:41234/callback', 'localhost ≠ [::1]'],
    [vscode, 'http://localhost:50123/', '127.0.0.1 ≠ localhost'],
    [portless, 'http://localhost:41234/callback2', 'another path'],
    [portless, 'http://localhost:41234/callback/', 'a trailing slash'],
    [portless, 'http://localhost:41234/Callback', 'path letter case'],
    [portless, 'http://localhost:41234/callback?x=1', 'an added query'],
    [withQuery, 'http://localhost:5000/callback?app=2', 'another query'],
    [withQuery, 'http://localhost:5000/callback', 'a missing query'],
    [portless, 'https://localhost:41234/callback', 'https instead of http'],
    [portless, 'http://localhost.evil.example.com:41234/callback', 'a host that starts like localhost'],
    [portless, 'http://localhost:41234@evil.example.com/callback', 'userinfo trick'],
    [portless, 'http://localhost:99999/callback', 'a port out of range'],
    [portless, 'http://localhost:/callback', 'an empty port'],
    [vscode, 'http://127.0.0.2:50123/', 'another address in 127/8'],
    [https, 'https://app.example.com:8443/cb', 'a non-loopback port that was not registered'],
    [https, 'https://app.example.com:443/cb', 'the default port written out'],
    [https, 'https://app.example.com/cb2', 'the registered path without its registered port'],
    [https, 'http://app.example.com/cb', 'http for an https registration']
  ]
  for (const [client, redirectUri, why] of refused) {
    const response = await authorize(server, authorizationParams(server, { ...client, redirectUri }).params)
    assertShown(t, response, 400, `${redirectUri} (${why})`)
  }
})

/** GET the consent page; returns the form's transaction and action and the CSRF cookie. */
async function openConsent (t: Test, server: TestServer, client: RegisteredTestClient, overrides: Params = {}) {
  const { params, verifier } = authorizationParams(server, client, overrides)
  const page = await authorize(server, params)
  t.equal(page.statusCode, 200, 'the consent page')
  const { transaction, action } = parseConsentPage(page.body)
  const setCookie = page.headers['set-cookie']
  const cookie = ((Array.isArray(setCookie) ? setCookie[0] : setCookie) ?? '').split(';')[0] ?? ''
  return { page, transaction, action, cookie, verifier }
}

async function submitConsent (server: TestServer, action: string, form: Params, cookie: string | undefined): Promise<LightMyRequestResponse> {
  return await server.app.inject({
    method: 'POST',
    url: action,
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...(cookie !== undefined ? { cookie } : {}) },
    payload: encodeParams(form)
  })
}

t.test('consent page: headers, CSRF cookie, wrong credentials, login codes, disabled principals', async (t) => {
  const server = await startTestServer(t, { env: { RATE_LIMIT_MULTIPLIER: '0' } })
  const aliceToken = await principalWithToken(server, 'c-alice')
  const client = await registerClient(server, { client_name: 'Consent <b>App</b>', redirect_uris: ['https://app.example.com/cb'] })

  await t.test('the page: no-store, not frameable, client name escaped, redirect host shown', async (t) => {
    const { page, cookie } = await openConsent(t, server, client)
    t.equal(page.headers['cache-control'], 'no-store')
    t.equal(page.headers['x-frame-options'], 'DENY')
    t.match(page.headers['content-security-policy'], /frame-ancestors 'none'/)
    t.match(page.headers['content-type'], /^text\/html/)
    t.match(page.body, 'Consent &lt;b&gt;App&lt;/b&gt;')
    t.notMatch(page.body, '<b>App</b>')
    t.match(page.body, 'app.example.com')
    t.match(String(page.headers['set-cookie']), /HttpOnly/)
    t.match(String(page.headers['set-cookie']), /SameSite=Strict/)
    t.ok(cookie.includes('='), 'a CSRF cookie is set')
  })

  await t.test('POST without the cookie: 403 page, nothing issued, the page stays usable', async (t) => {
    const { transaction, action, cookie } = await openConsent(t, server, client)
    const forged = await submitConsent(server, action, { transaction, action: 'approve', credential: aliceToken }, undefined)
    assertShown(t, forged, 403, 'no cookie')
    t.match(forged.headers['x-frame-options'], 'DENY')
    t.equal(await codesOf(server, client.clientId), 0, 'no code issued')
    const wrongCookie = await submitConsent(server, action, { transaction, action: 'approve', credential: aliceToken }, `${cookie.split('=')[0] ?? ''}=not-the-right-value`)
    assertShown(t, wrongCookie, 403, 'wrong cookie value')
    const otherPage = await openConsent(t, server, client)
    const crossed = await submitConsent(server, action, { transaction, action: 'approve', credential: aliceToken }, otherPage.cookie)
    assertShown(t, crossed, 403, 'the cookie of another consent page')
    t.equal(await codesOf(server, client.clientId), 0, 'still no code')
    // The genuine browser (with its cookie) can still approve.
    const real = await submitConsent(server, action, { transaction, action: 'approve', credential: aliceToken }, cookie)
    t.equal(real.statusCode, 303, 'approved with the right cookie')
    t.ok(locationOf(real)?.searchParams.get('code'))
    // Replaying the same submission: the transaction is spent.
    const replay = await submitConsent(server, action, { transaction, action: 'approve', credential: aliceToken }, cookie)
    assertShown(t, replay, 400, 'replayed form')
    t.equal(await codesOf(server, client.clientId), 1, 'exactly one code')
  })

  await t.test('an unknown or forged transaction is refused', async (t) => {
    const { action, cookie } = await openConsent(t, server, client)
    assertShown(t, await submitConsent(server, action, { transaction: 'forged-transaction', action: 'approve', credential: aliceToken }, cookie), 400, 'forged transaction')
    assertShown(t, await submitConsent(server, action, { transaction: ['a', 'b'], action: 'approve', credential: aliceToken }, cookie), 400, 'transaction sent twice')
  })

  await t.test('deny: access_denied back to the client, with state and iss', async (t) => {
    const { transaction, action, cookie } = await openConsent(t, server, client)
    const denied = await submitConsent(server, action, { transaction, action: 'deny' }, cookie)
    t.equal(denied.statusCode, 303)
    const location = locationOf(denied)
    t.equal(location?.searchParams.get('error'), 'access_denied')
    t.equal(location?.searchParams.get('state'), 'state-123')
    t.equal(location?.searchParams.get('iss'), server.config.publicUrl)
  })

  await t.test('five wrong credentials: access_denied redirect, and the page is spent', async (t) => {
    const before = await codesOf(server, client.clientId)
    const { transaction, action, cookie } = await openConsent(t, server, client)
    for (let attempt = 1; attempt <= 4; attempt++) {
      const wrong = await submitConsent(server, action, { transaction, action: 'approve', credential: `bus_api_wrong${attempt}` }, cookie)
      t.equal(wrong.statusCode, 401, `attempt ${attempt}: the page again, with an error`)
      t.match(wrong.body, `attempt ${attempt} of 5`)
      t.notOk(wrong.headers.location)
    }
    const fifth = await submitConsent(server, action, { transaction, action: 'approve', credential: 'bus_api_wrong5' }, cookie)
    t.equal(fifth.statusCode, 303, 'the fifth wrong credential ends it')
    t.equal(locationOf(fifth)?.searchParams.get('error'), 'access_denied')
    t.equal(locationOf(fifth)?.searchParams.get('state'), 'state-123')
    t.equal(locationOf(fifth)?.searchParams.get('iss'), server.config.publicUrl)
    const afterwards = await submitConsent(server, action, { transaction, action: 'approve', credential: aliceToken }, cookie)
    assertShown(t, afterwards, 400, 'even the right credential after that')
    t.equal(await codesOf(server, client.clientId), before, 'no code')
  })

  await t.test('a login code works once', async (t) => {
    const issued = await server.admin.inject({ method: 'POST', url: '/login-codes', payload: { principal: 'c-alice' } })
    t.equal(issued.statusCode, 201)
    const loginCode = JSON.parse(issued.body).code as string
    const first = await openConsent(t, server, client)
    const approved = await submitConsent(server, first.action, { transaction: first.transaction, action: 'approve', credential: loginCode }, first.cookie)
    t.equal(approved.statusCode, 303)
    const code = locationOf(approved)?.searchParams.get('code') as string
    t.ok(code, 'approved with the login code')
    const tokens = await postForm(server, { grant_type: 'authorization_code', code, code_verifier: first.verifier, redirect_uri: client.redirectUri, client_id: client.clientId })
    t.equal((await whoami(server, tokens.body.access_token)).me.principal, 'c-alice', 'as the principal the code names')
    const second = await openConsent(t, server, client)
    const reused = await submitConsent(server, second.action, { transaction: second.transaction, action: 'approve', credential: loginCode }, second.cookie)
    t.equal(reused.statusCode, 401, 'the same login code again is refused')
    t.notOk(reused.headers.location)
  })

  await t.test('a disabled principal\'s API token is refused', async (t) => {
    const bobToken = await principalWithToken(server, 'c-bob')
    const disabled = await server.admin.inject({ method: 'POST', url: '/principals/c-bob/disable' })
    t.equal(disabled.statusCode, 200)
    const before = await codesOf(server, client.clientId)
    const { transaction, action, cookie } = await openConsent(t, server, client)
    const refused = await submitConsent(server, action, { transaction, action: 'approve', credential: bobToken }, cookie)
    t.equal(refused.statusCode, 401, 'refused like a wrong credential')
    t.notOk(refused.headers.location)
    t.equal(await codesOf(server, client.clientId), before, 'no code')
    // Other secrets are not credentials either.
    for (const credential of ['bus_rt_x', 'bus_at_x', 'bus_cs_x', 'bus_ac_x', '']) {
      const response = await submitConsent(server, action, { transaction, action: 'approve', credential }, cookie)
      if (response.statusCode === 303) break
      t.equal(response.statusCode, 401, `credential ${JSON.stringify(credential)} refused`)
    }
  })
})

t.test('approval without a page: pre-registered client bound to a principal, AUTO_APPROVE_PRINCIPAL', async (t) => {
  const server = await startTestServer(t, { env: { RATE_LIMIT_MULTIPLIER: '0' } })
  await principalWithToken(server, 'p-agent', 'bus:read')
  const created = await server.admin.inject({
    method: 'POST', url: '/clients', payload: { name: 'Bound app', redirect_uris: ['https://bound.example.com/cb'], principal: 'p-agent' }
  })
  t.equal(created.statusCode, 201, created.body)
  const bound = { clientId: JSON.parse(created.body).client_id as string, clientSecret: undefined, redirectUri: 'https://bound.example.com/cb' }
  const tokens = await obtainTokens(server, bound)
  t.equal(tokens.scope, 'bus:read', 'approved at once, narrowed to the principal')
  t.equal((await whoami(server, tokens.access_token)).me.principal, 'p-agent')

  // Unbound pre-registered and dynamic clients get the consent page when AUTO_APPROVE_PRINCIPAL is unset.
  const unboundCreated = await server.admin.inject({ method: 'POST', url: '/clients', payload: { name: 'Unbound app', redirect_uris: ['https://unbound.example.com/cb'] } })
  const unbound = { clientId: JSON.parse(unboundCreated.body).client_id as string, redirectUri: 'https://unbound.example.com/cb' }
  t.equal((await authorize(server, authorizationParams(server, unbound).params)).statusCode, 200, 'unbound pre-registered: consent page')
  const dynamic = await registerClient(server)
  t.equal((await authorize(server, authorizationParams(server, dynamic).params)).statusCode, 200, 'dynamic: consent page')

  // The bound principal disabled: the client and redirect URI are verified, so access_denied goes back to it (RFC 6749 §4.1.2.1).
  await server.admin.inject({ method: 'POST', url: '/principals/p-agent/disable' })
  const refused = await authorize(server, authorizationParams(server, bound).params)
  assertRedirectedError(t, server, refused, bound.redirectUri, 'access_denied', 'disabled bound principal')
  t.equal(await codesOf(server, bound.clientId), 1, 'no new code')
})

t.test('AUTO_APPROVE_PRINCIPAL disabled: access_denied back to the client, no code', async (t) => {
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 'p-off', RATE_LIMIT_MULTIPLIER: '0' } })
  await principalWithToken(server, 'p-off')
  await server.admin.inject({ method: 'POST', url: '/principals/p-off/disable' })
  const client = await registerClient(server)
  const response = await authorize(server, authorizationParams(server, client).params)
  assertRedirectedError(t, server, response, client.redirectUri, 'access_denied', 'disabled auto-approve principal')
  t.equal(await codesOf(server, client.clientId), 0)
})

t.test('AUTO_APPROVE_PRINCIPAL naming a principal that does not exist: an error, no code', async (t) => {
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 'nobody-by-this-name', RATE_LIMIT_MULTIPLIER: '0' } })
  const client = await registerClient(server)
  const response = await authorize(server, authorizationParams(server, client).params)
  t.ok(response.statusCode >= 400, `an error (${response.statusCode})`)
  t.notOk(locationOf(response)?.searchParams.get('code'), 'no code')
  t.match(response.body, 'nobody-by-this-name')
  t.equal(await codesOf(server, client.clientId), 0)
})

t.test('the authorization endpoint is rate limited per address', async (t) => {
  const server = await startTestServer(t, { env: { RATE_LIMIT_MULTIPLIER: '0.02' } })
  const client = await registerClient(server)
  const params = authorizationParams(server, client).params
  t.equal((await authorize(server, params)).statusCode, 200)
  t.equal((await authorize(server, params)).statusCode, 200)
  const limited = await authorize(server, params)
  t.equal(limited.statusCode, 429, 'the third of two allowed')
  t.ok(limited.headers['retry-after'])
  t.match(limited.headers['content-type'], /^text\/html/, 'a page for the person in the browser')
})
