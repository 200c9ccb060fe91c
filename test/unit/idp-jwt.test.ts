import { createHmac } from 'node:crypto'
import { exportSPKI, SignJWT, UnsecuredJWT, type JWTPayload } from 'jose'
import t, { type Test } from 'tap'
import { ExternalTokenError } from '../../src/idp/errors.ts'
import { looksLikeJwt, MAX_TOKEN_BYTES, peekIssuer, verifyJwtAccessToken } from '../../src/idp/jwt.ts'
import { ProviderKeys } from '../../src/idp/keys.ts'
import type { IdpProvider } from '../../src/idp/types.ts'
import { epoch, makeKey, makeProvider, RESOURCE, sign, startFakeProvider, type FakeProvider, type SigningKey } from '../helpers/idp-fixtures.ts'

interface Rig { fake: FakeProvider, provider: IdpProvider, keys: ProviderKeys, rsa: SigningKey, ec: SigningKey, claims: (extra?: JWTPayload) => JWTPayload }

/** A provider at a loopback issuer publishing an RSA and an EC key (discovery, then JWKS). */
async function rig (t: Test, overrides: Partial<IdpProvider> = {}): Promise<Rig> {
  const fake = await startFakeProvider()
  t.teardown(fake.close)
  const rsa = await makeKey('RS256', 'rsa-1')
  const ec = await makeKey('ES256', 'ec-1')
  fake.jwks.keys = [rsa.jwk, ec.jwk]
  const provider = makeProvider({ issuer: fake.origin, ...overrides })
  const keys = new ProviderKeys(provider, { unknownKidCooldownMs: 30_000 })
  await keys.start()
  t.teardown(() => keys.stop())
  const claims = (extra: JWTPayload = {}): JWTPayload => ({
    iss: fake.origin, aud: RESOURCE, sub: 'user-1', scope: 'bus:read', iat: epoch(), exp: epoch() + 300, ...extra
  })
  return { fake, provider, keys, rsa, ec, claims }
}

async function reasonOf (promise: Promise<unknown>): Promise<string> {
  try {
    await promise
  } catch (err) {
    if (err instanceof ExternalTokenError) return err.reason
    throw err
  }
  throw new Error('expected a refusal')
}

function b64 (value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url')
}

t.test('valid RS256 and ES256 tokens verify', async (t) => {
  const r = await rig(t)
  const rs = await verifyJwtAccessToken(await sign(r.claims(), r.rsa), r.provider, r.keys)
  t.match(rs, { sub: 'user-1', scope: 'bus:read', iss: r.fake.origin })
  const es = await verifyJwtAccessToken(await sign(r.claims({ sub: 'user-2' }), r.ec), r.provider, r.keys)
  t.equal(es.sub, 'user-2')
  const audArray = await verifyJwtAccessToken(await sign(r.claims({ aud: ['other', RESOURCE] }), r.ec), r.provider, r.keys)
  t.same(audArray.aud, ['other', RESOURCE], 'one audience of several matches')
})

t.test('PS256 and EdDSA tokens verify; an algorithm outside the provider\'s list does not', async (t) => {
  const r = await rig(t)
  const ps = await makeKey('PS256', 'ps-1')
  const ed = await makeKey('EdDSA', 'ed-1')
  r.fake.jwks.keys = [...r.fake.jwks.keys, ps.jwk, ed.jwk]
  await r.keys.refresh()
  t.ok(await verifyJwtAccessToken(await sign(r.claims(), ps), r.provider, r.keys))
  t.ok(await verifyJwtAccessToken(await sign(r.claims(), ed), r.provider, r.keys))
  const only = { ...r.provider, algorithms: ['ES256'] }
  t.equal(await reasonOf(verifyJwtAccessToken(await sign(r.claims(), r.rsa), only, r.keys)), 'bad_header')
})

t.test('alg: none is refused', async (t) => {
  const r = await rig(t)
  const token = new UnsecuredJWT(r.claims()).encode()
  t.ok(looksLikeJwt(token), 'still recognised as a JWT (empty signature)')
  t.equal(await reasonOf(verifyJwtAccessToken(token, r.provider, r.keys)), 'bad_header')
  const withKid = `${b64({ alg: 'none', kid: 'rsa-1' })}.${b64(r.claims())}.`
  t.equal(await reasonOf(verifyJwtAccessToken(withKid, r.provider, r.keys)), 'bad_header')
  const withSig = `${b64({ alg: 'none', kid: 'rsa-1' })}.${b64(r.claims())}.AAAA`
  t.equal(await reasonOf(verifyJwtAccessToken(withSig, r.provider, r.keys)), 'bad_header')
})

t.test('HS256 signed with the provider\'s public key (PEM bytes as the secret) is refused', async (t) => {
  const r = await rig(t)
  const pem = await exportSPKI(r.rsa.publicKey)
  const token = await new SignJWT(r.claims()).setProtectedHeader({ alg: 'HS256', kid: 'rsa-1' }).sign(new TextEncoder().encode(pem))
  t.equal(await reasonOf(verifyJwtAccessToken(token, r.provider, r.keys)), 'bad_header')
  // Even a provider object that (against config validation) listed HS256 finds no key for it.
  const lax = { ...r.provider, algorithms: [...r.provider.algorithms, 'HS256'] }
  t.equal(await reasonOf(verifyJwtAccessToken(token, lax, r.keys)), 'bad_header')
  // The same by hand, with the JWK's PEM bytes as an HMAC key.
  const input = `${b64({ alg: 'HS256', kid: 'rsa-1' })}.${b64(r.claims())}`
  const forged = `${input}.${createHmac('sha256', pem).update(input).digest('base64url')}`
  t.equal(await reasonOf(verifyJwtAccessToken(forged, lax, r.keys)), 'bad_header')
})

t.test('a key from another set under the same kid: bad signature', async (t) => {
  const r = await rig(t)
  const impostor = await makeKey('RS256', 'rsa-1')
  t.equal(await reasonOf(verifyJwtAccessToken(await sign(r.claims(), impostor), r.provider, r.keys)), 'signature')
  const ecImpostor = await makeKey('ES256', 'ec-1')
  t.equal(await reasonOf(verifyJwtAccessToken(await sign(r.claims(), ecImpostor), r.provider, r.keys)), 'signature')
})

t.test('a valid signature over a changed payload: bad signature; a truncated token is refused', async (t) => {
  const r = await rig(t)
  const token = await sign(r.claims(), r.rsa)
  const [h, , s] = token.split('.') as [string, string, string]
  const tampered = `${h}.${b64(r.claims({ scope: 'bus:read bus:write' }))}.${s}`
  t.equal(await reasonOf(verifyJwtAccessToken(tampered, r.provider, r.keys)), 'signature')
  t.equal(await reasonOf(verifyJwtAccessToken(token.slice(0, -10), r.provider, r.keys)), 'signature', 'a shortened signature')
  t.equal(await reasonOf(verifyJwtAccessToken(token.slice(0, token.lastIndexOf('.')), r.provider, r.keys)), 'malformed', 'two segments')
  t.equal(await reasonOf(verifyJwtAccessToken(token.slice(0, 20), r.provider, r.keys)), 'malformed', 'a piece of the header')
  t.equal(await reasonOf(verifyJwtAccessToken(`${h.slice(0, -3)}.${b64(r.claims())}.${s}`, r.provider, r.keys)), 'malformed', 'a broken header')
  t.equal(await reasonOf(verifyJwtAccessToken(`${h}.bm90IGpzb24.${s}`, r.provider, r.keys)), 'signature', 'checked before the payload is read')
  t.equal(await reasonOf(verifyJwtAccessToken('', r.provider, r.keys)), 'malformed')
})

t.test('unknown kid: one refetch, then refused; a second unknown kid within the cooldown fetches nothing', async (t) => {
  const r = await rig(t)
  const stranger = await makeKey('ES256', 'stranger-1')
  const before = r.fake.count('/jwks')
  t.equal(await reasonOf(verifyJwtAccessToken(await sign(r.claims(), stranger), r.provider, r.keys)), 'unknown_key')
  t.equal(r.fake.count('/jwks'), before + 1)
  const other = await makeKey('ES256', 'stranger-2')
  t.equal(await reasonOf(verifyJwtAccessToken(await sign(r.claims(), other), r.provider, r.keys)), 'unknown_key')
  t.equal(r.fake.count('/jwks'), before + 1, 'no second fetch')
})

t.test('missing kid with a multi-key set: bad header', async (t) => {
  const r = await rig(t)
  const token = await new SignJWT(r.claims()).setProtectedHeader({ alg: 'RS256' }).sign(r.rsa.privateKey)
  t.equal(await reasonOf(verifyJwtAccessToken(token, r.provider, r.keys)), 'bad_header')
})

t.test('jku / x5u / jwk header injection is refused and nothing is fetched from the header', async (t) => {
  const r = await rig(t)
  const attacker = await makeKey('RS256', 'evil')
  const attackerUrl = `${r.fake.origin}/attacker/jwks`
  r.fake.route('/attacker/jwks', (_req, res) => { res.writeHead(200, { 'content-type': 'application/json' }); res.end(JSON.stringify({ keys: [attacker.jwk] })) })
  const injections = [
    { jku: attackerUrl },
    { x5u: `${r.fake.origin}/attacker/cert.pem` },
    { jwk: attacker.jwk },
    { jku: attackerUrl, jwk: attacker.jwk, x5u: `${r.fake.origin}/attacker/cert.pem` }
  ]
  for (const extra of injections) {
    const ownKid = await sign(r.claims(), attacker, extra)
    t.equal(await reasonOf(verifyJwtAccessToken(ownKid, r.provider, r.keys)), 'unknown_key', `${Object.keys(extra).join('+')}, attacker's kid`)
    const realKid = await sign(r.claims(), attacker, { ...extra, kid: 'rsa-1' })
    t.equal(await reasonOf(verifyJwtAccessToken(realKid, r.provider, r.keys)), 'signature', `${Object.keys(extra).join('+')}, the real kid`)
  }
  t.equal(r.fake.requests.filter((p) => p.startsWith('/attacker')).length, 0, 'the attacker\'s URLs saw no request')
})

t.test('wrong audience; no audience', async (t) => {
  const r = await rig(t)
  t.equal(await reasonOf(verifyJwtAccessToken(await sign(r.claims({ aud: 'https://other.example.com/mcp' }), r.ec), r.provider, r.keys)), 'audience')
  t.equal(await reasonOf(verifyJwtAccessToken(await sign(r.claims({ aud: `${RESOURCE}/` }), r.ec), r.provider, r.keys)), 'audience')
  t.equal(await reasonOf(verifyJwtAccessToken(await sign(r.claims({ aud: undefined }), r.ec), r.provider, r.keys)), 'claims', 'aud is required')
})

t.test('wrong issuer, including a trailing-slash difference', async (t) => {
  const r = await rig(t)
  for (const iss of ['https://evil.example.com', `${r.fake.origin}/`, r.fake.origin.toUpperCase(), `${r.fake.origin} `]) {
    t.equal(await reasonOf(verifyJwtAccessToken(await sign(r.claims({ iss }), r.ec), r.provider, r.keys)), 'issuer', iss)
  }
  t.equal(await reasonOf(verifyJwtAccessToken(await sign(r.claims({ iss: undefined }), r.ec), r.provider, r.keys)), 'claims')
})

t.test('expired beyond the tolerance is refused, within it accepted; exp is required', async (t) => {
  const r = await rig(t)
  const now = new Date()
  t.equal(await reasonOf(verifyJwtAccessToken(await sign(r.claims({ iat: epoch(now) - 600, exp: epoch(now) - 61 }), r.ec), r.provider, r.keys, now)), 'expired')
  t.ok(await verifyJwtAccessToken(await sign(r.claims({ iat: epoch(now) - 600, exp: epoch(now) - 50 }), r.ec), r.provider, r.keys, now))
  const strict = { ...r.provider, clockToleranceSeconds: 0 }
  t.equal(await reasonOf(verifyJwtAccessToken(await sign(r.claims({ exp: epoch(now) - 1 }), r.ec), strict, r.keys, now)), 'expired')
  t.equal(await reasonOf(verifyJwtAccessToken(await sign(r.claims({ exp: undefined }), r.ec), r.provider, r.keys)), 'claims')
  t.equal(await reasonOf(verifyJwtAccessToken(await sign(r.claims({ exp: 'soon' as unknown as number }), r.ec), r.provider, r.keys)), 'malformed')
})

t.test('nbf in the future is refused (beyond the tolerance)', async (t) => {
  const r = await rig(t)
  const now = new Date()
  t.equal(await reasonOf(verifyJwtAccessToken(await sign(r.claims({ nbf: epoch(now) + 120 }), r.ec), r.provider, r.keys, now)), 'not_yet_valid')
  t.ok(await verifyJwtAccessToken(await sign(r.claims({ nbf: epoch(now) + 30 }), r.ec), r.provider, r.keys, now))
})

t.test('iat in the future is refused (beyond the tolerance)', async (t) => {
  const r = await rig(t)
  const now = new Date()
  t.equal(await reasonOf(verifyJwtAccessToken(await sign(r.claims({ iat: epoch(now) + 120, exp: epoch(now) + 600 }), r.ec), r.provider, r.keys, now)), 'not_yet_valid')
  t.ok(await verifyJwtAccessToken(await sign(r.claims({ iat: epoch(now) + 30 }), r.ec), r.provider, r.keys, now))
})

t.test('a crit header is refused', async (t) => {
  const r = await rig(t)
  const token = await new SignJWT(r.claims())
    .setProtectedHeader({ alg: 'ES256', kid: 'ec-1', crit: ['urn:example:must'], 'urn:example:must': true })
    .sign(r.ec.privateKey, { crit: { 'urn:example:must': true } })
  t.equal(await reasonOf(verifyJwtAccessToken(token, r.provider, r.keys)), 'bad_header')
  // Headers jose would not produce, signed by hand with the real key.
  for (const crit of [[], ['exp'], ['b64']]) {
    const input = `${b64({ alg: 'ES256', kid: 'ec-1', crit, exp: 1, b64: true })}.${b64(r.claims())}`
    const signature = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, r.ec.privateKey, new TextEncoder().encode(input))
    const forged = `${input}.${Buffer.from(signature).toString('base64url')}`
    t.equal(await reasonOf(verifyJwtAccessToken(forged, r.provider, r.keys)), 'bad_header', JSON.stringify(crit))
  }
  const input = `${b64({ alg: 'ES256', kid: 'ec-1' })}.${b64(r.claims())}`
  const signature = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, r.ec.privateKey, new TextEncoder().encode(input))
  t.ok(await verifyJwtAccessToken(`${input}.${Buffer.from(signature).toString('base64url')}`, r.provider, r.keys), 'the hand signing itself is sound')
})

t.test('an ID token is not an access token', async (t) => {
  const r = await rig(t)
  for (const claim of ['nonce', 'at_hash', 'c_hash']) {
    const token = await sign(r.claims({ [claim]: 'abc' }), r.ec)
    t.equal(await reasonOf(verifyJwtAccessToken(token, r.provider, r.keys)), 'id_token', claim)
  }
  const noScope = await sign(r.claims({ scope: undefined }), r.ec)
  t.equal(await reasonOf(verifyJwtAccessToken(noScope, r.provider, r.keys)), 'id_token', 'no scope claim')
  const idTyped = await sign(r.claims({ scope: undefined }), r.ec, { typ: 'JWT' })
  t.equal(await reasonOf(verifyJwtAccessToken(idTyped, r.provider, r.keys)), 'id_token', 'typ JWT, no scope')
})

t.test('typ at+jwt marks an access token; scp, roles, groups count as a grant', async (t) => {
  const r = await rig(t)
  for (const typ of ['at+jwt', 'application/at+jwt', 'AT+JWT']) {
    t.ok(await verifyJwtAccessToken(await sign(r.claims({ scope: undefined }), r.ec, { typ }), r.provider, r.keys), typ)
  }
  t.ok(await verifyJwtAccessToken(await sign(r.claims({ scope: undefined, scp: 'bus.read' }), r.ec), r.provider, r.keys), 'scp')
  t.ok(await verifyJwtAccessToken(await sign(r.claims({ scope: '' }), r.ec), r.provider, r.keys), 'an empty scope is still a scope claim')
  const roles = { ...r.provider, scopeClaims: ['scp', 'roles'] }
  t.ok(await verifyJwtAccessToken(await sign(r.claims({ scope: undefined, roles: ['Bus.Write'] }), r.ec), roles, r.keys), 'roles')
  const dex = { ...r.provider, groupsClaim: 'groups' }
  t.ok(await verifyJwtAccessToken(await sign(r.claims({ scope: undefined, groups: ['bus-writers'] }), r.ec), dex, r.keys), 'Dex: groups')
  t.equal(await reasonOf(verifyJwtAccessToken(await sign(r.claims({ scope: undefined }), r.ec), dex, r.keys)), 'id_token', 'Dex: neither')
  const cf = { ...r.provider, tokenHeader: 'cf-access-jwt-assertion' as const }
  t.ok(await verifyJwtAccessToken(await sign(r.claims({ scope: undefined, email: 'a@example.com', type: 'app' }), r.ec), cf, r.keys), 'Cloudflare Access carries no scope')
  t.equal(await reasonOf(verifyJwtAccessToken(await sign(r.claims({ nonce: 'n' }), r.ec, { typ: 'JWT' }), cf, r.keys)), 'id_token')
})

t.test('an oversized token is refused before any parsing', async (t) => {
  const r = await rig(t)
  const big = await sign(r.claims({ padding: 'x'.repeat(MAX_TOKEN_BYTES) }), r.ec)
  t.ok(big.length > MAX_TOKEN_BYTES)
  const before = r.fake.requests.length
  t.equal(await reasonOf(verifyJwtAccessToken(big, r.provider, r.keys)), 'too_large')
  t.equal(await reasonOf(verifyJwtAccessToken('a'.repeat(MAX_TOKEN_BYTES + 1), r.provider, r.keys)), 'too_large')
  t.equal(await reasonOf(verifyJwtAccessToken('é'.repeat(MAX_TOKEN_BYTES / 2 + 1), r.provider, r.keys)), 'too_large', 'counted in bytes')
  t.equal(r.fake.requests.length, before)
  t.notOk(looksLikeJwt(big))
  t.equal(peekIssuer(big), undefined)
  const fits = await sign(r.claims({ padding: 'x'.repeat(8000) }), r.ec)
  t.ok(await verifyJwtAccessToken(fits, r.provider, r.keys), 'a large token under the limit')
})

t.test('keys_unavailable passes through as a 503 refusal', async (t) => {
  const fake = await startFakeProvider()
  t.teardown(fake.close)
  fake.route('/jwks', (_req, res) => { res.writeHead(500); res.end() })
  const provider = makeProvider({ issuer: fake.origin, jwksUri: `${fake.origin}/jwks` })
  const keys = new ProviderKeys(provider)
  await keys.start()
  t.teardown(() => keys.stop())
  const key = await makeKey('ES256', 'k1')
  let error: unknown
  try {
    await verifyJwtAccessToken(await sign({ iss: fake.origin, aud: RESOURCE, sub: 'a', scope: 'bus:read', exp: epoch() + 60 }, key), provider, keys)
  } catch (err) { error = err }
  t.ok(error instanceof ExternalTokenError && error.reason === 'keys_unavailable' && error.unavailable)
})

t.test('error messages name the provider, never the token', async (t) => {
  const r = await rig(t)
  const token = await sign(r.claims({ aud: 'elsewhere' }), r.ec)
  try {
    await verifyJwtAccessToken(token, r.provider, r.keys)
    t.fail('accepted')
  } catch (err) {
    t.match((err as Error).message, /^provider test: /)
    t.notOk((err as Error).message.includes(token.split('.')[2] as string))
    t.notOk((err as Error).message.includes(token.split('.')[1] as string))
  }
})

t.test('looksLikeJwt: three base64url segments', async (t) => {
  t.ok(looksLikeJwt('a.b.c'))
  t.ok(looksLikeJwt('eyJ.eyJ.'), 'empty signature (alg none) still looks like a JWT')
  for (const s of ['', 'abc', 'a.b', 'a.b.c.d', '.b.c', 'a..c', 'a.b.c=', 'a+b.c.d', 'a/b.c.d', 'bus_at_abcdef', 'a.b.c\n']) {
    t.notOk(looksLikeJwt(s), JSON.stringify(s))
  }
})

t.test('peekIssuer decodes the payload without verification', async (t) => {
  const payload = (value: unknown): string => `${b64({ alg: 'RS256' })}.${Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url')}.sig`
  t.equal(peekIssuer(payload({ iss: 'https://idp.example.com' })), 'https://idp.example.com')
  t.equal(peekIssuer(payload({ iss: 'https://idp.example.com/' })), 'https://idp.example.com/', 'as is, no normalisation')
  t.equal(peekIssuer(payload({ iss: 7 })), undefined)
  t.equal(peekIssuer(payload({ sub: 'x' })), undefined)
  t.equal(peekIssuer(payload(['iss'])), undefined)
  t.equal(peekIssuer(payload('null')), undefined)
  t.equal(peekIssuer(payload('not json')), undefined)
  t.equal(peekIssuer('opaque-token'), undefined)
  t.equal(peekIssuer(new UnsecuredJWT({ iss: 'x' }).encode()), 'x')
})
