import t, { type Test } from 'tap'
import { ExternalTokenError } from '../../src/idp/errors.ts'
import { basicAuthorization, Introspector, type IntrospectorOptions } from '../../src/idp/introspection.ts'
import type { IdpProvider } from '../../src/idp/types.ts'
import { type FakeProvider, json, makeProvider, reasonOf, refusalOf, RESOURCE, startFakeProvider } from '../helpers/idp-fixtures.ts'

const CLIENT_ID = 'bus client:1'
const CLIENT_SECRET = 'p@ss word+%/é'

interface Rig {
  fake: FakeProvider
  provider: IdpProvider
  /** token → the answer the endpoint gives */
  answers: Map<string, Record<string, unknown>>
  clock: { now: number }
  introspector: (options?: IntrospectorOptions) => Introspector
  asked: () => number
}

async function rig (t: Test): Promise<Rig> {
  const fake = await startFakeProvider()
  t.teardown(fake.close)
  const answers = new Map<string, Record<string, unknown>>()
  fake.route('/introspect', (req, res, body) => {
    if (req.method !== 'POST' || req.headers.authorization !== basicAuthorization(CLIENT_ID, CLIENT_SECRET)) {
      json(res, 401, { error: 'invalid_client' })
      return
    }
    const token = new URLSearchParams(body).get('token') ?? ''
    json(res, 200, answers.get(token) ?? { active: false })
  })
  const provider = makeProvider({
    issuer: fake.origin,
    introspection: { endpoint: `${fake.origin}/introspect`, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET }
  })
  const clock = { now: Date.now() }
  return {
    fake,
    provider,
    answers,
    clock,
    introspector: (options = {}) => new Introspector(provider, { now: () => clock.now, ...options }),
    asked: () => fake.count('/introspect')
  }
}

function active (r: Rig, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { active: true, iss: r.fake.origin, aud: RESOURCE, sub: 'user-1', client_id: 'agent', scope: 'bus:read', exp: Math.floor(r.clock.now / 1000) + 300, ...extra }
}

t.test('an active token: its claims; the request is RFC 7662 with HTTP Basic client authentication', async (t) => {
  const r = await rig(t)
  r.answers.set('tok-1', active(r))
  const claims = await r.introspector().introspect('tok-1')
  t.match(claims, { active: true, sub: 'user-1', scope: 'bus:read', client_id: 'agent' })
  t.equal(r.fake.seen.length, 1)
  const seen = r.fake.seen[0] as FakeProvider['seen'][number]
  t.equal(seen.method, 'POST')
  t.equal(seen.headers['content-type'], 'application/x-www-form-urlencoded')
  t.equal(seen.headers.accept, 'application/json')
  t.same(Object.fromEntries(new URLSearchParams(seen.body)), { token: 'tok-1', token_type_hint: 'access_token' })
})

t.test('the Basic header form-urlencodes id and secret first (RFC 6749 §2.3.1)', async (t) => {
  const header = basicAuthorization(CLIENT_ID, CLIENT_SECRET)
  const decoded = Buffer.from(header.replace(/^Basic /, ''), 'base64').toString('utf8')
  t.equal(decoded, 'bus+client%3A1:p%40ss+word%2B%25%2F%C3%A9')
  t.equal(basicAuthorization('plain', 'secret'), `Basic ${Buffer.from('plain:secret').toString('base64')}`)
  const r = await rig(t)
  r.answers.set('tok', active(r))
  t.ok(await r.introspector().introspect('tok'), 'the fake endpoint accepted it')
  t.equal(r.fake.seen[0]?.headers.authorization, header)
})

t.test('an inactive token is refused, and the refusal is cached briefly', async (t) => {
  const r = await rig(t)
  const introspector = r.introspector()
  t.equal(await reasonOf(introspector.introspect('unknown')), 'inactive')
  t.equal(await reasonOf(introspector.introspect('unknown')), 'inactive')
  t.equal(r.asked(), 1, 'the second answer came from the cache')
  r.clock.now += 10_001
  t.equal(await reasonOf(introspector.introspect('unknown')), 'inactive')
  t.equal(r.asked(), 2, 'asked again after 10 s')
  r.answers.set('weird', { active: 'true', aud: RESOURCE })
  t.equal(await reasonOf(introspector.introspect('weird')), 'inactive', 'active must be the JSON true')
  r.answers.set('refresh', active(r, { token_use: 'refresh_token' }))
  t.equal(await reasonOf(introspector.introspect('refresh')), 'inactive', 'a refresh token (Hydra token_use)')
})

t.test('a wrong iss is refused; a missing iss is fine', async (t) => {
  const r = await rig(t)
  r.answers.set('other', active(r, { iss: 'https://other.example.com' }))
  r.answers.set('slash', active(r, { iss: `${r.fake.origin}/` }))
  r.answers.set('none', active(r, { iss: undefined }))
  const introspector = r.introspector()
  t.equal(await reasonOf(introspector.introspect('other')), 'issuer')
  t.equal(await reasonOf(introspector.introspect('slash')), 'issuer', 'byte for byte')
  t.ok(await introspector.introspect('none'))
})

t.test('aud must contain one of the audiences', async (t) => {
  const r = await rig(t)
  r.answers.set('wrong', active(r, { aud: 'https://other.example.com/mcp' }))
  r.answers.set('array', active(r, { aud: ['x', RESOURCE] }))
  r.answers.set('wrong-array', active(r, { aud: ['x', 'y'] }))
  r.answers.set('missing', active(r, { aud: undefined }))
  const introspector = r.introspector()
  t.equal(await reasonOf(introspector.introspect('wrong')), 'audience')
  t.ok(await introspector.introspect('array'))
  t.equal(await reasonOf(introspector.introspect('wrong-array')), 'audience')
  t.equal(await reasonOf(introspector.introspect('missing')), 'audience')
})

t.test('an expired token is refused even when the provider says active', async (t) => {
  const r = await rig(t)
  r.answers.set('old', active(r, { exp: Math.floor(r.clock.now / 1000) - 1 }))
  r.answers.set('odd', active(r, { exp: 'tomorrow' }))
  t.equal(await reasonOf(r.introspector().introspect('old')), 'expired')
  t.equal(await reasonOf(r.introspector().introspect('odd')), 'malformed')
})

t.test('cache hit: a second introspection of the same token asks nothing, for at most 60 s', async (t) => {
  const r = await rig(t)
  r.answers.set('tok', active(r, { exp: Math.floor(r.clock.now / 1000) + 3600 }))
  const introspector = r.introspector()
  await introspector.introspect('tok')
  r.clock.now += 59_000
  t.match(await introspector.introspect('tok'), { sub: 'user-1' })
  t.equal(r.asked(), 1)
  r.clock.now += 1_001
  await introspector.introspect('tok')
  t.equal(r.asked(), 2, 'asked again after 60 s')
  introspector.clear()
  await introspector.introspect('tok')
  t.equal(r.asked(), 3, 'clear() empties the cache')
})

t.test('the cache never outlives exp', async (t) => {
  const r = await rig(t)
  r.answers.set('short', active(r, { exp: Math.floor(r.clock.now / 1000) + 5 }))
  const introspector = r.introspector()
  await introspector.introspect('short')
  r.clock.now += 4_000
  await introspector.introspect('short')
  t.equal(r.asked(), 1)
  r.clock.now += 2_000
  t.equal(await reasonOf(introspector.introspect('short')), 'expired', 'past exp, asked again (and refused)')
  t.equal(r.asked(), 2)
})

t.test('a token without exp is cached 60 s at most', async (t) => {
  const r = await rig(t)
  r.answers.set('forever', active(r, { exp: undefined }))
  const introspector = r.introspector()
  t.ok(await introspector.introspect('forever'))
  r.clock.now += 59_999
  await introspector.introspect('forever')
  t.equal(r.asked(), 1)
  r.clock.now += 2
  await introspector.introspect('forever')
  t.equal(r.asked(), 2)
})

t.test('concurrent introspections of one token share one request', async (t) => {
  const r = await rig(t)
  r.answers.set('tok', active(r))
  const introspector = r.introspector()
  const results = await Promise.all(Array.from({ length: 10 }, async () => await introspector.introspect('tok')))
  t.equal(results.length, 10)
  t.equal(r.asked(), 1)
})

t.test('the cache is bounded: the oldest entry goes first', async (t) => {
  const r = await rig(t)
  for (const token of ['a', 'b', 'c']) r.answers.set(token, active(r))
  const introspector = r.introspector({ maxCacheEntries: 2 })
  await introspector.introspect('a')
  await introspector.introspect('b')
  await introspector.introspect('c')
  t.equal(r.asked(), 3)
  await introspector.introspect('c')
  await introspector.introspect('b')
  t.equal(r.asked(), 3, 'b and c are cached')
  await introspector.introspect('a')
  t.equal(r.asked(), 4, 'a was dropped')
})

t.test('endpoint down, failing, redirecting or slow: introspection_unavailable (503), not cached', async (t) => {
  const r = await rig(t)
  const down = new Introspector(makeProvider({ introspection: { endpoint: 'http://127.0.0.1:1/introspect', clientId: 'a', clientSecret: 'b' } }))
  let error: unknown
  try { await down.introspect('secret-token-value') } catch (err) { error = err }
  t.ok(error instanceof ExternalTokenError && error.reason === 'introspection_unavailable' && error.unavailable)
  t.match((error as Error).message, /^provider test: introspection failed: POST http:\/\/127\.0\.0\.1:1\/introspect: /)
  t.notOk((error as Error).message.includes('secret-token-value'), 'the message does not carry the token')

  r.fake.route('/introspect', (_req, res) => json(res, 500, {}))
  const introspector = r.introspector({ timeoutMs: 200 })
  t.equal(await reasonOf(introspector.introspect('tok')), 'introspection_unavailable')
  t.equal(await reasonOf(introspector.introspect('tok')), 'introspection_unavailable')
  t.equal(r.asked(), 2, 'a failure is not cached')
  r.fake.route('/introspect', (_req, res) => { res.writeHead(307, { location: 'https://elsewhere.example.com/' }); res.end() })
  t.equal(await reasonOf(introspector.introspect('tok')), 'introspection_unavailable')
  r.fake.route('/introspect', () => {})
  t.equal(await reasonOf(introspector.introspect('tok')), 'introspection_unavailable')
  r.fake.route('/introspect', (_req, res) => json(res, 200, { active: true, padding: 'x'.repeat(300_000) }))
  t.equal(await reasonOf(introspector.introspect('tok')), 'introspection_unavailable', 'a huge answer')
  const wrongSecret = new Introspector({ ...r.provider, introspection: { endpoint: `${r.fake.origin}/introspect`, clientId: CLIENT_ID, clientSecret: 'wrong' } })
  r.fake.route('/introspect', (_req, res) => json(res, 401, { error: 'invalid_client' }))
  try { await wrongSecret.introspect('tok') } catch (err) { error = err }
  t.match((error as Error).message, /answered HTTP 401/)
  t.notOk((error as Error).message.includes('wrong'), 'the secret is not in the message')
})

t.test('an oversized token is refused without a request; no introspection settings is a programming error', async (t) => {
  const r = await rig(t)
  t.equal(await reasonOf(r.introspector().introspect('x'.repeat(16 * 1024 + 1))), 'too_large')
  t.equal(r.asked(), 0)
  t.throws(() => new Introspector(makeProvider()), /no introspection settings/)
})

t.test('each refusal names the provider and the problem', async (t) => {
  const r = await rig(t)
  r.clock.now = Math.floor(r.clock.now / 1000) * 1000
  const nowSeconds = r.clock.now / 1000
  const cases: Array<[Record<string, unknown>, string, string]> = [
    [{ active: false }, 'inactive', 'the token is not active'],
    [active(r, { token_use: 'refresh_token' }), 'inactive', 'the token is not an access token'],
    [active(r, { iss: 'https://other.example.com' }), 'issuer', 'the introspected issuer is not the configured issuer'],
    [active(r, { aud: 'elsewhere' }), 'audience', 'the token is not meant for this server (aud)'],
    [active(r, { exp: 'tomorrow' }), 'malformed', 'the introspected exp is not a number'],
    [active(r, { exp: nowSeconds }), 'expired', 'the token has expired']
  ]
  let n = 0
  for (const [answer, reason, message] of cases) {
    r.answers.set(`tok-${++n}`, answer)
    const err = await refusalOf(r.introspector().introspect(`tok-${n}`))
    t.equal(err.reason, reason, message)
    t.equal(err.message, `provider test: ${message}`)
  }
  r.answers.set('edge', active(r, { exp: nowSeconds + 1 }))
  t.ok(await r.introspector().introspect('edge'), 'one second before exp is still valid')
  r.answers.set('typed', active(r, { token_use: 'access_token' }))
  t.ok(await r.introspector().introspect('typed'), 'token_use access_token is an access token')
})

t.test('aud: strings only, in a string or an array', async (t) => {
  const r = await rig(t)
  const answers: Array<[unknown, boolean]> = [
    [RESOURCE, true], [[RESOURCE], true], [['x', RESOURCE], true], [[[RESOURCE]], false], [{ 0: RESOURCE }, false], [null, false], [[], false], [7, false], ['', false]
  ]
  let n = 0
  for (const [aud, ok] of answers) {
    r.answers.set(`aud-${++n}`, active(r, { aud }))
    if (ok) t.ok(await r.introspector().introspect(`aud-${n}`), JSON.stringify(aud))
    else t.equal(await reasonOf(r.introspector().introspect(`aud-${n}`)), 'audience', JSON.stringify(aud))
  }
})

t.test('the size limit is exactly 16 KiB of UTF-8; the failure keeps its cause', async (t) => {
  const r = await rig(t)
  const limit = 16 * 1024
  await reasonOf(r.introspector().introspect('x'.repeat(limit)))
  await reasonOf(r.introspector().introspect('é'.repeat(limit / 2)))
  t.equal(r.asked(), 2, 'tokens of exactly 16 KiB are asked about')
  const over = await refusalOf(r.introspector().introspect('é'.repeat(limit / 2 - 1) + 'xxx'))
  t.equal(over.reason, 'too_large')
  t.equal(over.message, 'provider test: the token is larger than 16384 bytes')
  t.equal(r.asked(), 2)
  r.fake.route('/introspect', (_req, res) => json(res, 500, {}))
  const failed = await refusalOf(r.introspector().introspect('tok'))
  t.equal(failed.reason, 'introspection_unavailable')
  t.ok(failed.cause instanceof Error, 'the fetch error is the cause')
})

t.test('a cached answer expires exactly at its end', async (t) => {
  const r = await rig(t)
  r.answers.set('tok', active(r, { exp: Math.floor(r.clock.now / 1000) + 3600 }))
  const introspector = r.introspector()
  await introspector.introspect('tok')
  r.clock.now += 59_999
  await introspector.introspect('tok')
  t.equal(r.asked(), 1)
  r.clock.now += 1
  await introspector.introspect('tok')
  t.equal(r.asked(), 2, 'asked again at 60 s exactly')
})

t.test('an expired entry is dropped even when asking again fails, so it takes no room', async (t) => {
  const r = await rig(t)
  const exp = Math.floor(r.clock.now / 1000)
  r.answers.set('long', active(r, { exp: exp + 3600 }))
  r.answers.set('short', active(r, { exp: exp + 5 }))
  r.answers.set('other', active(r, { exp: exp + 3600 }))
  const introspector = r.introspector({ maxCacheEntries: 2 })
  await introspector.introspect('long')
  await introspector.introspect('short')
  r.clock.now += 6_000
  r.fake.route('/introspect', (_req, res) => json(res, 500, {}))
  t.equal(await reasonOf(introspector.introspect('short')), 'introspection_unavailable')
  t.equal(r.asked(), 3)
  r.fake.route('/introspect', (_req, res, body) => json(res, 200, r.answers.get(new URLSearchParams(body).get('token') ?? '') ?? { active: false }))
  await introspector.introspect('other')
  t.equal(r.asked(), 4)
  await introspector.introspect('long')
  t.equal(r.asked(), 4, 'long is still cached: the expired entry did not count against the bound')
})

t.test('refusalTtlMs 0 caches no refusal and evicts nothing; maxCacheEntries 0 still answers', async (t) => {
  const r = await rig(t)
  r.answers.set('good', active(r))
  const introspector = r.introspector({ maxCacheEntries: 1, refusalTtlMs: 0 })
  await introspector.introspect('good')
  t.equal(await reasonOf(introspector.introspect('bad')), 'inactive')
  t.equal(await reasonOf(introspector.introspect('bad')), 'inactive')
  t.equal(r.asked(), 3, 'the refusal was not cached')
  await introspector.introspect('good')
  t.equal(r.asked(), 3, 'and it did not push the good answer out')
  const unbounded = r.introspector({ maxCacheEntries: 0 })
  t.ok(await unbounded.introspect('good'))
  t.ok(await unbounded.introspect('good'))
})
