import { generateKeyPairSync } from 'node:crypto'
import type { JWSHeaderParameters } from 'jose'
import t, { type Test } from 'tap'
import { ExternalTokenError } from '../../src/idp/errors.ts'
import { checkFetchUrl, fetchJson } from '../../src/idp/fetch.ts'
import { discover, ProviderKeys } from '../../src/idp/keys.ts'
import { type FakeProvider, json, makeKey, makeProvider, reasonOf, refusalOf, startFakeProvider } from '../helpers/idp-fixtures.ts'

async function withProvider (t: Test): Promise<FakeProvider> {
  const fake = await startFakeProvider()
  t.teardown(fake.close)
  return fake
}

/** The reason of the ExternalTokenError `promise` rejects with. */
function header (alg: string, kid?: string, extra: Partial<JWSHeaderParameters> = {}): JWSHeaderParameters {
  return { alg, ...(kid !== undefined ? { kid } : {}), ...extra }
}

// --- fetchJson --------------------------------------------------------------------------------

t.test('fetchJson: only https, or http on a loopback host; no user information', async (t) => {
  t.throws(() => checkFetchUrl('http://idp.example.com/jwks'), /only https/)
  t.throws(() => checkFetchUrl('ftp://idp.example.com/jwks'), /only https/)
  t.throws(() => checkFetchUrl('not a url'), /is not a URL/)
  t.throws(() => checkFetchUrl('https://user:pass@idp.example.com/jwks'), /user information/)
  t.equal(checkFetchUrl('https://idp.example.com/jwks').host, 'idp.example.com')
  t.equal(checkFetchUrl('http://127.0.0.1:8080/jwks').port, '8080')
  t.equal(checkFetchUrl('http://localhost/jwks').hostname, 'localhost')
  t.equal(checkFetchUrl('http://[::1]:9/jwks').hostname, '[::1]')
  let called = false
  const spy = (async () => { called = true; return new Response('{}') }) as typeof fetch
  await t.rejects(fetchJson('http://10.0.0.1/jwks', { fetch: spy }), /only https/)
  t.notOk(called, 'nothing was fetched')
})

t.test('fetchJson: a JSON object is returned; other answers are errors naming the URL and status', async (t) => {
  const fake = await withProvider(t)
  fake.route('/ok', (_req, res) => json(res, 200, { a: 1 }))
  fake.route('/array', (_req, res) => json(res, 200, [1, 2]))
  fake.route('/null', (_req, res) => json(res, 200, null))
  fake.route('/text', (_req, res) => { res.writeHead(200, { 'content-type': 'text/html' }); res.end('<html>') })
  fake.route('/500', (_req, res) => json(res, 500, { error: 'x' }))
  t.same(await fetchJson(`${fake.origin}/ok`), { a: 1 })
  await t.rejects(fetchJson(`${fake.origin}/array`), /\/array: the answer is not a JSON object/)
  await t.rejects(fetchJson(`${fake.origin}/null`), /not a JSON object/)
  await t.rejects(fetchJson(`${fake.origin}/text`), /\/text: the answer is not JSON/)
  await t.rejects(fetchJson(`${fake.origin}/500`), new RegExp(`GET ${fake.origin}/500: answered HTTP 500`))
  await t.rejects(fetchJson(`${fake.origin}/missing`), /answered HTTP 404/)
})

t.test('fetchJson: redirects are not followed', async (t) => {
  const fake = await withProvider(t)
  fake.route('/moved', (_req, res) => { res.writeHead(302, { location: `${fake.origin}/ok` }); res.end() })
  fake.route('/ok', (_req, res) => json(res, 200, { a: 1 }))
  await t.rejects(fetchJson(`${fake.origin}/moved`), /answered 302; redirects are not followed/)
  t.equal(fake.count('/ok'), 0, 'the target was never asked')
})

t.test('fetchJson: a slow answer times out (headers or body)', async (t) => {
  const fake = await withProvider(t)
  fake.route('/never', () => {})
  fake.route('/slow-body', (_req, res) => { res.writeHead(200, { 'content-type': 'application/json' }); res.write('{"keys":') })
  const started = Date.now()
  await t.rejects(fetchJson(`${fake.origin}/never`, { timeoutMs: 150 }), /\/never: no answer within 150 ms/)
  await t.rejects(fetchJson(`${fake.origin}/slow-body`, { timeoutMs: 150 }), /\/slow-body: no complete answer within 150 ms/)
  t.ok(Date.now() - started < 3000, 'both ended soon')
})

t.test('fetchJson: a body past maxBytes is cut off, declared or streamed', async (t) => {
  const fake = await withProvider(t)
  fake.route('/declared', (_req, res) => { res.writeHead(200, { 'content-length': '5000' }); res.end('x'.repeat(5000)) })
  let written = 0
  fake.route('/streamed', (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    const more = (): void => {
      if (written >= 10_000_000 || res.destroyed) { res.end(); return }
      written += 16384
      res.write('y'.repeat(16384), () => setImmediate(more))
    }
    more()
  })
  await t.rejects(fetchJson(`${fake.origin}/declared`, { maxBytes: 1000 }), /\(5000 bytes\) is larger than 1000 bytes/)
  await t.rejects(fetchJson(`${fake.origin}/streamed`, { maxBytes: 100_000 }), /\/streamed: the answer is larger than 100000 bytes/)
  t.ok(written < 10_000_000, `the reading stopped early (${written} bytes written)`)
})

t.test('fetchJson: a refused connection is an error naming the URL', async (t) => {
  await t.rejects(fetchJson('http://127.0.0.1:1/jwks', { timeoutMs: 2000 }), /GET http:\/\/127\.0\.0\.1:1\/jwks: /)
})

// --- discovery --------------------------------------------------------------------------------

t.test('discover: openid-configuration, then oauth-authorization-server; issuer byte for byte', async (t) => {
  const fake = await withProvider(t)
  t.equal((await discover(fake.origin)).jwks_uri, `${fake.origin}/jwks`)
  await t.rejects(discover(`${fake.origin}/`), /is not the configured issuer/, 'a trailing-slash difference is a different issuer')

  const other = await withProvider(t)
  other.route('/.well-known/openid-configuration', (_req, res) => json(res, 404, {}))
  other.route('/.well-known/oauth-authorization-server', (_req, res) => json(res, 200, { issuer: other.origin, jwks_uri: `${other.origin}/keys` }))
  t.equal((await discover(other.origin)).jwks_uri, `${other.origin}/keys`)
  t.same(other.requests, ['/.well-known/openid-configuration', '/.well-known/oauth-authorization-server'])

  const path = await withProvider(t)
  path.route('/realms/x/.well-known/openid-configuration', (_req, res) => json(res, 200, { issuer: `${path.origin}/realms/x`, jwks_uri: `${path.origin}/jwks` }))
  t.equal((await discover(`${path.origin}/realms/x`)).issuer, `${path.origin}/realms/x`, 'an issuer with a path')
})

t.test('keys from discovery; a jwks_uri that breaks the fetch rules is refused', async (t) => {
  const fake = await withProvider(t)
  const key = await makeKey('ES256', 'k1')
  fake.jwks.keys = [key.jwk]
  const keys = new ProviderKeys(makeProvider({ issuer: fake.origin }))
  await keys.start()
  t.teardown(() => keys.stop())
  t.match(keys.status(), { usable: true, keys: 1, error: null, jwksUri: `${fake.origin}/jwks` })
  t.ok(keys.status().fetchedAt instanceof Date)
  t.ok(await keys.getKey(header('ES256', 'k1')))

  const bad = await withProvider(t)
  bad.route('/.well-known/openid-configuration', (_req, res) => json(res, 200, { issuer: bad.origin, jwks_uri: 'http://keys.example.com/jwks' }))
  const badKeys = new ProviderKeys(makeProvider({ issuer: bad.origin }))
  await badKeys.start()
  t.teardown(() => badKeys.stop())
  t.match(badKeys.status(), { usable: false, keys: 0, fetchedAt: null, jwksUri: null, error: /jwks_uri .*only https/ })
})

t.test('a configured jwks_uri is used without discovery', async (t) => {
  const fake = await withProvider(t)
  fake.jwks.keys = [(await makeKey('RS256', 'r1')).jwk]
  const keys = new ProviderKeys(makeProvider({ issuer: 'https://idp.example.com', jwksUri: `${fake.origin}/jwks` }))
  await keys.start()
  keys.stop()
  t.same(fake.requests, ['/jwks'])
  t.equal(keys.status().keys, 1)
})

// --- which keys are usable --------------------------------------------------------------------

t.test('encryption, symmetric and not-allowed keys are skipped; a key without alg fits its kty', async (t) => {
  const fake = await withProvider(t)
  const enc = await makeKey('RS256', 'enc', { use: 'enc' })
  const es384 = await makeKey('ES384', 'es384')
  const noAlg = await makeKey('RS256', 'noalg')
  delete noAlg.jwk.alg
  const ops = await makeKey('ES256', 'ops', { key_ops: ['encrypt'] })
  const good = await makeKey('EdDSA', 'ed')
  fake.jwks.keys = [
    enc.jwk,
    { kty: 'oct', k: 'c2VjcmV0', kid: 'oct', alg: 'HS256' },
    es384.jwk,
    noAlg.jwk,
    ops.jwk,
    good.jwk,
    { kty: 'RSA', kid: 'broken', n: 'AQAB' }, // no e
    { kty: 'EC', kid: 'bad-point', crv: 'P-256', x: 'AAAA', y: 'AAAA' },
    'not an object' as unknown as Record<string, string>
  ]
  const keys = new ProviderKeys(makeProvider({ jwksUri: `${fake.origin}/jwks` }), { unknownKidCooldownMs: 60_000 })
  await keys.start()
  t.teardown(() => keys.stop())
  t.equal(keys.status().keys, 2, 'noalg and ed')
  t.equal(await reasonOf(keys.getKey(header('RS256', 'enc'))), 'unknown_key')
  t.equal(await reasonOf(keys.getKey(header('RS256', 'oct'))), 'unknown_key')
  t.equal(await reasonOf(keys.getKey(header('HS256', 'oct'))), 'bad_header', 'HS256 is not an allowed algorithm')
  t.equal(await reasonOf(keys.getKey(header('ES384', 'es384'))), 'bad_header', 'ES384 is not in the provider\'s algorithms')
  t.equal(await reasonOf(keys.getKey(header('ES256', 'ops'))), 'unknown_key')
  t.equal((await keys.getKey(header('RS256', 'noalg'))).algorithm.name, 'RSASSA-PKCS1-v1_5')
  t.equal((await keys.getKey(header('PS256', 'noalg'))).algorithm.name, 'RSA-PSS')
  t.equal(await reasonOf(keys.getKey(header('ES256', 'noalg'))), 'bad_header', 'an RSA key does not verify ES256')
  t.equal(await reasonOf(keys.getKey(header('RS256', 'ed'))), 'bad_header', 'alg must match the key')
  t.ok(await keys.getKey(header('EdDSA', 'ed')))
})

t.test('a published private key is only ever used as a public key', async (t) => {
  const fake = await withProvider(t)
  const key = await makeKey('ES256', 'priv')
  const { exportJWK } = await import('jose')
  fake.jwks.keys = [{ ...(await exportJWK(key.privateKey)), kid: 'priv', alg: 'ES256' }]
  const keys = new ProviderKeys(makeProvider({ jwksUri: `${fake.origin}/jwks` }))
  await keys.start()
  keys.stop()
  t.equal((await keys.getKey(header('ES256', 'priv'))).type, 'public')
})

t.test('missing kid: refused when the set holds several keys, fine with one', async (t) => {
  const fake = await withProvider(t)
  const a = await makeKey('ES256', 'a')
  const b = await makeKey('ES256', 'b')
  fake.jwks.keys = [a.jwk, b.jwk]
  const keys = new ProviderKeys(makeProvider({ jwksUri: `${fake.origin}/jwks` }))
  await keys.start()
  keys.stop()
  t.equal(await reasonOf(keys.getKey(header('ES256'))), 'bad_header')

  const single = await withProvider(t)
  single.jwks.keys = [a.jwk]
  const one = new ProviderKeys(makeProvider({ jwksUri: `${single.origin}/jwks` }))
  await one.start()
  one.stop()
  t.ok(await one.getKey(header('ES256')))
  t.equal(await reasonOf(one.getKey(header('RS256'))), 'bad_header')
})

t.test('header key material (jku, x5u, jwk, x5c) is ignored: only kid and alg select a key', async (t) => {
  const fake = await withProvider(t)
  const real = await makeKey('ES256', 'real')
  const attacker = await makeKey('ES256', 'evil')
  fake.jwks.keys = [real.jwk]
  const keys = new ProviderKeys(makeProvider({ jwksUri: `${fake.origin}/jwks` }), { unknownKidCooldownMs: 60_000 })
  await keys.start()
  keys.stop()
  const injected = header('ES256', 'evil', { jku: `${fake.origin}/attacker`, x5u: `${fake.origin}/attacker-x5u`, jwk: attacker.jwk, x5c: ['MIIB'] })
  t.equal(await reasonOf(keys.getKey(injected)), 'unknown_key')
  const sameKid = header('ES256', 'real', { jwk: attacker.jwk, jku: `${fake.origin}/attacker` })
  t.equal(await keys.getKey(sameKid), await keys.getKey(header('ES256', 'real')), 'the configured key, not the header\'s')
  t.equal(fake.count('/attacker') + fake.count('/attacker-x5u'), 0)
})

// --- refetching ------------------------------------------------------------------------------

t.test('unknown kid: one refetch, then refused; another unknown kid within the cooldown fetches nothing', async (t) => {
  const fake = await withProvider(t)
  fake.jwks.keys = [(await makeKey('ES256', 'k1')).jwk]
  let now = 1_000_000
  const keys = new ProviderKeys(makeProvider({ jwksUri: `${fake.origin}/jwks` }), { now: () => now, unknownKidCooldownMs: 30_000 })
  await keys.start()
  t.teardown(() => keys.stop())
  t.equal(fake.count('/jwks'), 1)
  t.equal(await reasonOf(keys.getKey(header('ES256', 'nope-1'))), 'unknown_key')
  t.equal(fake.count('/jwks'), 2, 'one refetch')
  t.equal(await reasonOf(keys.getKey(header('ES256', 'nope-2'))), 'unknown_key')
  t.equal(await reasonOf(keys.getKey(header('ES256', 'nope-1'))), 'unknown_key')
  t.equal(fake.count('/jwks'), 2, 'no fetch within the cooldown')
  now += 30_000
  t.equal(await reasonOf(keys.getKey(header('ES256', 'nope-3'))), 'unknown_key')
  t.equal(fake.count('/jwks'), 3, 'after the cooldown, one more')
})

t.test('concurrent unknown kids share one refetch', async (t) => {
  const fake = await withProvider(t)
  fake.jwks.keys = [(await makeKey('ES256', 'k1')).jwk]
  const keys = new ProviderKeys(makeProvider({ jwksUri: `${fake.origin}/jwks` }))
  await keys.start()
  t.teardown(() => keys.stop())
  const reasons = await Promise.all(Array.from({ length: 20 }, async (_, i) => await reasonOf(keys.getKey(header('ES256', `nope-${i}`)))))
  t.same(new Set(reasons), new Set(['unknown_key']))
  t.equal(fake.count('/jwks'), 2)
})

t.test('key rotation: a new kid triggers a refetch and then resolves', async (t) => {
  const fake = await withProvider(t)
  const old = await makeKey('RS256', 'old')
  const next = await makeKey('RS256', 'new')
  fake.jwks.keys = [old.jwk]
  const keys = new ProviderKeys(makeProvider({ jwksUri: `${fake.origin}/jwks` }))
  await keys.start()
  t.teardown(() => keys.stop())
  fake.jwks.keys = [old.jwk, next.jwk]
  t.ok(await keys.getKey(header('RS256', 'new')))
  t.equal(fake.count('/jwks'), 2)
  t.equal(keys.status().keys, 2)
  t.ok(await keys.getKey(header('RS256', 'old')), 'the old key still works during the overlap')
})

t.test('the provider down after a first good fetch: the last good keys stay', async (t) => {
  const fake = await withProvider(t)
  const key = await makeKey('ES256', 'k1')
  fake.jwks.keys = [key.jwk]
  let now = 0
  const keys = new ProviderKeys(makeProvider({ jwksUri: `${fake.origin}/jwks` }), { now: () => now })
  await keys.start()
  t.teardown(() => keys.stop())
  const fetchedAt = keys.status().fetchedAt
  fake.route('/jwks', (_req, res) => json(res, 503, {}))
  await keys.refresh()
  t.match(keys.status(), { usable: true, keys: 1, error: /answered HTTP 503/ })
  t.equal(keys.status().fetchedAt, fetchedAt)
  t.ok(await keys.getKey(header('ES256', 'k1')))
  fake.route('/jwks', (_req, res) => json(res, 200, { keys: [] }))
  await keys.refresh()
  t.match(keys.status(), { usable: true, keys: 1, error: /no usable signing key/ }, 'an empty set does not replace a good one')
  fake.route('/jwks', (_req, res) => json(res, 200, { nothing: true }))
  await keys.refresh()
  t.match(keys.status(), { usable: true, keys: 1, error: /no "keys" array/ })
  now += 60_000
  t.equal(await reasonOf(keys.getKey(header('ES256', 'other'))), 'unknown_key', 'an unknown kid is still refused')
  t.ok(await keys.getKey(header('ES256', 'k1')))
})

t.test('the provider down from the start: keys_unavailable (503), and a retry when it comes back', async (t) => {
  const fake = await withProvider(t)
  fake.route('/jwks', (_req, res) => json(res, 500, {}))
  let now = 0
  const keys = new ProviderKeys(makeProvider({ jwksUri: `${fake.origin}/jwks` }), { now: () => now, unknownKidCooldownMs: 30_000 })
  await keys.start()
  t.teardown(() => keys.stop())
  t.match(keys.status(), { usable: false, keys: 0, fetchedAt: null, error: /answered HTTP 500/ })
  let error: unknown
  try { await keys.getKey(header('ES256', 'k1')) } catch (err) { error = err }
  t.ok(error instanceof ExternalTokenError)
  t.equal((error as ExternalTokenError).reason, 'keys_unavailable')
  t.ok((error as ExternalTokenError).unavailable)
  const asked = fake.count('/jwks')
  t.equal(await reasonOf(keys.getKey(header('ES256', 'k1'))), 'keys_unavailable')
  t.equal(fake.count('/jwks'), asked, 'tokens do not hammer a provider that is down')
  const key = await makeKey('ES256', 'k1')
  fake.jwks.keys = [key.jwk]
  fake.route('/jwks', (_req, res) => json(res, 200, fake.jwks))
  now += 30_000
  t.ok(await keys.getKey(header('ES256', 'k1')), 'after the cooldown a token triggers a fetch')
})

t.test('a JWKS endpoint that redirects, is slow or answers a huge body: no keys', async (t) => {
  const fake = await withProvider(t)
  fake.route('/redirect', (_req, res) => { res.writeHead(301, { location: `${fake.origin}/jwks` }); res.end() })
  fake.route('/slow', () => {})
  fake.route('/huge', (_req, res) => json(res, 200, { keys: [], padding: 'x'.repeat(300 * 1024) }))
  fake.jwks.keys = [(await makeKey('ES256', 'k1')).jwk]
  const cases: Array<[string, RegExp]> = [['/redirect', /redirects are not followed/], ['/slow', /no answer within 200 ms/], ['/huge', /larger than 262144 bytes/]]
  for (const [path, error] of cases) {
    const keys = new ProviderKeys(makeProvider({ jwksUri: `${fake.origin}${path}` }), { timeoutMs: 200 })
    await keys.start()
    keys.stop()
    t.match(keys.status(), { usable: false, error }, path)
    t.equal(await reasonOf(keys.getKey(header('ES256', 'k1'))), 'keys_unavailable', path)
  }
  t.equal(fake.count('/jwks'), 0, 'the redirect target was never fetched')
})

t.test('background refresh: picks up new keys; retries sooner while there are none; stop() ends it', async (t) => {
  const fake = await withProvider(t)
  fake.route('/jwks', (_req, res) => json(res, 500, {}))
  const keys = new ProviderKeys(makeProvider({ jwksUri: `${fake.origin}/jwks` }), { refreshIntervalMs: 200, retryIntervalMs: 50 })
  await keys.start()
  t.teardown(() => keys.stop())
  t.equal(keys.status().usable, false)
  fake.jwks.keys = [(await makeKey('ES256', 'k1')).jwk]
  fake.route('/jwks', (_req, res) => json(res, 200, fake.jwks))
  await new Promise((resolve) => setTimeout(resolve, 150))
  t.equal(keys.status().usable, true, 'the retry (50 ms) fetched the keys')
  const afterRetry = fake.count('/jwks')
  fake.jwks.keys = [...fake.jwks.keys, (await makeKey('ES256', 'k2')).jwk]
  await new Promise((resolve) => setTimeout(resolve, 450))
  t.equal(keys.status().keys, 2, 'the refresh (200 ms) saw the new key')
  const count = fake.count('/jwks')
  t.ok(count - afterRetry >= 1 && count - afterRetry <= 3, `refreshes every 200 ms, not every 50 ms (${count - afterRetry})`)
  keys.stop()
  await new Promise((resolve) => setTimeout(resolve, 450))
  t.equal(fake.count('/jwks'), count, 'no fetch after stop()')
})

t.test('getKey without start(): the first token fetches the keys', async (t) => {
  const fake = await withProvider(t)
  fake.jwks.keys = [(await makeKey('ES256', 'k1')).jwk]
  const keys = new ProviderKeys(makeProvider({ jwksUri: `${fake.origin}/jwks` }))
  t.match(keys.status(), { usable: false, fetchedAt: null, error: null })
  t.ok(await keys.getKey(header('ES256', 'k1')))
  t.equal(fake.count('/jwks'), 1)
})

t.test('a kid that is not a string is a bad header', async (t) => {
  const keys = new ProviderKeys(makeProvider({ jwksUri: 'https://idp.example.com/jwks' }))
  t.equal(await reasonOf(keys.getKey({ alg: 'ES256', kid: 7 as unknown as string })), 'bad_header')
  t.equal(await reasonOf(keys.getKey({ alg: 'none' })), 'bad_header')
})

// --- rules at their boundaries (mutation testing) ----------------------------------------------

const ALL_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519']

function publicJwk (type: 'ec' | 'ed25519' | 'ed448' | 'x25519', namedCurve?: string): Record<string, unknown> {
  const { publicKey } = type === 'ec' ? generateKeyPairSync('ec', { namedCurve: namedCurve as string }) : generateKeyPairSync(type as 'ed25519')
  return publicKey.export({ format: 'jwk' }) as Record<string, unknown>
}

async function keysFor (t: Test, jwks: unknown[], algorithms = ALL_ALGORITHMS, options = { unknownKidCooldownMs: 60_000 }): Promise<{ fake: FakeProvider, keys: ProviderKeys }> {
  const fake = await withProvider(t)
  fake.route('/jwks', (_req, res) => json(res, 200, { keys: jwks }))
  const keys = new ProviderKeys(makeProvider({ jwksUri: `${fake.origin}/jwks`, algorithms }), options)
  await keys.start()
  t.teardown(() => keys.stop())
  return { fake, keys }
}

t.test('each algorithm takes only its key type and curve', async (t) => {
  const rsa = (await makeKey('RS256', 'x')).jwk
  const keySet = [
    { kty: rsa.kty, n: rsa.n, e: rsa.e, kid: 'rsa' },
    { ...publicJwk('ec', 'P-256'), kid: 'p256' },
    { ...publicJwk('ec', 'P-384'), kid: 'p384' },
    { ...publicJwk('ec', 'P-521'), kid: 'p521' },
    { ...publicJwk('ed25519'), kid: 'ed25519' },
    { ...publicJwk('ed448'), kid: 'ed448' },
    { ...publicJwk('x25519'), kid: 'x25519' }
  ]
  const { keys } = await keysFor(t, keySet)
  const fitting: Record<string, string[]> = {
    rsa: ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'],
    p256: ['ES256'],
    p384: ['ES384'],
    p521: ['ES512'],
    ed25519: ['EdDSA', 'Ed25519']
  }
  t.equal(keys.status().keys, 5, 'Ed448 and X25519 keys are not usable')
  for (const [kid, algs] of Object.entries(fitting)) {
    for (const alg of ALL_ALGORITHMS) {
      if (algs.includes(alg)) t.ok(await keys.getKey(header(alg, kid)), `${kid} verifies ${alg}`)
      else t.equal(await reasonOf(keys.getKey(header(alg, kid))), 'bad_header', `${kid} does not verify ${alg}`)
    }
  }
  for (const kid of ['ed448', 'x25519']) t.equal(await reasonOf(keys.getKey(header('EdDSA', kid))), 'unknown_key', kid)
})

t.test('key members: strings only, all of them; entries that are not objects are skipped', async (t) => {
  const ec = await makeKey('ES256', 'x')
  const rsa = await makeKey('RS256', 'x')
  const ed = await makeKey('EdDSA', 'x')
  const { keys } = await keysFor(t, [
    null, 7, 'text', [ec.jwk],
    { ...rsa.jwk, kid: 'rsa-e-array', e: [rsa.jwk.e] },
    { ...rsa.jwk, kid: 'rsa-no-n', n: undefined },
    { ...ec.jwk, kid: 'ec-no-y', y: undefined },
    { ...ec.jwk, kid: 'ec-no-crv', crv: undefined },
    { ...ec.jwk, kid: 'ec-x-number', x: 7 },
    { ...ed.jwk, kid: 'ed-no-x', x: undefined },
    { ...ed.jwk, kid: 'ed-no-crv', crv: undefined },
    { ...ec.jwk, kid: 'ops', key_ops: ['verify', 'sign'] },
    { ...ec.jwk, kid: 'ops-string', key_ops: 'verify' },
    { ...ec.jwk, kid: 'use-sig', use: 'sig' },
    { ...ec.jwk, kid: 'kty-array', kty: ['EC'] },
    { ...ec.jwk, kid: 7 },
    { ...rsa.jwk, kid: 'alg-rs256', alg: 'RS256' },
    { ...rsa.jwk, kid: 'alg-number', alg: 256 }
  ])
  t.equal(keys.status().keys, 3, 'ops, use-sig and alg-rs256')
  t.ok(await keys.getKey(header('ES256', 'ops')), 'key_ops with verify')
  t.ok(await keys.getKey(header('ES256', 'use-sig')))
  t.ok(await keys.getKey(header('RS256', 'alg-rs256')))
  t.equal(await reasonOf(keys.getKey(header('PS256', 'alg-rs256'))), 'bad_header', 'a key\'s alg limits it to that algorithm')
  for (const kid of ['rsa-e-array', 'rsa-no-n', 'ec-no-y', 'ec-no-crv', 'ec-x-number', 'ed-no-x', 'ed-no-crv', 'ops-string', 'kty-array', '7', 'alg-number']) {
    t.equal(await reasonOf(keys.getKey(header(kid.startsWith('rsa') || kid.startsWith('alg') ? 'RS256' : kid.startsWith('ed') ? 'EdDSA' : 'ES256', kid))), 'unknown_key', kid)
  }
})

t.test('a key without kid is found by a token without kid; a key whose kid is not a string is never used', async (t) => {
  const ec = await makeKey('ES256', 'x')
  const { keys } = await keysFor(t, [{ ...ec.jwk, kid: undefined }])
  t.equal(keys.status().keys, 1)
  t.ok(await keys.getKey(header('ES256')))
  t.equal(await reasonOf(keys.getKey(header('ES256', 'x'))), 'unknown_key')
  const numeric = await keysFor(t, [{ ...ec.jwk, kid: 7 }], ['ES256', 'RS256'])
  t.equal(numeric.keys.status().keys, 0)
  const err = await refusalOf(numeric.keys.getKey(header('ES256')))
  t.equal(err.reason, 'keys_unavailable')
  t.equal(err.message, `provider test: no signing keys yet (${numeric.fake.origin}/jwks: the key set holds no usable signing key for ES256, RS256)`)
})

t.test('two keys under one kid: the one for the token\'s algorithm', async (t) => {
  const ec = await makeKey('ES256', 'dup')
  const rsa = await makeKey('RS256', 'dup')
  for (const order of [[rsa.jwk, ec.jwk], [ec.jwk, rsa.jwk]]) {
    const { keys, fake } = await keysFor(t, order)
    t.equal((await keys.getKey(header('ES256', 'dup'))).algorithm.name, 'ECDSA')
    t.equal((await keys.getKey(header('RS256', 'dup'))).algorithm.name, 'RSASSA-PKCS1-v1_5')
    t.equal(fake.count('/jwks'), 1, 'no refetch')
  }
})

t.test('refusal messages name the provider and the problem; an algorithm mismatch fetches nothing', async (t) => {
  const a = await makeKey('ES256', 'a')
  const b = await makeKey('ES256', 'b')
  const { keys, fake } = await keysFor(t, [a.jwk, b.jwk], ALL_ALGORITHMS, { unknownKidCooldownMs: 0 })
  const cases: Array<[JWSHeaderParameters, string, string]> = [
    [{ alg: 'HS256', kid: 'a' }, 'bad_header', 'the token\'s algorithm "HS256" is not accepted'],
    [{ kid: 'a' } as JWSHeaderParameters, 'bad_header', 'the token\'s algorithm undefined is not accepted'],
    [{ alg: 'ES256', kid: 7 as unknown as string }, 'bad_header', 'the token\'s kid is not a string'],
    [header('ES256'), 'bad_header', 'the token has no kid and the key set holds 2 keys'],
    [header('RS256', 'a'), 'bad_header', 'the token\'s algorithm RS256 does not match its key'],
    [header('ES256', 'c'), 'unknown_key', 'no key with the token\'s kid in the key set']
  ]
  for (const [h, reason, message] of cases) {
    const err = await refusalOf(keys.getKey(h))
    t.equal(err.reason, reason, message)
    t.equal(err.message, `provider test: ${message}`)
  }
  t.equal(fake.count('/jwks'), 2, 'only the unknown kid refetched (no cooldown here)')
  t.ok(await keys.getKey(header('ES256', 'a')))
  t.equal(fake.count('/jwks'), 2, 'a known kid fetches nothing')
})

t.test('a rotated-in kid whose key does not fit the algorithm is a bad header, not an unknown key', async (t) => {
  const fake = await withProvider(t)
  fake.jwks.keys = [(await makeKey('ES256', 'old')).jwk]
  const keys = new ProviderKeys(makeProvider({ jwksUri: `${fake.origin}/jwks` }))
  await keys.start()
  t.teardown(() => keys.stop())
  fake.jwks.keys = [(await makeKey('ES256', 'old')).jwk, (await makeKey('RS256', 'new')).jwk, (await makeKey('ES256', 'new')).jwk]
  t.equal((await keys.getKey(header('ES256', 'new'))).algorithm.name, 'ECDSA', 'the fitting one of the two new keys')
  t.equal(fake.count('/jwks'), 2)
  const later = new ProviderKeys(makeProvider({ jwksUri: `${fake.origin}/jwks` }), { unknownKidCooldownMs: 0 })
  fake.jwks.keys = [(await makeKey('RS256', 'one')).jwk]
  await later.refresh()
  fake.jwks.keys = [(await makeKey('RS256', 'one')).jwk, (await makeKey('RS256', 'two')).jwk]
  t.equal(await reasonOf(later.getKey(header('ES256', 'two'))), 'bad_header', 'found after the refetch, but RSA')
})

t.test('start() twice fetches once; concurrent refreshes share one fetch; a known kid fetches nothing', async (t) => {
  const fake = await withProvider(t)
  fake.jwks.keys = [(await makeKey('ES256', 'k1')).jwk]
  const keys = new ProviderKeys(makeProvider({ jwksUri: `${fake.origin}/jwks` }))
  await keys.start()
  await keys.start()
  t.teardown(() => keys.stop())
  t.equal(fake.count('/jwks'), 1)
  await Promise.all([keys.refresh(), keys.refresh(), keys.refresh()])
  t.equal(fake.count('/jwks'), 2)
  t.ok(await keys.getKey(header('ES256', 'k1')))
  t.equal(fake.count('/jwks'), 2)
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.equal(fake.count('/jwks'), 2, 'the default refresh interval is minutes, not milliseconds')
})

t.test('an unknown kid joins a refresh under way without using up the cooldown; the default cooldown holds', async (t) => {
  const fake = await withProvider(t)
  fake.jwks.keys = [(await makeKey('ES256', 'k1')).jwk]
  const keys = new ProviderKeys(makeProvider({ jwksUri: `${fake.origin}/jwks` }))
  await keys.start()
  t.teardown(() => keys.stop())
  const refreshing = keys.refresh()
  t.equal(await reasonOf(keys.getKey(header('ES256', 'nope-1'))), 'unknown_key')
  await refreshing
  t.equal(fake.count('/jwks'), 2, 'joined the refresh')
  t.equal(await reasonOf(keys.getKey(header('ES256', 'nope-2'))), 'unknown_key')
  t.equal(fake.count('/jwks'), 3, 'the cooldown had not started: one refetch')
  t.equal(await reasonOf(keys.getKey(header('ES256', 'nope-3'))), 'unknown_key')
  t.equal(fake.count('/jwks'), 3, 'the default cooldown (30 s) holds')
})

t.test('discovery: accept headers, the discovered jwks_uri reused, rediscovered after a failure; failure messages', async (t) => {
  const fake = await withProvider(t)
  fake.jwks.keys = [(await makeKey('ES256', 'k1')).jwk]
  const keys = new ProviderKeys(makeProvider({ issuer: fake.origin }))
  await keys.start()
  t.teardown(() => keys.stop())
  await keys.refresh()
  t.equal(fake.count('/.well-known/openid-configuration'), 1, 'discovered once')
  t.equal(fake.count('/jwks'), 2)
  t.equal(fake.seen.find((s) => s.path === '/.well-known/openid-configuration')?.headers.accept, 'application/json')
  t.equal(fake.seen.find((s) => s.path === '/jwks')?.headers.accept, 'application/json, application/jwk-set+json')
  fake.route('/jwks', (_req, res) => json(res, 500, {}))
  await keys.refresh()
  fake.route('/jwks', (_req, res) => json(res, 200, fake.jwks))
  await keys.refresh()
  t.equal(fake.count('/.well-known/openid-configuration'), 2, 'rediscovered after the key set failed')

  const none = await withProvider(t)
  none.route('/.well-known/openid-configuration', (_req, res) => json(res, 200, { issuer: none.origin, jwks_uri: 7 }))
  const noUri = new ProviderKeys(makeProvider({ issuer: none.origin }))
  await noUri.refresh()
  t.equal(noUri.status().error, `the discovery document of ${none.origin} has no jwks_uri`)

  const missing = await withProvider(t)
  missing.route('/.well-known/openid-configuration', (_req, res) => json(res, 404, {}))
  const err = await (discover(missing.origin).then(() => new Error('found'), (e: unknown) => e as Error))
  t.equal(err.message, `no discovery document for ${missing.origin}: GET ${missing.origin}/.well-known/openid-configuration: answered HTTP 404; GET ${missing.origin}/.well-known/oauth-authorization-server: answered HTTP 404`)
})

t.test('no background refresh without start() or after stop(); each refresh replaces the pending timer', async (t) => {
  const fake = await withProvider(t)
  fake.jwks.keys = [(await makeKey('ES256', 'k1')).jwk]
  const idle = new ProviderKeys(makeProvider({ jwksUri: `${fake.origin}/jwks` }), { refreshIntervalMs: 40, retryIntervalMs: 40 })
  t.teardown(() => idle.stop())
  await idle.refresh()
  const stopped = new ProviderKeys(makeProvider({ jwksUri: `${fake.origin}/jwks` }), { refreshIntervalMs: 40, retryIntervalMs: 40 })
  t.teardown(() => stopped.stop())
  await stopped.start()
  stopped.stop()
  await stopped.refresh()
  t.equal(fake.count('/jwks'), 3)
  await new Promise((resolve) => setTimeout(resolve, 250))
  t.equal(fake.count('/jwks'), 3, 'neither schedules a refresh')

  const other = await withProvider(t)
  other.jwks.keys = fake.jwks.keys
  const keys = new ProviderKeys(makeProvider({ jwksUri: `${other.origin}/jwks` }), { refreshIntervalMs: 150 })
  t.teardown(() => keys.stop())
  await keys.start()
  for (let i = 0; i < 3; i++) {
    await new Promise((resolve) => setTimeout(resolve, 40))
    await keys.refresh()
  }
  const before = other.count('/jwks')
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.ok(other.count('/jwks') - before <= 1, `one timer pending, not four (${other.count('/jwks') - before} background fetches)`)
})
