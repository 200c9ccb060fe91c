import { createHmac } from 'node:crypto'
import { errors, exportSPKI, SignJWT, UnsecuredJWT, type JWTPayload } from 'jose'
import t, { type Test } from 'tap'
import { ExternalTokenError } from '../../src/idp/errors.ts'
import { looksLikeJwt, MAX_TOKEN_BYTES, peekIssuer, verifyJwtAccessToken } from '../../src/idp/jwt.ts'
import { ProviderKeys } from '../../src/idp/keys.ts'
import type { IdpProvider } from '../../src/idp/types.ts'
import { epoch, type FakeProvider, makeKey, makeProvider, reasonOf, refusalOf, RESOURCE, sign, type SigningKey, startFakeProvider } from '../helpers/idp-fixtures.ts'

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

/** The refusal itself: its reason, message and cause are asserted below. */
t.test('the size limit is exactly MAX_TOKEN_BYTES, in characters and in UTF-8 bytes', async (t) => {
  const provider = makeProvider()
  const keys = { getKey: async () => { throw new Error('no key is asked for') } }
  const fits = await refusalOf(verifyJwtAccessToken('a'.repeat(MAX_TOKEN_BYTES), provider, keys))
  t.equal(fits.reason, 'malformed', '16 KiB of ASCII is not too large')
  t.equal(fits.message, 'provider test: the token is not a JWT')
  const over = await refusalOf(verifyJwtAccessToken('a'.repeat(MAX_TOKEN_BYTES + 1), provider, keys))
  t.equal(over.reason, 'too_large')
  t.equal(over.message, 'provider test: the token is larger than 16384 bytes')
  t.equal((await refusalOf(verifyJwtAccessToken('é'.repeat(MAX_TOKEN_BYTES / 2), provider, keys))).reason, 'malformed', '16 KiB of UTF-8')
  t.equal((await refusalOf(verifyJwtAccessToken(`${'é'.repeat(MAX_TOKEN_BYTES / 2)}a`, provider, keys))).reason, 'too_large', 'one byte more')
  t.equal((await refusalOf(verifyJwtAccessToken('é'.repeat(MAX_TOKEN_BYTES / 2 + 1), provider, keys))).reason, 'too_large', 'fewer characters than the limit, more bytes')
  const shaped = `a.b.${'c'.repeat(MAX_TOKEN_BYTES - 4)}`
  t.equal(shaped.length, MAX_TOKEN_BYTES)
  t.ok(looksLikeJwt(shaped), 'a JWT shape of exactly the limit')
  t.notOk(looksLikeJwt(`${shaped}c`), 'one character more')
  t.equal(peekIssuer(`${b64({ alg: 'RS256' })}.${b64({ iss: 'x', pad: 'p'.repeat(MAX_TOKEN_BYTES) })}.sig`), undefined, 'peekIssuer reads no oversized token')
})

t.test('peekIssuer: payloads that are not objects carry no issuer', async (t) => {
  const token = (json: string): string => `${b64({ alg: 'RS256' })}.${Buffer.from(json).toString('base64url')}.sig`
  for (const json of ['null', '7', '"iss"', 'true', '[]', '["iss"]', '[{"iss":"x"}]', '{"iss":null}', '{"iss":["x"]}', '{"iss":', '', 'iss']) {
    t.equal(peekIssuer(token(json)), undefined, JSON.stringify(json))
  }
  t.equal(peekIssuer(token('{"iss":""}')), '', 'an empty string is still the claim (no provider has it)')
  t.equal(peekIssuer(`${b64({ alg: 'RS256' })}.${Buffer.from([0xff, 0xfe, 0x00]).toString('base64url')}.sig`), undefined, 'bytes that are not UTF-8 JSON')
  t.equal(peekIssuer('a.b=.c'), undefined, 'not base64url')
})

t.test('each refusal names its problem and the provider, and keeps what jose threw as the cause', async (t) => {
  const r = await rig(t)
  const now = new Date(epoch() * 1000)
  const cases: Array<[string, () => Promise<string>, string, string, boolean]> = [
    ['two segments', async () => 'a.b', 'malformed', 'provider test: the token is not a JWT', false],
    ['a padded segment', async () => 'a.b.c=', 'malformed', 'provider test: the token is not a JWT', false],
    ['a header that is not JSON', async () => `${Buffer.from('{nope').toString('base64url')}.${b64(r.claims())}.sig`, 'malformed', 'provider test: the token\'s header cannot be decoded', true],
    ['crit', async () => `${b64({ alg: 'ES256', kid: 'ec-1', crit: ['exp'] })}.${b64(r.claims())}.sig`, 'bad_header', 'provider test: the token\'s header has a "crit" parameter', false],
    ['expired', async () => await sign(r.claims({ exp: epoch(now) - 120 }), r.ec), 'expired', 'provider test: the token has expired', true],
    ['no exp', async () => await sign(r.claims({ exp: undefined }), r.ec), 'claims', 'provider test: the token has no "exp" claim', true],
    ['exp not a number', async () => await sign(r.claims({ exp: 'soon' as unknown as number }), r.ec), 'malformed', 'provider test: the token\'s "exp" claim is not valid', true],
    ['issuer', async () => await sign(r.claims({ iss: 'https://evil.example.com' }), r.ec), 'issuer', 'provider test: the token\'s issuer is not the configured issuer', true],
    ['audience', async () => await sign(r.claims({ aud: 'elsewhere' }), r.ec), 'audience', 'provider test: the token is not meant for this server (aud)', true],
    ['nbf', async () => await sign(r.claims({ nbf: epoch(now) + 120 }), r.ec), 'not_yet_valid', 'provider test: the token is not valid yet (nbf)', true],
    ['iat', async () => await sign(r.claims({ iat: epoch(now) + 120 }), r.ec), 'not_yet_valid', 'provider test: the token was issued in the future (iat)', false],
    ['signature', async () => await sign(r.claims(), await makeKey('ES256', 'ec-1')), 'signature', 'provider test: the token\'s signature is not valid', true],
    ['alg not allowed', async () => new UnsecuredJWT(r.claims()).encode(), 'bad_header', 'provider test: the token\'s algorithm is not accepted', true],
    ['nonce', async () => await sign(r.claims({ nonce: 'n' }), r.ec), 'id_token', 'provider test: an ID token (it has "nonce") is not an access token', false],
    ['no grant', async () => await sign(r.claims({ scope: undefined }), r.ec), 'id_token', 'provider test: the token is not typed at+jwt and carries none of scope, scp: taken for an ID token', false]
  ]
  for (const [label, make, reason, message, hasCause] of cases) {
    const err = await refusalOf(verifyJwtAccessToken(await make(), r.provider, r.keys, now))
    t.equal(err.reason, reason, label)
    t.equal(err.message, message, label)
    t.equal(err.cause !== undefined, hasCause, `${label}: cause`)
  }
  const dex = { ...r.provider, id: 'dex', groupsClaim: 'groups' }
  const err = await refusalOf(verifyJwtAccessToken(await sign(r.claims({ scope: undefined }), r.ec), dex, r.keys, now))
  t.equal(err.message, 'provider dex: the token is not typed at+jwt and carries none of scope, scp, groups: taken for an ID token')
})

t.test('each jose error maps to its reason and message', async (t) => {
  const r = await rig(t)
  const token = await sign(r.claims(), r.ec)
  const throwing = (error: unknown) => ({ getKey: async () => { throw error } })
  const claimFailed = (claim: string, reason = 'check_failed') => new errors.JWTClaimValidationFailed('jose says no', {}, claim, reason)
  const cases: Array<[string, unknown, string, string]> = [
    ['JWTExpired', new errors.JWTExpired('jose says no', {}), 'expired', 'the token has expired'],
    ['missing claim', claimFailed('jti', 'missing'), 'claims', 'the token has no "jti" claim'],
    ['invalid claim', claimFailed('jti', 'invalid'), 'malformed', 'the token\'s "jti" claim is not valid'],
    ['iss', claimFailed('iss'), 'issuer', 'the token\'s issuer is not the configured issuer'],
    ['aud', claimFailed('aud'), 'audience', 'the token is not meant for this server (aud)'],
    ['nbf', claimFailed('nbf'), 'not_yet_valid', 'the token is not valid yet (nbf)'],
    ['iat', claimFailed('iat'), 'not_yet_valid', 'the token was issued in the future (iat)'],
    ['typ', claimFailed('typ'), 'bad_header', 'the token\'s typ is not accepted'],
    ['another claim', claimFailed('jti'), 'claims', 'the token\'s "jti" claim is not accepted'],
    ['JWSSignatureVerificationFailed', new errors.JWSSignatureVerificationFailed(), 'signature', 'the token\'s signature is not valid'],
    ['JOSEAlgNotAllowed', new errors.JOSEAlgNotAllowed('jose says no'), 'bad_header', 'the token\'s algorithm is not accepted'],
    ['JOSENotSupported', new errors.JOSENotSupported('jose says no'), 'bad_header', 'the token\'s header is not supported'],
    ['JWKSNoMatchingKey', new errors.JWKSNoMatchingKey(), 'unknown_key', 'no key matches the token'],
    ['JWSInvalid', new errors.JWSInvalid('jose says no'), 'malformed', 'the token is not a valid JWT'],
    ['JWTInvalid', new errors.JWTInvalid('jose says no'), 'malformed', 'the token is not a valid JWT'],
    ['TypeError', new TypeError('wrong key type'), 'bad_header', 'the token\'s algorithm does not match its key'],
    ['anything else', new Error('boom'), 'malformed', 'the token cannot be verified']
  ]
  for (const [label, error, reason, message] of cases) {
    const err = await refusalOf(verifyJwtAccessToken(token, r.provider, throwing(error)))
    t.equal(err.reason, reason, label)
    t.equal(err.message, `provider test: ${message}`, label)
    t.equal(err.cause, error, `${label}: the cause`)
  }
  const passed = new ExternalTokenError('keys_unavailable', 'provider test: no keys')
  t.equal(await refusalOf(verifyJwtAccessToken(token, r.provider, throwing(passed))), passed, 'an ExternalTokenError passes through as is')
  // The real TypeError: an EC key offered for an RS256 signature.
  const mismatched = await refusalOf(verifyJwtAccessToken(await sign(r.claims(), r.rsa), r.provider, { getKey: async () => r.ec.publicKey }))
  t.equal(mismatched.reason, 'bad_header')
  t.equal(mismatched.message, 'provider test: the token\'s algorithm does not match its key')
  t.ok(mismatched.cause instanceof TypeError)
})

t.test('iat exactly at the tolerance is accepted, one second later refused; iat is optional', async (t) => {
  const r = await rig(t)
  const now = new Date(epoch() * 1000)
  t.ok(await verifyJwtAccessToken(await sign(r.claims({ iat: epoch(now) + 60 }), r.ec), r.provider, r.keys, now))
  t.equal((await refusalOf(verifyJwtAccessToken(await sign(r.claims({ iat: epoch(now) + 61 }), r.ec), r.provider, r.keys, now))).reason, 'not_yet_valid')
  t.ok(await verifyJwtAccessToken(await sign(r.claims({ iat: undefined }), r.ec), r.provider, r.keys, now), 'no iat')
  t.equal((await refusalOf(verifyJwtAccessToken(await sign(r.claims({ iat: 'now' as unknown as number }), r.ec), r.provider, r.keys, now))).reason, 'malformed', 'iat not a number')
})

t.test('the grant test reads only the configured claims', async (t) => {
  const r = await rig(t)
  // A claim literally named "undefined" is not a groups claim when none is configured.
  const token = await sign(r.claims({ scope: undefined, undefined: ['bus-writers'] }), r.ec)
  t.equal((await refusalOf(verifyJwtAccessToken(token, r.provider, r.keys))).reason, 'id_token')
  t.equal((await refusalOf(verifyJwtAccessToken(await sign(r.claims({ scope: undefined }), r.ec, { typ: 7 as unknown as string }), r.provider, r.keys))).reason, 'id_token', 'a typ that is not a string')
  t.equal((await refusalOf(verifyJwtAccessToken(await sign(r.claims({ scope: undefined }), r.ec, { typ: 'jwt' }), r.provider, r.keys))).reason, 'id_token', 'typ jwt')
})
