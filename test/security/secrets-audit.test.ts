import { randomBytes } from 'node:crypto'
import { sql } from 'drizzle-orm'
import t, { type Test } from 'tap'
import { rowsOf } from '../../src/db/client.ts'
import { parseConsentPage, pkcePair } from '../helpers/oauth.ts'
import { startTestServer, type TestServer } from '../helpers/server.ts'

/**
 * Secrets audit (issue 5, item 4). Every flow runs at LOG_LEVEL=trace over real ports: API
 * tokens issued, used and revoked through the admin API; dynamic registration (public and
 * client_secret_post); the consent page with an API token and with a login code; auto-approve;
 * code redemption, refresh, revocation; client_credentials for a pre-registered confidential
 * client; and the failures (wrong secrets, wrong codes, replays, bad bearers, forged consent).
 * Every secret issued or presented is collected, and none may appear (as is, URL-encoded,
 * base64'd, hex, or a 16-character piece of its random part) in any log line, in any response
 * except the one that legitimately carries it, in any column of the audit log, or in /metrics.
 */

interface Exchange {
  what: string
  status: number
  headers: Headers
  body: string
  /** Secrets this response legitimately carries in its body. */
  allowed: Set<string>
  /** Secrets this response legitimately carries in its Location / Set-Cookie headers. */
  allowedInHeaders: Set<string>
}

class Audit {
  /** secret value → what it is */
  readonly secrets = new Map<string, string>()
  readonly exchanges: Exchange[] = []

  secret (what: string, value: string | null | undefined): string {
    if (typeof value !== 'string' || value === '') throw new Error(`no ${what}`)
    this.secrets.set(value, what)
    return value
  }

  async request (what: string, url: string, init: RequestInit = {}): Promise<Exchange> {
    const response = await fetch(url, { redirect: 'manual', ...init })
    const exchange: Exchange = { what, status: response.status, headers: response.headers, body: await response.text(), allowed: new Set(), allowedInHeaders: new Set() }
    this.exchanges.push(exchange)
    return exchange
  }

  async form (what: string, url: string, form: Record<string, string | undefined>, headers: Record<string, string> = {}): Promise<Exchange> {
    const body = new URLSearchParams()
    for (const [name, value] of Object.entries(form)) if (value !== undefined) body.set(name, value)
    return await this.request(what, url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body })
  }

  async json (what: string, url: string, body?: unknown, headers: Record<string, string> = {}): Promise<Exchange> {
    return await this.request(what, url, body === undefined
      ? { headers }
      : { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
  }

  async mcp (what: string, server: TestServer, bearer: string, tool: string, args: Record<string, unknown> = {}): Promise<Exchange> {
    return await this.json(what, `${server.baseUrl}/mcp`, { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: tool, arguments: args } }, {
      accept: 'application/json, text/event-stream', authorization: `Bearer ${bearer}`
    })
  }
}

/** The forms a secret could take in text: as is, URL-encoded, base64 / base64url / hex, pieces of its random part. */
function variants (value: string): string[] {
  const out = new Set<string>([value, encodeURIComponent(value), new URLSearchParams({ v: value }).toString().slice(2)])
  for (const encoding of ['base64', 'base64url', 'hex'] as const) {
    // Without the last characters, which depend on what follows when embedded in a longer value.
    out.add(Buffer.from(value).toString(encoding).replace(/=+$/, '').slice(0, -2))
  }
  const random = value.replace(/^bus_[a-z]+_/, '')
  if (random.length >= 32) {
    out.add(random.slice(0, 16))
    out.add(random.slice(-16))
  }
  if (/^[0-9A-Z]{5}-[0-9A-Z]{5}$/.test(value)) {
    // Login codes: typed in any case, with or without the dash.
    out.add(value.replace('-', ''))
    out.add(value.toLowerCase())
    out.add(value.replace('-', '').toLowerCase())
  }
  return [...out].filter((v) => v.length >= 10)
}

function leaksIn (text: string, secrets: Map<string, string>, except: Set<string> = new Set()): string[] {
  const found: string[] = []
  for (const [value, what] of secrets) {
    if (except.has(value)) continue
    const hit = variants(value).find((v) => text.includes(v))
    if (hit !== undefined) found.push(`${what} (as ${hit === value ? 'is' : JSON.stringify(hit)})`)
  }
  return found
}

function parse (exchange: Exchange): any {
  try { return JSON.parse(exchange.body) } catch { return undefined }
}

const REDIRECT_URI = 'http://localhost:53682/callback'

/** Registers a client through DCR; its secret (if any) is legitimately in this response. */
async function register (audit: Audit, server: TestServer, method: 'none' | 'client_secret_post'): Promise<{ clientId: string, clientSecret: string | undefined }> {
  const response = await audit.json(`DCR ${method}`, `${server.baseUrl}/oauth/register`, {
    client_name: `audit ${method}`,
    redirect_uris: [REDIRECT_URI],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: method
  })
  if (response.status !== 201) throw new Error(`registration failed: ${response.status} ${response.body}`)
  const body = parse(response)
  let clientSecret: string | undefined
  if (method !== 'none') {
    clientSecret = audit.secret(`client secret (${method})`, body.client_secret)
    response.allowed.add(clientSecret)
  }
  return { clientId: body.client_id, clientSecret }
}

function authorizeUrl (server: TestServer, clientId: string, challenge: string): string {
  const query = new URLSearchParams({
    response_type: 'code',
    client_id: clientId,
    redirect_uri: REDIRECT_URI,
    code_challenge: challenge,
    code_challenge_method: 'S256',
    state: `state-${randomBytes(6).toString('hex')}`,
    scope: 'bus:read bus:write',
    resource: server.config.resourceUrl
  })
  return `${server.baseUrl}/oauth/authorize?${query.toString()}`
}

/** The code in a redirect's Location (the one place it may appear), collected as a secret. */
function codeFrom (audit: Audit, t: Test, response: Exchange, what: string): string {
  t.ok(response.status === 302 || response.status === 303, `${what}: redirected back (${response.status})`)
  const location = new URL(response.headers.get('location') ?? 'http://invalid/')
  const code = audit.secret(`authorization code (${what})`, location.searchParams.get('code'))
  response.allowedInHeaders.add(code)
  return code
}

/** A token response: its tokens are legitimately in it. */
function tokensFrom (audit: Audit, t: Test, response: Exchange, what: string): { access: string, refresh: string | undefined } {
  // Never print a successful token response: TAP output is a log too.
  t.equal(response.status, 200, `${what}: tokens issued${response.status === 200 ? '' : ` (${response.body.slice(0, 200)})`}`)
  const body = parse(response)
  const access = audit.secret(`access token (${what})`, body?.access_token)
  response.allowed.add(access)
  let refresh: string | undefined
  if (body?.refresh_token !== undefined) {
    refresh = audit.secret(`refresh token (${what})`, body.refresh_token)
    response.allowed.add(refresh)
  }
  return { access, refresh }
}

/** GET the authorization endpoint and get the consent page: its transaction and CSRF cookie. */
async function consentPage (audit: Audit, t: Test, server: TestServer, clientId: string, challenge: string, what: string): Promise<{ transaction: string, cookie: string, action: string }> {
  const page = await audit.request(`consent page (${what})`, authorizeUrl(server, clientId, challenge))
  t.equal(page.status, 200, `${what}: the consent page is shown`)
  const { transaction, action } = parseConsentPage(page.body)
  audit.secret(`consent transaction (${what})`, transaction)
  page.allowed.add(transaction)
  const cookie = (page.headers.get('set-cookie') ?? '').split(';')[0] ?? ''
  const csrf = audit.secret(`CSRF cookie (${what})`, cookie.slice(cookie.indexOf('=') + 1))
  page.allowedInHeaders.add(csrf)
  return { transaction, cookie, action: new URL(action, server.baseUrl).toString() }
}

t.test('no secret reaches the logs, other responses, the audit log or /metrics', async (t) => {
  const audit = new Audit()
  const consent = await startTestServer(t, { listen: true, logLevel: 'trace' })
  const auto = await startTestServer(t, { listen: true, logLevel: 'trace', env: { AUTO_APPROVE_PRINCIPAL: 'brain' } })
  const servers = [consent, auto]

  // ── API tokens through the admin API: issue, use, list, revoke, use again ──
  for (const server of servers) {
    for (const name of ['alice', 'brain']) {
      t.equal((await audit.json(`principal ${name}`, `${server.adminUrl}/principals`, { name })).status, 201)
    }
  }
  const issued = await audit.json('issue API token', `${consent.adminUrl}/tokens`, { principal: 'alice', label: 'audit' })
  t.equal(issued.status, 201)
  const apiToken = audit.secret('API token', parse(issued).token)
  issued.allowed.add(apiToken)
  const tokenId = parse(issued).id as number
  t.equal((await audit.mcp('whoami with API token', consent, apiToken, 'whoami')).status, 200)
  t.equal((await audit.mcp('bus_send with API token', consent, apiToken, 'bus_send', { channel: 'audit', body: 'hello' })).status, 200)
  t.equal((await audit.mcp('bus_read with API token', consent, apiToken, 'bus_read', { channel: 'audit' })).status, 200)
  t.equal((await audit.json('list API tokens', `${consent.adminUrl}/tokens?principal=alice`)).status, 200)
  t.equal((await audit.json('revoke API token', `${consent.adminUrl}/tokens/${tokenId}/revoke`, {})).status, 200)
  t.equal((await audit.mcp('revoked API token', consent, apiToken, 'whoami')).status, 401, 'the revoked API token is refused')

  // A second token, kept live: the consent page credential.
  const issuedForConsent = await audit.json('issue API token for consent', `${consent.adminUrl}/tokens`, { principal: 'alice' })
  const consentToken = audit.secret('API token (consent credential)', parse(issuedForConsent).token)
  issuedForConsent.allowed.add(consentToken)

  // ── Consent page with an API token, for a client_secret_post client ──
  const confidential = await register(audit, consent, 'client_secret_post')
  const secretPost = confidential.clientSecret as string
  const pkceA = pkcePair()
  audit.secret('PKCE verifier (consent, API token)', pkceA.verifier)
  const pageA = await consentPage(audit, t, consent, confidential.clientId, pkceA.challenge, 'API token')
  const wrongApiToken = audit.secret('wrong API token', `bus_api_${randomBytes(32).toString('base64url')}`)
  const wrongAttempt = await audit.form('consent with a wrong API token', pageA.action, { transaction: pageA.transaction, action: 'approve', credential: wrongApiToken }, { cookie: pageA.cookie })
  t.equal(wrongAttempt.status, 401, 'a wrong credential re-shows the page')
  wrongAttempt.allowed.add(pageA.transaction)
  wrongAttempt.allowedInHeaders.add(pageA.cookie.slice(pageA.cookie.indexOf('=') + 1))
  const forgedCookie = audit.secret('forged CSRF cookie', randomBytes(32).toString('base64url'))
  const forged = await audit.form('consent with a forged CSRF cookie', pageA.action, { transaction: pageA.transaction, action: 'approve', credential: consentToken }, {
    cookie: `${pageA.cookie.slice(0, pageA.cookie.indexOf('='))}=${forgedCookie}`
  })
  t.equal(forged.status, 403, 'a forged CSRF cookie is refused')
  const approvedA = await audit.form('consent with an API token', pageA.action, { transaction: pageA.transaction, action: 'approve', credential: consentToken }, { cookie: pageA.cookie })
  const codeA = codeFrom(audit, t, approvedA, 'consent, API token')
  t.equal((await audit.form('consent replayed', pageA.action, { transaction: pageA.transaction, action: 'approve', credential: consentToken }, { cookie: pageA.cookie })).status, 400, 'a used consent transaction is refused')

  const token = `${consent.baseUrl}/oauth/token`
  const wrongSecret = audit.secret('wrong client secret', `bus_cs_${randomBytes(32).toString('base64url')}`)
  t.equal((await audit.form('token with a wrong client_secret_post', token, {
    grant_type: 'authorization_code', code: codeA, code_verifier: pkceA.verifier, redirect_uri: REDIRECT_URI, client_id: confidential.clientId, client_secret: wrongSecret
  })).status, 401, 'wrong secret (post): invalid_client')
  const wrongBasic = `Basic ${Buffer.from(`${encodeURIComponent(confidential.clientId)}:${encodeURIComponent(wrongSecret)}`).toString('base64')}`
  audit.secret('wrong Basic credentials', wrongBasic.slice('Basic '.length))
  t.equal((await audit.form('token with wrong Basic credentials', token, {
    grant_type: 'authorization_code', code: codeA, code_verifier: pkceA.verifier, redirect_uri: REDIRECT_URI
  }, { authorization: wrongBasic })).status, 401, 'wrong secret (basic): invalid_client')
  const wrongVerifier = audit.secret('wrong PKCE verifier', pkcePair().verifier)
  t.equal((await audit.form('token with a wrong verifier', token, {
    grant_type: 'authorization_code', code: codeA, code_verifier: wrongVerifier, redirect_uri: REDIRECT_URI, client_id: confidential.clientId, client_secret: secretPost
  })).status, 400, 'wrong verifier: invalid_grant')
  const wrongCode = audit.secret('wrong authorization code', `bus_ac_${randomBytes(32).toString('base64url')}`)
  t.equal((await audit.form('token with a wrong code', token, {
    grant_type: 'authorization_code', code: wrongCode, code_verifier: pkceA.verifier, redirect_uri: REDIRECT_URI, client_id: confidential.clientId, client_secret: secretPost
  })).status, 400, 'unknown code: invalid_grant')
  const redeemedA = await audit.form('code redemption (client_secret_post)', token, {
    grant_type: 'authorization_code', code: codeA, code_verifier: pkceA.verifier, redirect_uri: REDIRECT_URI, client_id: confidential.clientId, client_secret: secretPost, resource: consent.config.resourceUrl
  })
  const tokensA = tokensFrom(audit, t, redeemedA, 'consent, API token')
  t.equal((await audit.mcp('whoami with an access token', consent, tokensA.access, 'whoami')).status, 200)
  const basicA = `Basic ${Buffer.from(`${encodeURIComponent(confidential.clientId)}:${encodeURIComponent(secretPost)}`).toString('base64')}`
  audit.secret('Basic credentials', basicA.slice('Basic '.length))
  const refreshedA = await audit.form('refresh (client_secret_basic)', token, { grant_type: 'refresh_token', refresh_token: tokensA.refresh }, { authorization: basicA })
  const tokensA2 = tokensFrom(audit, t, refreshedA, 'refresh A')
  t.equal((await audit.form('refresh replay', token, { grant_type: 'refresh_token', refresh_token: tokensA.refresh, client_id: confidential.clientId, client_secret: secretPost })).status, 400, 'a rotated refresh token is refused')
  t.equal((await audit.form('code replay', token, {
    grant_type: 'authorization_code', code: codeA, code_verifier: pkceA.verifier, redirect_uri: REDIRECT_URI, client_id: confidential.clientId, client_secret: secretPost
  })).status, 400, 'a spent code is refused')
  t.equal((await audit.mcp('access token after replay', consent, tokensA2.access, 'whoami')).status, 401, 'the replays revoked the family')

  // ── Consent page with a login code, for a public client ──
  const publicClient = await register(audit, consent, 'none')
  const loginIssued = await audit.json('issue login code', `${consent.adminUrl}/login-codes`, { principal: 'alice' })
  t.equal(loginIssued.status, 201)
  const loginCode = audit.secret('login code', parse(loginIssued).code)
  loginIssued.allowed.add(loginCode)
  const pkceB = pkcePair()
  audit.secret('PKCE verifier (consent, login code)', pkceB.verifier)
  const pageB = await consentPage(audit, t, consent, publicClient.clientId, pkceB.challenge, 'login code')
  const wrongLogin = audit.secret('wrong login code', 'QRSTV-WXYZ0')
  const wrongLoginAttempt = await audit.form('consent with a wrong login code', pageB.action, { transaction: pageB.transaction, action: 'approve', credential: wrongLogin }, { cookie: pageB.cookie })
  t.equal(wrongLoginAttempt.status, 401)
  wrongLoginAttempt.allowed.add(pageB.transaction)
  wrongLoginAttempt.allowedInHeaders.add(pageB.cookie.slice(pageB.cookie.indexOf('=') + 1))
  const approvedB = await audit.form('consent with a login code', pageB.action, { transaction: pageB.transaction, action: 'approve', credential: loginCode.toLowerCase() }, { cookie: pageB.cookie })
  const codeB = codeFrom(audit, t, approvedB, 'consent, login code')
  const tokensB = tokensFrom(audit, t, await audit.form('code redemption (public)', token, {
    grant_type: 'authorization_code', code: codeB, code_verifier: pkceB.verifier, redirect_uri: REDIRECT_URI, client_id: publicClient.clientId
  }), 'consent, login code')
  t.equal((await audit.mcp('bus_send with an access token', consent, tokensB.access, 'bus_send', { channel: 'audit', body: 'via oauth' })).status, 200)
  const tokensB2 = tokensFrom(audit, t, await audit.form('refresh (public)', token, { grant_type: 'refresh_token', refresh_token: tokensB.refresh, client_id: publicClient.clientId }), 'refresh B')
  t.equal((await audit.form('revoke refresh token', `${consent.baseUrl}/oauth/revoke`, { token: tokensB2.refresh, client_id: publicClient.clientId })).status, 200)
  t.equal((await audit.form('revoke access token', `${consent.baseUrl}/oauth/revoke`, { token: tokensB2.access, client_id: publicClient.clientId, token_type_hint: 'access_token' })).status, 200)
  t.equal((await audit.mcp('revoked access token', consent, tokensB2.access, 'whoami')).status, 401)

  // ── Bad bearers on /mcp ──
  const wrongAccess = audit.secret('wrong access token', `bus_at_${randomBytes(32).toString('base64url')}`)
  t.equal((await audit.mcp('unknown access token', consent, wrongAccess, 'whoami')).status, 401)
  t.equal((await audit.mcp('refresh token as a bearer', consent, tokensB2.refresh as string, 'whoami')).status, 401)
  t.equal((await audit.mcp('code as a bearer', consent, codeB, 'whoami')).status, 401)
  const unprefixed = audit.secret('unprefixed bearer', randomBytes(32).toString('hex'))
  t.equal((await audit.mcp('unprefixed bearer', consent, unprefixed, 'whoami')).status, 401)
  t.equal((await audit.request('lowercase scheme, bad token', `${consent.baseUrl}/mcp`, {
    method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json', authorization: `bearer ${wrongAccess}` }, body: '{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
  })).status, 401)
  // Malformed JSON around a secret: parse errors must not echo it.
  t.equal((await audit.request('malformed JSON with a token in it', `${consent.baseUrl}/mcp`, {
    method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json', authorization: `Bearer ${consentToken}` }, body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"bus_send","arguments":{"body":"${wrongAccess}"`
  })).status, 400)
  t.equal((await audit.request('malformed admin JSON with a token in it', `${consent.adminUrl}/tokens`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: `{"principal":"${wrongApiToken}`
  })).status, 400)

  // ── Secrets where they do not belong: in query strings (misdirected callbacks, tokens in URLs) ──
  await audit.request('a callback with a code sent to the server', `${consent.baseUrl}/callback?code=${encodeURIComponent(codeB)}&state=x&iss=${encodeURIComponent(consent.config.publicUrl)}`)
  await audit.request('access token in the query', `${consent.baseUrl}/mcp?access_token=${encodeURIComponent(wrongAccess)}`, {
    method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json' }, body: '{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
  })
  await audit.request('token endpoint with secrets in the query', `${consent.baseUrl}/oauth/token?code=${encodeURIComponent(wrongCode)}&client_secret=${encodeURIComponent(wrongSecret)}&code_verifier=${wrongVerifier}`, { method: 'POST' })
  await audit.request('admin route with a token in the query', `${consent.adminUrl}/nothing-here?token=${encodeURIComponent(wrongApiToken)}`)

  // ── client_credentials with a pre-registered confidential client ──
  const preregistered = await audit.json('pre-register a confidential client', `${consent.adminUrl}/clients`, { name: 'machine', principal: 'alice', confidential: true, redirect_uris: [REDIRECT_URI] })
  t.equal(preregistered.status, 201, 'pre-registered confidential client')
  const machine = parse(preregistered) as { client_id: string, client_secret: string }
  audit.secret('client secret (pre-registered)', machine.client_secret)
  preregistered.allowed.add(machine.client_secret)
  t.equal((await audit.form('client_credentials with a wrong secret', token, { grant_type: 'client_credentials', client_id: machine.client_id, client_secret: wrongSecret })).status, 401)
  const machineTokens = tokensFrom(audit, t, await audit.form('client_credentials', token, { grant_type: 'client_credentials', client_id: machine.client_id, client_secret: machine.client_secret, scope: 'bus:read bus:write' }), 'client_credentials')
  t.equal(machineTokens.refresh, undefined, 'no refresh token for client_credentials')
  t.equal((await audit.mcp('whoami as the machine', consent, machineTokens.access, 'whoami')).status, 200)
  t.equal((await audit.form('revoke the machine token', `${consent.baseUrl}/oauth/revoke`, { token: machineTokens.access, client_id: machine.client_id, client_secret: machine.client_secret })).status, 200)

  // ── Auto-approve (AUTO_APPROVE_PRINCIPAL) ──
  const autoClient = await register(audit, auto, 'none')
  const pkceC = pkcePair()
  audit.secret('PKCE verifier (auto-approve)', pkceC.verifier)
  const codeC = codeFrom(audit, t, await audit.request('auto-approved authorization', authorizeUrl(auto, autoClient.clientId, pkceC.challenge)), 'auto-approve')
  const tokensC = tokensFrom(audit, t, await audit.form('code redemption (auto)', `${auto.baseUrl}/token`, {
    grant_type: 'authorization_code', code: codeC, code_verifier: pkceC.verifier, redirect_uri: REDIRECT_URI, client_id: autoClient.clientId
  }), 'auto-approve')
  t.equal((await audit.mcp('whoami (auto)', auto, tokensC.access, 'whoami')).status, 200)
  const tokensC2 = tokensFrom(audit, t, await audit.form('refresh (auto)', `${auto.baseUrl}/oauth/token`, { grant_type: 'refresh_token', refresh_token: tokensC.refresh, client_id: autoClient.clientId }), 'refresh C')
  t.equal((await audit.form('revoke (auto)', `${auto.baseUrl}/revoke`, { token: tokensC2.refresh, client_id: autoClient.clientId })).status, 200)
  t.equal((await audit.form('refresh after revocation', `${auto.baseUrl}/oauth/token`, { grant_type: 'refresh_token', refresh_token: tokensC2.refresh, client_id: autoClient.clientId })).status, 400)
  const confidentialAuto = await register(audit, auto, 'client_secret_post')
  t.equal((await audit.form('revoke with a wrong secret', `${auto.baseUrl}/oauth/revoke`, { token: tokensC2.access, client_id: confidentialAuto.clientId, client_secret: wrongSecret })).status, 401)

  // ── Where the secrets must not be ──
  const metrics: Exchange[] = []
  for (const server of servers) {
    await server.runtime.audit.flush()
    metrics.push(await audit.request('metrics', `${server.adminUrl}/metrics`))
  }
  t.ok(audit.secrets.size >= 30, `${audit.secrets.size} secrets collected`)

  t.test('server logs (every line)', async (t) => {
    let lines = 0
    for (const server of servers) {
      t.ok(server.logs.length > 20, `trace logging is on (${server.logs.length} lines)`)
      for (const line of server.logs) {
        lines++
        const leaks = leaksIn(line, audit.secrets)
        if (leaks.length > 0) t.fail(`log line leaks ${leaks.join(', ')}: ${line.slice(0, 400)}`)
      }
    }
    t.pass(`${lines} lines checked`)
  })

  t.test('HTTP responses (bodies, and headers other than the legitimate Location / Set-Cookie)', async (t) => {
    for (const exchange of audit.exchanges) {
      const bodyLeaks = leaksIn(exchange.body, audit.secrets, exchange.allowed)
      if (bodyLeaks.length > 0) t.fail(`${exchange.what} (${exchange.status}) body leaks ${bodyLeaks.join(', ')}: ${exchange.body.slice(0, 300)}`)
      const headers: string[] = []
      exchange.headers.forEach((value, name) => { headers.push(`${name}: ${value}`) })
      const headerLeaks = leaksIn(headers.join('\n'), audit.secrets, exchange.allowedInHeaders)
      if (headerLeaks.length > 0) t.fail(`${exchange.what} (${exchange.status}) headers leak ${headerLeaks.join(', ')}: ${headers.join(' | ').slice(0, 300)}`)
    }
    t.pass(`${audit.exchanges.length} responses checked`)
    t.ok(metrics.every((m) => m.status === 200 && m.body.includes('# TYPE')), '/metrics answered (and is among the bodies checked)')
  })

  t.test('audit log (every column of every row)', async (t) => {
    let rows = 0
    for (const server of servers) {
      const result = rowsOf<{ row: string }>(await server.database.db.execute(sql`select row_to_json(a)::text as row from audit_log a order by id`))
      t.ok(result.length >= 5, `${result.length} audit rows`)
      for (const { row } of result) {
        rows++
        const leaks = leaksIn(row, audit.secrets)
        if (leaks.length > 0) t.fail(`audit row leaks ${leaks.join(', ')}: ${row}`)
      }
    }
    t.pass(`${rows} rows checked`)
  })

  t.test('secrets are stored only as hashes (no table holds one in clear)', async (t) => {
    for (const server of servers) {
      const dump = rowsOf<{ row: string }>(await server.database.db.execute(sql`
        select row_to_json(x)::text as row from (
          select 'api_tokens' as t, row_to_json(a)::text as r from api_tokens a
          union all select 'oauth_clients', row_to_json(c)::text from oauth_clients c
          union all select 'oauth_codes', row_to_json(o)::text from oauth_codes o
          union all select 'oauth_tokens', row_to_json(o)::text from oauth_tokens o
          union all select 'oauth_pending_authorizations', row_to_json(p)::text from oauth_pending_authorizations p
          union all select 'login_codes', row_to_json(l)::text from login_codes l
          union all select 'messages', row_to_json(m)::text from messages m
        ) x`))
      for (const { row } of dump) {
        const leaks = leaksIn(row, audit.secrets)
        if (leaks.length > 0) t.fail(`stored in clear: ${leaks.join(', ')}: ${row.slice(0, 300)}`)
      }
      t.ok(dump.length > 0, `${dump.length} rows checked`)
    }
  })
})
