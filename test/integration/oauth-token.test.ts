import t, { type Test } from 'tap'
import { hashSecret } from '../../src/lib/secrets.ts'
import {
  basicAuth, createTestDatabase, obtainCode, obtainTokens, postForm, query, registerClient, serverFactory, sql, whoami,
  type JsonResponse, type Params, type RegisteredTestClient
} from '../helpers/oauth-inject.ts'
import { principalWithToken, type TestServer } from '../helpers/server.ts'

/**
 * The token endpoint (RFC 6749 §3.2, §4.1.3, §5, §6; RFC 7636 §4.6; RFC 8707; RFC 9700 §4.14):
 * every error with its exact code and status, code replay and refresh reuse revoking what was
 * issued, concurrent redemption, client authentication, client_credentials.
 */

const startTestServer = serverFactory(await createTestDatabase(t))

function assertError (t: Test, response: JsonResponse, status: number, error: string, what: string): void {
  t.equal(response.status, status, `${what}: HTTP ${status} (${response.raw.slice(0, 200)})`)
  t.equal(response.body?.error, error, `${what}: error=${error}`)
  t.type(response.body?.error_description, 'string', `${what}: error_description`)
  t.equal(response.headers['cache-control'], 'no-store', `${what}: no-store`)
  t.match(response.headers['content-type'], /^application\/json/, `${what}: JSON`)
}

function redeemForm (client: RegisteredTestClient, code: string, verifier: string, extra: Params = {}): Params {
  return { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: client.redirectUri, client_id: client.clientId, ...extra }
}

async function grantRevoked (server: TestServer, accessToken: string): Promise<boolean> {
  const [row] = await query<{ revoked: boolean }>(server, sql`
    select g.revoked_at is not null as revoked from oauth_tokens t join oauth_grants g on g.id = t.grant_id where t.token_hash = ${hashSecret(accessToken)}`)
  return row?.revoked === true
}

t.test('request errors: grant_type, body format, duplicated and missing parameters', async (t) => {
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 't-request', RATE_LIMIT_MULTIPLIER: '0' } })
  await principalWithToken(server, 't-request')
  const client = await registerClient(server)
  const { code, verifier } = await obtainCode(server, client)

  assertError(t, await postForm(server, { client_id: client.clientId, code }), 400, 'invalid_request', 'missing grant_type')
  for (const grantType of ['password', 'implicit', 'token', 'urn:ietf:params:oauth:grant-type:device_code', 'urn:ietf:params:oauth:grant-type:jwt-bearer', 'AUTHORIZATION_CODE']) {
    assertError(t, await postForm(server, { grant_type: grantType, client_id: client.clientId }), 400, 'unsupported_grant_type', `grant_type=${grantType}`)
  }
  const json = await server.app.inject({
    method: 'POST',
    url: '/oauth/token',
    headers: { 'content-type': 'application/json' },
    payload: JSON.stringify(redeemForm(client, code, verifier))
  })
  assertError(t, { status: json.statusCode, headers: json.headers, body: JSON.parse(json.body), raw: json.body }, 400, 'invalid_request', 'a JSON body')
  const noBody = await server.app.inject({ method: 'POST', url: '/oauth/token' })
  t.equal(noBody.statusCode, 400, 'no body')
  t.equal(JSON.parse(noBody.body).error, 'invalid_request')
  const multipart = await server.app.inject({ method: 'POST', url: '/oauth/token', headers: { 'content-type': 'multipart/form-data; boundary=x' }, payload: '--x--' })
  t.equal(multipart.statusCode, 400, 'multipart')
  t.equal(JSON.parse(multipart.body).error, 'invalid_request')

  for (const name of ['grant_type', 'code', 'code_verifier', 'redirect_uri', 'client_id', 'resource', 'some_extension']) {
    const form = redeemForm(client, code, verifier, { resource: server.config.resourceUrl, some_extension: 'x' })
    const value = form[name] as string
    assertError(t, await postForm(server, { ...form, [name]: [value, value] }), 400, 'invalid_request', `${name} sent twice`)
  }
  assertError(t, await postForm(server, redeemForm(client, code, verifier, { code: undefined })), 400, 'invalid_request', 'missing code')
  assertError(t, await postForm(server, redeemForm(client, code, verifier, { code_verifier: undefined })), 400, 'invalid_request', 'missing code_verifier')
  assertError(t, await postForm(server, { grant_type: 'refresh_token', client_id: client.clientId }), 400, 'invalid_request', 'missing refresh_token')
  assertError(t, await postForm(server, redeemForm(client, code, verifier, { code: 'x'.repeat(5000) })), 400, 'invalid_request', 'a code over 4096 characters')

  // None of the failures above spent the code.
  const redeemed = await postForm(server, redeemForm(client, code, verifier))
  t.equal(redeemed.status, 200, 'the code still works after requests that failed validation')
  t.equal(redeemed.headers['cache-control'], 'no-store', 'success is no-store too')
  t.equal(redeemed.headers.pragma, 'no-cache')
})

t.test('client authentication: invalid_client 401, Basic challenge, mixed methods', async (t) => {
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 't-auth', RATE_LIMIT_MULTIPLIER: '0' } })
  await principalWithToken(server, 't-auth')
  const pub = await registerClient(server)
  const post = await registerClient(server, { token_endpoint_auth_method: 'client_secret_post' })
  const basic = await registerClient(server, { token_endpoint_auth_method: 'client_secret_basic' })

  const unknown = await postForm(server, { grant_type: 'refresh_token', refresh_token: 'bus_rt_x', client_id: 'client_unknown' })
  assertError(t, unknown, 401, 'invalid_client', 'unknown client_id')
  t.notOk(unknown.headers['www-authenticate'], 'no Basic challenge when Basic was not tried')
  assertError(t, await postForm(server, { grant_type: 'refresh_token', refresh_token: 'bus_rt_x' }), 401, 'invalid_client', 'no client identification at all')

  const wrongBasic = await postForm(server, { grant_type: 'refresh_token', refresh_token: 'bus_rt_x' }, { headers: { authorization: basicAuth(basic.clientId, 'bus_cs_wrong') } })
  assertError(t, wrongBasic, 401, 'invalid_client', 'wrong secret via Basic')
  t.match(wrongBasic.headers['www-authenticate'], /^Basic /, 'WWW-Authenticate: Basic (RFC 6749 §5.2)')
  const unknownBasic = await postForm(server, { grant_type: 'refresh_token', refresh_token: 'bus_rt_x' }, { headers: { authorization: basicAuth('client_unknown', 'x') } })
  assertError(t, unknownBasic, 401, 'invalid_client', 'unknown client via Basic')
  t.match(unknownBasic.headers['www-authenticate'], /^Basic /)
  for (const header of ['Basic', 'Basic !!!', `Basic ${Buffer.from('no-colon').toString('base64')}`, `Basic ${Buffer.from(':secret').toString('base64')}`]) {
    const malformed = await postForm(server, { grant_type: 'refresh_token', refresh_token: 'bus_rt_x' }, { headers: { authorization: header } })
    assertError(t, malformed, 401, 'invalid_client', `malformed ${JSON.stringify(header)}`)
    t.match(malformed.headers['www-authenticate'], /^Basic /)
  }

  assertError(t, await postForm(server, { grant_type: 'refresh_token', refresh_token: 'bus_rt_x', client_secret: basic.clientSecret },
    { headers: { authorization: basicAuth(basic.clientId, basic.clientSecret as string) } }), 400, 'invalid_request', 'Basic and client_secret together')
  assertError(t, await postForm(server, { grant_type: 'refresh_token', refresh_token: 'bus_rt_x', client_id: post.clientId },
    { headers: { authorization: basicAuth(basic.clientId, basic.clientSecret as string) } }), 400, 'invalid_request', 'Basic for one client, client_id of another')

  assertError(t, await postForm(server, { grant_type: 'refresh_token', refresh_token: 'bus_rt_x', client_id: post.clientId, client_secret: 'bus_cs_wrong' }), 401, 'invalid_client', 'wrong client_secret_post')
  assertError(t, await postForm(server, { grant_type: 'refresh_token', refresh_token: 'bus_rt_x', client_id: post.clientId }), 401, 'invalid_client', 'confidential client without its secret')
  assertError(t, await postForm(server, { grant_type: 'refresh_token', refresh_token: 'bus_rt_x', client_id: post.clientId, client_secret: basic.clientSecret }), 401, 'invalid_client', 'another client\'s secret')
  assertError(t, await postForm(server, { grant_type: 'refresh_token', refresh_token: 'bus_rt_x', client_id: pub.clientId, client_secret: 'bus_cs_anything' }), 401, 'invalid_client', 'public client sending a secret')
  assertError(t, await postForm(server, { grant_type: 'refresh_token', refresh_token: 'bus_rt_x' }, { headers: { authorization: basicAuth(pub.clientId, 'bus_cs_anything') } }), 401, 'invalid_client', 'public client sending a secret via Basic')

  // The right credentials, each way.
  const viaPost = await obtainTokens(server, post)
  t.ok(viaPost.access_token, 'client_secret_post works')
  const { code, verifier } = await obtainCode(server, basic)
  const viaBasic = await postForm(server, { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: basic.redirectUri },
    { headers: { authorization: basicAuth(basic.clientId, basic.clientSecret as string) } })
  t.equal(viaBasic.status, 200, 'client_secret_basic works')
  t.equal((await whoami(server, viaBasic.body.access_token)).me.client_id, basic.clientId)
})

t.test('authorization_code errors: verifier, client, redirect_uri, expiry, resource', async (t) => {
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 't-code', RATE_LIMIT_MULTIPLIER: '0' } })
  await principalWithToken(server, 't-code')
  const client = await registerClient(server)
  const other = await registerClient(server, { redirect_uris: ['http://localhost:53682/callback'] })
  const { code, verifier } = await obtainCode(server, client)

  const wrongVerifier = 'w'.repeat(43)
  assertError(t, await postForm(server, redeemForm(client, code, wrongVerifier)), 400, 'invalid_grant', 'wrong code_verifier')
  assertError(t, await postForm(server, redeemForm(client, code, verifier.slice(0, 42))), 400, 'invalid_grant', 'verifier too short (RFC 7636 §4.1)')
  assertError(t, await postForm(server, redeemForm(client, code, `${verifier}!`)), 400, 'invalid_grant', 'verifier with a character outside the alphabet')
  assertError(t, await postForm(server, redeemForm(other, code, verifier)), 400, 'invalid_grant', 'the code of another client')
  assertError(t, await postForm(server, redeemForm(client, code, verifier, { redirect_uri: 'http://localhost:53682/other' })), 400, 'invalid_grant', 'redirect_uri mismatch')
  assertError(t, await postForm(server, redeemForm(client, code, verifier, { redirect_uri: 'http://localhost:53683/callback' })), 400, 'invalid_grant', 'redirect_uri on another loopback port than the authorization request')
  assertError(t, await postForm(server, redeemForm(client, code, verifier, { resource: 'https://other.example.com/mcp' })), 400, 'invalid_target', 'wrong resource')
  assertError(t, await postForm(server, redeemForm(client, 'bus_ac_not-a-real-code', verifier)), 400, 'invalid_grant', 'unknown code')
  assertError(t, await postForm(server, redeemForm(client, 'something-else', verifier)), 400, 'invalid_grant', 'not a code at all')
  assertError(t, await postForm(server, redeemForm(client, 'bus_rt_looks-like-a-refresh-token', verifier)), 400, 'invalid_grant', 'a refresh token as the code')
  const good = await postForm(server, redeemForm(client, code, verifier, { resource: `${server.config.resourceUrl}/` }))
  t.equal(good.status, 200, 'none of those spent it; the right request (resource with a slash) redeems it')
  t.equal(good.body.token_type, 'Bearer')
  t.equal(good.body.expires_in, 3600)
  t.match(good.body.access_token, /^bus_at_/)
  t.match(good.body.refresh_token, /^bus_rt_/)
  t.equal(good.body.scope, 'bus:read bus:write')

  // OAuth 2.1 §4.1.3: with PKCE, redirect_uri at the token endpoint may be left out.
  const second = await obtainCode(server, client)
  t.equal((await postForm(server, redeemForm(client, second.code, second.verifier, { redirect_uri: undefined }))).status, 200, 'redirect_uri omitted')

  // PKCE downgrade: the challenge itself presented as a plain verifier.
  const downgrade = await obtainCode(server, client)
  const [stored] = await query<{ challenge: string }>(server, sql`select code_challenge as challenge from oauth_codes where code_hash = ${hashSecret(downgrade.code)}`)
  assertError(t, await postForm(server, redeemForm(client, downgrade.code, stored?.challenge as string)), 400, 'invalid_grant', 'the S256 challenge sent as the verifier')
  const charset = await postForm(server, redeemForm(client, downgrade.code, downgrade.verifier), { headers: { 'content-type': 'application/x-www-form-urlencoded; charset=UTF-8' } })
  t.equal(charset.status, 200, 'a form Content-Type with a charset parameter')

  // The grant revoked (by the admin) or the principal disabled between authorize and token.
  const revokedFirst = await obtainCode(server, client)
  const [grant] = await query<{ id: number }>(server, sql`select grant_id as id from oauth_codes where code_hash = ${hashSecret(revokedFirst.code)}`)
  t.equal((await server.admin.inject({ method: 'POST', url: `/grants/${Number(grant?.id)}/revoke` })).statusCode, 200)
  assertError(t, await postForm(server, redeemForm(client, revokedFirst.code, revokedFirst.verifier)), 400, 'invalid_grant', 'a code whose grant was revoked')
  const beforeDisable = await obtainCode(server, client)
  await server.admin.inject({ method: 'POST', url: '/principals/t-code/disable' })
  assertError(t, await postForm(server, redeemForm(client, beforeDisable.code, beforeDisable.verifier)), 400, 'invalid_grant', 'a code whose principal was disabled since')
  await server.admin.inject({ method: 'POST', url: '/principals/t-code/enable' })

  // Expired: AUTH_CODE_TTL has passed.
  const expiring = await obtainCode(server, client)
  await query(server, sql`update oauth_codes set expires_at = now() - interval '1 second' where code_hash = ${hashSecret(expiring.code)}`)
  assertError(t, await postForm(server, redeemForm(client, expiring.code, expiring.verifier)), 400, 'invalid_grant', 'expired code')
})

t.test('code replay: invalid_grant, and every token issued from the code stops working', async (t) => {
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 't-replay', RATE_LIMIT_MULTIPLIER: '0' } })
  await principalWithToken(server, 't-replay')
  const client = await registerClient(server)
  const tokens = await obtainTokens(server, client)
  t.equal((await whoami(server, tokens.access_token)).status, 200, 'the access token works')
  // A refresh first: tokens issued later from the same code's grant are revoked too.
  const refreshed = await postForm(server, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id: client.clientId })
  t.equal(refreshed.status, 200)
  t.equal((await whoami(server, refreshed.body.access_token)).status, 200)

  const replay = await postForm(server, redeemForm(client, tokens.code, tokens.verifier))
  assertError(t, replay, 400, 'invalid_grant', 'the code again')
  t.ok(await grantRevoked(server, tokens.access_token), 'the grant is revoked')
  const first = await whoami(server, tokens.access_token)
  t.equal(first.status, 401, 'the first access token is refused on /mcp')
  t.match(first.wwwAuthenticate, /error="invalid_token"/)
  t.equal((await whoami(server, refreshed.body.access_token)).status, 401, 'the refreshed access token too')
  assertError(t, await postForm(server, { grant_type: 'refresh_token', refresh_token: refreshed.body.refresh_token, client_id: client.clientId }),
    400, 'invalid_grant', 'the latest refresh token too')
  // Another client replaying someone's code learns nothing and revokes nothing.
  const victim = await obtainTokens(server, client)
  const thief = await registerClient(server)
  assertError(t, await postForm(server, redeemForm(thief, victim.code, victim.verifier)), 400, 'invalid_grant', 'another client presenting a spent code')
  t.equal((await whoami(server, victim.access_token)).status, 200, 'which does not revoke the owner\'s grant')
})

t.test('refresh: rotation, reuse revokes the family, scope narrowing, resource, expiry', async (t) => {
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 't-refresh', RATE_LIMIT_MULTIPLIER: '0' } })
  await principalWithToken(server, 't-refresh')
  const client = await registerClient(server)
  const refresh = async (token: string | undefined, extra: Params = {}): Promise<JsonResponse> =>
    await postForm(server, { grant_type: 'refresh_token', refresh_token: token, client_id: client.clientId, ...extra })

  await t.test('reuse of a rotated token revokes the newer access and refresh tokens', async (t) => {
    const tokens = await obtainTokens(server, client)
    const r1 = await refresh(tokens.refresh_token)
    t.equal(r1.status, 200)
    t.not(r1.body.refresh_token, tokens.refresh_token, 'rotated')
    const r2 = await refresh(r1.body.refresh_token)
    t.equal(r2.status, 200)
    t.equal((await whoami(server, r2.body.access_token)).status, 200, 'the newest access token works')
    assertError(t, await refresh(tokens.refresh_token), 400, 'invalid_grant', 'the first refresh token again (a thief or a bug)')
    t.equal((await whoami(server, r2.body.access_token)).status, 401, 'the newest access token is revoked')
    t.equal((await whoami(server, r1.body.access_token)).status, 401, 'and the one before')
    assertError(t, await refresh(r2.body.refresh_token), 400, 'invalid_grant', 'the newest refresh token is revoked')
  })

  await t.test('scope narrowing is allowed, widening is invalid_scope', async (t) => {
    const tokens = await obtainTokens(server, client)
    assertError(t, await refresh(tokens.refresh_token, { scope: 'bus:admin' }), 400, 'invalid_scope', 'unknown scope')
    const narrowed = await refresh(tokens.refresh_token, { scope: 'bus:read' })
    t.equal(narrowed.status, 200, 'narrowed to bus:read (the failed request did not spend the token)')
    t.equal(narrowed.body.scope, 'bus:read')
    t.same((await whoami(server, narrowed.body.access_token)).me.scopes, ['bus:read'])
    assertError(t, await refresh(narrowed.body.refresh_token, { scope: 'bus:read bus:write' }), 400, 'invalid_scope', 'widening back')
    const same = await refresh(narrowed.body.refresh_token, { scope: 'bus:read offline_access' })
    t.equal(same.status, 200, 'offline_access is tolerated')
    t.equal(same.body.scope, 'bus:read')
    const kept = await refresh(same.body.refresh_token)
    t.equal(kept.body.scope, 'bus:read', 'no scope: what the refresh token had')
  })

  await t.test('resource: the canonical one and its variants, anything else invalid_target', async (t) => {
    const tokens = await obtainTokens(server, client)
    assertError(t, await refresh(tokens.refresh_token, { resource: 'https://other.example.com/mcp' }), 400, 'invalid_target', 'wrong resource on refresh')
    const ok = await refresh(tokens.refresh_token, { resource: 'http://localhost:8088/' })
    t.equal(ok.status, 200, 'origin with a slash')
    t.equal((await whoami(server, ok.body.access_token)).status, 200, 'bound to /mcp')
  })

  await t.test('refresh tokens of another client, expired, or not refresh tokens', async (t) => {
    const tokens = await obtainTokens(server, client)
    const other = await registerClient(server)
    assertError(t, await postForm(server, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id: other.clientId }), 400, 'invalid_grant', 'another client\'s refresh token')
    t.equal((await refresh(tokens.refresh_token)).status, 200, 'which did not spend or revoke it')
    assertError(t, await refresh(tokens.access_token), 400, 'invalid_grant', 'an access token as the refresh token')
    assertError(t, await refresh('bus_rt_unknown'), 400, 'invalid_grant', 'an unknown refresh token')
    const expiring = await obtainTokens(server, client)
    await query(server, sql`update oauth_tokens set expires_at = now() - interval '1 second' where token_hash = ${hashSecret(expiring.refresh_token as string)}`)
    assertError(t, await refresh(expiring.refresh_token), 400, 'invalid_grant', 'an expired refresh token')
  })
})

// Real concurrency on PostgreSQL. The embedded database runs these one transaction at a time, so
// there they cannot fail: oauth-races.test.ts forces both reads before either write on both.
t.test('races: 20 concurrent redemptions of one code, 20 concurrent refreshes of one token', async (t) => {
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 't-race', RATE_LIMIT_MULTIPLIER: '0' } })
  await principalWithToken(server, 't-race')
  const client = await registerClient(server)

  const { code, verifier } = await obtainCode(server, client)
  const redemptions = await Promise.all(Array.from({ length: 20 }, async () => await postForm(server, redeemForm(client, code, verifier))))
  const won = redemptions.filter((r) => r.status === 200)
  t.equal(won.length, 1, `exactly one redemption wins (statuses: ${redemptions.map((r) => r.status).join(' ')})`)
  t.ok(redemptions.filter((r) => r.status !== 200).every((r) => r.status === 400 && r.body.error === 'invalid_grant'), 'the others get invalid_grant')
  const [issued] = await query<{ n: number }>(server, sql`
    select count(*)::int as n from oauth_tokens t join oauth_codes c on c.grant_id = t.grant_id where c.code_hash = ${hashSecret(code)}`)
  t.equal(Number(issued?.n), 2, 'one access and one refresh token were issued, no more')

  const tokens = await obtainTokens(server, client)
  const refreshes = await Promise.all(Array.from({ length: 20 }, async () =>
    await postForm(server, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id: client.clientId })))
  const refreshed = refreshes.filter((r) => r.status === 200)
  t.equal(refreshed.length, 1, `exactly one refresh wins (statuses: ${refreshes.map((r) => r.status).join(' ')})`)
  t.ok(refreshes.filter((r) => r.status !== 200).every((r) => r.status === 400 && r.body.error === 'invalid_grant'), 'the others get invalid_grant')
  const [rotated] = await query<{ n: number }>(server, sql`
    select count(*)::int as n from oauth_tokens where grant_id = (select grant_id from oauth_tokens where token_hash = ${hashSecret(tokens.refresh_token as string)}) and kind = 'refresh'`)
  t.equal(Number(rotated?.n), 2, 'one new refresh token, no more')
})

t.test('client_credentials: pre-registered confidential clients bound to a principal only', async (t) => {
  const server = await startTestServer(t, { env: { RATE_LIMIT_MULTIPLIER: '0' } })
  await principalWithToken(server, 't-machine', 'bus:read bus:write')
  const created = await server.admin.inject({ method: 'POST', url: '/clients', payload: { name: 'Machine agent', principal: 't-machine', confidential: true } })
  t.equal(created.statusCode, 201, created.body)
  const machine = JSON.parse(created.body) as { client_id: string, client_secret: string }
  t.match(machine.client_secret, /^bus_cs_/)

  const viaPost = await postForm(server, { grant_type: 'client_credentials', client_id: machine.client_id, client_secret: machine.client_secret })
  t.equal(viaPost.status, 200, viaPost.raw)
  t.equal(viaPost.headers['cache-control'], 'no-store')
  t.notOk('refresh_token' in viaPost.body, 'no refresh token (RFC 6749 §4.4.3)')
  t.equal(viaPost.body.scope, 'bus:read bus:write')
  const me = await whoami(server, viaPost.body.access_token)
  t.equal(me.me.principal, 't-machine')
  t.equal(me.me.client_id, machine.client_id)
  const viaBasic = await postForm(server, { grant_type: 'client_credentials', scope: 'bus:read' }, { headers: { authorization: basicAuth(machine.client_id, machine.client_secret) } })
  t.equal(viaBasic.status, 200, 'Basic, narrowed scope')
  t.equal(viaBasic.body.scope, 'bus:read')
  assertError(t, await postForm(server, { grant_type: 'client_credentials', client_id: machine.client_id, client_secret: machine.client_secret, scope: 'bus:admin' }),
    400, 'invalid_scope', 'unknown scope')
  assertError(t, await postForm(server, { grant_type: 'client_credentials', client_id: machine.client_id, client_secret: 'bus_cs_wrong' }), 401, 'invalid_client', 'wrong secret')
  assertError(t, await postForm(server, { grant_type: 'client_credentials', client_id: machine.client_id, client_secret: machine.client_secret, resource: 'https://other.example.com/mcp' }),
    400, 'invalid_target', 'wrong resource')

  const dynamic = await registerClient(server, { token_endpoint_auth_method: 'client_secret_post' })
  assertError(t, await postForm(server, { grant_type: 'client_credentials', client_id: dynamic.clientId, client_secret: dynamic.clientSecret }),
    400, 'unauthorized_client', 'a dynamically registered confidential client')
  const publicDynamic = await registerClient(server)
  assertError(t, await postForm(server, { grant_type: 'client_credentials', client_id: publicDynamic.clientId }), 400, 'unauthorized_client', 'a public client')
  const unboundCreated = await server.admin.inject({ method: 'POST', url: '/clients', payload: { name: 'Unbound', redirect_uris: ['https://u.example.com/cb'], confidential: true } })
  const unbound = JSON.parse(unboundCreated.body) as { client_id: string, client_secret: string }
  assertError(t, await postForm(server, { grant_type: 'client_credentials', client_id: unbound.client_id, client_secret: unbound.client_secret }),
    400, 'unauthorized_client', 'a confidential pre-registered client bound to no principal')

  // A client_credentials-only client has no authorization_code flow, so no refresh either.
  assertError(t, await postForm(server, { grant_type: 'refresh_token', refresh_token: 'bus_rt_x', client_id: machine.client_id, client_secret: machine.client_secret }),
    400, 'unauthorized_client', 'refresh_token grant for a client_credentials-only client')
  // The principal disabled: no more tokens.
  await server.admin.inject({ method: 'POST', url: '/principals/t-machine/disable' })
  assertError(t, await postForm(server, { grant_type: 'client_credentials', client_id: machine.client_id, client_secret: machine.client_secret }),
    400, 'invalid_grant', 'principal disabled')
})

t.test('a deleted client: 401 invalid_client at the token endpoint, its tokens dead on /mcp', async (t) => {
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 't-deleted', RATE_LIMIT_MULTIPLIER: '0' } })
  await principalWithToken(server, 't-deleted')
  const client = await registerClient(server, { token_endpoint_auth_method: 'client_secret_post' })
  const tokens = await obtainTokens(server, client)
  const pending = await obtainCode(server, client)
  t.equal((await whoami(server, tokens.access_token)).status, 200)
  const removed = await server.admin.inject({ method: 'DELETE', url: `/clients/${client.clientId}` })
  t.equal(removed.statusCode, 200, removed.body)
  assertError(t, await postForm(server, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id: client.clientId, client_secret: client.clientSecret }),
    401, 'invalid_client', 'refresh by a deleted client (claude.ai then registers again)')
  assertError(t, await postForm(server, redeemForm(client, pending.code, pending.verifier, { client_secret: client.clientSecret })),
    401, 'invalid_client', 'a code of a deleted client')
  t.equal((await whoami(server, tokens.access_token)).status, 401, 'its access token is refused on /mcp')
})

t.test('the token endpoint is rate limited per address, with a JSON 429', async (t) => {
  const server = await startTestServer(t, { env: { RATE_LIMIT_MULTIPLIER: '0.04' } })
  const form = { grant_type: 'refresh_token', refresh_token: 'bus_rt_x', client_id: 'client_x' }
  t.equal((await postForm(server, form)).status, 401)
  t.equal((await postForm(server, form)).status, 401)
  const limited = await postForm(server, form)
  assertError(t, limited, 429, 'too_many_requests', 'third of two allowed')
  t.ok(limited.headers['retry-after'])
})
