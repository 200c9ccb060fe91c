import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import t from 'tap'
import { checkIdentityProviders } from '../../src/doctor/checks/identity-providers.ts'
import { parseIdpFile } from '../../src/idp/config.ts'
import { linkIdentity, listIdentities, unlinkIdentity } from '../../src/idp/identities.ts'
import { createPrincipal, issueApiToken, setPrincipalDisabled } from '../../src/principals/store.ts'
import type { Teardown } from '../helpers/database.ts'
import { epoch, makeKey, sign, startFakeProvider } from '../helpers/idp-fixtures.ts'
import { startIdentityProvider, type TestIdentityProvider } from '../helpers/identity-provider.ts'
import { rpc, startTestServer, type TestServer } from '../helpers/server.ts'

/** Writes IDP_FILE for these providers (file field names) into a fresh directory. */
function idpFile (providers: Array<Record<string, unknown>>): string {
  const dir = mkdtempSync(join(tmpdir(), 'bus-idp-'))
  const path = join(dir, 'idp.json')
  writeFileSync(path, JSON.stringify({ providers }))
  return path
}

async function whoami (server: TestServer, token: string): Promise<{ status: number, headers: Record<string, unknown>, data: any }> {
  const response = await rpc(server, token, 'tools/call', { name: 'whoami', arguments: {} })
  const text = response.body?.result?.content?.[0]?.text
  return { status: response.status, headers: response.headers, data: text === undefined ? response.body : JSON.parse(text) }
}

async function connect (t: Teardown, server: TestServer, token: string): Promise<Client> {
  const client = new Client({ name: 'idp-agent', version: '1.0.0' })
  const transport = new StreamableHTTPClientTransport(new URL(`http://127.0.0.1:${server.config.port}/mcp`), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } }
  })
  await client.connect(transport)
  t.teardown(async () => { await client.close() })
  return client
}

t.test('access tokens of an OpenID provider (oidc-provider in-process) on /mcp', async (t) => {
  const corp = await startIdentityProvider({ resource: 'unset' })
  t.teardown(corp.stop)
  const stranger = await startIdentityProvider({ resource: 'unset' })
  t.teardown(stranger.stop)
  const server = await startTestServer(t, {
    listen: true,
    logLevel: 'info',
    env: { IDP_FILE: idpFile([{ id: 'corp', issuer: corp.issuer }]) }
  })
  const resource = server.config.resourceUrl
  await createPrincipal(server.database.db, 'ci-agent', 'bus:read bus:write')
  await linkIdentity(server.database.db, { provider: 'corp', subject: 'agent', principal: 'ci-agent' }, ['corp'])

  t.test('a linked subject acts as its principal, through the MCP SDK client', async (t) => {
    const token = await corp.token(corp.clients.agent, 'bus:read bus:write', resource)
    const client = await connect(t, server, token)
    const result = await client.callTool({ name: 'whoami', arguments: {} })
    t.match(result.structuredContent, { principal: 'ci-agent', auth: 'external', provider: 'corp', client_id: 'agent', scopes: ['bus:read', 'bus:write'] })
    const sent = await client.callTool({ name: 'bus_send', arguments: { channel: 'idp', body: 'from corp' } })
    t.notOk(sent.isError, 'bus_send works with the external token')
  })

  t.test('scopes come from the token: a bus:read token is refused bus_send with 403 insufficient_scope', async (t) => {
    const token = await corp.token(corp.clients.agent, 'bus:read', resource)
    const response = await rpc(server, token, 'tools/call', { name: 'bus_send', arguments: { channel: 'idp', body: 'x' } })
    t.equal(response.status, 403)
    t.match(String(response.headers['www-authenticate']), /error="insufficient_scope"/)
  })

  t.test('an unlinked subject is a 401, and the log says what to run', async (t) => {
    const token = await corp.token(corp.clients.reader, 'bus:read', resource)
    const { status, headers } = await whoami(server, token)
    t.equal(status, 401)
    t.match(String(headers['www-authenticate']), /error="invalid_token"/)
    t.ok(server.logs.some((line) => line.includes('identity link --provider corp --subject') && line.includes('reader')), 'the log names the command')
    t.notOk(server.logs.some((line) => line.includes(token)), 'the token never appears in the log')
  })

  t.test('linking the subject makes the same token work at once', async (t) => {
    const token = await corp.token(corp.clients.reader, 'bus:read', resource)
    t.equal((await whoami(server, token)).status, 401)
    await createPrincipal(server.database.db, 'reader-bot', 'bus:read')
    await linkIdentity(server.database.db, { provider: 'corp', subject: 'reader', principal: 'reader-bot' }, ['corp'])
    server.runtime.authenticator.invalidate()
    const { status, data } = await whoami(server, token)
    t.equal(status, 200)
    t.match(data, { principal: 'reader-bot', auth: 'external', provider: 'corp' })
  })

  t.test('a token for another audience is refused', async (t) => {
    const token = await corp.token(corp.clients.agent, 'bus:read', 'https://other.example/mcp')
    t.equal((await whoami(server, token)).status, 401)
  })

  t.test('a token from an issuer not in IDP_FILE is refused without asking anyone', async (t) => {
    const token = await stranger.token(stranger.clients.agent, 'bus:read', resource)
    const before = new Map(stranger.requests)
    t.equal((await whoami(server, token)).status, 401)
    t.same(stranger.requests, before, 'the unknown issuer was not contacted')
  })

  t.test('disabling the principal ends its external tokens at once', async (t) => {
    const token = await corp.token(corp.clients.agent, 'bus:read', resource)
    t.equal((await whoami(server, token)).status, 200)
    await setPrincipalDisabled(server.database.db, 'ci-agent', true)
    t.equal((await whoami(server, token)).status, 401)
    await setPrincipalDisabled(server.database.db, 'ci-agent', false)
    t.equal((await whoami(server, token)).status, 200)
  })

  t.test('the audit log and metrics name the provider', async (t) => {
    await server.runtime.audit.flush()
    const audit = await server.admin.inject({ method: 'GET', url: '/audit?limit=50' })
    t.match(audit.body, /"auth_kind":"external:corp"/)
    const metrics = await server.admin.inject({ method: 'GET', url: '/metrics' })
    t.match(metrics.body, /bus_tool_calls_total\{[^}]*auth="external:corp"/)
  })

  t.test('/readyz says which providers have usable keys', async (t) => {
    const response = await server.app.inject({ method: 'GET', url: '/readyz' })
    t.equal(response.statusCode, 200)
    t.match(response.json(), { status: 'ready', identity_providers: { corp: /^ready/ } })
  })

  t.test('identities are listed with the provider', async (t) => {
    t.match(await listIdentities(server.database.db, 'corp'), [{ provider: 'corp', subject: 'agent', principal: 'ci-agent' }, { provider: 'corp', subject: 'reader', principal: 'reader-bot' }])
  })
})

t.test('principals: auto provisions a principal at first sight, once', async (t) => {
  const corp = await startIdentityProvider({ resource: 'unset' })
  t.teardown(corp.stop)
  const server = await startTestServer(t, {
    env: { IDP_FILE: idpFile([{ id: 'corp', issuer: corp.issuer, principals: 'auto', name_claim: 'client_id', auto_scopes: ['bus:read'] }]) }
  })
  const token = await corp.token(corp.clients.agent, 'bus:read bus:write', server.config.resourceUrl)
  const answers = await Promise.all(Array.from({ length: 5 }, async () => await whoami(server, token)))
  for (const answer of answers) t.match(answer, { status: 200, data: { principal: 'agent', auth: 'external', provider: 'corp', scopes: ['bus:read'] } })
  t.equal((await listIdentities(server.database.db, 'corp')).length, 1, 'one identity')
  const again = await corp.token(corp.clients.agent, 'bus:read', server.config.resourceUrl)
  t.match(await whoami(server, again), { status: 200, data: { principal: 'agent' } }, 'a later token maps to the same principal')
})

t.test('keys: rotation, the provider going down, and no keys at all', async (t) => {
  let corp: TestIdentityProvider = await startIdentityProvider({ resource: 'unset' })
  const server = await startTestServer(t, {
    env: { IDP_FILE: idpFile([{ id: 'corp', issuer: corp.issuer }]) },
    runtime: { external: { keys: { unknownKidCooldownMs: 0 }, cacheTtlMs: 0 } }
  })
  t.teardown(async () => { await corp.stop() })
  await createPrincipal(server.database.db, 'ci-agent', 'bus:read')
  await linkIdentity(server.database.db, { provider: 'corp', subject: 'agent', principal: 'ci-agent' }, ['corp'])
  const resource = server.config.resourceUrl

  const before = await corp.token(corp.clients.agent, 'bus:read', resource)
  t.equal((await whoami(server, before)).status, 200, 'a token signed with the first key')

  await corp.stop()
  t.equal((await whoami(server, before)).status, 200, 'the provider is down: the cached keys still verify its tokens')

  corp = await startIdentityProvider({ resource: 'unset', port: corp.port })
  const after = await corp.token(corp.clients.agent, 'bus:read', resource)
  t.equal((await whoami(server, after)).status, 200, 'restarted with a new key: the unknown kid fetches the new set')
  t.equal((await whoami(server, before)).status, 401, 'a token signed with the retired key no longer verifies')
})

t.test('a provider that is down from the start: its tokens get 503 + Retry-After, others still work', async (t) => {
  const corp = await startIdentityProvider({ resource: 'unset' })
  const token = await corp.token(corp.clients.agent, 'bus:read', 'http://localhost:8088/mcp')
  await corp.stop()
  const server = await startTestServer(t, { env: { IDP_FILE: idpFile([{ id: 'corp', issuer: corp.issuer }]) } })
  const { status, headers } = await whoami(server, token)
  t.equal(status, 503)
  t.ok(Number(headers['retry-after']) > 0, 'Retry-After is given')
  const ready = await server.app.inject({ method: 'GET', url: '/readyz' })
  t.equal(ready.statusCode, 200, 'the replica stays ready for API tokens')
  t.match(ready.json(), { identity_providers: { corp: /^no usable keys/ } })
})

t.test('opaque tokens checked by RFC 7662 introspection', async (t) => {
  const hydra = await startIdentityProvider({ resource: 'unset', format: 'opaque' })
  t.teardown(hydra.stop)
  const server = await startTestServer(t, {
    env: {
      IDP_FILE: idpFile([{
        id: 'hydra',
        issuer: hydra.issuer,
        subject_claim: 'client_id',
        introspection: { endpoint: `${hydra.issuer}/token/introspection`, client_id: hydra.clients.introspector.id, client_secret: hydra.clients.introspector.secret }
      }])
    }
  })
  await createPrincipal(server.database.db, 'svc', 'bus:read bus:write')
  await linkIdentity(server.database.db, { provider: 'hydra', subject: 'agent', principal: 'svc' }, ['hydra'])
  const resource = server.config.resourceUrl

  const token = await hydra.token(hydra.clients.agent, 'bus:read', resource)
  t.match(await whoami(server, token), { status: 200, data: { principal: 'svc', auth: 'external', provider: 'hydra', scopes: ['bus:read'] } })
  const asked = hydra.requests.get('/token/introspection') ?? 0
  t.equal((await whoami(server, token)).status, 200)
  t.equal(hydra.requests.get('/token/introspection'), asked, 'the second call is answered from the cache')

  const revoked = await hydra.token(hydra.clients.agent, 'bus:read', resource)
  const revocation = await fetch(`${hydra.issuer}/token/revocation`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`agent:${hydra.clients.agent.secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token: revoked })
  })
  t.equal(revocation.status, 200)
  t.equal((await whoami(server, revoked)).status, 401, 'a revoked token introspects inactive')

  const elsewhere = await hydra.token(hydra.clients.agent, 'bus:read', 'https://other.example/mcp')
  t.equal((await whoami(server, elsewhere)).status, 401, 'an active token for another audience is refused')
})

t.test('Cloudflare Access: the Cf-Access-Jwt-Assertion header, user and service tokens', async (t) => {
  const access = await startFakeProvider()
  t.teardown(access.close)
  const key = await makeKey('RS256', 'cf-1')
  access.jwks.keys = [key.jwk]
  const aud = '3f1c4c7e9a2b5d6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6'
  const server = await startTestServer(t, {
    env: {
      IDP_FILE: idpFile([{
        id: 'access',
        issuer: access.origin,
        jwks_uri: `${access.origin}/jwks`,
        audiences: [aud],
        token_header: 'cf-access-jwt-assertion',
        scope_claims: []
      }])
    }
  })
  await createPrincipal(server.database.db, 'alice', 'bus:read bus:write')
  await createPrincipal(server.database.db, 'nightly', 'bus:read')
  await linkIdentity(server.database.db, { provider: 'access', subject: 'b7a1c0de-0000-4000-8000-000000000001', principal: 'alice' }, ['access'])
  await linkIdentity(server.database.db, { provider: 'access', subject: '5e1b2c3d.access', principal: 'nightly' }, ['access'])
  const now = epoch()
  const user = await sign({ iss: access.origin, aud: [aud], sub: 'b7a1c0de-0000-4000-8000-000000000001', email: 'alice@example.com', type: 'app', iat: now, nbf: now, exp: now + 300 }, key)
  const service = await sign({ iss: access.origin, aud: [aud], sub: '', common_name: '5e1b2c3d.access', type: 'app', iat: now, nbf: now, exp: now + 300 }, key)
  const viaAccess = async (token: string): Promise<any> => await rpc(server, undefined, 'tools/call', { name: 'whoami', arguments: {} }, { 'cf-access-jwt-assertion': token })

  const asUser = await viaAccess(user)
  t.equal(asUser.status, 200)
  t.match(JSON.parse(asUser.body.result.content[0].text), { principal: 'alice', auth: 'external', provider: 'access', scopes: ['bus:read', 'bus:write'] }, 'a user token: its principal\'s scopes')
  const asService = await viaAccess(service)
  t.match(JSON.parse(asService.body.result.content[0].text), { principal: 'nightly', scopes: ['bus:read'] }, 'a service token is identified by common_name')

  t.equal((await whoami(server, user)).status, 401, 'the same JWT in Authorization is refused: this provider reads the Access header only')
  const otherApp = await sign({ iss: access.origin, aud: ['another-application-aud-tag'], sub: 'b7a1c0de-0000-4000-8000-000000000001', iat: now, exp: now + 300 }, key)
  t.equal((await viaAccess(otherApp)).status, 401, 'a token for another Access application is refused')
  const apiToken = await issueApiToken(server.database.db, { principal: 'nightly' })
  const both = await rpc(server, apiToken.token, 'tools/call', { name: 'whoami', arguments: {} }, { 'cf-access-jwt-assertion': user })
  t.match(JSON.parse(both.body.result.content[0].text), { principal: 'nightly', auth: 'api_token' }, 'an Authorization header wins over the Access header')
})

t.test('a forged token naming a configured issuer fails there: no fall-through, no token lookup', async (t) => {
  const corp = await startFakeProvider()
  t.teardown(corp.close)
  const key = await makeKey('ES256', 'corp-1')
  corp.jwks.keys = [key.jwk]
  const server = await startTestServer(t, { env: { IDP_FILE: idpFile([{ id: 'corp', issuer: corp.origin, advertise: true }]) } })
  await createPrincipal(server.database.db, 'ci-agent', 'bus:read')
  await linkIdentity(server.database.db, { provider: 'corp', subject: 'svc', principal: 'ci-agent' }, ['corp'])
  const now = epoch()
  const claims = { iss: corp.origin, aud: server.config.resourceUrl, sub: 'svc', scope: 'bus:read', iat: now, exp: now + 300 }
  t.equal((await whoami(server, await sign(claims, key, { typ: 'at+jwt' }))).status, 200, 'the genuine token works')

  const attacker = await makeKey('ES256', 'corp-1')
  const lookups = server.runtime.authenticator.lookups.queries
  t.equal((await whoami(server, await sign(claims, attacker, { typ: 'at+jwt' }))).status, 401, 'another key under the same kid')
  t.equal((await whoami(server, await sign(claims, attacker, { typ: 'at+jwt', jwk: attacker.jwk }))).status, 401, 'an embedded jwk header')
  t.equal((await whoami(server, await sign({ ...claims, exp: now - 3600 }, key, { typ: 'at+jwt' }))).status, 401, 'expired an hour ago')
  t.equal((await whoami(server, await sign({ ...claims, aud: 'https://other.example/mcp' }, key, { typ: 'at+jwt' }))).status, 401, 'another audience')
  t.equal((await whoami(server, await sign({ ...claims, nonce: 'n-0S6_WzA2Mj' }, key))).status, 401, 'an ID token (nonce, no typ) presented as an access token')
  t.equal(server.runtime.authenticator.lookups.queries, lookups, 'none of them was looked up as one of our own tokens')

  const prm = await server.app.inject({ method: 'GET', url: '/.well-known/oauth-protected-resource/mcp' })
  t.same(prm.json().authorization_servers, [server.config.publicUrl, corp.origin], 'advertise: the provider is listed after our own server')

  const [identity] = await listIdentities(server.database.db, 'corp')
  const token = await sign(claims, key, { typ: 'at+jwt' })
  t.equal((await whoami(server, token)).status, 200)
  const resolved = await server.runtime.external.resolve(token, 'authorization')
  const context = resolved.status === 'ok' ? resolved.context : undefined
  t.same([...(await server.runtime.authenticator.liveCredentials(context === undefined ? [] : [context])).entries()], [[`external:${identity?.id ?? 0}`, ['bus:read']]],
    'a listen stream held by the token is live while the identity is linked')
  await unlinkIdentity(server.database.db, identity?.id ?? 0)
  t.equal((await whoami(server, token)).status, 401, 'unlinking ends the identity\'s tokens at once')
  t.equal((await server.runtime.authenticator.liveCredentials(context === undefined ? [] : [context])).size, 0, '... and the listen streams they hold')
})

t.test('doctor checks each provider of IDP_FILE: discovery, keys, introspection', async (t) => {
  const corp = await startIdentityProvider({ resource: 'unset' })
  t.teardown(corp.stop)
  const providers = parseIdpFile(JSON.stringify({
    providers: [
      { id: 'corp', issuer: corp.issuer },
      { id: 'slash', issuer: `${corp.issuer}/` },
      { id: 'hmac', issuer: `${corp.issuer}/other`, jwks_uri: `${corp.issuer}/jwks`, algorithms: ['RS256'] },
      { id: 'opaque', issuer: 'http://127.0.0.1:1/opaque', introspection: { endpoint: `${corp.issuer}/token/introspection`, client_id: 'introspector', client_secret: corp.clients.introspector.secret } }
    ]
  }), { publicUrl: 'http://localhost:8088', resourceUrl: 'http://localhost:8088/mcp' })
  const results = await checkIdentityProviders(providers, 5000)
  const byName = new Map(results.map((r) => [r.name, r]))
  t.match(byName.get('idp-corp-discovery'), { status: 'pass' })
  t.match(byName.get('idp-corp-keys'), { status: 'pass', detail: /1 usable key/ })
  t.match(byName.get('idp-slash-discovery'), { status: 'fail', detail: /byte for byte/, fix: /trailing slash/ })
  t.match(byName.get('idp-hmac-keys'), { status: 'fail', detail: /EC\/ES256/, fix: /algorithms/ })
  t.match(byName.get('idp-opaque-introspection'), { status: 'pass' })
  const wrongSecret = parseIdpFile(JSON.stringify({
    providers: [{ id: 'opaque', issuer: 'http://127.0.0.1:1/opaque', introspection: { endpoint: `${corp.issuer}/token/introspection`, client_id: 'introspector', client_secret: 'not-the-secret' } }]
  }), { publicUrl: 'http://localhost:8088', resourceUrl: 'http://localhost:8088/mcp' })
  const [refused] = await checkIdentityProviders(wrongSecret, 5000)
  t.match(refused, { status: 'fail', fix: /client_id/ })
  t.notMatch(JSON.stringify(results.concat(refused ?? [])), /not-the-secret|test-idp-secret/, 'no secret in the report')
})
