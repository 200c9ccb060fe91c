import t, { type Test } from 'tap'
import { hashSecret } from '../../src/lib/secrets.ts'
import {
  basicAuth, createTestDatabase, obtainCode, obtainTokens, postForm, query, registerClient, serverFactory, sql, whoami
} from '../helpers/oauth-inject.ts'
import { principalWithToken, rpc, type TestServer } from '../helpers/server.ts'

/**
 * OAuth access tokens on /mcp (RFC 6750, RFC 8707 audience, MCP authorization): everything that
 * must make a token stop working does so at once; everything that is not an access token of
 * this server is refused; revocation (RFC 7009) of what is not yours changes nothing.
 */

const startTestServer = serverFactory(await createTestDatabase(t))

async function assertRefused (t: Test, server: TestServer, token: string, what: string): Promise<void> {
  const result = await whoami(server, token)
  t.equal(result.status, 401, `${what}: 401`)
  t.match(result.wwwAuthenticate, /^Bearer /, `${what}: a Bearer challenge`)
  t.match(result.wwwAuthenticate, /error="invalid_token"/, `${what}: invalid_token`)
  t.match(result.wwwAuthenticate, /resource_metadata="http:\/\/localhost:8088\/\.well-known\/oauth-protected-resource\/mcp"/, `${what}: resource_metadata`)
}

t.test('wrong audience and expiry: 401 invalid_token', async (t) => {
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 'b-audience', RATE_LIMIT_MULTIPLIER: '0' } })
  await principalWithToken(server, 'b-audience')
  const client = await registerClient(server)

  const foreign = await obtainTokens(server, client)
  await query(server, sql`update oauth_tokens set resource = 'https://other.example/mcp' where token_hash = ${hashSecret(foreign.access_token)}`)
  await assertRefused(t, server, foreign.access_token, 'a token for another resource')
  for (const resource of ['http://localhost:8088', 'http://localhost:8088/', 'http://localhost:8088/mcp/', 'http://localhost:8088/mcp-other']) {
    const tokens = await obtainTokens(server, client)
    await query(server, sql`update oauth_tokens set resource = ${resource} where token_hash = ${hashSecret(tokens.access_token)}`)
    await assertRefused(t, server, tokens.access_token, `a token whose stored audience is ${resource}`)
  }

  const expired = await obtainTokens(server, client)
  await query(server, sql`update oauth_tokens set expires_at = now() - interval '1 second' where token_hash = ${hashSecret(expired.access_token)}`)
  await assertRefused(t, server, expired.access_token, 'an expired access token')

  // A token already in use (cached) that is then found expired by the cache's own clock.
  const inUse = await obtainTokens(server, client)
  t.equal((await whoami(server, inUse.access_token)).status, 200, 'in use')
  await query(server, sql`update oauth_tokens set expires_at = now() - interval '1 second' where token_hash = ${hashSecret(inUse.access_token)}`)
  server.runtime.authenticator.invalidate()
  await assertRefused(t, server, inUse.access_token, 'expired after use (once the cache is cleared)')
})

t.test('revocation (RFC 7009): at once on /mcp; refresh token revocation takes the grant along', async (t) => {
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 'b-revoke', RATE_LIMIT_MULTIPLIER: '0' } })
  await principalWithToken(server, 'b-revoke')
  const client = await registerClient(server)
  const revoke = async (token: string, extra: Record<string, string> = {}) =>
    await postForm(server, { token, client_id: client.clientId, ...extra }, { path: '/oauth/revoke' })

  const access = await obtainTokens(server, client)
  t.equal((await whoami(server, access.access_token)).status, 200, 'in use (and cached)')
  const revoked = await revoke(access.access_token)
  t.equal(revoked.status, 200)
  t.equal(revoked.headers['cache-control'], 'no-store')
  await assertRefused(t, server, access.access_token, 'revoked access token, the very next request')
  const refreshed = await postForm(server, { grant_type: 'refresh_token', refresh_token: access.refresh_token, client_id: client.clientId })
  t.equal(refreshed.status, 200, 'revoking an access token leaves its refresh token')
  t.equal((await whoami(server, refreshed.body.access_token)).status, 200)

  const family = await obtainTokens(server, client)
  t.equal((await whoami(server, family.access_token)).status, 200)
  t.equal((await revoke(family.refresh_token as string, { token_type_hint: 'access_token' })).status, 200, 'a wrong hint does not matter (§2.1)')
  await assertRefused(t, server, family.access_token, 'access token of a revoked refresh token\'s grant')
  const dead = await postForm(server, { grant_type: 'refresh_token', refresh_token: family.refresh_token, client_id: client.clientId })
  t.equal(dead.body.error, 'invalid_grant', 'the refresh token is revoked')

  // Client authentication is required for revocation (§2.1).
  const confidential = await registerClient(server, { token_endpoint_auth_method: 'client_secret_basic' })
  const mine = await obtainTokens(server, confidential)
  const noSecret = await postForm(server, { token: mine.access_token, client_id: confidential.clientId }, { path: '/oauth/revoke' })
  t.equal(noSecret.status, 401, 'a confidential client must authenticate')
  t.equal(noSecret.body.error, 'invalid_client')
  t.equal((await whoami(server, mine.access_token)).status, 200, 'so nothing was revoked')
  const withBasic = await postForm(server, { token: mine.access_token }, { path: '/oauth/revoke', headers: { authorization: basicAuth(confidential.clientId, confidential.clientSecret as string) } })
  t.equal(withBasic.status, 200)
  await assertRefused(t, server, mine.access_token, 'revoked with Basic authentication')
  const missing = await postForm(server, { client_id: client.clientId }, { path: '/oauth/revoke' })
  t.equal(missing.status, 400)
  t.equal(missing.body.error, 'invalid_request', 'no token parameter')
})

t.test('revoking an unknown token or another client\'s token: 200, no effect', async (t) => {
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 'b-other', RATE_LIMIT_MULTIPLIER: '0' } })
  const apiToken = await principalWithToken(server, 'b-other')
  const owner = await registerClient(server)
  const stranger = await registerClient(server)
  const tokens = await obtainTokens(server, owner)
  const byStranger = async (token: string) => await postForm(server, { token, client_id: stranger.clientId }, { path: '/oauth/revoke' })
  for (const [what, token] of [
    ['an unknown access token', 'bus_at_unknown'],
    ['an unknown refresh token', 'bus_rt_unknown'],
    ['random text', 'not-a-token'],
    ['another client\'s access token', tokens.access_token],
    ['another client\'s refresh token', tokens.refresh_token as string],
    ['an API token', apiToken]
  ] as const) {
    const response = await byStranger(token)
    t.equal(response.status, 200, `${what}: 200 (RFC 7009 §2.2)`)
  }
  t.equal((await whoami(server, tokens.access_token)).status, 200, 'the owner\'s access token still works')
  t.equal((await whoami(server, apiToken)).status, 200, 'the API token still works')
  const refreshed = await postForm(server, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id: owner.clientId })
  t.equal(refreshed.status, 200, 'the owner\'s refresh token still works')
})

t.test('refresh tokens, codes, client secrets and look-alikes are not bearer credentials', async (t) => {
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 'b-kinds', RATE_LIMIT_MULTIPLIER: '0' } })
  await principalWithToken(server, 'b-kinds')
  const client = await registerClient(server, { token_endpoint_auth_method: 'client_secret_post' })
  const tokens = await obtainTokens(server, client)
  const { code } = await obtainCode(server, client)
  await assertRefused(t, server, tokens.refresh_token as string, 'a refresh token')
  await assertRefused(t, server, code, 'an authorization code')
  await assertRefused(t, server, client.clientSecret as string, 'a client secret')
  await assertRefused(t, server, tokens.access_token.slice(0, -1), 'a truncated access token')
  await assertRefused(t, server, `${tokens.access_token}x`, 'an access token with a character added')
  await assertRefused(t, server, tokens.access_token.replace('bus_at_', 'bus_api_'), 'an access token dressed as an API token')
  await assertRefused(t, server, tokens.access_token.replace('bus_at_', ''), 'an access token without its prefix')
  // The refresh token shown as a bearer was not spent.
  const refreshed = await postForm(server, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id: client.clientId, client_secret: client.clientSecret })
  t.equal(refreshed.status, 200, 'the refresh token still refreshes')

  // Only the Authorization header carries tokens (no query string), and any scheme letter case works.
  const inQuery = await server.app.inject({
    method: 'POST',
    url: `/mcp?access_token=${refreshed.body.access_token}`,
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    payload: { jsonrpc: '2.0', id: 1, method: 'tools/list', params: {} }
  })
  t.equal(inQuery.statusCode, 401, 'a token in the query string is not read')
  t.notMatch(String(inQuery.headers['www-authenticate']), /error=/, 'treated as no credentials (RFC 6750 §3.1)')
  const lower = await rpc(server, undefined, 'tools/list', {}, { authorization: `bearer ${refreshed.body.access_token}` })
  t.equal(lower.status, 200, 'scheme "bearer" in lower case')
})

t.test('disabled principal, grant revoked by the admin, deleted client: 401 at once', async (t) => {
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 'b-admin', RATE_LIMIT_MULTIPLIER: '0' } })
  const apiToken = await principalWithToken(server, 'b-admin')
  const client = await registerClient(server)

  const byGrant = await obtainTokens(server, client)
  const other = await obtainTokens(server, client)
  t.equal((await whoami(server, byGrant.access_token)).status, 200, 'in use')
  const grants = JSON.parse((await server.admin.inject({ method: 'GET', url: `/grants?client=${encodeURIComponent(client.clientId)}` })).body).grants as Array<{ id: number }>
  const [row] = await query<{ id: number }>(server, sql`select grant_id as id from oauth_tokens where token_hash = ${hashSecret(byGrant.access_token)}`)
  const grantId = Number(row?.id)
  t.ok(grants.some((g) => g.id === grantId), 'the grant is listed')
  const revoked = await server.admin.inject({ method: 'POST', url: `/grants/${grantId}/revoke` })
  t.equal(revoked.statusCode, 200, revoked.body)
  await assertRefused(t, server, byGrant.access_token, 'grant revoked by the admin')
  const refresh = await postForm(server, { grant_type: 'refresh_token', refresh_token: byGrant.refresh_token, client_id: client.clientId })
  t.equal(refresh.body.error, 'invalid_grant', 'its refresh token too')
  t.equal((await whoami(server, other.access_token)).status, 200, 'another grant of the same client is untouched')

  t.equal((await whoami(server, apiToken)).me.auth, 'api_token', 'the API token works alongside OAuth tokens')
  const disabled = await server.admin.inject({ method: 'POST', url: '/principals/b-admin/disable' })
  t.equal(disabled.statusCode, 200)
  await assertRefused(t, server, other.access_token, 'principal disabled: OAuth token')
  await assertRefused(t, server, apiToken, 'principal disabled: API token')
  const noRefresh = await postForm(server, { grant_type: 'refresh_token', refresh_token: other.refresh_token, client_id: client.clientId })
  t.equal(noRefresh.body.error, 'invalid_grant', 'principal disabled: no refresh')
  await server.admin.inject({ method: 'POST', url: '/principals/b-admin/enable' })
  t.equal((await whoami(server, other.access_token)).status, 200, 're-enabled: the token works again (it was never revoked)')

  t.equal((await server.admin.inject({ method: 'DELETE', url: `/clients/${client.clientId}` })).statusCode, 200)
  await assertRefused(t, server, other.access_token, 'client deleted')
})

t.test('API tokens and OAuth tokens side by side; scopes enforced for both', async (t) => {
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 'b-both', RATE_LIMIT_MULTIPLIER: '0' } })
  const apiToken = await principalWithToken(server, 'b-both')
  const client = await registerClient(server)
  const readOnly = await obtainTokens(server, client, { scope: 'bus:read' })
  const full = await obtainTokens(server, client)

  const viaApi = await whoami(server, apiToken)
  t.equal(viaApi.me.auth, 'api_token')
  t.equal(viaApi.me.principal, 'b-both')
  const viaOauth = await whoami(server, full.access_token)
  t.equal(viaOauth.me.auth, 'oauth')
  t.equal(viaOauth.me.principal, 'b-both')
  t.equal(viaOauth.me.client_id, client.clientId)

  const sent = await rpc(server, full.access_token, 'tools/call', { name: 'bus_send', arguments: { channel: 'mixed', body: 'from oauth' } })
  t.equal(sent.status, 200)
  const read = await rpc(server, apiToken, 'tools/call', { name: 'bus_read', arguments: { channel: 'mixed' } })
  t.equal(read.body.result.structuredContent.messages[0].body, 'from oauth', 'both kinds see the same bus')

  const denied = await rpc(server, readOnly.access_token, 'tools/call', { name: 'bus_send', arguments: { channel: 'mixed', body: 'nope' } })
  t.equal(denied.status, 403, 'a bus:read token cannot send')
  t.match(denied.headers['www-authenticate'], /error="insufficient_scope"/)
  t.match(denied.headers['www-authenticate'], /scope="bus:write"/)
  t.match(denied.headers['www-authenticate'], /resource_metadata="/)
})
