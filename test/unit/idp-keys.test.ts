import type { JWSHeaderParameters } from 'jose'
import t, { type Test } from 'tap'
import { ExternalTokenError } from '../../src/idp/errors.ts'
import { checkFetchUrl, fetchJson } from '../../src/idp/fetch.ts'
import { discover, ProviderKeys } from '../../src/idp/keys.ts'
import { json, makeKey, makeProvider, startFakeProvider, type FakeProvider } from '../helpers/idp-fixtures.ts'

async function withProvider (t: Test): Promise<FakeProvider> {
  const fake = await startFakeProvider()
  t.teardown(fake.close)
  return fake
}

/** The reason of the ExternalTokenError `promise` rejects with. */
async function reasonOf (promise: Promise<unknown>): Promise<string> {
  try {
    await promise
  } catch (err) {
    if (err instanceof ExternalTokenError) return err.reason
    throw err
  }
  throw new Error('expected a refusal')
}

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
