/**
 * ExternalVerifier driven directly (no HTTP server): which provider a token goes to, the caches
 * (verified, refused, in flight, and their invalidation), what is refused or unavailable with
 * which reason, and the context of a verified token. A fake provider serves keys and
 * introspection; the principals live in a test database.
 */
import { sql } from 'drizzle-orm'
import type { FastifyBaseLogger } from 'fastify'
import t, { type Test } from 'tap'
import { SCOPES } from '../../src/auth/scopes.ts'
import type { Database } from '../../src/db/client.ts'
import { linkIdentity } from '../../src/idp/identities.ts'
import type { IdpProvider } from '../../src/idp/types.ts'
import { ExternalVerifier, UNAVAILABLE, type ExternalResult, type ExternalVerifierOptions } from '../../src/idp/verifier.ts'
import { createPrincipal, setPrincipalDisabled } from '../../src/principals/store.ts'
import { createTestDatabase } from '../helpers/database.ts'
import { epoch, json, makeKey, makeProvider, RESOURCE, sign, startFakeProvider, type FakeProvider, type SigningKey } from '../helpers/idp-fixtures.ts'

interface Logged { level: string, obj: unknown, msg: string }

function recordingLog (): { log: FastifyBaseLogger, lines: Logged[] } {
  const lines: Logged[] = []
  const at = (level: string) => (obj: unknown, msg: string) => { lines.push({ level, obj, msg }) }
  const log = { warn: at('warn'), info: at('info'), error: at('error'), debug: at('debug') } as unknown as FastifyBaseLogger
  return { log, lines }
}

interface Rig {
  fake: FakeProvider
  key: SigningKey
  db: Database['db']
  providers: IdpProvider[]
  verifier: ExternalVerifier
  lines: Logged[]
  token: (claims?: Record<string, unknown>, issuer?: string) => Promise<string>
}

async function rig (t: Test, overrides: Partial<IdpProvider> = {}, options: ExternalVerifierOptions = {}, extra: IdpProvider[] = []): Promise<Rig> {
  const fake = await startFakeProvider()
  t.teardown(fake.close)
  const key = await makeKey('ES256', 'k1')
  fake.jwks.keys = [key.jwk]
  const { database } = await createTestDatabase(t)
  const providers = [makeProvider({ id: 'corp', issuer: fake.origin, ...overrides }), ...extra]
  const { log, lines } = recordingLog()
  const verifier = new ExternalVerifier(database, providers, log, options)
  await verifier.start()
  t.teardown(() => verifier.stop())
  await createPrincipal(database.db, 'agent', 'bus:read bus:write')
  await linkIdentity(database.db, { provider: 'corp', subject: 'user-1', principal: 'agent' }, providers.map((p) => p.id))
  const token = async (claims: Record<string, unknown> = {}, issuer = fake.origin): Promise<string> =>
    await sign({ iss: issuer, aud: RESOURCE, sub: 'user-1', scope: 'bus:read', client_id: 'cli', exp: epoch() + 300, ...claims }, key)
  return { fake, key, db: database.db, providers, verifier, lines, token }
}

function refusal (result: ExternalResult): { provider: string | null, reason: string } {
  if (result.status !== 'refused') throw new Error(`expected a refusal, got ${JSON.stringify(result)}`)
  return { provider: result.provider, reason: result.reason }
}

t.test('a linked subject: the context of its principal, scopes limited by both', async (t) => {
  const r = await rig(t)
  const exp = epoch() + 300
  const result = await r.verifier.resolve(await r.token({ exp }), 'authorization')
  if (result.status !== 'ok') throw new Error(JSON.stringify(result))
  t.same(result.context, {
    kind: 'external', provider: 'corp', tokenId: result.context.tokenId, principalId: result.context.principalId, principalName: 'agent', clientId: 'cli', scopes: ['bus:read'], expiresAt: new Date(exp * 1000)
  })
  t.ok(result.context.tokenId > 0 && result.context.principalId > 0)
  t.equal(r.verifier.cacheSize, 1)
  t.ok(r.verifier.configured)
  t.notOk(r.verifier.introspects)
  t.notOk(r.verifier.readsAccessHeader)
  t.same(r.verifier.status().map((s) => ({ ...s, keys: s.keys?.usable })), [{ id: 'corp', issuer: r.fake.origin, keys: true, introspection: false }])
  t.equal(r.lines.filter((l) => l.level === 'warn').length, 0, 'no warning when the keys came')
})

t.test('not linked, disabled, auto-provisioned', async (t) => {
  const r = await rig(t)
  const stranger = refusal(await r.verifier.resolve(await r.token({ sub: 'user-2' }), 'authorization'))
  t.same(stranger, { provider: 'corp', reason: 'subject "user-2" is not linked to a principal (bus-mcp identity link --provider corp --subject \'user-2\' --principal NAME)' })
  await setPrincipalDisabled(r.db, 'agent', true)
  t.same(refusal(await r.verifier.resolve(await r.token({ jti: 'x' }), 'authorization')), { provider: 'corp', reason: 'principal "agent" is disabled' })

  const auto = await rig(t, { principals: 'auto', autoScopes: ['bus:read'], nameClaim: 'name' })
  const result = await auto.verifier.resolve(await auto.token({ sub: 'new-1', name: 'Ada', scope: 'bus:read bus:write' }), 'authorization')
  if (result.status !== 'ok') throw new Error(JSON.stringify(result))
  t.same(result.context.scopes, ['bus:read'], 'the provisioned principal holds the auto scopes')
  const info = auto.lines.find((l) => l.level === 'info')
  t.equal(info?.msg, 'provisioned a principal for a new external identity')
  t.same(info?.obj, { provider: 'corp', principal: result.context.principalName })
})

t.test('a provider that reads no scopes leaves them to the principal; one with a groups claim does not', async (t) => {
  const r = await rig(t, { scopeClaims: [], tokenHeader: 'cf-access-jwt-assertion' })
  t.ok(r.verifier.readsAccessHeader)
  const result = await r.verifier.resolve(await r.token({ scope: undefined }), 'cf-access-jwt-assertion')
  t.same(result.status === 'ok' && result.context.scopes, [...SCOPES])
  const groups = await rig(t, { scopeClaims: [], groupsClaim: 'groups', scopeMap: { readers: ['bus:read'] } })
  const grouped = await groups.verifier.resolve(await groups.token({ scope: undefined, groups: ['readers'] }), 'authorization')
  t.same(grouped.status === 'ok' && grouped.context.scopes, ['bus:read'])
})

t.test('which provider: the issuer picks it, for its own header only; never one that introspects', async (t) => {
  const r = await rig(t)
  const noProvider = { provider: null, reason: 'no configured provider has this issuer' }
  t.same(refusal(await r.verifier.resolve(await r.token({}, 'https://elsewhere.example.com'), 'authorization')), noProvider)
  t.same(refusal(await r.verifier.resolve(await r.token({ jti: 'cf' }), 'cf-access-jwt-assertion')), noProvider, 'another header')
  t.same(refusal(await r.verifier.resolve('a.b.c', 'authorization')), noProvider, 'no issuer at all')
  t.same(refusal(await r.verifier.resolve('opaque-token', 'authorization')), { provider: null, reason: 'not a JWT, and no provider introspects tokens' })
  const bad = refusal(await r.verifier.resolve(await r.token({ aud: 'elsewhere' }), 'authorization'))
  t.same(bad, { provider: 'corp', reason: 'provider corp: the token is not meant for this server (aud)' }, 'the error\'s message')
})

t.test('introspection: opaque tokens go to the provider that introspects, in its header only', async (t) => {
  const fake = await startFakeProvider()
  t.teardown(fake.close)
  const answers = new Map<string, Record<string, unknown>>([['opaque-1', { active: true, aud: RESOURCE, sub: 'user-1', scope: 'bus:write', exp: epoch() + 300 }]])
  fake.route('/introspect', (_req, res, body) => json(res, 200, answers.get(new URLSearchParams(body).get('token') ?? '') ?? { active: false }))
  const r = await rig(t, {}, {}, [makeProvider({ id: 'opaque', issuer: fake.origin, introspection: { endpoint: `${fake.origin}/introspect`, clientId: 'a', clientSecret: 'b' } })])
  await linkIdentity(r.db, { provider: 'opaque', subject: 'user-1', principal: 'agent' }, ['corp', 'opaque'])
  t.ok(r.verifier.introspects)
  t.same(r.verifier.status().map((s) => [s.id, s.keys === null, s.introspection]), [['corp', false, false], ['opaque', true, true]])
  const result = await r.verifier.resolve('opaque-1', 'authorization')
  t.same(result.status === 'ok' && [result.context.provider, result.context.scopes], ['opaque', ['bus:write']])
  t.same(refusal(await r.verifier.resolve('opaque-1', 'cf-access-jwt-assertion')), { provider: null, reason: 'not a JWT, and no provider introspects tokens' })
  t.same(refusal(await r.verifier.resolve(await sign({ iss: fake.origin, aud: RESOURCE, sub: 'user-1', scope: 'bus:read', exp: epoch() + 300 }, r.key), 'authorization')),
    { provider: null, reason: 'no configured provider has this issuer' }, 'a JWT with the introspecting provider\'s issuer')
  t.same(refusal(await r.verifier.resolve('opaque-2', 'authorization')), { provider: 'opaque', reason: 'provider opaque: the token is not active' })
  fake.route('/introspect', (_req, res) => json(res, 500, {}))
  t.same(await r.verifier.resolve('opaque-3', 'authorization'), { status: UNAVAILABLE, provider: 'opaque' })
  t.same(await r.verifier.resolve('opaque-3', 'authorization'), { status: UNAVAILABLE, provider: 'opaque' }, 'unavailable is not remembered as a refusal')
})

t.test('no keys yet: a warning at start, and 503 for its tokens', async (t) => {
  const fake = await startFakeProvider()
  t.teardown(fake.close)
  fake.route('/jwks', (_req, res) => json(res, 500, {}))
  const { database } = await createTestDatabase(t)
  const { log, lines } = recordingLog()
  const verifier = new ExternalVerifier(database, [makeProvider({ id: 'down', issuer: fake.origin })], log, { keys: { unknownKidCooldownMs: 60_000 } })
  await verifier.start()
  t.teardown(() => verifier.stop())
  const warn = lines.find((l) => l.level === 'warn')
  t.match(warn?.msg, /^identity provider "down": no usable keys yet \(GET .*\/jwks: answered HTTP 500\); its tokens get 503 until they are fetched$/)
  t.match(warn?.obj, { provider: 'down', error: /answered HTTP 500/ })
  const key = await makeKey('ES256', 'k1')
  const token = await sign({ iss: fake.origin, aud: RESOURCE, sub: 's', scope: 'bus:read', exp: epoch() + 60 }, key)
  t.same(await verifier.resolve(token, 'authorization'), { status: UNAVAILABLE, provider: 'down' })
  t.same(verifier.status()[0]?.keys?.usable, false)
  const empty = new ExternalVerifier(database, [], log)
  t.notOk(empty.configured)
  await empty.start()
})

t.test('the size limit: 16 KiB of characters', async (t) => {
  const r = await rig(t)
  t.same(refusal(await r.verifier.resolve('x'.repeat(16 * 1024 + 1), 'authorization')), { provider: null, reason: 'the token is larger than 16 KiB' })
  t.same(refusal(await r.verifier.resolve('x'.repeat(16 * 1024), 'authorization')), { provider: null, reason: 'not a JWT, and no provider introspects tokens' }, 'exactly 16 KiB is looked at')
})

t.test('caches: verified until the TTL or exp, refusals remembered, invalidate() forgets both', async (t) => {
  const realNow = Date.now
  t.teardown(() => { Date.now = realNow })
  let offset = 0
  Date.now = () => realNow() + offset
  const r = await rig(t)
  const token = await r.token({ exp: epoch() + 3600 })
  t.equal((await r.verifier.resolve(token, 'authorization')).status, 'ok')
  await setPrincipalDisabled(r.db, 'agent', true)
  offset = 29_000
  t.equal((await r.verifier.resolve(token, 'authorization')).status, 'ok', 'cached for 30 s by default')
  offset = 30_001
  t.same(refusal(await r.verifier.resolve(token, 'authorization')).reason, 'principal "agent" is disabled', 'then asked again')
  await setPrincipalDisabled(r.db, 'agent', false)
  offset = 59_000
  t.same(refusal(await r.verifier.resolve(token, 'authorization')), { provider: null, reason: 'refused lately' }, 'a refusal is remembered for 30 s')
  offset = 61_000
  t.equal((await r.verifier.resolve(token, 'authorization')).status, 'ok', 'then forgotten')
  await setPrincipalDisabled(r.db, 'agent', true)
  r.verifier.invalidate()
  t.equal(r.verifier.cacheSize, 0)
  t.equal(refusal(await r.verifier.resolve(token, 'authorization')).provider, 'corp', 'invalidate() dropped the verified token')
  await setPrincipalDisabled(r.db, 'agent', false)
  r.verifier.invalidate()
  t.equal((await r.verifier.resolve(token, 'authorization')).status, 'ok', 'and the refusal')

  offset = 61_000
  const short = await r.token({ exp: Math.floor(Date.now() / 1000) + 10 })
  t.equal((await r.verifier.resolve(short, 'authorization')).status, 'ok')
  await setPrincipalDisabled(r.db, 'agent', true)
  offset = 61_000 + 8_000
  t.equal((await r.verifier.resolve(short, 'authorization')).status, 'ok', 'cached until exp')
  offset = 61_000 + 11_000
  t.equal((await r.verifier.resolve(short, 'authorization')).status, 'refused', 'not past exp, although the TTL has not passed')
})

t.test('cache options: a short TTL, one entry, the header as part of the key', async (t) => {
  const r = await rig(t, { tokenHeader: 'authorization' }, { cacheTtlMs: 0, maxCacheEntries: 1, negativeTtlMs: 0 })
  const a = await r.token({ jti: 'a' })
  t.equal((await r.verifier.resolve(a, 'authorization')).status, 'ok')
  await setPrincipalDisabled(r.db, 'agent', true)
  t.equal((await r.verifier.resolve(a, 'authorization')).status, 'refused', 'a TTL of 0 caches nothing')
  t.equal((await r.verifier.resolve(a, 'authorization')).status, 'refused')
  await setPrincipalDisabled(r.db, 'agent', false)
  t.equal((await r.verifier.resolve(a, 'authorization')).status, 'ok', 'a negative TTL of 0 remembers no refusal')

  const kept = await rig(t, {}, { maxCacheEntries: 1 })
  const c = await kept.token({ jti: 'c' })
  const d = await kept.token({ jti: 'd' })
  t.equal((await kept.verifier.resolve(c, 'authorization')).status, 'ok')
  t.equal((await kept.verifier.resolve(d, 'authorization')).status, 'ok')
  t.equal(kept.verifier.cacheSize, 1, 'the oldest went')
  await setPrincipalDisabled(kept.db, 'agent', true)
  t.equal((await kept.verifier.resolve(d, 'authorization')).status, 'ok', 'the newest is cached')
  t.equal((await kept.verifier.resolve(c, 'authorization')).status, 'refused', 'the oldest was dropped')
  t.equal((await kept.verifier.resolve(c, 'cf-access-jwt-assertion')).status, 'refused')
  t.equal(refusal(await kept.verifier.resolve(d, 'cf-access-jwt-assertion')).reason, 'no configured provider has this issuer', 'cached for Authorization only')
})

t.test('concurrent resolutions share one verification; one that ends after invalidate() is not cached', async (t) => {
  const fake = await startFakeProvider()
  t.teardown(fake.close)
  let release: () => void = () => {}
  const gate = new Promise<void>((resolve) => { release = resolve })
  fake.route('/introspect', (_req, res) => { void gate.then(() => json(res, 200, { active: true, aud: RESOURCE, sub: 'user-1', scope: 'bus:read', exp: epoch() + 300 })) })
  const provider = makeProvider({ id: 'corp', issuer: fake.origin, introspection: { endpoint: `${fake.origin}/introspect`, clientId: 'a', clientSecret: 'b' } })
  const { database } = await createTestDatabase(t)
  await createPrincipal(database.db, 'agent', 'bus:read')
  await linkIdentity(database.db, { provider: 'corp', subject: 'user-1', principal: 'agent' }, ['corp'])
  const verifier = new ExternalVerifier(database, [provider], recordingLog().log)
  const first = verifier.resolve('opaque', 'authorization')
  const second = verifier.resolve('opaque', 'authorization')
  await new Promise((resolve) => setTimeout(resolve, 50))
  verifier.invalidate()
  release()
  const [one, two] = await Promise.all([first, second])
  t.equal(one.status, 'ok')
  t.equal(one, two, 'one verification, one result')
  t.equal(verifier.cacheSize, 0, 'a result that ends after invalidate() is not cached')
  t.equal((await verifier.resolve('opaque', 'authorization')).status, 'ok')
  t.equal(verifier.cacheSize, 1)
})

t.test('a failure that is not a token refusal is thrown', async (t) => {
  const r = await rig(t)
  const token = await r.token()
  await r.db.execute(sql`drop table external_identities cascade`)
  await t.rejects(r.verifier.resolve(token, 'authorization'))
  await t.rejects(r.verifier.resolve(token, 'authorization'), 'nothing was remembered')
})

t.test('several providers, answers without exp, linked subjects of an auto provider, the cache holds many, stop() ends the refreshes', async (t) => {
  const fake = await startFakeProvider()
  t.teardown(fake.close)
  fake.route('/introspect', (_req, res) => json(res, 200, { active: true, aud: RESOURCE, sub: 'user-1', scope: 'bus:read' }))
  const cf = makeProvider({ id: 'cf', issuer: 'https://cf.example.com', tokenHeader: 'cf-access-jwt-assertion' })
  const opaque = makeProvider({ id: 'opaque', issuer: fake.origin, introspection: { endpoint: `${fake.origin}/introspect`, clientId: 'a', clientSecret: 'b' } })
  const r = await rig(t, { principals: 'auto', autoScopes: ['bus:read'] }, { keys: { refreshIntervalMs: 30, retryIntervalMs: 30 } }, [cf, opaque])
  t.ok(r.verifier.readsAccessHeader, 'one of several providers reads the Access header')
  await linkIdentity(r.db, { provider: 'opaque', subject: 'user-1', principal: 'agent' }, ['corp', 'cf', 'opaque'])
  const noExp = await r.verifier.resolve('opaque-token', 'authorization')
  t.same(noExp.status === 'ok' && noExp.context.expiresAt, null, 'an introspection answer without exp')
  t.equal((await r.verifier.resolve(await r.token({ jti: '1' }), 'authorization')).status, 'ok')
  t.equal((await r.verifier.resolve(await r.token({ jti: '2' }), 'authorization')).status, 'ok')
  t.equal(r.verifier.cacheSize, 3, 'nothing evicted below the bound')
  t.equal(r.lines.filter((l) => l.level === 'info').length, 0, 'a linked subject of an auto provider is not provisioned again')
  r.verifier.stop()
  const fetched = r.fake.count('/jwks')
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.ok(r.fake.count('/jwks') - fetched <= 1, `no key refresh after stop(), but one under way (${r.fake.count('/jwks') - fetched})`)
})
