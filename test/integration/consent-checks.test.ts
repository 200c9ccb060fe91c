import { createHash } from 'node:crypto'
import type { LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import { PENDING_AUTHORIZATION_TTL_SECONDS } from '../../src/oauth/consent-store.ts'
import {
  authorizationParams, authorize, createTestDatabase, encodeParams, locationOf, registerClient, serverFactory, type Params, type RegisteredTestClient
} from '../helpers/oauth-inject.ts'
import { parseConsentPage } from '../helpers/oauth.ts'
import { principalWithToken, type TestServer } from '../helpers/server.ts'

/**
 * The consent form's own defences, exactly: the per-transaction cookie (its name, attributes and
 * how it is read), the Sec-Fetch-Site refusal, and the headers of every page (no framing, no
 * caching, no scripts). oauth-bcp.test.ts plays the attacks; this file pins the details.
 */

const database = await createTestDatabase(t)
const startTestServer = serverFactory(database)
const server = await startTestServer(t, { env: { RATE_LIMIT_MULTIPLIER: '0' } })
const token = await principalWithToken(server, 'cc-person')
const REDIRECT = 'https://consent.example/cb'
const client = await registerClient(server, { client_name: 'Consent checks', redirect_uris: [REDIRECT] })

/** A Set-Cookie header: its name, value and attributes (lowercase, in any order). */
function parseSetCookie (header: string): { name: string, value: string, attributes: string[] } {
  const [pair = '', ...attributes] = header.split(';').map((part) => part.trim())
  return { name: pair.slice(0, pair.indexOf('=')), value: pair.slice(pair.indexOf('=') + 1), attributes: attributes.map((a) => a.toLowerCase()).sort() }
}
const attributes = (...list: string[]): string[] => list.map((a) => a.toLowerCase()).sort()
/** The Set-Cookie headers of a response, in order. */
const setCookies = (response: LightMyRequestResponse): string[] => ([] as string[]).concat(response.headers['set-cookie'] ?? [])

async function openConsent (t: Test, on: TestServer = server, onClient: RegisteredTestClient = client) {
  const page = await authorize(on, authorizationParams(on, onClient).params)
  t.equal(page.statusCode, 200, 'a consent page')
  const { transaction, action } = parseConsentPage(page.body)
  const setCookie = String(page.headers['set-cookie'] ?? '')
  const cookie = setCookie.split(';')[0] ?? ''
  return { page, transaction, action, setCookie, cookie, name: cookie.split('=')[0] ?? '', value: cookie.slice(cookie.indexOf('=') + 1) }
}

async function submit (action: string, form: Params, headers: Record<string, string> = {}, on: TestServer = server): Promise<LightMyRequestResponse> {
  return await on.app.inject({ method: 'POST', url: action, headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, payload: encodeParams(form) })
}

t.test('the consent page sets one cookie per transaction: named by its hash, HttpOnly, SameSite=Strict, for the transaction\'s lifetime', async (t) => {
  const consent = await openConsent(t)
  const expectedName = `bus_consent_${createHash('sha256').update(consent.transaction).digest('hex').slice(0, 16)}`
  t.equal(consent.name, expectedName, 'the name is bus_consent_ and 16 hex digits of the transaction\'s SHA-256')
  t.match(consent.value, /^[A-Za-z0-9_-]{43}$/, 'the value is 32 random bytes')
  t.same(parseSetCookie(consent.setCookie), { name: expectedName, value: consent.value, attributes: attributes('Path=/', `Max-Age=${PENDING_AUTHORIZATION_TTL_SECONDS}`, 'HttpOnly', 'SameSite=Strict') },
    'exactly these attributes, and not Secure on http')
  const second = await openConsent(t)
  t.not(second.name, consent.name, 'another transaction, another cookie name (two tabs do not collide)')
  t.not(second.value, consent.value)
})

t.test('on an https issuer the cookie is Secure', async (t) => {
  const secure = await startTestServer(t, { env: { PUBLIC_URL: 'https://bus.example.com', RATE_LIMIT_MULTIPLIER: '0' } })
  const secureClient = await registerClient(secure, { client_name: 'Consent checks', redirect_uris: [REDIRECT] })
  const consent = await openConsent(t, secure, secureClient)
  t.same(parseSetCookie(consent.setCookie).attributes, attributes('Path=/', `Max-Age=${PENDING_AUTHORIZATION_TTL_SECONDS}`, 'HttpOnly', 'SameSite=Strict', 'Secure'))
})

t.test('the cookie is found among others, by its exact name, and must hold this transaction\'s value', async (t) => {
  const form = (transaction: string): Params => ({ transaction, action: 'approve', credential: token })
  const refused = async (t: Test, cookie: string | undefined, what: string): Promise<void> => {
    const consent = await openConsent(t)
    const response = await submit(consent.action, form(consent.transaction), cookie === undefined ? {} : { cookie: cookie.replaceAll('NAME', consent.name).replaceAll('VALUE', consent.value) })
    t.equal(response.statusCode, 403, `${what}: 403`)
    t.match(response.body, /missing or wrong security cookie/, `${what}: refused for its cookie`)
    t.match(response.body, /<h1>Request refused<\/h1>/, `${what}: titled as a refusal`)
    t.equal(response.headers.location, undefined, `${what}: no redirect`)
  }
  await refused(t, undefined, 'no Cookie header')
  await refused(t, 'other=VALUE', 'the value under another name')
  await refused(t, 'NAMEx=VALUE', 'a longer name')
  await refused(t, 'NAME=VALUEx', 'a longer value')
  await refused(t, 'NAME=', 'an empty value')
  await refused(t, 'NAME', 'the name alone')
  await refused(t, 'xNAME=VALUE', 'a name with a prefix')

  for (const [what, cookie] of [
    ['the cookie alone', 'NAME=VALUE'],
    ['after another cookie', 'theme=dark; NAME=VALUE'],
    ['between others, without spaces', 'a=1;NAME=VALUE;b=2'],
    ['after another consent cookie', 'bus_consent_0000000000000000=x; NAME=VALUE']
  ] as const) {
    const consent = await openConsent(t)
    const response = await submit(consent.action, form(consent.transaction), { cookie: cookie.replaceAll('NAME', consent.name).replaceAll('VALUE', consent.value) })
    t.equal(response.statusCode, 303, `${what}: approved`)
    t.ok(locationOf(response)?.searchParams.get('code'), `${what}: with a code`)
    t.same(setCookies(response).map(parseSetCookie), [{ name: consent.name, value: '', attributes: attributes('Path=/', 'Max-Age=0', 'HttpOnly', 'SameSite=Strict') }], `${what}: and the cookie is cleared`)
  }
})

t.test('Sec-Fetch-Site: cross-site is refused even with the right cookie; same-origin, same-site and none are not', async (t) => {
  for (const site of ['cross-site']) {
    const consent = await openConsent(t)
    const response = await submit(consent.action, { transaction: consent.transaction, action: 'deny' }, { cookie: consent.cookie, 'sec-fetch-site': site })
    t.equal(response.statusCode, 403, `${site}: 403`)
    t.match(response.body, /submitted from another site/, `${site}: refused as cross-site`)
    t.match(response.body, /<h1>Request refused<\/h1>/, `${site}: titled as a refusal`)
    t.equal(response.headers['set-cookie'], undefined, `${site}: the cookie is left alone`)
    const again = await submit(consent.action, { transaction: consent.transaction, action: 'deny' }, { cookie: consent.cookie })
    t.equal(again.statusCode, 303, `${site}: the person's own tab can still decide`)
  }
  for (const site of ['same-origin', 'same-site', 'none']) {
    const consent = await openConsent(t)
    const response = await submit(consent.action, { transaction: consent.transaction, action: 'deny' }, { cookie: consent.cookie, 'sec-fetch-site': site })
    t.equal(response.statusCode, 303, `${site}: decided`)
    t.equal(locationOf(response)?.searchParams.get('error'), 'access_denied', `${site}: the denial reaches the client`)
  }
})

t.test('a wrong credential keeps the cookie alive for the rest of the transaction', async (t) => {
  const consent = await openConsent(t)
  const response = await submit(consent.action, { transaction: consent.transaction, action: 'approve', credential: 'bus_api_wrong' }, { cookie: consent.cookie })
  t.equal(response.statusCode, 401)
  // The page shown again sets the cookie anew (the last Set-Cookie of its name is the one a browser keeps).
  const last = setCookies(response).map(parseSetCookie).filter((c) => c.name === consent.name).at(-1)
  const maxAge = Number(last?.attributes.find((a) => a.startsWith('max-age='))?.slice('max-age='.length))
  t.equal(last?.value, consent.value, 'the same cookie again')
  t.ok(maxAge > PENDING_AUTHORIZATION_TTL_SECONDS - 30 && maxAge <= PENDING_AUTHORIZATION_TTL_SECONDS, `for what is left of the transaction (${maxAge} s)`)
  t.same(last?.attributes, attributes('Path=/', `Max-Age=${maxAge}`, 'HttpOnly', 'SameSite=Strict'))
  const approved = await submit(consent.action, { transaction: consent.transaction, action: 'approve', credential: token }, { cookie: consent.cookie })
  t.equal(approved.statusCode, 303, 'the right credential then approves')
})

t.test('every page: not cached, not framed, no scripts, forms only to this server (and the consent page\'s client)', async (t) => {
  const expected = (formAction: string): Record<string, string> => ({
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    pragma: 'no-cache',
    'x-frame-options': 'DENY',
    'content-security-policy': `default-src 'none'; style-src 'unsafe-inline'; form-action ${formAction}; frame-ancestors 'none'; base-uri 'none'`,
    'referrer-policy': 'no-referrer',
    'x-content-type-options': 'nosniff'
  })
  const pick = (response: LightMyRequestResponse): Record<string, unknown> => Object.fromEntries(Object.keys(expected('')).map((name) => [name, response.headers[name]]))
  const consent = await openConsent(t)
  t.same(pick(consent.page), expected("'self' https://consent.example"), 'the consent page: its form may also lead to the client\'s origin')
  const wrong = await submit(consent.action, { transaction: consent.transaction, action: 'approve', credential: 'bus_api_wrong' }, { cookie: consent.cookie })
  t.same(pick(wrong), expected("'self' https://consent.example"), 'the consent page again after a wrong credential')
  const unknown = await authorize(server, { ...authorizationParams(server, client).params, client_id: 'client_unknown' })
  t.equal(unknown.statusCode, 400)
  t.same(pick(unknown), expected("'self'"), 'an error page: forms only to this server')
  const refused = await submit(consent.action, { transaction: consent.transaction, action: 'approve', credential: token })
  t.equal(refused.statusCode, 403)
  t.same(pick(refused), expected("'self'"), 'the CSRF refusal page')
})
