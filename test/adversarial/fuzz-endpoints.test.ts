import fc from 'fast-check'
import type { InjectOptions, LightMyRequestResponse } from 'fastify'
import t from 'tap'
import { createPrincipal } from '../../src/principals/store.ts'
import { authorizationParams, authorize, createTestDatabase, encodeParams, obtainCode, obtainTokens, registerClient, type Params, type RegisteredTestClient } from '../helpers/oauth-inject.ts'
import { parseConsentPage, pkcePair } from '../helpers/oauth.ts'
import { principalWithToken, startTestServer, type TestServer } from '../helpers/server.ts'
import {
  AUTHORIZATION_RESPONSE_ERRORS, headerOf, leakIn, parseJson, REGISTER_ERRORS, replayHint, REVOKE_ERRORS, seedFor, stateDiff, stateOf, TOKEN_ERRORS, writeMark
} from './support.ts'

/**
 * Property-based fuzzing of every public endpoint and of the admin API (issue 5, item 2).
 *
 * Every request is generated from a seed that is new on every run (printed with each property;
 * `FUZZ_SEED=<n>` replays a run exactly), sent through `inject`, and must satisfy, whatever it was:
 *
 * - never a 5xx; never a stack trace, source path or JavaScript error name in the body;
 * - the endpoint's own error shape: RFC 6749 §5.2 / RFC 7009 / RFC 7591 codes in JSON for token,
 *   revoke and register; a JSON-RPC error object for /mcp (with a Bearer challenge on 401); an
 *   HTML page that cannot be framed, or a redirect to a URI the client registered carrying `iss`,
 *   for the authorization endpoint; `{ error, message }` for the admin API;
 * - no state change when the request failed: after each request, if the database's next
 *   transaction id moved (anything at all was written), a fingerprint of every table (row counts
 *   plus the revoked / rotated / consumed / used / failed-attempt / cursor columns; see
 *   support.ts) is compared with the one before, and must be identical. Successes may change
 *   only what they are for (a consent page adds one pending authorization; an approval adds one
 *   grant and one code; a registration adds one client); the audit log may grow (failures are
 *   audited on purpose);
 * - nothing is logged at error level during the whole run (no handler failed, no audit write
 *   failed).
 *
 * Each property also asserts that a minimum share of its runs got past the first refusals (a
 * success, or the endpoint's deeper checks): a generator that only ever produced garbage would
 * otherwise test nothing but the parsers. Some runs use fresh real credentials (a new code, a new
 * refresh token, a new consent transaction and its cookie), filled in just before they are sent.
 *
 * Rate limits are off here (RATE_LIMIT_MULTIPLIER=0) so that the generated requests reach the
 * handlers; the limits themselves are attacked in oauth-bcp.test.ts.
 */

const ADMIN_TOKEN = 'fuzz-admin-token-0123456789abcdef'
const db = await createTestDatabase(t)
const server = await startTestServer(t, {
  database: db.database,
  ...(db.url !== undefined ? { databaseUrl: db.url } : {}),
  env: { RATE_LIMIT_MULTIPLIER: '0', ADMIN_TOKEN },
  logLevel: 'warn'
})
const issuer = server.config.publicUrl

// ---------------------------------------------------------------------------------------------
// Fixtures: real credentials and clients, so generated requests can get past the first checks.

const writerToken = await principalWithToken(server, 'fz-writer')
const readerToken = await principalWithToken(server, 'fz-reader', 'bus:read')
await createPrincipal(server.database.db, 'fz-victim', 'bus:read bus:write')
const publicClient = await registerClient(server, { client_name: 'Fuzz public' })
const confidentialClient = await registerClient(server, {
  client_name: 'Fuzz confidential', token_endpoint_auth_method: 'client_secret_basic', redirect_uris: ['https://app.example.com/cb']
})
const boundCreated = await server.admin.inject({
  method: 'POST',
  url: '/clients',
  headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
  payload: { name: 'Fuzz bound', redirect_uris: ['https://bound.example.com/cb'], principal: 'fz-writer' }
})
if (boundCreated.statusCode !== 201) throw new Error(`bound client: ${boundCreated.body}`)
const boundClient: RegisteredTestClient = { clientId: JSON.parse(boundCreated.body).client_id, clientSecret: undefined, redirectUri: 'https://bound.example.com/cb' }
const oauthTokens = await obtainTokens(server, boundClient)
const machineCreated = await server.admin.inject({
  method: 'POST',
  url: '/clients',
  headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
  payload: { name: 'Fuzz machine', principal: 'fz-writer', confidential: true }
})
if (machineCreated.statusCode !== 201) throw new Error(`machine client: ${machineCreated.body}`)
/** A confidential client bound to a principal: client_credentials succeeds for it. */
const machineClient = { clientId: JSON.parse(machineCreated.body).client_id as string, clientSecret: JSON.parse(machineCreated.body).client_secret as string }
const clients = [publicClient, confidentialClient, boundClient]
/** Every redirect URI each fixture client registered: the only places a redirect may go. */
const registeredRedirects = new Map(clients.map((c) => [c.clientId, [c.redirectUri]]))
const { challenge } = pkcePair()

// ---------------------------------------------------------------------------------------------
// Building blocks

const HUGE = 'A'.repeat(70_000)
/** Strings that have broken parsers before: empties, NUL, prototype keys, numbers, markup, overlong, unicode. */
const nasty = fc.constantFrom(
  '', ' ', '\u0000', 'a\u0000b', '%00', '\t\n', 'null', 'undefined', 'true', '0', '-1', '1e309', 'NaN', '9007199254740993',
  '[]', '{}', '[object Object]', '__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty',
  '<script>alert(1)</script>', '"><img src=x onerror=alert(1)>', "' or '1'='1", '; drop table principals; --', '../../etc/passwd',
  '\u202eevil', '\u{1F600}', '\ud800', '\uffff', 'é', 'ǅ', '\u200b', 'a'.repeat(4097), HUGE,
  'bus:read', 'bus:write', 'bus:read bus:write', 'offline_access', 'openid', 'S256', 's256', 'plain', 'code', 'token', 'id_token',
  'authorization_code', 'refresh_token', 'client_credentials', 'password', 'urn:ietf:params:oauth:grant-type:device_code',
  'https://evil.example', 'https://evil.example/mcp', `${issuer}/mcp`, `${issuer}/`, issuer, `${issuer}@evil.example/mcp`,
  'javascript:alert(1)', 'data:text/html,x', 'http://169.254.169.254/latest/meta-data/', 'https://127.0.0.1/doc', 'https://localhost/doc',
  'bus_at_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', 'bus_rt_AAAA', 'bus_ac_AAAA', 'bus_api_AAAA', 'bus_cs_AAAA', 'client_', 'client_AAAA'
)
/** A fixture value (a real client id, redirect URI, challenge, token...), so the fuzz reaches deeper branches. */
const real = fc.constantFrom(
  publicClient.clientId, confidentialClient.clientId, boundClient.clientId, publicClient.redirectUri, confidentialClient.redirectUri,
  boundClient.redirectUri, 'http://localhost:1/callback', 'http://127.0.0.1:53682/callback', challenge, 'state-1',
  oauthTokens.access_token, oauthTokens.refresh_token ?? '', writerToken, readerToken, server.config.resourceUrl
)
const text = fc.oneof(
  { weight: 3, arbitrary: nasty },
  { weight: 3, arbitrary: real },
  { weight: 2, arbitrary: fc.string({ maxLength: 40 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'grapheme', maxLength: 20 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 20 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary-ascii', minLength: 100, maxLength: 3000 }) }
)
/** A form or query value: once, or duplicated (RFC 6749 §3.1 says a parameter appears at most once). */
const paramValue: fc.Arbitrary<string | string[]> = fc.oneof(
  { weight: 5, arbitrary: text },
  { weight: 1, arbitrary: fc.array(text, { minLength: 2, maxLength: 3 }) }
)
const paramName = fc.oneof(
  fc.constantFrom('__proto__', 'constructor', 'a[b]', 'client_id[]', 'x.y', '', ' ', 'CLIENT_ID', 'client_id ', '%00'),
  fc.string({ maxLength: 12 })
)

/** Parameters with the endpoint's names (each optional), plus a few random others. */
function paramsWith (names: readonly string[], fixed: fc.Arbitrary<Params> = fc.constant({})): fc.Arbitrary<Params> {
  const model: Record<string, fc.Arbitrary<string | string[]>> = {}
  for (const name of names) model[name] = paramValue
  return fc.tuple(fixed, fc.record(model, { requiredKeys: [] }), fc.dictionary(paramName, paramValue, { maxKeys: 3 }))
    .map(([base, known, extra]) => ({ ...base, ...extra, ...known }))
}

/** encodeURIComponent, with lone surrogates (which it refuses) replaced as a browser would. */
const enc = (value: string): string => encodeURIComponent(value.toWellFormed())
/** A raw query string that is not well-formed: bad percent escapes, stray separators, prototype keys. */
const rawQuery = fc.array(fc.oneof(
  fc.constantFrom('%', '%zz', '%f', '%ff%fe', '%00', '%C0%AF', '%E0%A4', '%ED%A0%80', '&', '&&', '=', '==', '+', '[', ']', ';',
    '__proto__[x]=1', 'constructor[prototype][x]=1', 'client_id=', 'client_id=a&client_id=b', 'a=%', 'redirect_uri=%2F%2Fevil.example'),
  fc.string({ unit: 'binary-ascii', maxLength: 12 }).map((s) => enc(s))
), { maxLength: 8 }).map((parts) => parts.join(''))

/** Header values as an HTTP parser would deliver them: visible ASCII, space, tab and obs-text. */
const headerText = fc.oneof(
  fc.string({ unit: fc.integer({ min: 0x20, max: 0xff }).filter((c) => c !== 0x7f).map((c) => String.fromCharCode(c)), maxLength: 60 }),
  fc.constantFrom('', ' ', 'a'.repeat(8_000), 'b'.repeat(60_000))
)
/**
 * A string as an HTTP parser delivers it in a header: its UTF-8 bytes read as Latin-1, without
 * the control characters a parser refuses. (inject would pass any string, which no real
 * request can carry.)
 */
function asHeaderValue (value: string | undefined): string | undefined {
  // eslint-disable-next-line no-control-regex -- removing control characters is the point
  return value === undefined ? undefined : Buffer.from(value, 'utf8').toString('latin1').replace(/[\u0000-\u0008\u000a-\u001f\u007f]/g, '')
}
const basic = (id: string, secret: string): string => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`
const authorizationHeader: fc.Arbitrary<string | string[] | undefined> = fc.oneof(
  { weight: 3, arbitrary: fc.constant(undefined) },
  { weight: 3, arbitrary: fc.constantFrom(`Bearer ${writerToken}`, `Bearer ${readerToken}`, `Bearer ${oauthTokens.access_token}`, `bearer ${writerToken}`, `BEARER  ${oauthTokens.access_token}`) },
  {
    weight: 4,
    arbitrary: fc.constantFrom(
      'Bearer', 'Bearer ', 'Bearer  ', 'Bearer x y', `Bearer ${'a'.repeat(513)}`, `Bearer ${'a'.repeat(20_000)}`, 'Bearer =====', 'Bearer ~+/',
      `Bearer ${oauthTokens.refresh_token ?? ''}`, `Bearer ${writerToken}x`, `Bearer ${writerToken.slice(0, -1)}`, 'Bearer bus_at_', 'Bearer bus_api_',
      `Bearer ${ADMIN_TOKEN}`, 'Basic', 'Basic !!!', 'Basic Og==', 'Basic OmE=', basic(publicClient.clientId, ''), basic(confidentialClient.clientId, 'wrong'),
      basic(confidentialClient.clientId, `${confidentialClient.clientSecret ?? ''}x`), basic('%zz', 'x'), basic('', ''), basic('client_\u0000x', 'y'), basic('client_%00x', 'y'), `Basic ${'A'.repeat(10_000)}`,
      'Digest username="x"', 'Negotiate abc', 'Token abc', 'MAC x', '\tBearer x', 'Bearer\tx', 'B€arer x', '=', 'Bearer x\u00ff'
    )
  },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom('Bearer ', 'Basic ', 'bearer ', ''), headerText).map(([s, v]) => s + v) },
  { weight: 1, arbitrary: fc.constant([`Bearer ${writerToken}`, 'Bearer other']) as fc.Arbitrary<string[]> }
)
const contentType = fc.oneof(
  fc.constantFrom(
    undefined, 'application/json', 'application/x-www-form-urlencoded', 'application/json; charset=utf-8', 'application/json; charset=utf-16',
    'application/json; charset=latin1', 'APPLICATION/JSON', 'application/jsonx', 'application/json-seq', 'application/json;;', 'application/json; a=',
    'application/x-www-form-urlencoded; charset=iso-8859-1', 'application/x-www-form-urlencodedX', 'multipart/form-data; boundary=x', 'multipart/form-data',
    'text/plain', 'text/html', 'application/octet-stream', 'application/xml', '', ';', '*/*', 'application/*', 'json'
  ),
  headerText
)
const origin = fc.constantFrom(undefined, undefined, 'https://claude.ai', 'https://evil.example', 'null', 'https://claude.ai.evil.example', 'http://localhost:8088', 'file://')
const extraHeaders = fc.record({
  accept: fc.constantFrom(undefined, 'application/json, text/event-stream', '*/*', 'text/html', 'application/xml', '', 'text/event-stream'),
  'mcp-protocol-version': fc.constantFrom(undefined, '2025-06-18', '2025-03-26', '2099-01-01', '', 'x'),
  cookie: fc.oneof(fc.constant(undefined), headerText, fc.constantFrom('bus_consent_0000000000000000=x', '=;;=', 'a=b; a=c')),
  'x-forwarded-for': fc.constantFrom(undefined, '1.2.3.4', '127.0.0.1, ::1', 'garbage'),
  'sec-fetch-site': fc.constantFrom(undefined, 'cross-site', 'same-origin', 'none'),
  'x-pad': fc.constantFrom(undefined, undefined, 'p'.repeat(16_000), 'q'.repeat(100_000)),
  'transfer-encoding': fc.constantFrom(undefined, undefined, 'identity')
}, { requiredKeys: [] })

function deep (open: string, close: string, depth: number): string {
  return open.repeat(depth) + close.repeat(depth)
}
function deepMetadata (depth: number): string {
  return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"bus_send","arguments":{"channel":"fuzz","body":"x","metadata":${deep('{"a":', '}', depth).replace('{"a":}', '{"a":1}')}}}}`
}
function nested (depth: number): unknown {
  let value: unknown = 1
  for (let i = 0; i < depth; i++) value = { a: value }
  return value
}
/** Bodies of every kind: JSON values, random bytes, forms, deep nesting, sizes around every limit. */
const anyBody: fc.Arbitrary<string | Buffer> = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v) ?? 'null'),
  fc.uint8Array({ maxLength: 300 }).map((bytes) => Buffer.from(bytes)),
  paramsWith(['client_id', 'grant_type', 'token', 'redirect_uris']).map(encodeParams),
  fc.constantFrom(
    '', ' ', '{', '{"a":', '[1,]', '{"__proto__":{"polluted":1}}', '{"constructor":{"prototype":{"polluted":1}}}', 'null', '0', '"x"', '\u0000',
    '\ufeff{}', '{"a":1,"a":2}', deep('[', ']', 5_000), deep('{"a":', '}', 5_000), deep('[', ']', 200_000),
    JSON.stringify({ x: 'a'.repeat(17_000) }), JSON.stringify({ x: 'a'.repeat(600_000) }), `a=${'b'.repeat(20_000)}`, 'a=1&a=2&a=3',
    Buffer.from([0xff, 0xfe, 0x00, 0x7b, 0x7d]), Buffer.from([0xef, 0xbb, 0xbf, 0x7b, 0x7d]), Buffer.from('7b2261223a317d', 'hex')
  )
)
const ipAddress = fc.constantFrom('127.0.0.1', '10.1.2.3', '203.0.113.7', '::1', '2001:db8::7', '::ffff:192.0.2.1')

interface GeneratedRequest {
  method: string
  url: string
  headers: Record<string, string | string[]>
  payload?: string | Buffer
  remoteAddress: string
}

function request (method: fc.Arbitrary<string>, url: fc.Arbitrary<string>, body: fc.Arbitrary<string | Buffer | undefined>, headers: fc.Arbitrary<Record<string, string | string[] | undefined>> = fc.constant({})): fc.Arbitrary<GeneratedRequest> {
  return fc.record({
    method,
    url,
    payload: body,
    remoteAddress: ipAddress,
    authorization: authorizationHeader,
    contentType,
    origin,
    extra: extraHeaders,
    fixed: headers
  }).map(({ method, url, payload, remoteAddress, authorization, contentType, origin, extra, fixed }) => {
    const all: Record<string, string | string[] | undefined> = { ...extra, authorization, 'content-type': contentType, origin, ...fixed }
    const headers: Record<string, string | string[]> = {}
    for (const [name, value] of Object.entries(all)) if (value !== undefined) headers[name] = value
    return { method, url, headers, remoteAddress, ...(payload !== undefined && method !== 'GET' && method !== 'HEAD' ? { payload } : {}) }
  })
}

/** A query string: well-formed parameters, a malformed raw one, or both. */
function query (names: readonly string[], fixed?: fc.Arbitrary<Params>): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 4, arbitrary: paramsWith(names, fixed).map(encodeParams) },
    { weight: 1, arbitrary: rawQuery },
    { weight: 1, arbitrary: fc.tuple(paramsWith(names, fixed).map(encodeParams), rawQuery).map(([a, b]) => `${a}&${b}`) }
  )
}

// ---------------------------------------------------------------------------------------------
// The checks every response gets

type Kind = 'mcp' | 'authorize' | 'token' | 'revoke' | 'register' | 'discovery' | 'health' | 'admin' | 'any'
type Check = (request: GeneratedRequest, response: LightMyRequestResponse) => string | undefined

function describe (request: GeneratedRequest, response: LightMyRequestResponse): string {
  const short = (value: unknown): unknown => typeof value === 'string' && value.length > 200 ? `${value.slice(0, 200)}…(${value.length})` : value
  const shown = {
    ...request,
    url: short(request.url),
    headers: Object.fromEntries(Object.entries(request.headers).map(([k, v]) => [k, Array.isArray(v) ? v.map(short) : short(v)])),
    payload: request.payload === undefined ? undefined : short(request.payload.toString())
  }
  return `\n  request: ${JSON.stringify(shown)}\n  response: ${response.statusCode} ${JSON.stringify(response.headers).slice(0, 400)} ${response.body.slice(0, 400)}`
}

/** A request announcing a body (a preflight never does): Fastify reads it, and may refuse it, before any route runs. */
function hasBody (request: GeneratedRequest): boolean {
  return request.payload !== undefined || request.headers['content-type'] !== undefined
}

/**
 * The public listener's own replies for a method or path no route serves: 404 not_found, or the
 * 4xx of reading the body on the way there (Fastify parses it before it knows there is no route).
 * `{ error, message }` either way; HEAD replies have no body.
 */
function isNotFound (request: GeneratedRequest, response: LightMyRequestResponse): boolean {
  if (response.statusCode < 400 || response.statusCode >= 500) return false
  if (request.method === 'HEAD') return response.body === ''
  const body = parseJson(response.body) as { error?: unknown, message?: unknown } | undefined
  if (typeof body?.error !== 'string' || typeof body.message !== 'string') return false
  return response.statusCode === 404 ? body.error === 'not_found' : body.error.startsWith('FST_ERR_CTP_')
}

function checkOAuthJson (errors: ReadonlySet<string>): Check {
  return (request, response) => {
    // A preflight never has a body; one that does may be refused while it is read.
    if (request.method === 'OPTIONS' && (response.statusCode === 204 || (hasBody(request) && response.statusCode >= 400))) return undefined
    if (request.method !== 'POST') return isNotFound(request, response) ? undefined : `a ${request.method} was served (${response.statusCode})`
    if (headerOf(response.headers, 'cache-control') !== 'no-store') return 'no Cache-Control: no-store'
    if (response.statusCode < 400) return undefined
    if (!/^application\/json/.test(headerOf(response.headers, 'content-type') ?? '')) return 'an error that is not JSON'
    const body = parseJson(response.body) as { error?: unknown, error_description?: unknown } | undefined
    if (typeof body?.error !== 'string' || !errors.has(body.error)) return `error ${JSON.stringify(body?.error)} is not one this endpoint's RFC defines`
    if (body.error_description !== undefined && typeof body.error_description !== 'string') return 'error_description is not a string'
    if (body.error === 'invalid_client' && response.statusCode !== 401) return 'invalid_client without 401'
    if (response.statusCode === 401 && body.error !== 'invalid_client') return '401 without invalid_client'
    if (response.statusCode === 401 && /^basic/i.test(headerOf(request.headers, 'authorization') ?? '') && !/^Basic /.test(headerOf(response.headers, 'www-authenticate') ?? '')) {
      return '401 to Basic credentials without a Basic challenge'
    }
    return undefined
  }
}

/** The JSON-RPC id of a generated single request, when it has one. */
function requestIdOf (request: GeneratedRequest): unknown {
  const body = parseJson(request.payload?.toString() ?? '') as { id?: unknown } | undefined
  return body !== null && typeof body === 'object' && !Array.isArray(body) ? body.id : undefined
}

const checks: Record<Kind, Check> = {
  mcp: (request, response) => {
    if (request.method === 'OPTIONS') return response.statusCode === 204 || response.statusCode === 403 || (hasBody(request) && response.statusCode >= 400) ? undefined : `OPTIONS answered ${response.statusCode}`
    if (!['POST', 'GET', 'DELETE'].includes(request.method) || !/^\/mcp\/?(?:\?|$)/.test(request.url)) {
      return isNotFound(request, response) ? undefined : `${request.method} ${request.url} answered ${response.statusCode}`
    }
    if (response.statusCode === 202) return response.body === '' ? undefined : '202 with a body'
    const body = parseJson(response.body)
    if (response.statusCode >= 400) {
      const error = body as { jsonrpc?: unknown, error?: { code?: unknown, message?: unknown }, id?: unknown } | undefined
      // The id is null, or the request's own id (the 2026-07-28 revision echoes it on errors).
      if (error?.jsonrpc !== '2.0' || !Number.isInteger(error.error?.code) || typeof error.error?.message !== 'string' || (error.id !== null && error.id !== requestIdOf(request))) {
        return 'an HTTP error without a JSON-RPC error object'
      }
      const challenge = headerOf(response.headers, 'www-authenticate')
      if (response.statusCode === 401 && (challenge === undefined || !/^Bearer /.test(challenge) || !challenge.includes('resource_metadata="'))) return '401 without a Bearer challenge naming resource_metadata'
      if (response.statusCode === 403 && challenge !== undefined && !challenge.includes('error="insufficient_scope"')) return '403 with a challenge that is not insufficient_scope'
      return undefined
    }
    if (response.statusCode !== 200) return `unexpected status ${response.statusCode}`
    const replies = Array.isArray(body) ? body : [body]
    for (const reply of replies) {
      const r = reply as { jsonrpc?: unknown, result?: unknown, error?: { code?: unknown, message?: unknown } } | undefined
      if (r?.jsonrpc !== '2.0' || (r.result === undefined && (r.error === undefined || !Number.isInteger(r.error.code) || typeof r.error.message !== 'string'))) {
        return 'a 200 whose body is not JSON-RPC responses'
      }
    }
    return undefined
  },
  authorize: (request, response) => {
    if (!['GET', 'HEAD', 'POST'].includes(request.method)) return isNotFound(request, response) ? undefined : `${request.method} answered ${response.statusCode}`
    const location = headerOf(response.headers, 'location')
    if (response.statusCode >= 300 && response.statusCode < 400) {
      if (location === undefined) return 'a redirect without Location'
      let url: URL
      try { url = new URL(location) } catch { return 'an unparseable Location' }
      const sent = request.method === 'GET' || request.method === 'HEAD'
        ? new URL(request.url, 'http://x').searchParams
        : new URLSearchParams(request.payload?.toString() ?? '')
      // A consent form posted from another site, or without any cookie, is never decided (CSRF).
      if (request.method === 'POST' && sent.has('transaction') && (headerOf(request.headers, 'sec-fetch-site') === 'cross-site' || headerOf(request.headers, 'cookie') === undefined)) {
        return `a consent form posted ${headerOf(request.headers, 'cookie') === undefined ? 'without a cookie' : 'cross-site'} was decided: ${location.slice(0, 200)}`
      }
      const clientId = sent.getAll('client_id')
      // A consent form names no client: its transaction does, and the only real transactions here are publicClient's (freshConsent).
      const registered = clientId.length === 1
        ? registeredRedirects.get(clientId[0] as string)
        : clientId.length === 0 && sent.has('transaction') ? registeredRedirects.get(publicClient.clientId) : undefined
      const target = `${url.protocol}//${url.hostname}${url.pathname}`
      if (registered === undefined || !registered.some((uri) => { const r = new URL(uri); return `${r.protocol}//${r.hostname}${r.pathname}` === target })) {
        return `open redirect: Location ${location.slice(0, 200)} is not a redirect URI of client ${JSON.stringify(clientId).slice(0, 100)}`
      }
      if (url.searchParams.getAll('iss').length !== 1 || url.searchParams.get('iss') !== issuer) return 'an authorization response without iss = issuer (RFC 9207)'
      const error = url.searchParams.get('error')
      if (error !== null && !AUTHORIZATION_RESPONSE_ERRORS.has(error)) return `error=${error} is not an RFC 6749 §4.1.2.1 code`
      if (error === null && url.searchParams.get('code') === null) return 'a redirect with neither code nor error'
      const state = sent.getAll('state')
      if (state.length === 1 && (state[0] as string).length <= 4096 && url.searchParams.get('state') !== state[0]) return 'state not echoed'
      return undefined
    }
    if (location !== undefined) return `Location on a ${response.statusCode}`
    if (response.statusCode >= 400 || response.statusCode === 200) {
      if (!/^text\/html/.test(headerOf(response.headers, 'content-type') ?? '')) return 'a page that is not HTML'
      if (headerOf(response.headers, 'x-frame-options') !== 'DENY' || !/frame-ancestors 'none'/.test(headerOf(response.headers, 'content-security-policy') ?? '')) return 'an HTML page that can be framed'
      if (headerOf(response.headers, 'cache-control') !== 'no-store') return 'an HTML page without no-store'
      return undefined
    }
    return `unexpected status ${response.statusCode}`
  },
  token: checkOAuthJson(TOKEN_ERRORS),
  revoke: checkOAuthJson(REVOKE_ERRORS),
  register: checkOAuthJson(REGISTER_ERRORS),
  discovery: (request, response) => {
    if (request.method === 'OPTIONS') return response.statusCode === 204 || (hasBody(request) && isNotFound(request, response)) ? undefined : `OPTIONS answered ${response.statusCode}`
    if (request.method === 'GET' || request.method === 'HEAD') {
      if (response.statusCode !== 200) return `${request.method} answered ${response.statusCode}`
      if (request.method === 'GET' && (parseJson(response.body) as { issuer?: unknown, resource?: unknown } | undefined)?.issuer === undefined &&
        (parseJson(response.body) as { resource?: unknown } | undefined)?.resource === undefined) return 'not a metadata document'
      return undefined
    }
    return isNotFound(request, response) ? undefined : `${request.method} answered ${response.statusCode}`
  },
  health: (request, response) => {
    if (request.method === 'GET' || request.method === 'HEAD') return response.statusCode === 200 ? undefined : `${request.method} answered ${response.statusCode}`
    return isNotFound(request, response) ? undefined : `${request.method} answered ${response.statusCode}`
  },
  admin: (request, response) => {
    if (response.statusCode < 400 || request.method === 'HEAD') return undefined
    const body = parseJson(response.body) as { error?: unknown, message?: unknown } | undefined
    if (typeof body?.error !== 'string' || typeof body.message !== 'string') return 'an admin error without { error, message }'
    if (response.statusCode === 401 && body.error !== 'unauthorized') return '401 that is not unauthorized'
    const token = headerOf(request.headers, 'authorization')
    // The router refuses an undecodable URL or an overlong path parameter before any hook runs; that reveals nothing.
    const router = response.statusCode === 414 || (body as { code?: unknown }).code === 'FST_ERR_BAD_URL'
    if (token !== `Bearer ${ADMIN_TOKEN}` && token !== `bearer ${ADMIN_TOKEN}` && response.statusCode !== 401 && !router) return 'a request without the admin token was not refused with 401'
    return undefined
  },
  any: () => undefined
}

/** Which state changes a response may come with: none unless it succeeded, and then only its own. */
function allowedChange (kind: Kind, request: GeneratedRequest, response: LightMyRequestResponse): Record<string, number> | 'any' {
  const status = response.statusCode
  if (kind === 'authorize') {
    if (status === 200) return { oauth_pending_authorizations: 1 }
    const location = headerOf(response.headers, 'location')
    if (status === 302 && location !== undefined && new URL(location).searchParams.get('code') !== null) return { oauth_grants: 1, oauth_codes: 1 }
    // The consent form: an approval spends its transaction and makes a grant and a code; a denial (or
    // the last allowed wrong credential) spends it; a wrong credential counts one failed attempt.
    if (status === 303 && location !== undefined && new URL(location).searchParams.get('code') !== null) return { oauth_grants: 1, oauth_codes: 1, pending_consumed: 1 }
    if (status === 303) return { pending_consumed: 1, pending_failed_attempts: 1 }
    if (status === 401) return { pending_failed_attempts: 1 }
    return {}
  }
  if (kind === 'register') return status === 201 ? { oauth_clients: 1 } : {}
  if (kind === 'token') return status === 200 ? 'any' : {}
  if (kind === 'admin') return status < 300 && request.method !== 'GET' ? 'any' : {}
  if (kind === 'mcp') {
    if (status !== 200) return {}
    const body = parseJson(response.body)
    const replies = (Array.isArray(body) ? body : [body]) as Array<{ result?: { isError?: boolean }, error?: unknown }>
    return replies.some((r) => r.result !== undefined && r.result.isError !== true) ? 'any' : {}
  }
  // Revocation of a generated token: the fixtures' tokens are never generated in revoke bodies.
  return {}
}

async function send (app: TestServer['app'], request: GeneratedRequest): Promise<LightMyRequestResponse> {
  return await app.inject({
    method: request.method as InjectOptions['method'],
    url: request.url,
    headers: request.headers,
    remoteAddress: request.remoteAddress,
    ...(request.payload !== undefined ? { payload: request.payload } : {})
  })
}

/** Runs one property: every generated request to `kind` passes the common and the endpoint's checks. */
/** What counts as getting past the first refusals for a property, and the share of runs that must. */
interface Reached { what: string, share: number, test: (request: GeneratedRequest, response: LightMyRequestResponse) => boolean }

interface FuzzOptions {
  numRuns: number
  admin?: boolean
  /** Fills in fresh real credentials (placeholders in the request) just before it is sent. */
  prepare?: (request: GeneratedRequest) => Promise<GeneratedRequest>
  reached?: Reached
}

/** The OAuth error code of a JSON error response. */
function oauthError (response: LightMyRequestResponse): string | undefined {
  const error = (parseJson(response.body) as { error?: unknown } | undefined)?.error
  return typeof error === 'string' ? error : undefined
}

async function fuzz (name: string, kind: Kind, arbitrary: fc.Arbitrary<GeneratedRequest>, options: FuzzOptions): Promise<void> {
  await t.test(name, async (t) => {
    const app = options.admin === true ? server.admin : server.app
    const statuses = new Map<number, number>()
    let baseline = await stateOf(server)
    let mark = await writeMark(server)
    let fingerprints = 0
    let reached = 0
    const details = await fc.check(fc.asyncProperty(arbitrary, async (generated) => {
      let request = generated
      if (options.prepare !== undefined) {
        request = await options.prepare(generated)
        // What preparing wrote (a code, tokens, a consent transaction) is not the request's doing.
        if (request !== generated) {
          baseline = await stateOf(server)
          mark = await writeMark(server)
        }
      }
      const response = await send(app, request)
      statuses.set(response.statusCode, (statuses.get(response.statusCode) ?? 0) + 1)
      if (options.reached?.test(request, response) === true) reached++
      const problem = response.statusCode >= 500
        ? `HTTP ${response.statusCode}`
        : leakIn(response.body) !== undefined
          ? `the body leaks ${leakIn(response.body) ?? ''}`
          : checks[kind](request, response)
      if (problem !== undefined) throw new Error(problem + describe(request, response))
      // Every change a request makes is committed before its response; nothing written means nothing changed.
      const now = await writeMark(server)
      if (now === mark) return
      const after = await stateOf(server)
      fingerprints++
      const before = baseline
      baseline = after
      mark = now
      const allowed = allowedChange(kind, request, response)
      if (allowed === 'any') return
      const diff = stateDiff(before, after).filter((line) => {
        const changed = line.slice(0, line.indexOf(':'))
        return allowed[changed] !== (after[changed] ?? 0) - (before[changed] ?? 0)
      })
      if (diff.length > 0) throw new Error(`state changed on ${response.statusCode >= 400 ? 'a failed' : 'a'} request: ${diff.join(', ')}${describe(request, response)}`)
    }), { seed: seedFor(name), numRuns: options.numRuns, endOnFailure: true })
    const error = details.errorInstance as Error | null
    t.notOk(details.failed, details.failed
      ? `after ${details.numRuns} requests (${replayHint(name)}, path "${details.counterexamplePath ?? ''}"): ${error?.message ?? 'failed'}`
      : `${options.numRuns} requests`)
    t.comment(`${name}: statuses ${JSON.stringify(Object.fromEntries([...statuses].sort(([a], [b]) => a - b)))}, ${fingerprints} fingerprints compared` +
      `${options.reached !== undefined ? `, ${reached} reached ${options.reached.what}` : ''}; ${replayHint(name)}`)
    // Over a complete run only (a failure stops the run early).
    if (options.reached !== undefined && !details.failed) {
      const minimum = Math.ceil(options.reached.share * options.numRuns)
      t.ok(reached >= minimum, `at least ${minimum} of ${options.numRuns} requests reached ${options.reached.what} (${reached}; ${replayHint(name)})`)
    }
  })
}

// ---------------------------------------------------------------------------------------------
// The properties

t.test('self-check: the write mark moves and the fingerprint sees a change', async (t) => {
  const before = await stateOf(server)
  const mark = await writeMark(server)
  // On a shared PostgreSQL server other databases move the mark too; the embedded one is ours alone.
  if (server.databaseUrl === undefined) t.equal(await writeMark(server), mark, 'reading writes nothing')
  const issued = await server.admin.inject({ method: 'POST', url: '/login-codes', headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, payload: { principal: 'fz-victim' } })
  t.equal(issued.statusCode, 201)
  t.not(await writeMark(server), mark, 'a write moves the mark')
  t.same(stateDiff(before, await stateOf(server)), ['login_codes: 1 → 2'].map((line) => line.replace('1 → 2', `${before.login_codes ?? 0} → ${(before.login_codes ?? 0) + 1}`)))
})

const anyMethod = fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS')
/** The content type a client of the endpoint sends (mostly), or the generated one, whatever it is. */
function contentTypes (...types: string[]): fc.Arbitrary<Record<string, string | undefined>> {
  return fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...types).map((type) => ({ 'content-type': type })) },
    { weight: 1, arbitrary: fc.constant({}) }
  )
}
const jsonHeaders = contentTypes('application/json', 'application/json; charset=utf-8')

/** Mostly what a real MCP client sends, so most requests reach JSON-RPC and the tools; sometimes anything. */
const mcpHeaders = fc.record({
  authorization: fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(`Bearer ${writerToken}`, `Bearer ${readerToken}`, `Bearer ${oauthTokens.access_token}`) },
    { weight: 1, arbitrary: authorizationHeader }
  ),
  origin: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(undefined, 'https://claude.ai') }, { weight: 1, arbitrary: origin }),
  'content-type': fc.oneof({ weight: 4, arbitrary: fc.constant('application/json') }, { weight: 1, arbitrary: contentType }),
  accept: fc.oneof({ weight: 4, arbitrary: fc.constant('application/json, text/event-stream') }, { weight: 1, arbitrary: fc.constantFrom(undefined, 'text/html', '*/*', 'text/event-stream') }),
  'mcp-protocol-version': fc.constantFrom(undefined, undefined, undefined, undefined, '2025-06-18', '2025-03-26', 'x')
})
const toolNames = fc.constantFrom('whoami', 'bus_send', 'bus_read', 'bus_ack', 'bus_channels', 'bus_principals', 'nope', '', '__proto__', 'WHOAMI')
const toolArguments = fc.oneof(
  fc.record({
    channel: fc.oneof(text, fc.constantFrom('general', 'a'.repeat(65), 'bad name', '@inbox')),
    to: fc.oneof(text, fc.constantFrom('fz-writer', 'fz-reader', 'nobody')),
    body: fc.oneof(text, fc.constantFrom('hello', 'x'.repeat(70_000))),
    metadata: fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.constant(nested(40))),
    after: fc.oneof(fc.integer(), fc.double(), text, fc.constant(-1)),
    limit: fc.oneof(fc.integer(), text),
    // Never a long wait: the fuzz must stay fast. Out-of-range and wrongly typed values are refused at once.
    wait_seconds: fc.constantFrom(0, -1, 26, 1e308, '1', null, 0.001),
    up_to: fc.oneof(fc.integer(), fc.double(), text)
  }, { requiredKeys: [] }),
  fc.jsonValue({ maxDepth: 2 })
)
const rpcParams = fc.oneof(
  { weight: 4, arbitrary: fc.record({ name: toolNames, arguments: toolArguments }, { requiredKeys: [] }) },
  { weight: 1, arbitrary: fc.record({ protocolVersion: fc.constantFrom('2025-06-18', '1999-01-01', 1), capabilities: fc.jsonValue({ maxDepth: 2 }), clientInfo: fc.jsonValue({ maxDepth: 2 }) }, { requiredKeys: [] }) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) }
)
const rpcMethod = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('tools/call', 'tools/call', 'tools/call', 'tools/list', 'initialize', 'ping') },
  { weight: 2, arbitrary: fc.constantFrom('notifications/initialized', 'resources/list', 'prompts/list', 'completion/complete', 'logging/setLevel', 'notifications/cancelled', 'sampling/createMessage', 'rpc.discover') },
  { weight: 1, arbitrary: text }
)
/** Well-formed requests (most), notifications, responses from the client, and records with any mix of members. */
const rpcMessage: fc.Arbitrary<Record<string, unknown>> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ jsonrpc: fc.constant('2.0'), id: fc.oneof(fc.integer(), fc.string({ maxLength: 10 })), method: rpcMethod, params: rpcParams }, { requiredKeys: ['jsonrpc', 'id', 'method'] }) },
  { weight: 1, arbitrary: fc.record({ jsonrpc: fc.constant('2.0'), method: rpcMethod, params: rpcParams }, { requiredKeys: ['jsonrpc', 'method'] }) },
  { weight: 1, arbitrary: fc.record({ jsonrpc: fc.constant('2.0'), id: fc.integer(), result: fc.jsonValue({ maxDepth: 1 }) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      jsonrpc: fc.constantFrom('2.0', '1.0', 2, null),
      id: fc.oneof(fc.integer(), fc.string({ maxLength: 10 }), fc.constant(null), fc.constant({}), fc.constant([1]), fc.double()),
      method: rpcMethod,
      params: rpcParams,
      result: fc.jsonValue({ maxDepth: 1 }),
      error: fc.jsonValue({ maxDepth: 1 })
    }, { requiredKeys: [] })
  }
)
const rpcBody: fc.Arbitrary<string | Buffer> = fc.oneof(
  { weight: 10, arbitrary: rpcMessage.map((m) => JSON.stringify(m)) },
  { weight: 2, arbitrary: fc.array(rpcMessage, { minLength: 0, maxLength: 5 }).map((m) => JSON.stringify(m)) },
  { weight: 1, arbitrary: fc.constant(JSON.stringify(Array.from({ length: 101 }, (_, i) => ({ jsonrpc: '2.0', id: i, method: 'ping' })))) },
  // Metadata nested far deeper than anything stores, and a NUL in the message body.
  { weight: 1, arbitrary: fc.constantFrom(deepMetadata(5_000), deepMetadata(100_000), JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'bus_send', arguments: { channel: 'fuzz', body: 'a\u0000b' } } })) },
  { weight: 3, arbitrary: anyBody }
)

/** A 2xx from /mcp: the request got through authentication and the transport to JSON-RPC. */
const mcpServed: Reached = { what: 'JSON-RPC (2xx)', share: 0.05, test: (_request, response) => response.statusCode === 200 || response.statusCode === 202 }
await fuzz('POST /mcp: random JSON-RPC, batches, bodies and headers', 'mcp', request(fc.constant('POST'), fc.constantFrom('/mcp', '/mcp/', '/mcp?x=1', '/mcp?__proto__[a]=1'), rpcBody, mcpHeaders), { numRuns: 120, reached: mcpServed })
/** 2026-07-28 requests: envelopes (valid, partial, type-confused), and headers that mostly agree with the body. */
const modernEnvelope = fc.oneof(
  { weight: 4, arbitrary: fc.constant({ 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': {}, 'io.modelcontextprotocol/clientInfo': { name: 'fuzz', version: '1' } }) },
  {
    weight: 2,
    arbitrary: fc.record({
      'io.modelcontextprotocol/protocolVersion': fc.oneof(fc.constantFrom('2026-07-28', '2025-11-25', '2099-01-01', ''), fc.jsonValue({ maxDepth: 1 })),
      'io.modelcontextprotocol/clientCapabilities': fc.oneof(fc.constant({}), fc.jsonValue({ maxDepth: 2 })),
      'io.modelcontextprotocol/clientInfo': fc.jsonValue({ maxDepth: 2 }),
      'io.modelcontextprotocol/logLevel': fc.constantFrom('debug', 'loud', 3),
      progressToken: fc.oneof(fc.integer(), fc.string({ maxLength: 5 }), fc.constant(null))
    }, { requiredKeys: [] })
  },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) }
)
const modernMethod = fc.oneof({ weight: 6, arbitrary: rpcMethod }, { weight: 2, arbitrary: fc.constantFrom('server/discover', 'resources/subscribe') })
const modernExchange = fc.record({
  id: fc.oneof(fc.integer(), fc.string({ maxLength: 10 }), fc.constant(null)),
  method: modernMethod,
  params: rpcParams,
  meta: modernEnvelope,
  version: fc.oneof({ weight: 4, arbitrary: fc.constant('2026-07-28') }, { weight: 1, arbitrary: fc.constantFrom(undefined, '2025-11-25', '2099-01-01', ' 2026-07-28', '') }),
  methodHeader: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constantFrom(false, 'tools/list', '') }),
  nameHeader: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constantFrom(false, 'whoami', '') }),
  authorization: fc.constantFrom(`Bearer ${writerToken}`, `Bearer ${readerToken}`, `Bearer ${oauthTokens.access_token}`)
}).chain(({ id, method, params, meta, version, methodHeader, nameHeader, authorization }) => {
  const withMeta = params !== null && typeof params === 'object' && !Array.isArray(params) ? { ...params, _meta: meta } : params
  const name = (withMeta as { name?: unknown } | null)?.name
  const headers: Record<string, string | undefined> = {
    authorization,
    origin: undefined,
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    'mcp-protocol-version': version,
    'mcp-method': asHeaderValue(methodHeader === true ? (typeof method === 'string' ? method : undefined) : methodHeader === false ? undefined : methodHeader),
    'mcp-name': asHeaderValue(nameHeader === true ? (typeof name === 'string' ? name : undefined) : nameHeader === false ? undefined : nameHeader)
  }
  return request(fc.constant('POST'), fc.constant('/mcp'), fc.constant(JSON.stringify({ jsonrpc: '2.0', id, method, params: withMeta })), fc.constant(headers))
})
await fuzz('POST /mcp in the 2026-07-28 era: envelopes, Mcp-Method/Mcp-Name headers, and their disagreements', 'mcp', modernExchange, { numRuns: 120, reached: { ...mcpServed, share: 0.01 } })
await fuzz('GET, DELETE, OPTIONS, HEAD and other methods on /mcp', 'mcp', request(fc.constantFrom('GET', 'DELETE', 'OPTIONS', 'HEAD', 'PUT', 'PATCH'), fc.constantFrom('/mcp', '/mcp/', '/mcp?a=b'), fc.option(anyBody, { nil: undefined })), { numRuns: 40 })

const discoveryPaths = fc.constantFrom(
  '/.well-known/oauth-protected-resource/mcp', '/.well-known/oauth-protected-resource', '/.well-known/oauth-authorization-server', '/.well-known/openid-configuration'
)
await fuzz('the well-known metadata documents', 'discovery', request(anyMethod, fc.tuple(discoveryPaths, query(['resource', 'issuer'])).map(([p, q]) => `${p}?${q}`), fc.option(anyBody, { nil: undefined })), { numRuns: 40 })
await fuzz('/healthz and /readyz', 'health', request(anyMethod, fc.tuple(fc.constantFrom('/healthz', '/readyz'), query(['x'])).map(([p, q]) => `${p}?${q}`), fc.option(anyBody, { nil: undefined })), { numRuns: 30 })

/** Registration bodies: near-valid metadata with every field type-confused in turn. */
const anyJson = fc.jsonValue({ maxDepth: 2 })
const registrationBody: fc.Arbitrary<string | Buffer> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      redirect_uris: fc.oneof(
        fc.array(fc.oneof(real, nasty, fc.constantFrom('https://ok.example/cb', 'http://localhost/cb', 'cursor://cb', 'http://evil.example/cb', 'https://a.example/cb#frag', 'HTTPS://a.example/cb', 'javascript://x%0aalert(1)')), { maxLength: 3 }),
        fc.array(fc.constant('https://ok.example/cb'), { minLength: 21, maxLength: 21 }),
        anyJson
      ),
      client_name: fc.oneof(text, anyJson),
      token_endpoint_auth_method: fc.oneof(fc.constantFrom('none', 'client_secret_post', 'client_secret_basic', 'private_key_jwt', 'tls_client_auth', ''), anyJson),
      grant_types: fc.oneof(fc.constantFrom(['authorization_code'], ['authorization_code', 'refresh_token'], ['client_credentials'], ['implicit'], [], ['refresh_token']), anyJson),
      response_types: fc.oneof(fc.constantFrom(['code'], ['token'], ['code', 'id_token'], []), anyJson),
      scope: fc.oneof(text, anyJson),
      application_type: fc.oneof(fc.constantFrom('web', 'native', 'ios'), anyJson),
      client_uri: fc.oneof(text, anyJson),
      logo_uri: fc.oneof(text, anyJson),
      software_statement: fc.oneof(text, anyJson),
      jwks: anyJson,
      ['__proto__']: anyJson
    }, { requiredKeys: [] }).map((body) => JSON.stringify(body))
  },
  { weight: 2, arbitrary: anyBody },
  // Valid registrations (what real clients send), as they are or with one field replaced by anything.
  {
    weight: 6,
    arbitrary: fc.tuple(
      fc.record({
        client_name: fc.constantFrom('Fuzz app', 'Claude', 'é 🙂 <b>'),
        redirect_uris: fc.constantFrom(['https://ok.example/cb'], ['http://localhost/callback', 'http://127.0.0.1:1234/cb'], ['cursor://anysphere.cursor-mcp/oauth/callback']),
        token_endpoint_auth_method: fc.constantFrom('none', 'client_secret_post', 'client_secret_basic'),
        grant_types: fc.constantFrom(['authorization_code', 'refresh_token'], ['authorization_code']),
        response_types: fc.constant(['code']),
        scope: fc.constantFrom('bus:read', 'bus:read bus:write')
      }, { requiredKeys: ['redirect_uris'] }),
      fc.oneof(
        { weight: 2, arbitrary: fc.constant(undefined) },
        { weight: 1, arbitrary: fc.tuple(fc.constantFrom('client_name', 'redirect_uris', 'token_endpoint_auth_method', 'grant_types', 'response_types', 'scope', 'client_uri', 'jwks'), fc.oneof(text, anyJson)) }
      )
    ).map(([body, broken]) => JSON.stringify(broken === undefined ? body : { ...body, [broken[0]]: broken[1] }))
  }
)
await fuzz('POST /oauth/register and /register: type-confused metadata, bodies, content types', 'register', request(fc.constant('POST'), fc.constantFrom('/oauth/register', '/register', '/oauth/register/', '/oauth/register?client_id=x'), registrationBody, jsonHeaders), {
  numRuns: 80,
  reached: { what: 'a registration (201)', share: 0.1, test: (_request, response) => response.statusCode === 201 }
})
await fuzz('other methods on the registration endpoint', 'register', request(fc.constantFrom('GET', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD'), fc.constantFrom('/oauth/register', '/register'), fc.option(anyBody, { nil: undefined })), { numRuns: 25 })

const AUTHORIZE_NAMES = ['client_id', 'redirect_uri', 'response_type', 'state', 'scope', 'code_challenge', 'code_challenge_method', 'resource', 'response_mode', 'nonce', 'request', 'request_uri', 'prompt']
/** Mostly-valid authorization requests for a fixture client, with some parameters replaced by generated ones. */
const validBase: fc.Arbitrary<Params> = fc.constantFrom(...clients).map((c) => ({
  client_id: c.clientId, redirect_uri: c.redirectUri, response_type: 'code', code_challenge: challenge, code_challenge_method: 'S256', state: 'state-1', scope: 'bus:read'
}))
const authorizeQuery = fc.oneof(
  { weight: 3, arbitrary: query(AUTHORIZE_NAMES, validBase) },
  { weight: 2, arbitrary: query(AUTHORIZE_NAMES) },
  // Only one parameter broken at a time, the rest valid: reaches every check of phase two.
  {
    weight: 3,
    arbitrary: fc.tuple(validBase, fc.constantFrom(...AUTHORIZE_NAMES), fc.option(paramValue, { nil: undefined })).map(([base, name, value]) => encodeParams({ ...base, [name]: value }))
  }
)
/** Past phase one (client and redirect URI verified): a consent page, or a redirect to the client with a code or an error. */
const authorizationVerified: Reached = {
  what: 'a verified client (consent page or redirect to it)',
  share: 0.12,
  test: (_request, response) => response.statusCode === 200 || response.statusCode === 302 || response.statusCode === 303
}
await fuzz('GET /oauth/authorize and /authorize: malformed, duplicated and type-confused parameters', 'authorize', request(fc.oneof({ weight: 5, arbitrary: fc.constant('GET') }, { weight: 1, arbitrary: fc.constant('HEAD') }), fc.tuple(fc.constantFrom('/oauth/authorize', '/authorize', '/oauth/authorize/'), authorizeQuery).map(([p, q]) => `${p}?${q}`), fc.constant(undefined)), { numRuns: 90, reached: authorizationVerified })

const consentForgery = paramsWith(['transaction', 'action', 'credential'], fc.record({
  transaction: fc.oneof(fc.constantFrom('forged', 'a'.repeat(101), ''), text, fc.array(text, { minLength: 2, maxLength: 2 })),
  action: fc.constantFrom('approve', 'deny', 'other')
})).map(encodeParams)
const authorizePostBody: fc.Arbitrary<string | Buffer> = fc.oneof(
  { weight: 3, arbitrary: authorizeQuery },
  { weight: 3, arbitrary: consentForgery },
  { weight: 1, arbitrary: anyBody }
)
/** Placeholders filled in just before sending: a real consent transaction of publicClient, and its cookie. */
const FRESH_TRANSACTION = '__FRESH_TRANSACTION__'
const FRESH_COOKIE = '__FRESH_COOKIE__'
/** Consent submissions for a real transaction: right or wrong cookie, credential, action and Sec-Fetch-Site. */
const freshConsent = fc.record({
  action: fc.constantFrom('approve', 'approve', 'deny', 'other'),
  credential: fc.oneof({ weight: 2, arbitrary: fc.constantFrom(writerToken, readerToken) }, { weight: 1, arbitrary: text }),
  cookie: fc.constantFrom(FRESH_COOKIE, FRESH_COOKIE, FRESH_COOKIE, undefined, 'bus_consent_0000000000000000=x'),
  site: fc.constantFrom(undefined, undefined, 'same-origin', 'none', 'cross-site'),
  path: fc.constantFrom('/oauth/authorize', '/authorize')
}).map(({ action, credential, cookie, site, path }): GeneratedRequest => {
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' }
  if (cookie !== undefined) headers.cookie = cookie
  if (site !== undefined) headers['sec-fetch-site'] = site
  return { method: 'POST', url: path, headers, remoteAddress: '203.0.113.7', payload: encodeParams({ transaction: FRESH_TRANSACTION, action, credential }) }
})
async function withFreshTransaction (request: GeneratedRequest): Promise<GeneratedRequest> {
  const payload = request.payload?.toString() ?? ''
  if (!payload.includes(FRESH_TRANSACTION)) return request
  const page = await authorize(server, authorizationParams(server, publicClient).params)
  if (page.statusCode !== 200) throw new Error(`no consent page for the fresh transaction: ${page.statusCode}`)
  const { transaction } = parseConsentPage(page.body)
  const cookie = String(page.headers['set-cookie'] ?? '').split(';')[0] ?? ''
  const headers = { ...request.headers }
  if (headers.cookie === FRESH_COOKIE) headers.cookie = cookie
  return { ...request, headers, payload: payload.replaceAll(FRESH_TRANSACTION, encodeURIComponent(transaction)) }
}
await fuzz('POST /oauth/authorize and /authorize: requests, forged consent forms, any body', 'authorize', fc.oneof(
  { weight: 3, arbitrary: request(fc.constant('POST'), fc.constantFrom('/oauth/authorize', '/authorize'), authorizePostBody, contentTypes('application/x-www-form-urlencoded')) },
  { weight: 2, arbitrary: freshConsent }
), {
  numRuns: 90,
  prepare: withFreshTransaction,
  // Past phase one, or a consent form whose transaction was found (refused for its cookie, Sec-Fetch-Site or credential, or decided).
  reached: { ...authorizationVerified, share: 0.15, test: (request, response) => authorizationVerified.test(request, response) || response.statusCode === 401 || response.statusCode === 403 }
})
await fuzz('other methods on the authorization endpoint', 'authorize', request(fc.constantFrom('PUT', 'DELETE', 'PATCH', 'OPTIONS'), fc.constantFrom('/oauth/authorize', '/authorize'), fc.option(anyBody, { nil: undefined })), { numRuns: 20 })

const TOKEN_NAMES = ['grant_type', 'code', 'code_verifier', 'redirect_uri', 'refresh_token', 'scope', 'resource', 'client_id', 'client_secret', 'assertion', 'username', 'password']
const tokenBase: fc.Arbitrary<Params> = fc.constantFrom(...clients).chain((c) => fc.record({
  grant_type: fc.constantFrom('authorization_code', 'refresh_token', 'client_credentials'),
  client_id: fc.constant(c.clientId),
  redirect_uri: fc.constant(c.redirectUri),
  // Never the fixture's real refresh token (redeeming it would be a success); codes and verifiers are made up.
  // Not the fixture's spent code: presenting it again is a replay, which revokes its grant on purpose (RFC 9700 §4.2.4).
  code: fc.constantFrom('bus_ac_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', 'bus_ac_', oauthTokens.access_token),
  code_verifier: fc.constantFrom(oauthTokens.verifier, 'a'.repeat(43), 'short'),
  refresh_token: fc.constantFrom('bus_rt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', oauthTokens.access_token, writerToken)
}, { requiredKeys: ['grant_type', 'client_id'] }))
const tokenBody: fc.Arbitrary<string | Buffer> = fc.oneof(
  { weight: 4, arbitrary: paramsWith(TOKEN_NAMES, tokenBase).map(encodeParams) },
  { weight: 2, arbitrary: paramsWith(TOKEN_NAMES).map(encodeParams) },
  { weight: 2, arbitrary: fc.tuple(tokenBase, fc.constantFrom(...TOKEN_NAMES), fc.option(paramValue, { nil: undefined })).map(([base, name, value]) => encodeParams({ ...base, [name]: value })) },
  { weight: 1, arbitrary: anyBody }
)
const formHeaders = contentTypes('application/x-www-form-urlencoded', 'application/x-www-form-urlencoded; charset=utf-8')
/** Placeholders filled in just before sending: a new code (and its verifier) or a new refresh token of boundClient. */
const FRESH_CODE = '__FRESH_CODE__'
const FRESH_VERIFIER = '__FRESH_VERIFIER__'
const FRESH_REFRESH = '__FRESH_REFRESH__'
/** Valid token requests of every grant type, as they are or with one parameter replaced by anything. */
const freshTokenBody = fc.tuple(
  fc.constantFrom('authorization_code', 'refresh_token', 'client_credentials'),
  fc.oneof({ weight: 2, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...TOKEN_NAMES), fc.option(paramValue, { nil: undefined })) })
).map(([grant, broken]) => {
  const base: Params = grant === 'authorization_code'
    ? { grant_type: grant, code: FRESH_CODE, code_verifier: FRESH_VERIFIER, redirect_uri: boundClient.redirectUri, client_id: boundClient.clientId, resource: server.config.resourceUrl }
    : grant === 'refresh_token'
      ? { grant_type: grant, refresh_token: FRESH_REFRESH, client_id: boundClient.clientId, scope: 'bus:read' }
      : { grant_type: grant, client_id: machineClient.clientId, client_secret: machineClient.clientSecret, scope: 'bus:read' }
  return encodeParams(broken === undefined ? base : { ...base, [broken[0]]: broken[1] })
})
/** A token request of the authorization_code or refresh_token grant (the only grant_type given). */
function redeems (request: GeneratedRequest): boolean {
  const grants = new URLSearchParams(request.payload?.toString() ?? '').getAll('grant_type')
  return grants.length === 1 && ['authorization_code', 'refresh_token'].includes(grants[0] ?? '')
}
async function withFreshCredentials (request: GeneratedRequest): Promise<GeneratedRequest> {
  let payload = request.payload?.toString() ?? ''
  if (!payload.includes('__FRESH_')) return request
  if (payload.includes(FRESH_CODE) || payload.includes(FRESH_VERIFIER)) {
    const { code, verifier } = await obtainCode(server, boundClient)
    payload = payload.replaceAll(FRESH_CODE, code).replaceAll(FRESH_VERIFIER, verifier)
  }
  if (payload.includes(FRESH_REFRESH)) payload = payload.replaceAll(FRESH_REFRESH, (await obtainTokens(server, boundClient)).refresh_token ?? '')
  return { ...request, payload }
}
await fuzz('POST /oauth/token and /token: every grant type with broken, duplicated and confused parameters', 'token', fc.oneof(
  { weight: 3, arbitrary: request(fc.constant('POST'), fc.constantFrom('/oauth/token', '/token', '/oauth/token/', '/oauth/token?grant_type=client_credentials'), tokenBody, formHeaders) },
  { weight: 2, arbitrary: request(fc.constant('POST'), fc.constantFrom('/oauth/token', '/token'), freshTokenBody, fc.constant({ 'content-type': 'application/x-www-form-urlencoded', authorization: undefined })) }
), {
  numRuns: 120,
  prepare: withFreshCredentials,
  // Redemptions only: client_credentials needs no fresh code or token, so its successes alone
  // would hide generators whose codes and refresh tokens never reach a 200.
  reached: { what: 'tokens (200) for a code or a refresh token', share: 0.05, test: (request, response) => response.statusCode === 200 && redeems(request) }
})
await fuzz('POST /oauth/token: the grant checks (after client authentication and request parsing)', 'token', fc.oneof(
  { weight: 1, arbitrary: request(fc.constant('POST'), fc.constant('/oauth/token'), tokenBody, formHeaders) },
  { weight: 2, arbitrary: request(fc.constant('POST'), fc.constant('/oauth/token'), freshTokenBody, fc.constant({ 'content-type': 'application/x-www-form-urlencoded', authorization: undefined })) }
), {
  numRuns: 60,
  prepare: withFreshCredentials,
  reached: {
    what: 'the grant checks (200, invalid_grant, invalid_scope, invalid_target or unauthorized_client)',
    share: 0.3,
    test: (_request, response) => response.statusCode === 200 || ['invalid_grant', 'invalid_scope', 'invalid_target', 'unauthorized_client'].includes(oauthError(response) ?? '')
  }
})
await fuzz('other methods on the token endpoint', 'token', request(fc.constantFrom('GET', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD'), fc.constantFrom('/oauth/token', '/token'), fc.option(anyBody, { nil: undefined })), { numRuns: 25 })

const revokeBase: fc.Arbitrary<Params> = fc.constantFrom(...clients).map((c) => ({ client_id: c.clientId, client_secret: c.clientSecret, token: 'bus_at_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', token_type_hint: 'access_token' }))
const revokeBody: fc.Arbitrary<string | Buffer> = fc.oneof(
  { weight: 4, arbitrary: paramsWith(['token', 'token_type_hint', 'client_id', 'client_secret'], revokeBase).map(encodeParams) },
  // A well-formed revocation, with at most one parameter replaced: reaches client authentication and the lookup.
  {
    weight: 3,
    arbitrary: fc.tuple(revokeBase, fc.oneof({ weight: 2, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.tuple(fc.constantFrom('token', 'token_type_hint', 'client_id', 'client_secret'), fc.option(paramValue, { nil: undefined })) }))
      .map(([base, broken]) => encodeParams(broken === undefined ? base : { ...base, [broken[0]]: broken[1] }))
  },
  { weight: 1, arbitrary: anyBody }
)
/** Revocation fuzz never carries the fixtures' own tokens, so a 200 must change nothing either (RFC 7009 §2.2). */
const revokeRequests = request(fc.constant('POST'), fc.constantFrom('/oauth/revoke', '/revoke', '/oauth/revoke/'), revokeBody, formHeaders)
  .filter((r) => ![oauthTokens.access_token, oauthTokens.refresh_token ?? '\u0000'].some((secret) => (r.payload?.toString() ?? '').includes(encodeURIComponent(secret))))
await fuzz('POST /oauth/revoke and /revoke: broken, duplicated and confused parameters', 'revoke', revokeRequests, {
  numRuns: 60,
  reached: { what: 'an authenticated revocation (200)', share: 0.1, test: (_request, response) => response.statusCode === 200 }
})

// Any path at all: traversal, encodings, doubled slashes, NUL. Nothing may 5xx or leak.
const anyPath = fc.oneof(
  fc.constantFrom('/', '//mcp', '/oauth/../mcp', '/%2e%2e/mcp', '/mcp%00', '/mcp/..', '/.well-known/', '/.well-known/../../etc/passwd', '/oauth/', '/oauth/authorize/../token',
    '/%ff', '/%', '/?', '/admin', '/metrics', '/principals', '/%2F%2Fevil.example', '/oauth/authorize;jsessionid=x', '/' + 'a'.repeat(10_000)),
  fc.string({ unit: 'binary-ascii', maxLength: 30 }).map((s) => `/${encodeURI(s)}`)
)
await fuzz('any path, any method on the public listener', 'any', request(anyMethod, anyPath, fc.option(anyBody, { nil: undefined })), { numRuns: 60 })

// The admin API last: a generated request that succeeds there changes state on purpose.
const adminToken = fc.constantFrom(`Bearer ${ADMIN_TOKEN}`, `Bearer ${ADMIN_TOKEN}`, `Bearer ${ADMIN_TOKEN}`, `bearer ${ADMIN_TOKEN}`, undefined, `Bearer ${ADMIN_TOKEN}x`, `Bearer ${ADMIN_TOKEN.slice(0, -1)}`, `Basic ${ADMIN_TOKEN}`, `Bearer ${writerToken}`, 'Bearer ')
/** Names and ids that never touch the fixtures: admin successes must not disable or revoke what the other properties use. */
const adminName = fc.oneof(fc.constantFrom('fz-victim', 'fz-new', '', 'a'.repeat(65), '%2e%2e', 'x y', '__proto__', 'ü'), nasty.filter((s) => !s.startsWith('fz-')))
const adminId = fc.oneof(fc.constantFrom('0', '-1', '1.5', 'x', '99999999999999999999', '1e3', '0x10', ' 1000001', '%00'), fc.integer({ min: 1_000_000, max: 2_000_000_000 }).map(String))
const adminRoute: fc.Arbitrary<[string, string]> = fc.oneof<fc.Arbitrary<[string, string]>[]>(
  fc.tuple(fc.constantFrom('GET', 'POST'), fc.constant('/principals')),
  fc.tuple(fc.constant('POST'), adminName.map((n) => `/principals/${enc(n)}/disable`)),
  fc.tuple(fc.constant('POST'), adminName.map((n) => `/principals/${enc(n)}/enable`)),
  fc.tuple(fc.constantFrom('GET', 'POST'), query(['principal', 'limit']).map((q) => `/tokens?${q}`)),
  fc.tuple(fc.constant('POST'), adminId.map((id) => `/tokens/${id}/revoke`)),
  fc.tuple(fc.constantFrom('GET', 'POST'), fc.constant('/clients')),
  fc.tuple(fc.constant('DELETE'), fc.oneof(adminName, fc.constantFrom('client_doesnotexist', 'https://evil.example/doc')).map((id) => `/clients/${enc(id)}`)),
  fc.tuple(fc.constant('GET'), query(['principal', 'client']).map((q) => `/grants?${q}`)),
  fc.tuple(fc.constant('POST'), adminId.map((id) => `/grants/${id}/revoke`)),
  fc.tuple(fc.constant('POST'), fc.constant('/login-codes')),
  fc.tuple(fc.constant('GET'), query(['limit']).map((q) => `/audit?${q}`)),
  fc.tuple(fc.constantFrom('GET', 'HEAD'), fc.constantFrom('/healthz', '/metrics', '/nope', '/')),
  fc.tuple(anyMethod, anyPath)
)
const adminBody: fc.Arbitrary<string | Buffer> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      name: fc.oneof(adminName, anyJson),
      principal: fc.oneof(adminName, anyJson),
      scopes: fc.oneof(text, fc.array(text, { maxLength: 11 }), anyJson),
      label: fc.oneof(text, anyJson),
      expires_in: fc.oneof(fc.integer(), fc.double(), text, fc.constant(-1), fc.constant(1e20)),
      redirect_uris: fc.oneof(fc.array(fc.oneof(nasty, fc.constant('https://admin.example/cb')), { maxLength: 3 }), anyJson),
      confidential: fc.oneof(fc.boolean(), anyJson),
      extra: anyJson
    }, { requiredKeys: [] }).map((body) => JSON.stringify(body))
  },
  { weight: 1, arbitrary: anyBody }
)
const adminRequests = fc.record({ route: adminRoute, payload: fc.option(adminBody, { nil: undefined }), authorization: adminToken, contentType: fc.constantFrom('application/json', 'application/json', 'text/plain', undefined, 'application/x-www-form-urlencoded'), remoteAddress: ipAddress })
  .map(({ route: [method, url], payload, authorization, contentType, remoteAddress }): GeneratedRequest => {
    const headers: Record<string, string> = {}
    if (authorization !== undefined) headers.authorization = authorization
    if (contentType !== undefined) headers['content-type'] = contentType
    return { method, url, headers, remoteAddress, ...(payload !== undefined && method !== 'GET' && method !== 'HEAD' ? { payload } : {}) }
  })
await fuzz('the admin API: every route with broken names, ids, bodies and tokens', 'admin', adminRequests, { numRuns: 90, admin: true })

t.test('after all of that the server still serves', async (t) => {
  const whoami = await server.app.inject({
    method: 'POST',
    url: '/mcp',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${writerToken}` },
    payload: { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'whoami', arguments: {} } }
  })
  t.equal(whoami.statusCode, 200, whoami.body)
  t.equal(JSON.parse(whoami.body).result?.structuredContent?.principal, 'fz-writer')
  const ready = await server.app.inject({ method: 'GET', url: '/readyz' })
  t.equal(ready.statusCode, 200)
  await server.runtime.audit.flush()
  const errors = server.logs.map((line) => JSON.parse(line) as { level: number, msg?: string, err?: { message?: string } }).filter((entry) => entry.level >= 50)
  t.same(errors.map((e) => `${e.msg ?? ''}: ${e.err?.message?.slice(0, 200) ?? ''}`), [], 'nothing was logged at error level (no failed request, no failed audit write)')
})
