import { createServer, type IncomingMessage, type Server } from 'node:http'
import { request as httpsRequest } from 'node:https'
import dnsPromises from 'node:dns/promises'
import { syncBuiltinESMExports } from 'node:module'
import { connect as netConnect, Socket, type AddressInfo } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import fc from 'fast-check'
import type { LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import { hashSecret } from '../../src/lib/secrets.ts'
import { createLoginCode } from '../../src/oauth/consent-store.ts'
import {
  authorizationParams, authorize, basicAuth, createTestDatabase, encodeParams, locationOf, obtainCode, obtainTokens, postForm, query,
  registerClient, serverFactory, sql, whoami, type Params, type RegisteredTestClient
} from '../helpers/oauth-inject.ts'
import { parseConsentPage, pkcePair } from '../helpers/oauth.ts'
import { principalWithToken, type TestServer } from '../helpers/server.ts'
import { headerOf, replayHint, seedFor, stateDiff, stateOf } from './support.ts'

/**
 * The OAuth 2.0 Security Best Current Practice (RFC 9700) attacks, one named test per threat
 * (docs/security.md cites these names), played against the real endpoints through inject:
 *
 *   open redirect · code injection · PKCE downgrade · mix-up · CSRF on consent · clickjacking ·
 *   refresh replay · token for another audience · token confusion · SSRF via client metadata
 *   documents · registration flooding · brute force on bearer tokens · brute force on login codes
 *
 * Each attack asserts what the attacker gets (never a Location, code or token they should not
 * have) and what it costs the server (nothing stored, no connection made).
 */

const database = await createTestDatabase(t)
const startTestServer = serverFactory(database)
/**
 * Two servers serve most tests (each test uses its own principals and clients): one approving
 * dynamically registered clients at once (AUTO_APPROVE_PRINCIPAL), so an attack that worked
 * would get a code; one showing the consent page. Rate limits are off on both; the flooding and
 * brute-force tests start servers with scaled-down limits.
 */
const TC_ADMIN_TOKEN = 'tc-admin-token-0123456789abcdef'
const autoServer = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 'bcp-owner', RATE_LIMIT_MULTIPLIER: '0', ADMIN_TOKEN: TC_ADMIN_TOKEN } })
await principalWithToken(autoServer, 'bcp-owner')
const consentServer = await startTestServer(t, { env: { RATE_LIMIT_MULTIPLIER: '0' } })

const CLAUDE_CALLBACK = 'https://claude.ai/api/mcp/auth_callback'
const LOOPBACK_CALLBACK = 'http://localhost:53682/callback'

/** Shown to the person, never sent anywhere: an HTML page without Location. */
function assertShown (t: Test, response: LightMyRequestResponse, what: string, status = 400): void {
  t.equal(response.statusCode, status, `${what}: HTTP ${status} (${response.statusCode === status ? 'page' : response.headers.location ?? response.body.slice(0, 200)})`)
  t.equal(response.headers.location, undefined, `${what}: no Location`)
  t.match(response.headers['content-type'], /^text\/html/, `${what}: an HTML page`)
}

/** An authorization error sent back to the client: 302/303 to its redirect URI with error, state and iss. */
function assertErrorRedirect (t: Test, server: TestServer, response: LightMyRequestResponse, redirectUri: string, error: string, what: string): URL | undefined {
  const location = locationOf(response)
  t.ok(response.statusCode === 302 || response.statusCode === 303, `${what}: redirected (${response.statusCode})`)
  if (location === undefined) {
    t.fail(`${what}: no Location`)
    return undefined
  }
  t.equal(`${location.origin}${location.pathname}`, redirectUri, `${what}: to the registered redirect URI`)
  t.equal(location.searchParams.get('error'), error, `${what}: error=${error}`)
  t.same(location.searchParams.getAll('iss'), [server.config.publicUrl], `${what}: iss = the issuer, once`)
  t.equal(location.searchParams.get('code'), null, `${what}: no code`)
  return location
}

async function count (server: TestServer, table: 'oauth_clients' | 'oauth_grants' | 'oauth_codes' | 'oauth_tokens' | 'oauth_pending_authorizations'): Promise<number> {
  const [row] = await query<{ n: number }>(server, sql`select count(*)::int as n from ${sql.identifier(table)}`)
  return Number(row?.n ?? 0)
}

/** Opens the consent page for `client` as a browser would: the page, its transaction, form action and CSRF cookie. */
async function openConsent (t: Test, server: TestServer, client: RegisteredTestClient, overrides: Params = {}) {
  const { params, verifier } = authorizationParams(server, client, overrides)
  const page = await authorize(server, params)
  t.equal(page.statusCode, 200, `consent page (${page.statusCode} ${page.headers.location ?? ''})`)
  const { transaction, action } = parseConsentPage(page.body)
  const cookie = String(page.headers['set-cookie'] ?? '').split(';')[0] ?? ''
  return { page, transaction, action, cookie, verifier }
}

async function submitConsent (server: TestServer, action: string, form: Params, headers: Record<string, string> = {}, remoteAddress?: string): Promise<LightMyRequestResponse> {
  return await server.app.inject({
    method: 'POST',
    url: action,
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    payload: encodeParams(form),
    ...(remoteAddress !== undefined ? { remoteAddress } : {})
  })
}

async function dynamicClient (server: TestServer, redirectUri: string, name = 'BCP client'): Promise<RegisteredTestClient> {
  return await registerClient(server, { client_name: name, redirect_uris: [redirectUri] })
}

// ---------------------------------------------------------------------------------------------

t.test('open redirect: a redirect_uri the client did not register is shown an error page, never redirected to', async (t) => {
  const server = autoServer
  const web = await dynamicClient(server, CLAUDE_CALLBACK)
  const native = await dynamicClient(server, LOOPBACK_CALLBACK)
  const variants: Record<string, string[]> = {
    [CLAUDE_CALLBACK]: [
      'https://evil.example/api/mcp/auth_callback', 'https://claude.ai.evil.com/api/mcp/auth_callback', 'https://evil.com@claude.ai/api/mcp/auth_callback',
      'https://claude.ai@evil.com/api/mcp/auth_callback', 'https://claude.ai:443/api/mcp/auth_callback', 'https://claude.ai:8443/api/mcp/auth_callback',
      'http://claude.ai/api/mcp/auth_callback', 'https://CLAUDE.AI/api/mcp/auth_callback', 'https://claude.ai/API/mcp/auth_callback',
      'https://claude.ai/api/mcp/auth_callback/', 'https://claude.ai/api/mcp/auth_callback/../../../evil', 'https://claude.ai/api/mcp/auth_callback%2F..%2F..%2Fevil',
      'https://claude.ai/api/mcp/auth_callback?next=https://evil.example', 'https://claude.ai/api/mcp/auth_callback#@evil.example', 'https://claude.ai/api/mcp/auth_callbackx',
      'https://claude.ai/api/mcp/auth_callback ', 'https://claude.ai/api/mcp/auth_callback%20', 'https://claude.ai/api/mcp/auth_callback\t', 'https://claude.ai/api/mcp/auth_callback\n',
      'https://claude.ai\\.evil.com/api/mcp/auth_callback', 'https://claude.ai%2F@evil.com/api/mcp/auth_callback', '//evil.com/api/mcp/auth_callback',
      'https:evil.com/api/mcp/auth_callback', 'https://claude.ai./api/mcp/auth_callback', 'https://claude.ai/api/mcp/auth_callback;evil', 'https://clаude.ai/api/mcp/auth_callback',
      'https://xn--clude-4ve.ai/api/mcp/auth_callback', 'javascript:alert(1)//https://claude.ai/api/mcp/auth_callback', 'data:text/html,<script>alert(1)</script>',
      ' https://claude.ai/api/mcp/auth_callback', 'HTTPS://claude.ai/api/mcp/auth_callback'
    ],
    [LOOPBACK_CALLBACK]: [
      'http://127.0.0.1:53682/callback', 'http://[::1]:53682/callback', 'http://localhost.evil.com:53682/callback', 'http://localhost:53682@evil.com/callback',
      'http://evil.com#@localhost:53682/callback', 'http://evil.com?@localhost:53682/callback', 'http://localhost:53682/callback/../x', 'http://localhost:53682/callbackx',
      'http://localhost:53682/Callback', 'https://localhost:53682/callback', 'http://LOCALHOST:53682/callback', 'http://localhost:53682/callback?x=1',
      'http://localhost:53682\\@evil.com/callback', 'http://localhost:99999/callback', 'http://localhost:-1/callback', 'http://user@localhost:53682/callback',
      'http://localhost:053682/callback', 'http://localhost:53682/callback#x', 'http://localhost', 'http://localhost:53682'
    ]
  }
  const grantsBefore = await count(server, 'oauth_grants')
  for (const [client, registered] of [[web, CLAUDE_CALLBACK], [native, LOOPBACK_CALLBACK]] as const) {
    for (const [i, variant] of (variants[registered] ?? []).entries()) {
      const good = authorizationParams(server, client).params
      assertShown(t, await authorize(server, { ...good, redirect_uri: variant }), `GET ${JSON.stringify(variant)}`)
      // A request that would fail later (phase two) must not use the unverified URI for its error either.
      assertShown(t, await authorize(server, { ...good, redirect_uri: variant, response_type: 'token' }), `${JSON.stringify(variant)} with response_type=token`)
      // The fallback path and the POST form of the endpoint run the same check (a sample of the variants each).
      if (i % 4 === 0) assertShown(t, await authorize(server, { ...good, redirect_uri: variant }, { path: '/authorize' }), `GET /authorize ${JSON.stringify(variant)}`)
      if (i % 4 === 1) {
        const posted = await server.app.inject({ method: 'POST', url: '/oauth/authorize', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: encodeParams({ ...good, redirect_uri: variant }) })
        assertShown(t, posted, `POST ${JSON.stringify(variant)}`)
      }
    }
  }
  t.equal(await count(server, 'oauth_grants'), grantsBefore, 'no grant (and so no code) was made for any of them')

  // The one exemption (RFC 8252 §7.3): a loopback redirect on another port is the same native app.
  const otherPort = locationOf(await authorize(server, authorizationParams(server, native, { redirect_uri: 'http://localhost:1234/callback' }).params))
  t.equal(otherPort?.host, 'localhost:1234', 'a loopback redirect URI with another port is honoured')
  t.ok(otherPort?.searchParams.get('code'), 'with a code')
})

/**
 * Near misses of a registered redirect URI: what a prefix, case-insensitive, normalising or
 * loose (origin + path, query or port ignored) matcher would wrongly take for it.
 */
function nearMisses (registered: string): fc.Arbitrary<string> {
  const url = new URL(registered)
  const scheme = registered.slice(0, registered.indexOf(':') + 1)
  const rest = registered.slice(scheme.length)
  const hasAuthority = rest.startsWith('//')
  const authorityEnd = hasAuthority ? (rest.slice(2).search(/[/?#]/) + 1 || rest.length - 1) + 1 : 0
  const authority = hasAuthority ? rest.slice(2, authorityEnd) : ''
  const afterAuthority = hasAuthority ? rest.slice(authorityEnd) : rest
  const hostAt = (f: (host: string) => string): string => `${scheme}//${f(authority)}${afterAuthority}`
  const suffix = fc.constantFrom('x', '/', '/evil', '/../evil', '.evil.com', '@evil.com', '%2F..%2Fevil', '?next=https://evil.example', '&x=1', '#x', ';x', '/.', '%20', '.', '..', '/callback')
  const pathSegment = fc.constantFrom('evil', '..', '.', '%2e%2e', 'cb', 'a/b')
  const userinfo = fc.constantFrom('evil.com@', 'user@', 'user:pass@', `${authority}@`, '@')
  const port = fc.constantFrom('', ':443', ':80', ':8443', ':1', ':65535', ':0')
  const caseChange = fc.nat().map((n) => {
    const letters = [...registered].map((c, i) => [c, i] as const).filter(([c]) => /[a-z]/.test(c))
    const [, i] = letters[n % letters.length] ?? ['', 0]
    return registered.slice(0, i) + (registered[i] ?? '').toUpperCase() + registered.slice(i + 1)
  })
  const query = fc.constantFrom('x=1', 'redirect=https://evil.example', 'code=attacker', 'tenant=2', 'state=x')
  return fc.oneof(
    suffix.map((s) => registered + s),
    caseChange,
    fc.constant(registered.endsWith('/') ? registered.slice(0, -1) : `${registered}/`),
    fc.tuple(pathSegment).map(([segment]) => url.pathname === '/' || url.pathname === '' ? `${registered}${segment}` : registered.replace(url.pathname, `${url.pathname}/${segment}`)),
    fc.tuple(pathSegment).map(([segment]) => url.pathname.length > 1 ? registered.replace(url.pathname, `/${segment}${url.pathname}`) : `${registered}/${segment}`),
    query.map((q) => `${registered}${registered.includes('?') ? '&' : '?'}${q}`),
    query.map((q) => registered.includes('?') ? registered.replace(/\?.*$/, `?${q}`) : `${registered}?${q}`),
    fc.constant(registered.replace(/\?.*$/, '')),
    ...(hasAuthority
      ? [
          userinfo.map((u) => hostAt((host) => u + host)),
          port.map((p) => hostAt((host) => host.replace(/:\d+$/, '') + p)),
          fc.constantFrom('.evil.com', '.', 'x', '%2e').map((tail) => hostAt((host) => host.replace(/(:\d+)?$/, `${tail}$1`))),
          fc.constant(hostAt((host) => host.toUpperCase())),
          fc.constant(`${scheme === 'https:' ? 'http:' : 'https:'}${rest}`)
        ]
      : [fc.constantFrom('/', '//', 'x').map((p) => `${scheme}${p}${rest}`)])
  ).filter((uri) => uri !== registered)
}

/** What loose redirect URI matchers would say: the ones RFC 9700 §4.1.3 warns about. */
function looselyAccepted (registered: string, uri: string): boolean {
  if (uri.startsWith(registered) || registered.startsWith(uri)) return true
  if (uri.toLowerCase() === registered.toLowerCase()) return true
  let a: URL, b: URL
  try { a = new URL(uri); b = new URL(registered) } catch { return false }
  if (a.href === b.href) return true
  const pathOf = (u: URL): string => u.pathname.replace(/\/+$/, '').toLowerCase()
  return (a.protocol === b.protocol || a.hostname === b.hostname) && a.hostname.toLowerCase() === b.hostname.toLowerCase() && pathOf(a) === pathOf(b)
}

/** The exact rule (RFC 9700 §4.1.3, RFC 8252 §7.3): the same string, or for an http loopback URI the same string but for the port. */
function strictlyAllowed (registered: string, uri: string): boolean {
  if (uri === registered) return true
  const loopback = /^http:\/\/(localhost|127\.0\.0\.1|\[::1\])(?::\d{1,5})?(\/.*)?$/
  const r = loopback.exec(registered)
  const u = loopback.exec(uri)
  return r !== null && u !== null && r[1] === u[1] && (r[2] ?? '') === (u[2] ?? '')
}

t.test('open redirect: near misses of a registered redirect URI are never redirected to (property)', async (t) => {
  const server = autoServer
  const registeredUris = [CLAUDE_CALLBACK, LOOPBACK_CALLBACK, 'http://127.0.0.1/callback', 'cursor://anysphere.cursor-retrieval/oauth/user-mcp/callback', 'https://app.example.com/cb?tenant=1']
  const clients = await Promise.all(registeredUris.map(async (uri) => await dynamicClient(server, uri)))
  // Random edits too: characters and pieces inserted, deleted or replaced anywhere.
  const pieces = fc.constantFrom('/', '.', '..', '@', ':', '#', '?', '&', '=', ';', ',', '\\', '%', '%2e', '%2f', '%40', ' ', '\t', 'a', 'A', 'e', '0', '9', '-',
    '_', '~', '[', ']', 'ａ', 'ı', '//', 'evil.com', '@evil.com', '.evil.com', ':8080', 'localhost', '127.0.0.1', 'https://')
  const edit = fc.record({ op: fc.constantFrom('insert', 'delete', 'replace'), at: fc.nat(), piece: pieces })
  const edited = (registered: string): fc.Arbitrary<string> => fc.array(edit, { minLength: 1, maxLength: 3 }).map((edits) => {
    let uri = registered
    for (const { op, at, piece } of edits) {
      const i = at % (uri.length + 1)
      uri = op === 'insert' ? uri.slice(0, i) + piece + uri.slice(i) : op === 'delete' ? uri.slice(0, i) + uri.slice(i + piece.length) : uri.slice(0, i) + piece + uri.slice(i + piece.length)
    }
    return uri
  })
  const cases = fc.nat({ max: clients.length - 1 }).chain((index) => {
    const registered = (clients[index] as RegisteredTestClient).redirectUri
    return fc.tuple(fc.constant(index), fc.oneof({ weight: 4, arbitrary: nearMisses(registered) }, { weight: 1, arbitrary: edited(registered) }))
  })
  const runs = 200
  let risky = 0
  let redirects = 0
  const seed = seedFor('open redirect')
  const details = await fc.check(fc.asyncProperty(cases, async ([index, uri]) => {
    const client = clients[index] as RegisteredTestClient
    const allowed = strictlyAllowed(client.redirectUri, uri)
    if (!allowed && looselyAccepted(client.redirectUri, uri)) risky++
    const response = await authorize(server, authorizationParams(server, client, { redirect_uri: uri }).params)
    const location = headerOf(response.headers, 'location')
    if (location === undefined) {
      if (response.statusCode !== 400) throw new Error(`redirect_uri ${JSON.stringify(uri)}: HTTP ${response.statusCode} without Location`)
      return
    }
    redirects++
    if (!allowed) throw new Error(`redirect_uri ${JSON.stringify(uri)} (registered ${client.redirectUri}) was redirected to ${location}`)
    // Where it went is the requested URI itself, plus the response parameters.
    if (!location.startsWith(uri.includes('?') ? `${uri}&` : `${uri}?`)) throw new Error(`redirect_uri ${JSON.stringify(uri)} sent to ${location}`)
  }), { seed, numRuns: runs })
  t.notOk(details.failed, details.failed ? `${(details.errorInstance as Error | null)?.message ?? ''} (${replayHint('open redirect')}, path ${details.counterexamplePath ?? ''})` : `${runs} near misses and edits`)
  t.comment(`${risky} of ${runs} URIs would pass a loose matcher; ${redirects} redirected, all of them allowed (a loopback port); ${replayHint('open redirect')}`)
  // The property proves something only if it tries what a loose matcher would let through (counted over a complete run).
  if (!details.failed) t.ok(risky >= runs / 2, `at least half the generated URIs (${risky} of ${runs}) are near misses a prefix, case-insensitive or normalising matcher would accept`)
})

t.test('code injection: a code is redeemed only by the client it was issued to, with its own PKCE verifier', async (t) => {
  const server = autoServer
  const victimApp = await dynamicClient(server, 'https://victim.example/cb', 'Victim app')
  const attackerApp = await dynamicClient(server, 'https://attacker.example/cb', 'Attacker app')
  const attackerConfidential = await registerClient(server, { client_name: 'Attacker confidential', redirect_uris: ['https://attacker.example/cb'], token_endpoint_auth_method: 'client_secret_basic' })

  await t.test('a code issued to client A, redeemed by client B', async (t) => {
    const { code, verifier } = await obtainCode(server, victimApp)
    const tokensBefore = await count(server, 'oauth_tokens')
    const asPublic = await postForm(server, { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: victimApp.redirectUri, client_id: attackerApp.clientId })
    t.equal(asPublic.status, 400)
    t.equal(asPublic.body.error, 'invalid_grant', 'another public client: invalid_grant')
    const withOwnRedirect = await postForm(server, { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: attackerApp.redirectUri, client_id: attackerApp.clientId })
    t.equal(withOwnRedirect.body.error, 'invalid_grant', 'another client with its own redirect URI: invalid_grant')
    const authenticated = await postForm(server, { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: victimApp.redirectUri },
      { headers: { authorization: basicAuth(attackerConfidential.clientId, attackerConfidential.clientSecret ?? '') } })
    t.equal(authenticated.body.error, 'invalid_grant', 'an authenticated confidential client: invalid_grant')
    const claimingVictim = await postForm(server, { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: victimApp.redirectUri, client_id: victimApp.clientId },
      { headers: { authorization: basicAuth(attackerConfidential.clientId, attackerConfidential.clientSecret ?? '') } })
    t.equal(claimingVictim.status, 400, 'Basic credentials of B with client_id=A in the body are refused')
    t.equal(await count(server, 'oauth_tokens'), tokensBefore, 'no token was issued')
    const legit = await postForm(server, { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: victimApp.redirectUri, client_id: victimApp.clientId })
    t.equal(legit.status, 200, 'the attempts did not hand the code to anyone; its client still redeems it')
  })

  await t.test('the victim\'s code injected into the attacker\'s session: redeemed with another PKCE verifier', async (t) => {
    const { code } = await obtainCode(server, victimApp)
    const tokensBefore = await count(server, 'oauth_tokens')
    const attackerVerifier = pkcePair().verifier
    const injected = await postForm(server, { grant_type: 'authorization_code', code, code_verifier: attackerVerifier, redirect_uri: victimApp.redirectUri, client_id: victimApp.clientId })
    t.equal(injected.status, 400)
    t.equal(injected.body.error, 'invalid_grant', 'another verifier: invalid_grant')
    const noVerifier = await postForm(server, { grant_type: 'authorization_code', code, redirect_uri: victimApp.redirectUri, client_id: victimApp.clientId })
    t.equal(noVerifier.body.error, 'invalid_request', 'no verifier: invalid_request')
    for (const verifier of ['', 'a'.repeat(42), 'a'.repeat(129), `${attackerVerifier}\u0000`, attackerVerifier.toUpperCase()]) {
      const response = await postForm(server, { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: victimApp.redirectUri, client_id: victimApp.clientId })
      t.ok(response.status === 400 && ['invalid_grant', 'invalid_request'].includes(response.body.error), `verifier ${JSON.stringify(verifier.slice(0, 20))}: ${String(response.body.error)}`)
    }
    t.equal(await count(server, 'oauth_tokens'), tokensBefore, 'no token was issued')
  })
})

t.test('PKCE downgrade: plain, a missing method, a missing challenge and the challenge as its own verifier are all refused', async (t) => {
  const server = autoServer
  const client = await dynamicClient(server, 'https://pkce.example/cb')
  const { verifier, challenge } = pkcePair()
  const before = await count(server, 'oauth_codes')
  const cases: Array<[string, Params]> = [
    ['code_challenge_method=plain with the verifier as challenge', { code_challenge: verifier, code_challenge_method: 'plain' }],
    ['code_challenge_method=plain with an S256-shaped challenge', { code_challenge: challenge, code_challenge_method: 'plain' }],
    ['code_challenge without code_challenge_method (RFC 7636 defaults it to plain)', { code_challenge: challenge, code_challenge_method: undefined }],
    ['no code_challenge at all', { code_challenge: undefined, code_challenge_method: undefined }],
    ['code_challenge_method=S256 without a challenge', { code_challenge: undefined }],
    ['code_challenge_method in lower case', { code_challenge_method: 's256' }],
    ['an unknown method', { code_challenge_method: 'S512' }],
    ['a challenge that is not 43 base64url characters', { code_challenge: `${challenge}A` }],
    ['the method sent twice', { code_challenge_method: ['S256', 'plain'] }],
    ['the challenge sent twice', { code_challenge: [challenge, verifier] }]
  ]
  for (const [what, overrides] of cases) {
    const response = await authorize(server, authorizationParams(server, client, overrides).params)
    assertErrorRedirect(t, server, response, client.redirectUri, 'invalid_request', what)
  }
  t.equal(await count(server, 'oauth_codes'), before, 'no code was issued, so no verifier-only redemption can exist')

  // An S256 challenge chosen equal to a valid verifier: presenting the challenge itself (a plain-style proof) fails.
  const plainStyle = 'A'.repeat(43)
  const { code } = await obtainCode(server, client, { code_challenge: plainStyle, code_challenge_method: 'S256' })
  const downgraded = await postForm(server, { grant_type: 'authorization_code', code, code_verifier: plainStyle, redirect_uri: client.redirectUri, client_id: client.clientId })
  t.equal(downgraded.status, 400)
  t.equal(downgraded.body.error, 'invalid_grant', 'the challenge as its own verifier: invalid_grant')
  t.equal((await postForm(server, { grant_type: 'authorization_code', code, redirect_uri: client.redirectUri, client_id: client.clientId })).body.error, 'invalid_request', 'no verifier: invalid_request')

  const metadata = JSON.parse((await server.app.inject({ method: 'GET', url: '/.well-known/oauth-authorization-server' })).body)
  t.same(metadata.code_challenge_methods_supported, ['S256'], 'the metadata advertises S256 only')
})

t.test('mix-up: every authorization response carries iss equal to the issuer, successes and errors alike', async (t) => {
  const server = consentServer
  const issuer = server.config.publicUrl
  const token = await principalWithToken(server, 'mx-person')
  await principalWithToken(server, 'mx-bound', 'bus:read')
  const consentClient = await dynamicClient(server, 'https://mixup.example/cb')
  const created = await server.admin.inject({ method: 'POST', url: '/clients', payload: { name: 'Mix-up bound', redirect_uris: ['https://bound.mixup.example/cb'], principal: 'mx-bound' } })
  const bound: RegisteredTestClient = { clientId: JSON.parse(created.body).client_id, clientSecret: undefined, redirectUri: 'https://bound.mixup.example/cb' }

  const asMetadata = JSON.parse((await server.app.inject({ method: 'GET', url: '/.well-known/oauth-authorization-server' })).body)
  const prm = JSON.parse((await server.app.inject({ method: 'GET', url: '/.well-known/oauth-protected-resource/mcp' })).body)
  t.equal(asMetadata.issuer, issuer, 'metadata issuer')
  t.equal(asMetadata.authorization_response_iss_parameter_supported, true, 'RFC 9207 advertised')
  t.same(prm.authorization_servers, [issuer], 'the resource names the same issuer, byte for byte')

  const responses: Array<[string, LightMyRequestResponse]> = []
  responses.push(['approved at once (bound client)', await authorize(server, authorizationParams(server, bound).params)])
  for (const [what, overrides] of [
    ['no response_type', { response_type: undefined }], ['response_type=token', { response_type: 'token' }], ['no PKCE', { code_challenge: undefined }],
    ['plain PKCE', { code_challenge_method: 'plain' }], ['another resource', { resource: 'https://evil.example/mcp' }], ['unknown scope', { scope: 'admin' }],
    ['a duplicated parameter', { scope: ['bus:read', 'bus:write'] }]
  ] as Array<[string, Params]>) {
    responses.push([what, await authorize(server, authorizationParams(server, consentClient, overrides).params)])
  }
  const approve = await openConsent(t, server, consentClient)
  responses.push(['approved on the consent page', await submitConsent(server, approve.action, { transaction: approve.transaction, action: 'approve', credential: token }, { cookie: approve.cookie })])
  const deny = await openConsent(t, server, consentClient)
  responses.push(['denied on the consent page', await submitConsent(server, deny.action, { transaction: deny.transaction, action: 'deny' }, { cookie: deny.cookie })])
  const wrong = await openConsent(t, server, consentClient)
  let last: LightMyRequestResponse | undefined
  for (let i = 0; i < 5; i++) last = await submitConsent(server, wrong.action, { transaction: wrong.transaction, action: 'approve', credential: `bus_api_wrong${i}` }, { cookie: wrong.cookie })
  responses.push(['five wrong credentials', last as LightMyRequestResponse])
  await server.admin.inject({ method: 'POST', url: '/principals/mx-bound/disable' })
  responses.push(['the bound principal disabled', await authorize(server, authorizationParams(server, bound).params)])

  for (const [what, response] of responses) {
    const location = locationOf(response)
    t.ok(location !== undefined && (response.statusCode === 302 || response.statusCode === 303), `${what}: a redirect (${response.statusCode})`)
    t.same(location?.searchParams.getAll('iss'), [issuer], `${what}: iss=${issuer}, exactly once`)
    t.ok(location?.searchParams.get('code') !== null || location?.searchParams.get('error') !== null, `${what}: a code or an error`)
    t.equal(location?.searchParams.get('state'), 'state-123', `${what}: state`)
  }

  // A state crafted to smuggle a second iss and code into the response is echoed as data.
  await server.admin.inject({ method: 'POST', url: '/principals/mx-bound/enable' })
  const smuggled = 'x&iss=https://evil.example&code=attacker-code'
  const location = locationOf(await authorize(server, authorizationParams(server, bound, { state: smuggled }).params))
  t.same(location?.searchParams.getAll('iss'), [issuer], 'still one iss, the real one')
  t.equal(location?.searchParams.getAll('code').length, 1, 'one code')
  t.not(location?.searchParams.get('code'), 'attacker-code')
  t.equal(location?.searchParams.get('state'), smuggled, 'state comes back verbatim')

  await t.test('behind a proxy the issuer is PUBLIC_URL exactly', async (t) => {
    const proxied = await startTestServer(t, { env: { PUBLIC_URL: 'https://bus.example.com', RATE_LIMIT_MULTIPLIER: '0' } })
    const client = await dynamicClient(proxied, 'https://proxied.example/cb')
    const response = await authorize(proxied, authorizationParams(proxied, client, { response_type: 'token' }).params)
    t.same(locationOf(response)?.searchParams.getAll('iss'), ['https://bus.example.com'])
  })
})

t.test('CSRF on consent: a submission needs this browser\'s per-transaction cookie; cross-site posts are refused', async (t) => {
  const server = consentServer
  const token = await principalWithToken(server, 'csrf-victim')
  const client = await dynamicClient(server, 'https://csrf.example/cb')
  const crossSite = { origin: 'https://evil.example', 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'navigate', 'sec-fetch-dest': 'document', referer: 'https://evil.example/' }

  const victim = await openConsent(t, server, client)
  const cookieHeader = String(victim.page.headers['set-cookie'])
  t.match(cookieHeader, /HttpOnly/, 'the cookie is HttpOnly (no script reads it)')
  t.match(cookieHeader, /SameSite=Strict/, 'SameSite=Strict: a browser never sends it with a cross-site request')
  t.match(cookieHeader, /Max-Age=\d+/, 'it expires with the transaction')
  const other = await openConsent(t, server, client)
  const codesBefore = await count(server, 'oauth_codes')
  const form = { transaction: victim.transaction, action: 'approve', credential: token }

  assertShown(t, await submitConsent(server, victim.action, form), 'no cookie', 403)
  assertShown(t, await submitConsent(server, victim.action, form, { cookie: other.cookie }), 'the cookie of another transaction', 403)
  assertShown(t, await submitConsent(server, victim.action, form, { cookie: `${victim.cookie.split('=')[0] ?? ''}=${other.cookie.split('=')[1] ?? ''}` }), 'this cookie name with another transaction\'s value', 403)
  assertShown(t, await submitConsent(server, victim.action, form, { cookie: `${victim.cookie.split('=')[0] ?? ''}=` }), 'an empty cookie value', 403)
  assertShown(t, await submitConsent(server, victim.action, form, crossSite), 'a cross-site form POST as a browser sends it (Origin and Sec-Fetch-Site of another site, no cookie)', 403)
  // A browser that did send the cookie cross-site (an old browser without SameSite, a SameSite=None
  // policy, or an extension): the right cookie and transaction, refused for Sec-Fetch-Site alone.
  const crossSiteWithCookie = await submitConsent(server, victim.action, form, { ...crossSite, cookie: victim.cookie })
  assertShown(t, crossSiteWithCookie, 'a cross-site form POST that carries this transaction\'s own cookie', 403)
  t.match(crossSiteWithCookie.body, /submitted from another site/, '... refused because it came from another site, not for its cookie')
  t.equal(crossSiteWithCookie.headers['set-cookie'], undefined, '... and the cookie is not cleared (the person\'s own tab still works)')
  assertShown(t, await submitConsent(server, victim.action, { ...form, transaction: other.transaction }, { cookie: victim.cookie }), 'another transaction with this cookie', 403)
  assertShown(t, await submitConsent(server, victim.action, { ...form, transaction: 'guessed-transaction' }, { cookie: victim.cookie }), 'a guessed transaction')
  t.equal(await count(server, 'oauth_codes'), codesBefore, 'no code was issued')

  const real = await submitConsent(server, victim.action, form, { cookie: victim.cookie, 'sec-fetch-site': 'same-origin', 'sec-fetch-mode': 'navigate', origin: server.config.publicUrl })
  t.equal(real.statusCode, 303, 'the person\'s own browser (same-origin), with its cookie, still approves')
  t.ok(locationOf(real)?.searchParams.get('code'))
  const replayed = await submitConsent(server, victim.action, form, { cookie: victim.cookie })
  assertShown(t, replayed, 'the same submission replayed')
  t.equal(await count(server, 'oauth_codes'), codesBefore + 1, 'exactly one code')

  await t.test('on https the cookie is Secure', async (t) => {
    const secure = await startTestServer(t, { env: { PUBLIC_URL: 'https://bus.example.com', RATE_LIMIT_MULTIPLIER: '0' } })
    const secureClient = await dynamicClient(secure, 'https://csrf.example/cb')
    t.match(String((await openConsent(t, secure, secureClient)).page.headers['set-cookie']), /; Secure/)
  })
})

t.test('clickjacking: every HTML page of the authorization endpoint forbids framing', async (t) => {
  const server = consentServer
  await principalWithToken(server, 'cj-person')
  const client = await dynamicClient(server, 'https://frame.example/cb')
  const pages: Array<[string, LightMyRequestResponse]> = []
  const consent = await openConsent(t, server, client)
  pages.push(['the consent page', consent.page])
  pages.push(['the consent page at /authorize', await authorize(server, authorizationParams(server, client).params, { path: '/authorize' })])
  pages.push(['unknown client', await authorize(server, { ...authorizationParams(server, client).params, client_id: 'client_unknown' })])
  pages.push(['unregistered redirect URI', await authorize(server, { ...authorizationParams(server, client).params, redirect_uri: 'https://evil.example/cb' })])
  pages.push(['no client_id', await authorize(server, {})])
  pages.push(['CSRF refusal', await submitConsent(server, consent.action, { transaction: consent.transaction, action: 'approve', credential: 'x' })])
  pages.push(['wrong credential (the page again)', await submitConsent(server, consent.action, { transaction: consent.transaction, action: 'approve', credential: 'bus_api_wrong' }, { cookie: consent.cookie })])
  pages.push(['neither approve nor deny', await submitConsent(server, consent.action, { transaction: consent.transaction, action: 'other' }, { cookie: consent.cookie })])
  pages.push(['spent or unknown transaction', await submitConsent(server, consent.action, { transaction: 'spent', action: 'approve', credential: 'x' }, { cookie: consent.cookie })])
  pages.push(['an unreadable form body', await server.app.inject({ method: 'POST', url: '/oauth/authorize', headers: { 'content-type': 'application/json' }, payload: '{"a":' })])
  pages.push(['a form body over the limit', await server.app.inject({ method: 'POST', url: '/oauth/authorize', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: `a=${'b'.repeat(20_000)}` })])
  const limited = await startTestServer(t, { env: { RATE_LIMIT_MULTIPLIER: '0.01' } })
  const limitedClient = await dynamicClient(limited, 'https://frame.example/cb')
  await authorize(limited, authorizationParams(limited, limitedClient).params)
  pages.push(['rate limited (429)', await authorize(limited, authorizationParams(limited, limitedClient).params)])
  const misconfigured = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 'cj-nobody', RATE_LIMIT_MULTIPLIER: '0' } })
  const misconfiguredClient = await dynamicClient(misconfigured, 'https://frame.example/cb')
  pages.push(['server misconfigured (5xx)', await authorize(misconfigured, authorizationParams(misconfigured, misconfiguredClient).params)])

  for (const [what, page] of pages) {
    t.match(page.headers['content-type'], /^text\/html/, `${what} (${page.statusCode}): HTML`)
    t.equal(page.headers['x-frame-options'], 'DENY', `${what}: X-Frame-Options: DENY`)
    t.match(page.headers['content-security-policy'], /frame-ancestors 'none'/, `${what}: CSP frame-ancestors 'none'`)
    t.match(page.headers['content-security-policy'], /default-src 'none'/, `${what}: no scripts or other resources`)
    t.equal(page.headers['x-content-type-options'], 'nosniff', `${what}: nosniff`)
    t.equal(page.headers['cache-control'], 'no-store', `${what}: no-store`)
  }
  t.comment(`statuses of the pages looked at: ${[...new Set(pages.map(([, page]) => page.statusCode))].sort().join(', ')}`)
})

t.test('refresh replay: presenting a rotated refresh token revokes the whole family', async (t) => {
  const server = autoServer
  const client = await dynamicClient(server, 'https://refresh.example/cb')
  const other = await dynamicClient(server, 'https://other.example/cb')
  const first = await obtainTokens(server, client)
  const refresh = async (refreshToken: string, clientId = client.clientId) => await postForm(server, { grant_type: 'refresh_token', refresh_token: refreshToken, client_id: clientId })

  // The legitimate client rotates once; an attacker holds the first refresh token (stolen earlier).
  const rotated = await refresh(first.refresh_token as string)
  t.equal(rotated.status, 200, 'the client rotates')
  const current = rotated.body as { access_token: string, refresh_token: string }
  t.equal((await whoami(server, current.access_token)).status, 200, 'its new access token works')

  const stolenElsewhere = await refresh(current.refresh_token, other.clientId)
  t.equal(stolenElsewhere.body.error, 'invalid_grant', 'the current refresh token presented by another client: invalid_grant')
  t.equal((await whoami(server, current.access_token)).status, 200, '... which does not let another client revoke the family')

  const replay = await refresh(first.refresh_token as string)
  t.equal(replay.status, 400)
  t.equal(replay.body.error, 'invalid_grant', 'the attacker\'s replay of the rotated token: invalid_grant')
  t.equal((await whoami(server, current.access_token)).status, 401, 'the family is revoked: the current access token is dead')
  t.equal((await whoami(server, first.access_token)).status, 401, 'and the first one')
  t.equal((await refresh(current.refresh_token)).body.error, 'invalid_grant', 'and the current refresh token')
  const [grant] = await query<{ revoked_reason: string | null }>(server, sql`
    select g.revoked_reason from oauth_grants g join oauth_tokens t on t.grant_id = g.id where t.token_hash = ${hashSecret(current.access_token)}`)
  t.equal(grant?.revoked_reason, 'refresh_reuse', 'the grant records why')

  const fresh = await obtainTokens(server, client)
  t.equal((await refresh(fresh.access_token)).body.error, 'invalid_grant', 'an access token is not a refresh token')
  t.equal((await whoami(server, fresh.access_token)).status, 200, 'a new authorization is unaffected')
})

t.test('token for another audience: tokens bound to another resource, and resource=another server, are refused', async (t) => {
  const server = autoServer
  const client = await dynamicClient(server, 'https://audience.example/cb')

  await t.test('an access token whose resource is another server is 401 invalid_token on /mcp', async (t) => {
    const tokens = await obtainTokens(server, client)
    // Minted by this server for another resource (as a multi-resource AS would): never used here before, so not cached.
    await query(server, sql`update oauth_tokens set resource = 'https://other.example/mcp' where token_hash = ${hashSecret(tokens.access_token)}`)
    const response = await whoami(server, tokens.access_token)
    t.equal(response.status, 401)
    t.match(response.wwwAuthenticate, /error="invalid_token"/)
  })

  const evil = ['https://evil.example', 'https://evil.example/mcp', `${server.config.publicUrl}.evil.example/mcp`, `http://attacker@${new URL(server.config.publicUrl).host}/mcp`,
    'http://localhost:8089/mcp', `${server.config.publicUrl}/other`, `${server.config.publicUrl}/mcp/../admin`, `${server.config.publicUrl}/mcp?x=1`, `${server.config.publicUrl}/mcp#f`,
    '/mcp', 'urn:example:mcp', 'https://127.0.0.1/mcp']

  await t.test('resource=another server at the authorization endpoint: invalid_target back to the client, no code', async (t) => {
    const before = await count(server, 'oauth_codes')
    for (const resource of evil) assertErrorRedirect(t, server, await authorize(server, authorizationParams(server, client, { resource }).params), client.redirectUri, 'invalid_target', resource)
    t.equal(await count(server, 'oauth_codes'), before, 'no code')
  })

  await t.test('resource=another server at the token endpoint: invalid_target, and the code is not spent', async (t) => {
    const { code, verifier } = await obtainCode(server, client)
    const tokens = await obtainTokens(server, client)
    const before = await count(server, 'oauth_tokens')
    for (const resource of evil) {
      const redeemed = await postForm(server, { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: client.redirectUri, client_id: client.clientId, resource })
      t.equal(redeemed.body.error, 'invalid_target', `authorization_code, resource=${resource}`)
      const refreshed = await postForm(server, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id: client.clientId, resource })
      t.equal(refreshed.body.error, 'invalid_target', `refresh_token, resource=${resource}`)
    }
    t.equal(await count(server, 'oauth_tokens'), before, 'no token was issued')
    const good = await postForm(server, { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: client.redirectUri, client_id: client.clientId, resource: server.config.resourceUrl })
    t.equal(good.status, 200, 'the code was not spent by the refused requests')
  })
})

t.test('token confusion: refresh tokens, codes, client secrets and admin tokens are not bearer tokens for /mcp', async (t) => {
  const server = autoServer
  const client = await registerClient(server, { redirect_uris: ['https://confusion.example/cb'], token_endpoint_auth_method: 'client_secret_post' })
  const tokens = await obtainTokens(server, client)
  const { code } = await obtainCode(server, client)
  const loginCode = (await createLoginCode(server.database.db, 'bcp-owner')).code
  for (const [what, secret] of [['a refresh token', tokens.refresh_token], ['an authorization code', code], ['a client secret', client.clientSecret], ['a login code', loginCode.replace(/[^A-Za-z0-9]/g, '')], ['the admin token', TC_ADMIN_TOKEN]] as const) {
    const response = await whoami(server, secret as string)
    t.equal(response.status, 401, `${what}: 401`)
    t.match(response.wwwAuthenticate, /error="invalid_token"/, `${what}: invalid_token`)
  }
  t.equal((await whoami(server, tokens.access_token)).status, 200, 'the access token itself works')
})

// ---------------------------------------------------------------------------------------------
// SSRF: a client_id that is a URL makes this server fetch it. Every outbound TCP connection the
// process opens is recorded (the database's own excepted), so "no connection made" is checked,
// not assumed.

interface Connection { host: string, port: number }
/**
 * Records every TCP connect of the process (TLS ones included: tls.connect hands net its options
 * with `path: null`, so only a string `path`, a Unix socket, is left out).
 */
function recordConnections (t: Test, ignorePort: number | undefined): Connection[] {
  const seen: Connection[] = []
  const original = Socket.prototype.connect
  Socket.prototype.connect = function (this: Socket, ...args: unknown[]) {
    // connect(options), connect(port, host) or, from net.connect, one normalized [options, callback] array.
    const first = Array.isArray(args[0]) ? args[0][0] : args[0]
    const options = (typeof first === 'object' && first !== null ? first : { port: first, host: args[1] }) as { host?: string, port?: number | string, path?: string | null }
    if (typeof options.path !== 'string' && Number(options.port) !== ignorePort) seen.push({ host: String(options.host ?? 'localhost'), port: Number(options.port) })
    return (original as (...a: unknown[]) => Socket).apply(this, args)
  } as typeof Socket.prototype.connect
  t.teardown(() => { Socket.prototype.connect = original })
  return seen
}

t.test('self-check: the connection recorder sees plain, https and TLS connects (not Unix sockets)', async (t) => {
  const closed = createServer()
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve))
  const port = (closed.address() as AddressInfo).port
  await new Promise<void>((resolve) => closed.close(() => resolve()))
  const connections = recordConnections(t, undefined)
  const attempt = async (open: () => { on: (event: 'error', listener: () => void) => unknown }): Promise<void> => {
    await new Promise<void>((resolve) => { open().on('error', () => resolve()) })
  }
  await attempt(() => httpsRequest({ host: '127.0.0.1', port, path: '/', agent: false }).end())
  await attempt(() => tlsConnect({ host: '127.0.0.1', port }))
  await attempt(() => netConnect({ host: '127.0.0.1', port }))
  await attempt(() => netConnect({ path: '/nonexistent/bus-test.sock' }))
  t.same(connections, [{ host: '127.0.0.1', port }, { host: '127.0.0.1', port }, { host: '127.0.0.1', port }], 'https, tls and net connects recorded; the Unix socket not')
})

/** Replaces the system resolver the SSRF guard uses (node:dns/promises lookup) for the names in `answers`. */
function fakeDns (t: Test, answers: Record<string, Array<{ address: string, family: 4 | 6 }>>): string[] {
  const asked: string[] = []
  const original = dnsPromises.lookup
  const fake = async (hostname: string, options?: unknown): Promise<unknown> => {
    const answer = answers[hostname]
    if (answer === undefined) return await (original as (h: string, o?: unknown) => Promise<unknown>)(hostname, options)
    asked.push(hostname)
    return (options as { all?: boolean } | undefined)?.all === true ? answer : answer[0]
  }
  ;(dnsPromises as { lookup: unknown }).lookup = fake
  syncBuiltinESMExports()
  t.teardown(() => {
    ;(dnsPromises as { lookup: unknown }).lookup = original
    syncBuiltinESMExports()
  })
  return asked
}

interface DocumentServer { server: Server, port: number, requests: string[] }
async function documentServer (t: Test, routes: (port: number) => Record<string, { status: number, headers?: Record<string, string>, body?: string }>): Promise<DocumentServer> {
  const requests: string[] = []
  let table: ReturnType<typeof routes> = {}
  const server = createServer((req: IncomingMessage, res) => {
    requests.push(req.url ?? '')
    const route = table[req.url ?? '']
    res.writeHead(route?.status ?? 404, { 'content-type': 'application/json', ...route?.headers })
    res.end(route?.body ?? '')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  table = routes(port)
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return { server, port, requests }
}

t.test('SSRF via client metadata documents: private, loopback, link-local and special addresses, DNS tricks and redirects', async (t) => {
  const dbPort = database.url === undefined ? undefined : Number(new URL(database.url).port || 5432)

  await t.test('client_id URLs naming special-use addresses are refused before any connection, and nothing is stored', async (t) => {
    const server = consentServer
    const targets = [
      'https://127.0.0.1/client.json', 'https://127.1/client.json', 'https://2130706433/client.json', 'https://0x7f000001/client.json', 'https://0177.0.0.1/client.json',
      'https://0x7f.0.0.1/client.json', 'https://[::1]/client.json', 'https://[0:0:0:0:0:0:0:1]/client.json', 'https://[::ffff:127.0.0.1]/client.json', 'https://[::ffff:7f00:1]/client.json',
      'https://169.254.169.254/latest/meta-data/iam/security-credentials/', 'https://[fe80::1]/client.json', 'https://[::ffff:169.254.169.254]/latest/meta-data/',
      'https://10.0.0.1/client.json', 'https://172.16.0.1/client.json', 'https://192.168.1.1/client.json', 'https://100.64.0.1/client.json', 'https://0.0.0.0/client.json',
      'https://[fd00::1]/client.json', 'https://[::]/client.json', 'https://localhost/client.json', 'https://localhost./client.json', 'https://LOCALHOST/client.json',
      'https://127.0.0.1:8089/principals', 'https://user:pass@example.com/client.json', 'http://127.0.0.1/client.json', 'http://localhost/client.json',
      'file:///etc/passwd', 'gopher://127.0.0.1:6379/_INFO'
    ]
    const connections = recordConnections(t, dbPort)
    const before = await stateOf(server)
    for (const clientId of targets) {
      const page = await authorize(server, { ...authorizationParams(server, { clientId, redirectUri: 'https://attacker.example/cb' }).params })
      assertShown(t, page, `authorize, client_id=${clientId}`)
      const token = await postForm(server, { grant_type: 'authorization_code', code: 'bus_ac_x', code_verifier: 'a'.repeat(43), client_id: clientId })
      t.equal(token.status, 401, `token, client_id=${clientId}: 401`)
      t.equal(token.body.error, 'invalid_client', `token, client_id=${clientId}: invalid_client`)
    }
    t.same(connections, [], 'no outbound connection was opened')
    t.same(stateDiff(before, await stateOf(server)), [], 'nothing was stored')
  })

  await t.test('DNS names resolving to special-use addresses (any of their answers) are refused without connecting', async (t) => {
    const server = consentServer
    const asked = fakeDns(t, {
      'metadata.bus-test.example': [{ address: '169.254.169.254', family: 4 }],
      'mixed.bus-test.example': [{ address: '93.184.215.14', family: 4 }, { address: '127.0.0.1', family: 4 }],
      'six.bus-test.example': [{ address: '::1', family: 6 }],
      'mapped.bus-test.example': [{ address: '::ffff:10.0.0.1', family: 6 }]
    })
    const connections = recordConnections(t, dbPort)
    const before = await stateOf(server)
    for (const host of ['metadata', 'mixed', 'six', 'mapped']) {
      const clientId = `https://${host}.bus-test.example/client.json`
      const page = await authorize(server, authorizationParams(server, { clientId, redirectUri: 'https://attacker.example/cb' }).params)
      assertShown(t, page, clientId)
      t.notMatch(page.body, /169\.254|127\.0\.0\.1|::1|10\.0\.0\.1|93\.184/, `${clientId}: the page does not reveal what the name resolves to`)
    }
    t.same(asked.sort(), ['mapped.bus-test.example', 'metadata.bus-test.example', 'mixed.bus-test.example', 'six.bus-test.example'], 'each name was resolved (once)')
    t.same(connections, [], 'no outbound connection was opened')
    t.same(stateDiff(before, await stateOf(server)), [], 'nothing was stored')
  })

  await t.test('the test allowance is off by default, and even when on, redirects are not followed', async (t) => {
    const docs = await documentServer(t, (port) => {
      const good = `http://localhost:${port}/good.json`
      return {
        '/good.json': { status: 200, body: JSON.stringify({ client_id: good, client_name: 'Local doc', redirect_uris: ['https://doc.example/cb'] }) },
        '/redirect.json': { status: 302, headers: { location: good } },
        '/redirect-metadata.json': { status: 307, headers: { location: 'http://169.254.169.254/latest/meta-data/' } },
        '/big.json': { status: 200, body: JSON.stringify({ client_id: `http://localhost:${port}/big.json`, redirect_uris: ['https://doc.example/cb'], pad: 'x'.repeat(100_000) }) }
      }
    })
    const base = `http://localhost:${docs.port}`
    const strict = consentServer
    const allowing = await startTestServer(t, { env: { RATE_LIMIT_MULTIPLIER: '0', CIMD_ALLOW_PRIVATE_HOSTS: 'localhost' } })
    const params = (clientId: string): Params => authorizationParams(allowing, { clientId, redirectUri: 'https://doc.example/cb' }).params

    assertShown(t, await authorize(strict, params(`${base}/good.json`)), 'without CIMD_ALLOW_PRIVATE_HOSTS a local document is an unknown client')
    t.same(docs.requests, [], '... and is never fetched')

    t.equal((await authorize(allowing, params(`${base}/good.json`))).statusCode, 200, 'with the allowance the local document works (consent page)')
    t.same(docs.requests, ['/good.json'])
    assertShown(t, await authorize(allowing, params(`${base}/redirect.json`)), 'a redirect to an allowed document')
    assertShown(t, await authorize(allowing, params(`${base}/redirect-metadata.json`)), 'a redirect to the metadata service')
    assertShown(t, await authorize(allowing, params(`${base}/big.json`)), 'a document over the size bound')
    t.same(docs.requests, ['/good.json', '/redirect.json', '/redirect-metadata.json', '/big.json'], 'one request each: no Location was followed')
    assertShown(t, await authorize(allowing, params(`http://127.0.0.1:${docs.port}/good.json`)), 'the allowance names a host, not every loopback spelling')
    t.equal(docs.requests.length, 4, '... which is not fetched')
  })
})

// ---------------------------------------------------------------------------------------------
// Flooding and brute force. Limits are scaled down with RATE_LIMIT_MULTIPLIER; `remoteAddress`
// plays different client addresses.

t.test('registration flooding: 429 with Retry-After past the limit, nothing stored beyond it, other addresses unaffected', async (t) => {
  const server = await startTestServer(t, { env: { RATE_LIMIT_MULTIPLIER: '0.1' } }) // 20/hour × 0.1 = 2
  const body = { client_name: 'Flood', redirect_uris: ['https://flood.example/cb'], token_endpoint_auth_method: 'none' }
  const from = async (remoteAddress: string, path = '/oauth/register') => await server.app.inject({ method: 'POST', url: path, headers: { 'content-type': 'application/json' }, payload: body, remoteAddress })
  const before = await count(server, 'oauth_clients')
  t.equal((await from('198.51.100.1')).statusCode, 201)
  t.equal((await from('198.51.100.1')).statusCode, 201)
  const statuses: number[] = []
  for (const path of ['/oauth/register', '/register', '/oauth/register/', '/register/']) {
    const response = await from('198.51.100.1', path)
    statuses.push(response.statusCode)
    if (response.statusCode === 429) {
      t.ok(Number(response.headers['retry-after']) > 0, `${path}: Retry-After`)
      t.equal(JSON.parse(response.body).error, 'too_many_requests', `${path}: a JSON error`)
      t.equal(response.headers['cache-control'], 'no-store', `${path}: no-store`)
    }
  }
  t.same(statuses, [429, 429, 429, 429], 'past the limit, every path of the endpoint (the /register fallback and trailing slashes too) is refused')
  t.equal(await count(server, 'oauth_clients'), before + 2, 'nothing was stored beyond the limit')
  t.equal((await from('::ffff:198.51.100.1')).statusCode, 429, 'the same IPv4 address written as IPv4-mapped IPv6 shares the limit')
  t.equal((await from('198.51.100.2')).statusCode, 201, 'another address is unaffected')

  await t.test('addresses of one IPv6 /64 share one limit (rotating the interface identifier gains nothing)', async (t) => {
    const statuses = []
    for (let i = 1; i <= 4; i++) statuses.push((await from(`2001:db8:1:2::${i.toString(16)}`)).statusCode)
    t.same(statuses, [201, 201, 429, 429])
    t.equal((await from('2001:db8:1:3::1')).statusCode, 201, 'another /64 is another client')
  })
})

t.test('brute force on bearer tokens: failures from one address are slowed; valid tokens and other addresses unaffected', async (t) => {
  const server = await startTestServer(t, { env: { RATE_LIMIT_MULTIPLIER: '0.1' } }) // 30 failures/minute × 0.1 = 3
  const known = await principalWithToken(server, 'bf-known')
  const unused = await principalWithToken(server, 'bf-unused')
  const call = async (token: string | undefined, remoteAddress: string): Promise<LightMyRequestResponse> => await server.app.inject({
    method: 'POST',
    url: '/mcp',
    remoteAddress,
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}) },
    payload: { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'whoami', arguments: {} } }
  })
  const timed = async (token: string | undefined, remoteAddress: string): Promise<{ response: LightMyRequestResponse, ms: number }> => {
    const started = performance.now()
    const response = await call(token, remoteAddress)
    return { response, ms: performance.now() - started }
  }
  // Guesses shaped like the tokens we issue (prefix + 43 base64url characters), so each needs a lookup.
  const guess = (i: number): string => `bus_api_${hashSecret(`guess${i}`).toString('base64url')}`
  const attacker = '203.0.113.50'
  t.equal((await call(known, attacker)).statusCode, 200, 'a valid token used from the attacker\'s address before the attack (now known to this replica)')
  for (let i = 0; i < 5; i++) t.equal((await call(undefined, attacker)).statusCode, 401, 'requests without credentials are challenged, never counted')
  for (let i = 0; i < 3; i++) t.equal((await call(guess(i), attacker)).statusCode, 401, `guess ${i + 1}: 401`)
  const slowed = await timed(guess(3), attacker)
  t.equal(slowed.response.statusCode, 401, 'the next guess: still its true answer, 401 (looked up in the slow lane)')
  t.match(slowed.response.headers['www-authenticate'], /error="invalid_token"/)
  t.ok(slowed.ms >= 95, 'but no sooner than 100 ms after it was sent: failing answers to the address are paced')
  const repeated = await timed(guess(0), attacker)
  t.equal(repeated.response.statusCode, 401, 'a guess tried before: 401 from memory (no database lookup)')
  t.ok(repeated.ms >= 95, '... paced too')
  t.equal((await call('Bearer x y'.slice(7), attacker)).statusCode, 401, 'malformed tokens: 401, no lookup')
  t.equal((await call(unused, attacker)).statusCode, 200, 'a valid token this replica has not seen still works from that address (slow lane): other clients behind the same NAT are not locked out')
  t.equal((await call(known, attacker)).statusCode, 200, 'a token this replica already knows still works from that address')
  t.equal((await call(unused, '203.0.113.51')).statusCode, 200, 'other addresses are unaffected')
  t.equal((await call(guess(5), '203.0.113.51')).statusCode, 401, 'their wrong tokens are plain 401s')

  await t.test('addresses of one IPv6 /64 share one budget', async (t) => {
    const results = []
    for (let i = 1; i <= 4; i++) results.push(await timed(guess(100 + i), `2001:db8:9:9::${i}`))
    t.same(results.map((r) => r.response.statusCode), [401, 401, 401, 401])
    t.ok((results[3]?.ms ?? 0) >= 95, 'the fourth failure from the /64 is paced')
  })
})

t.test('brute force on login codes: five wrong credentials end the transaction, a code works once, transactions are rate limited', async (t) => {
  const server = consentServer
  await principalWithToken(server, 'lc-person')
  const client = await dynamicClient(server, 'https://login.example/cb')

  await t.test('five wrong credentials end the consent transaction', async (t) => {
    const { transaction, action, cookie } = await openConsent(t, server, client)
    const messages = new Set<string>()
    for (let attempt = 1; attempt <= 4; attempt++) {
      const guess = await submitConsent(server, action, { transaction, action: 'approve', credential: `ABCDE-FGH${attempt}J` }, { cookie })
      t.equal(guess.statusCode, 401, `guess ${attempt}: the page again`)
      messages.add(/id="error">([^<]*)</.exec(guess.body)?.[1]?.replace(/attempt \d/, 'attempt N') ?? '')
    }
    t.equal(messages.size, 1, 'every wrong guess gets the same message (nothing tells a near miss)')
    const fifth = await submitConsent(server, action, { transaction, action: 'approve', credential: 'ABCDE-FGH5J' }, { cookie })
    assertErrorRedirect(t, server, fifth, client.redirectUri, 'access_denied', 'the fifth wrong guess')
    const loginCode = (await createLoginCode(server.database.db, 'lc-person')).code
    assertShown(t, await submitConsent(server, action, { transaction, action: 'approve', credential: loginCode }, { cookie }), 'the right code after that')
    const [row] = await query<{ used: boolean }>(server, sql`select used_at is not null as used from login_codes order by id desc limit 1`)
    t.equal(row?.used, false, 'the refused submission did not spend the real code')
  })

  await t.test('a login code works once, and not after it expires', async (t) => {
    const loginCode = (await createLoginCode(server.database.db, 'lc-person')).code
    const first = await openConsent(t, server, client)
    const approved = await submitConsent(server, first.action, { transaction: first.transaction, action: 'approve', credential: loginCode }, { cookie: first.cookie })
    t.equal(approved.statusCode, 303)
    t.ok(locationOf(approved)?.searchParams.get('code'), 'the code proves the principal once')
    const second = await openConsent(t, server, client)
    for (const variant of [loginCode, loginCode.toLowerCase(), loginCode.replace(/-/g, ''), ` ${loginCode} `]) {
      const again = await submitConsent(server, second.action, { transaction: second.transaction, action: 'approve', credential: variant }, { cookie: second.cookie })
      t.equal(again.statusCode, 401, `${JSON.stringify(variant)} again: refused`)
    }
    const expiring = (await createLoginCode(server.database.db, 'lc-person')).code
    await query(server, sql`update login_codes set expires_at = now() - interval '1 second' where used_at is null`)
    const third = await openConsent(t, server, client)
    t.equal((await submitConsent(server, third.action, { transaction: third.transaction, action: 'approve', credential: expiring }, { cookie: third.cookie })).statusCode, 401, 'an expired code is refused')
  })

  await t.test('new transactions (and so new rounds of five guesses) are rate limited per address', async (t) => {
    const limited = await startTestServer(t, { env: { RATE_LIMIT_MULTIPLIER: '0.05' } }) // authorize: 100 per 15 min × 0.05 = 5
    const limitedClient = await dynamicClient(limited, 'https://login.example/cb')
    const { params } = authorizationParams(limited, limitedClient)
    const open = async (remoteAddress: string) => await limited.app.inject({ method: 'GET', url: `/oauth/authorize?${encodeParams(params)}`, remoteAddress })
    const statuses = []
    for (let i = 0; i < 5; i++) statuses.push((await open('192.0.2.77')).statusCode)
    const page = await open('192.0.2.77')
    statuses.push(page.statusCode)
    t.same(statuses, [200, 200, 200, 200, 200, 429], 'the sixth authorization from one address within the window: 429')
    t.ok(Number(page.headers['retry-after']) > 0, 'with Retry-After')
    const posted = await limited.app.inject({ method: 'POST', url: '/authorize', remoteAddress: '192.0.2.77', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: encodeParams({ transaction: 'x', action: 'approve', credential: 'ABCDE-FGHJK' }) })
    t.equal(posted.statusCode, 429, 'consent submissions count against the same limit, whichever path')
    t.equal((await open('192.0.2.78')).statusCode, 200, 'another address is unaffected')
  })
})
