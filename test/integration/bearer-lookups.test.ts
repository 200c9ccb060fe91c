import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { SQL } from 'drizzle-orm'
import type { LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import { Authenticator, THROTTLED, type LookupBudget } from '../../src/auth/authenticator.ts'
import type { Database } from '../../src/db/client.ts'
import { FailureLimiter } from '../../src/lib/failure-limiter.ts'
import { hashSecret } from '../../src/lib/secrets.ts'
import { createPrincipal, issueApiToken, revokeApiToken, setPrincipalDisabled } from '../../src/principals/store.ts'
import { createTestDatabase, obtainTokens, registerClient, serverFactory } from '../helpers/oauth-inject.ts'
import type { TestServer } from '../helpers/server.ts'

/**
 * Bad bearer tokens on /mcp (issue 13, point 2; docs/decisions/0023-bearer-lookup-budget.md):
 * a client failing with its token is slowed, never the other clients behind its address, and a
 * flood of bad tokens reaches the database only as often as the budget and the slow lane allow.
 * Database lookups are counted here, below the authenticator, on every query it sends.
 */

/** Every token lookup that reaches the database: queries, and how often each token hash was asked about. */
interface LookupCounter { queries: number, single: number, batched: number, hashes: Map<string, number>, reset: () => void, of: (token: string) => number }

function countLookups (database: Database): LookupCounter {
  const counter: LookupCounter = {
    queries: 0,
    single: 0,
    batched: 0,
    hashes: new Map(),
    reset () {
      counter.queries = 0
      counter.single = 0
      counter.batched = 0
      counter.hashes.clear()
    },
    of: (token) => counter.hashes.get(hashSecret(token).toString('hex')) ?? 0
  }
  const execute = database.db.execute.bind(database.db)
  database.db.execute = ((query: SQL) => {
    const text = query.queryChunks.map((chunk) => (chunk as { value?: unknown }).value).filter(Array.isArray).flat().join('?')
    if (/from (api_tokens|oauth_tokens) t\b/.test(text) && text.includes('where t.token_hash')) {
      counter.queries++
      const seen: string[] = []
      for (const chunk of query.queryChunks) {
        if (Buffer.isBuffer(chunk)) seen.push(chunk.toString('hex'))
        else if (typeof chunk === 'string' && chunk.startsWith('{')) seen.push(...chunk.slice(1, -1).split(','))
      }
      if (text.includes('any(array(')) counter.batched++
      else counter.single++
      for (const hash of seen) counter.hashes.set(hash, (counter.hashes.get(hash) ?? 0) + 1)
    }
    return execute(query)
  }) as typeof database.db.execute
  return counter
}

const testDatabase = await createTestDatabase(t)
const lookups = countLookups(testDatabase.database)
const startTestServer = serverFactory(testDatabase)

const CHALLENGE = 'Bearer error="invalid_token", error_description="The access token is invalid, expired or revoked", resource_metadata="http://localhost:8088/.well-known/oauth-protected-resource/mcp"'

/** A token of our shape that was never issued. */
const randomApiToken = (): string => `bus_api_${randomBytes(32).toString('base64url')}`
const randomAccessToken = (): string => `bus_at_${randomBytes(32).toString('base64url')}`

async function call (server: TestServer, token: string | undefined, remoteAddress: string): Promise<LightMyRequestResponse> {
  return await server.app.inject({
    method: 'POST',
    url: '/mcp',
    remoteAddress,
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}) },
    payload: { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'whoami', arguments: {} } }
  })
}

function assertInvalid (t: Test, response: LightMyRequestResponse, what: string): void {
  t.equal(response.statusCode, 401, `${what}: 401`)
  t.equal(response.headers['www-authenticate'], CHALLENGE, `${what}: the invalid_token challenge`)
  t.equal(JSON.parse(response.body).error.code, -32000, `${what}: a JSON-RPC error`)
}

t.test('a client retrying a revoked token gets 401 from memory; fresh valid tokens from its address work', async (t) => {
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 'bl-shared' } }) // default limits: 30 failures/minute per address
  const machine = '203.0.113.7'
  await createPrincipal(server.database.db, 'bl-shared', 'bus:read bus:write')
  const revoked = await issueApiToken(server.database.db, { principal: 'bl-shared' })
  const inUse = (await issueApiToken(server.database.db, { principal: 'bl-shared' })).token
  t.equal((await call(server, revoked.token, machine)).statusCode, 200, 'the token works before it is revoked')
  await revokeApiToken(server.database.db, revoked.id)
  // On PostgreSQL this process's own NOTIFY of the revocation arrives a moment later and clears
  // remembered refusals too (as every auth change does): let it arrive before counting.
  await sleep(300)
  t.equal((await call(server, inUse, machine)).statusCode, 200, 'another agent on the machine is at work')
  lookups.reset()

  const took: number[] = []
  for (let i = 1; i <= 40; i++) {
    const started = performance.now()
    const response = await call(server, revoked.token, machine)
    took.push(performance.now() - started)
    if (response.statusCode !== 401) t.fail(`attempt ${i}: ${response.statusCode} ${response.body}`)
  }
  assertInvalid(t, await call(server, revoked.token, machine), 'the revoked token, attempt 41')
  t.equal(lookups.of(revoked.token), 1, '41 attempts, one database lookup: the refusal is remembered')
  t.equal(server.runtime.authenticator.refusedSize, 1)
  t.ok(took.slice(30).every((ms) => ms >= 95), 'from the 31st failure in a minute on, the failing answers are paced (100 ms)')

  const fresh = await issueApiToken(server.database.db, { principal: 'bl-shared' })
  t.equal((await call(server, fresh.token, machine)).statusCode, 200, 'a fresh API token, never used before, from the same address: 200')
  const client = await registerClient(server)
  const oauth = await obtainTokens(server, client)
  t.equal((await call(server, oauth.access_token, machine)).statusCode, 200, 'a fresh OAuth access token from the same address: 200')
  t.equal((await call(server, inUse, machine)).statusCode, 200, 'the agent at work keeps working')
  server.runtime.authenticator.invalidate()
  t.equal((await call(server, inUse, machine)).statusCode, 200, '... also when its cache entry is gone (a token valid here lately is looked up at once)')
  t.equal(lookups.single, 2, 'lookups at once: the revoked token\'s, and the agent\'s after the cache was cleared')
  t.equal(lookups.batched, 2, 'the two fresh tokens came through the slow lane (the address is past its failures)')
  assertInvalid(t, await call(server, revoked.token, machine), 'the revoked token still')

  await t.test('past an address\'s budget unknown tokens are delayed, not refused', async (t) => {
    const other = '203.0.113.8'
    lookups.reset()
    const guesses = Array.from({ length: 40 }, (_, i) => i % 2 === 0 ? randomApiToken() : randomAccessToken())
    const statuses = new Set<number>()
    for (const guess of guesses) statuses.add((await call(server, guess, other)).statusCode)
    t.same([...statuses], [401], '40 distinct unknown tokens, one after another: 401 each (never 429, never 5xx)')
    t.equal(lookups.single, 30, 'the first 30 were looked up at once: the budget of 30 failures a minute')
    t.equal(lookups.batched, 10, 'the other 10 each waited for a batch of the slow lane')
    t.ok([...lookups.hashes.values()].every((n) => n === 1), 'no token was asked about twice')

    const late = await issueApiToken(server.database.db, { principal: 'bl-shared' })
    const started = performance.now()
    t.equal((await call(server, late.token, other)).statusCode, 200, 'a fresh valid token from the exhausted address: 200 (through the slow lane)')
    t.ok(performance.now() - started < 1000, 'within a fraction of a second')
    t.equal((await call(server, randomApiToken(), '203.0.113.9')).statusCode, 401, 'another address has its own budget')
    t.equal(lookups.single, 31, '... and is looked up at once')
  })
})

t.test('refusals are remembered briefly and forgotten on every auth change: re-enabling works at once', async (t) => {
  const server = await startTestServer(t)
  await createPrincipal(server.database.db, 'bl-toggle', 'bus:read bus:write')
  const token = (await issueApiToken(server.database.db, { principal: 'bl-toggle' })).token
  t.equal((await call(server, token, '198.51.100.20')).statusCode, 200)
  await setPrincipalDisabled(server.database.db, 'bl-toggle', true)
  assertInvalid(t, await call(server, token, '198.51.100.20'), 'disabled')
  assertInvalid(t, await call(server, token, '198.51.100.20'), 'disabled, from memory')
  await setPrincipalDisabled(server.database.db, 'bl-toggle', false)
  t.equal((await call(server, token, '198.51.100.20')).statusCode, 200, 're-enabled: the remembered refusal was dropped with the change')

  lookups.reset()
  const authenticator = new Authenticator(server.database, { resourceUrl: server.config.resourceUrl, negativeTtlMs: 50 })
  const unknown = randomApiToken()
  t.equal(await authenticator.authenticate(unknown), null)
  t.equal(await authenticator.authenticate(unknown), null)
  t.equal(lookups.of(unknown), 1, 'remembered within negativeTtlMs')
  await sleep(60)
  t.equal(await authenticator.authenticate(unknown), null)
  t.equal(lookups.of(unknown), 2, 'looked up again after it')
  await authenticator.stop()
})

t.test('a flood of bad tokens from one address: database lookups within the bound; a valid client there unaffected', async (t) => {
  const server = await startTestServer(t)
  const flooder = '192.0.2.99'
  await createPrincipal(server.database.db, 'bl-flood', 'bus:read bus:write')
  const valid = (await issueApiToken(server.database.db, { principal: 'bl-flood' })).token
  const revoked = await issueApiToken(server.database.db, { principal: 'bl-flood' })
  await revokeApiToken(server.database.db, revoked.id)
  await sleep(300) // the revocation's NOTIFY, which clears this process's caches (see above)
  t.equal((await call(server, valid, flooder)).statusCode, 200, 'the valid client starts')

  const distinct = Array.from({ length: 1500 }, (_, i) => i % 3 === 0 ? randomAccessToken() : i % 3 === 1 ? randomApiToken() : randomBytes(24).toString('base64url'))
  const malformed = Array.from({ length: 200 }, (_, i) => i % 2 === 0 ? `bus_api_short${i}` : `bus_rt_${randomBytes(32).toString('base64url')}`)
  const flood = [...distinct, ...malformed, ...Array.from({ length: 300 }, () => revoked.token)].sort(() => Math.random() - 0.5)
  lookups.reset()
  const statuses = new Map<number, number>()
  const validStatuses = new Map<number, number>()
  let freshStatus = 0
  const started = performance.now()
  const WAVE = 200
  for (let i = 0; i < flood.length; i += WAVE) {
    const wave = flood.slice(i, i + WAVE).map(async (token) => await call(server, token, flooder))
    const alongside = Array.from({ length: 5 }, async () => await call(server, valid, flooder))
    if (i === 1000) {
      const fresh = (await issueApiToken(server.database.db, { principal: 'bl-flood' })).token
      alongside.push(call(server, fresh, flooder).then((r) => { freshStatus = r.statusCode; return r }))
    }
    for (const response of await Promise.all(wave)) statuses.set(response.statusCode, (statuses.get(response.statusCode) ?? 0) + 1)
    for (const response of await Promise.all(alongside)) validStatuses.set(response.statusCode, (validStatuses.get(response.statusCode) ?? 0) + 1)
  }
  const seconds = (performance.now() - started) / 1000
  t.same([...statuses], [[401, flood.length]], `${flood.length} bad tokens in waves of ${WAVE}: 401 every one (no 429, no 5xx)`)
  t.same([...validStatuses], [[200, 51]], 'the valid client on the same address: 200 every time')
  t.equal(freshStatus, 200, 'a fresh valid token presented in the middle of the flood: 200')

  const batchRounds = server.runtime.authenticator.lookups.batches
  t.ok(lookups.single <= 30 + 1, `immediate lookups: ${lookups.single}, at most the budget of 30 (+1 for the fresh valid token)`)
  t.ok(batchRounds <= Math.ceil(seconds * 10) + 1, `slow lane: ${batchRounds} batches in ${seconds.toFixed(1)} s, at most one per 100 ms`)
  t.ok(lookups.batched <= 2 * batchRounds, `batched queries: ${lookups.batched}, at most two per batch (API and access tokens)`)
  t.ok([...lookups.hashes.values()].every((n) => n === 1), 'no token hash was asked about twice')
  t.equal(lookups.of(revoked.token), 1, '300 requests with one revoked token: one lookup')
  t.equal(malformed.reduce((n, token) => n + lookups.of(token), 0), 0, 'malformed tokens and other kinds of secret: no lookup')
  t.ok(lookups.hashes.size <= distinct.length + 2, `token hashes asked about: ${lookups.hashes.size} for ${distinct.length} distinct well-formed bad tokens, the revoked one and the fresh valid one`)
  t.ok(lookups.queries < flood.length / 10, `${lookups.queries} database queries for ${flood.length} bad tokens`)

  await t.test('the slow lane full: 429 with Retry-After 1 for unknown tokens; a token valid here lately still passes', async (t) => {
    server.runtime.authenticator.invalidate()
    const burst = Array.from({ length: 1500 }, async () => await call(server, randomApiToken(), flooder))
    const known = call(server, valid, flooder)
    const responses = await Promise.all(burst)
    const throttled = responses.filter((r) => r.statusCode === 429)
    t.ok(throttled.length > 0, `${throttled.length} of 1500 concurrent unknown tokens found the slow lane full`)
    t.ok(responses.every((r) => r.statusCode === 401 || r.statusCode === 429), 'the rest: 401; never a 5xx')
    const first = throttled[0]
    if (first !== undefined) {
      t.equal(first.headers['retry-after'], '1', 'Retry-After: 1')
      t.match(JSON.parse(first.body), { jsonrpc: '2.0', error: { code: -32000, message: /Too many requests with invalid tokens from your address; retry in 1 s/ } })
    }
    t.equal((await known).statusCode, 200, 'the valid client\'s token, not cached at that moment, went past the full lane')
  })
})

t.test('RATE_LIMIT_MULTIPLIER=0: no budget, every unknown token looked up at once, never 429', async (t) => {
  const server = await startTestServer(t, { env: { RATE_LIMIT_MULTIPLIER: '0' } })
  const tokens = Array.from({ length: 100 }, randomApiToken)
  lookups.reset()
  const responses = await Promise.all(tokens.map(async (token) => await call(server, token, '192.0.2.50')))
  t.ok(responses.every((r) => r.statusCode === 401), '401 each')
  t.equal(lookups.single, 100, 'each looked up at once')
  t.equal(lookups.batched, 0, 'no slow lane')
  await Promise.all(tokens.map(async (token) => await call(server, token, '192.0.2.50')))
  t.equal(lookups.single, 100, 'remembered refusals are not a rate limit: they stay on')
})

t.test('the authenticator: lookups admitted while failures plus lookups under way stay in the budget; one lookup for concurrent requests with one token', async (t) => {
  const database = testDatabase.database
  await createPrincipal(database.db, 'bl-unit', 'bus:read bus:write')
  const authenticator = new Authenticator(database, { resourceUrl: 'http://localhost:8088/mcp', slowLane: { intervalMs: 50, batchSize: 3, queueLimit: 4 } })
  t.teardown(async () => { await authenticator.stop() })
  const limiter = new FailureLimiter(2, 60_000)
  const budget: LookupBudget = { take: (client) => limiter.take(client), release: (client) => { limiter.release(client) } }
  /** What the /mcp hook does: resolve, and count a refusal as the client's failure. */
  const attempt = async (token: string, client: string): Promise<Awaited<ReturnType<Authenticator['resolve']>>> => {
    const result = await authenticator.resolve(token, budget, client)
    if (result === null) limiter.fail(client)
    return result
  }
  const tokens = await Promise.all([1, 2, 3].map(async () => (await issueApiToken(database.db, { principal: 'bl-unit' })).token))
  const [first, second, third] = tokens as [string, string, string]

  lookups.reset()
  t.ok(await attempt(first, 'a'), 'a valid token')
  t.ok(await attempt(second, 'a'), 'another')
  t.ok(await attempt(third, 'a'), 'and a third: valid lookups are no failures, the budget of 2 is untouched')
  t.equal(lookups.single, 3)

  lookups.reset()
  const same = randomApiToken()
  const together = await Promise.all(Array.from({ length: 20 }, async () => await attempt(same, 'a')))
  t.ok(together.every((r) => r === null), '20 concurrent requests with one bad token: refused')
  t.equal(lookups.queries, 1, '... after one lookup')
  t.ok(limiter.retryAfter('a') > 0, '20 failures: client a is past its budget')

  lookups.reset()
  const concurrent = await Promise.all([randomApiToken(), randomApiToken(), randomApiToken()].map(async (token) => await attempt(token, 'd')))
  t.same(concurrent, [null, null, null], 'three concurrent unknown tokens from a fresh client')
  t.equal(lookups.single, 2, 'two at once (the budget), though none had failed yet when they arrived')
  t.equal(lookups.batched, 1, 'the third in the slow lane')

  lookups.reset()
  const queued = await Promise.all([randomApiToken(), randomAccessToken(), randomApiToken(), randomApiToken(), randomApiToken(), randomApiToken()]
    .map(async (token) => await attempt(token, 'a')))
  t.same(queued, [null, null, null, null, THROTTLED, THROTTLED], 'past the budget: four wait in the slow lane (queue limit 4), the rest are THROTTLED')
  t.equal(lookups.single, 0, 'nothing looked up at once')
  t.equal(lookups.batched, 3, 'two batches (3 + 1), the first with both kinds: three queries')
  t.ok(await attempt(first, 'a'), 'a cached valid token: fine')
  authenticator.invalidate()
  lookups.reset()
  t.ok(await attempt(first, 'a'), 'after an invalidation a token valid here lately is looked up past the budget')
  t.equal(lookups.single, 1)
  t.equal(await attempt(randomApiToken(), 'b'), null)
  t.equal(lookups.single, 2, 'another client has its own budget: looked up at once')

  await t.test('a lookup that raced an invalidation leaves nothing behind', async (t) => {
    const bad = randomApiToken()
    lookups.reset()
    const pending = authenticator.resolve(bad, undefined, 'c')
    authenticator.invalidate()
    t.equal(await pending, null)
    t.equal(await authenticator.resolve(bad, undefined, 'c'), null)
    t.equal(lookups.of(bad), 2, 'the refusal was not remembered across the invalidation: looked up again')
  })
})
