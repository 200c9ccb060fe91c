import { execFileSync } from 'node:child_process'
import t from 'tap'
import {
  allowsInsecureRequests, clientErrorFor, IDP_LOGIN_TTL_SECONDS, idpBrowserCookieName, idpCallbackUrl, idpLoginExpiry, idpStartPath,
  linkCommand, nameFromClaims, shellQuote, subjectFromClaims, tokenEndpointAuthMethod, unmetRequiredClaim
} from '../../src/oauth/idp-flow.ts'

t.test('URLs: the callback to register, and the consent page\'s link', async (t) => {
  t.equal(idpCallbackUrl('https://bus.example.com', 'corp'), 'https://bus.example.com/oauth/idp/corp/callback')
  t.equal(idpCallbackUrl('https://example.com/bus', 'dex-1'), 'https://example.com/bus/oauth/idp/dex-1/callback', 'a PUBLIC_URL with a path keeps it')
  t.equal(idpStartPath('corp', 'a+b/c='), '/oauth/idp/corp/start?transaction=a%2Bb%2Fc%3D')
})

t.test('a sign-in expires after 10 minutes, or with its pending authorization if that is sooner', async (t) => {
  const now = Date.parse('2026-01-01T00:00:00Z')
  t.equal(idpLoginExpiry(now, new Date(now + 3600_000)).getTime(), now + IDP_LOGIN_TTL_SECONDS * 1000)
  t.equal(idpLoginExpiry(now, new Date(now + 60_000)).getTime(), now + 60_000)
})

t.test('one browser cookie per sign-in, named from its state', async (t) => {
  t.match(idpBrowserCookieName('state-1'), /^bus_idp_[0-9a-f]{16}$/)
  t.not(idpBrowserCookieName('state-1'), idpBrowserCookieName('state-2'))
  t.equal(idpBrowserCookieName('state-1'), idpBrowserCookieName('state-1'))
})

t.test('plain http only for an issuer on this machine', async (t) => {
  t.ok(allowsInsecureRequests('http://127.0.0.1:5556/dex'))
  t.ok(allowsInsecureRequests('http://localhost:8080'))
  t.ok(allowsInsecureRequests('http://[::1]:8080'))
  t.notOk(allowsInsecureRequests('http://dex.internal:5556'))
  t.notOk(allowsInsecureRequests('http://127.0.0.1.nip.example:80'))
  t.notOk(allowsInsecureRequests('https://127.0.0.1'), 'https needs no exception')
})

t.test('client authentication at the token endpoint', async (t) => {
  t.equal(tokenEndpointAuthMethod(undefined), 'client_secret_basic', 'RFC 8414 default')
  t.equal(tokenEndpointAuthMethod([]), 'client_secret_basic')
  t.equal(tokenEndpointAuthMethod(['client_secret_post', 'client_secret_basic']), 'client_secret_basic')
  t.equal(tokenEndpointAuthMethod(['client_secret_post', 'private_key_jwt']), 'client_secret_post')
  t.equal(tokenEndpointAuthMethod(['private_key_jwt']), 'client_secret_basic', 'nothing we can do: try the default')
  t.equal(tokenEndpointAuthMethod('client_secret_post'), 'client_secret_basic', 'not a list: ignored')
})

t.test('the subject comes from subject_claim, under the access-token rules', async (t) => {
  t.same(subjectFromClaims({ sub: 'abc' }, { subjectClaim: 'sub' }), { ok: true, subject: 'abc' })
  t.same(subjectFromClaims({ sub: 'abc', oid: 'o-1' }, { subjectClaim: 'oid' }), { ok: true, subject: 'o-1' })
  const missing = subjectFromClaims({ sub: 'abc' }, { subjectClaim: 'oid' })
  t.equal(missing.ok, false, 'no fallback to sub: a link made for oid must never match a sub')
  t.match(missing, { problem: /no "oid" claim/ })
  t.match(subjectFromClaims({ sub: '' }, { subjectClaim: 'sub' }), { ok: false })
  t.match(subjectFromClaims({ sub: 42 }, { subjectClaim: 'sub' }), { ok: false })
  t.match(subjectFromClaims({ sub: 'x'.repeat(256) }, { subjectClaim: 'sub' }), { ok: false, problem: /longer than 255/ })
  t.match(subjectFromClaims({ sub: 'a\nb' }, { subjectClaim: 'sub' }), { ok: false, problem: /control characters/ })
  t.match(subjectFromClaims({ sub: 'a\u2028b' }, { subjectClaim: 'sub' }), { ok: false })
})

t.test('the name for an auto-provisioned principal', async (t) => {
  t.equal(nameFromClaims({ preferred_username: 'ada' }, { nameClaim: 'preferred_username' }), 'ada')
  t.equal(nameFromClaims({ email: 'ada@example.com' }, { nameClaim: 'preferred_username' }), null)
  t.equal(nameFromClaims({ preferred_username: '' }, { nameClaim: 'preferred_username' }), null)
  t.equal(nameFromClaims({ preferred_username: ['x'] }, { nameClaim: 'preferred_username' }), null)
})

t.test('the operator\'s command survives any subject when pasted into a shell', async (t) => {
  t.equal(linkCommand('corp', 'CiQ-abc'), "npx bus-mcp identity link --provider corp --subject 'CiQ-abc' --principal NAME")
  for (const subject of ["o'brien", 'a b', '$(touch /tmp/x)', '`id`', '"quoted"', "'", 'back\\slash']) {
    const echoed = execFileSync('/bin/sh', ['-c', `printf %s ${shellQuote(subject)}`], { encoding: 'utf8' })
    t.equal(echoed, subject, `quoted: ${subject}`)
  }
})

t.test('provider errors at the callback, as the client sees them (RFC 6749 §4.1.2.1)', async (t) => {
  t.equal(clientErrorFor('access_denied'), 'access_denied')
  t.equal(clientErrorFor('login_required'), 'access_denied')
  t.equal(clientErrorFor('consent_required'), 'access_denied')
  t.equal(clientErrorFor('temporarily_unavailable'), 'temporarily_unavailable')
  t.equal(clientErrorFor('invalid_request'), 'server_error', 'our request was wrong: not the client\'s fault')
  t.equal(clientErrorFor('unauthorized_client'), 'server_error')
  t.equal(clientErrorFor('made_up'), 'server_error')
})

t.test('required_claims hold for sign-ins as for tokens', async (t) => {
  const provider = { requiredClaims: { hd: 'example.com', email_verified: true, groups: 'bus' } }
  t.equal(unmetRequiredClaim({ hd: 'example.com', email_verified: true, groups: ['x', 'bus'] }, provider), undefined)
  t.equal(unmetRequiredClaim({ hd: 'gmail.com', email_verified: true, groups: ['bus'] }, provider), 'hd')
  t.equal(unmetRequiredClaim({ hd: 'example.com', email_verified: 'true', groups: ['bus'] }, provider), 'email_verified', 'types must match')
  t.equal(unmetRequiredClaim({ hd: 'example.com', email_verified: true }, provider), 'groups')
  t.equal(unmetRequiredClaim({}, { requiredClaims: {} }), undefined)
})
