import { eq, sql } from 'drizzle-orm'
import t, { type Test } from 'tap'
import type { Db, Executor, Tx } from '../../src/db/client.ts'
import { oauthCodes, oauthGrants, oauthTokens, type OAuthClient } from '../../src/db/schema.ts'
import { hashSecret, sha256Base64Url } from '../../src/lib/secrets.ts'
import { registerDynamicClient } from '../../src/oauth/client-store.ts'
import { OAuthError } from '../../src/oauth/errors.ts'
import { createGrantWithCode, redeemCode, refreshTokens, type TokenResponse } from '../../src/oauth/grants.ts'
import { createPrincipal } from '../../src/principals/store.ts'
import { createTestDatabase } from '../helpers/database.ts'
import { postgres, testNeeding } from '../helpers/requirements.ts'
import { lockRow, lockWaiters } from '../helpers/row-lock.ts'

/**
 * Exactly-once redemption under a forced interleaving (issue 16, item 2). The 20-way races in
 * oauth-token.test.ts prove it on PostgreSQL only: the embedded database runs one transaction at
 * a time, so there every redemption reads the code after the previous one wrote it, and the
 * guard of the atomic UPDATE (`consumed_at is null` in src/oauth/grants.ts) is never needed.
 * Here two real redemptions of a code are driven so that both READ the unspent code before either
 * WRITES it, which is exactly what the guard is for:
 *
 * - nested (both databases): the first redemption stops just before its UPDATE; the second runs
 *   whole inside the first's transaction (a savepoint on the same connection: the only way the
 *   embedded database lets two transactions overlap), reading the unspent row and spending it;
 *   then the first goes on to its UPDATE. Without the guard the first spends it a second time.
 * - concurrent (PostgreSQL): two transactions on two connections both read, then both update
 *   (a barrier between the reads and the writes); the second UPDATE waits for the first commit
 *   and re-checks its WHERE. Without the guard it matches the spent row again.
 *
 * Either way exactly one redemption may succeed; the other is a replay (invalid_grant) that
 * revokes the grant. Refresh tokens are rotated by one statement, raced differently (raceRefresh).
 */

const LIFETIMES = { accessTokenTtl: 600, refreshTokenTtl: 7200, authCodeTtl: 60 }
const RESOURCE = 'http://localhost:8088/mcp'
const VERIFIER = 'r'.repeat(43)
const REDIRECT = 'https://races.example/cb'
/** How long a forced interleaving may wait for the other redemption before it is a test failure. */
const MEETING_MS = 30_000

type Mode = 'nested' | 'concurrent'

/**
 * `db`, on which the first two transactions are interleaved at their first UPDATE of `table`
 * (the redemption's spending UPDATE): both have read before either writes. `met` tells whether
 * the interleaving happened (so a change of the code under test cannot make this test vacuous).
 */
function interleaved (db: Db, table: typeof oauthCodes, mode: Mode): { db: Db, met: () => boolean } {
  let calls = 0
  let met = false
  let pausedFirst: (tx: Tx | undefined) => void = () => {}
  const firstPaused = new Promise<Tx | undefined>((resolve) => { pausedFirst = resolve })
  let secondDone: () => void = () => {}
  const secondFinished = new Promise<void>((resolve) => { secondDone = resolve })
  let arrived = 0
  let allArrived: () => void = () => {}
  const barrier = new Promise<void>((resolve) => { allArrived = resolve })

  const within = async <T>(what: string, promise: Promise<T>): Promise<T> => {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`forced interleaving: ${what} did not happen within ${MEETING_MS} ms`)) }, MEETING_MS) })
    try {
      return await Promise.race([promise, timeout])
    } finally {
      clearTimeout(timer)
    }
  }

  /** The transaction's first UPDATE of `table` waits for `before()` when it is awaited (run). */
  const hookUpdate = (tx: Tx, before: () => Promise<void>): Tx => {
    let hooked = false
    const deferred = <B extends object>(builder: B): B => new Proxy(builder, {
      get (target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver) as unknown
        if (typeof value !== 'function') return value
        if (prop === 'then') {
          return (resolve: (v: unknown) => unknown, reject: (e: unknown) => unknown) =>
            before().then(() => (value as (a: unknown, b: unknown) => unknown).call(target, resolve, reject), reject)
        }
        return (...args: unknown[]) => {
          const result = (value as (...a: unknown[]) => unknown).apply(target, args)
          return typeof result === 'object' && result !== null ? deferred(result) : result
        }
      }
    })
    return new Proxy(tx, {
      get (target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver) as unknown
        if (typeof value !== 'function') return value
        if (prop !== 'update') return value.bind(target)
        return (updated: unknown) => {
          const builder = (value as (u: unknown) => object).call(target, updated)
          if (updated !== table || hooked) return builder
          hooked = true
          return deferred(builder)
        }
      }
    })
  }

  const transaction = async (fn: (tx: Tx) => Promise<unknown>, ...rest: unknown[]): Promise<unknown> => {
    const call = ++calls
    if (mode === 'nested') {
      if (call === 1) {
        try {
          return await db.transaction(async (tx) => await fn(hookUpdate(tx, async () => {
            pausedFirst(tx) // read, not yet written: let the second redemption run whole
            await within('the second redemption', secondFinished)
          })), ...rest as [])
        } finally {
          pausedFirst(undefined)
        }
      }
      if (call === 2) {
        const first = await within('the first redemption reaching its UPDATE', firstPaused)
        if (first === undefined) return await db.transaction(fn)
        met = true
        try {
          return await first.transaction(fn) // a savepoint inside the paused first transaction
        } finally {
          secondDone()
        }
      }
      return await db.transaction(fn)
    }
    if (call <= 2) {
      return await db.transaction(async (tx) => await fn(hookUpdate(tx, async () => {
        if (++arrived === 2) {
          met = true
          allArrived()
        }
        await within('both redemptions reading before either writes', barrier)
      })), ...rest as [])
    }
    return await db.transaction(fn)
  }

  const proxy = new Proxy(db, {
    get (target, prop, receiver) {
      if (prop === 'transaction') return transaction
      const value = Reflect.get(target, prop, receiver) as unknown
      return typeof value === 'function' ? value.bind(target) : value
    }
  })
  return { db: proxy, met: () => met }
}

// One database for the file (each case has its own principal, client and grant).
const { database } = await createTestDatabase(t)
let racers = 0

async function setUp (): Promise<{ db: Db, client: OAuthClient, newCode: () => Promise<string> }> {
  const db = database.db
  const principal = await createPrincipal(db, `racer-${++racers}`, 'bus:read bus:write')
  const { client } = await registerDynamicClient(db, { redirect_uris: [REDIRECT], token_endpoint_auth_method: 'none', client_name: 'race test' })
  const newCode = async (): Promise<string> => await createGrantWithCode(db, {
    client, principalId: principal.id, scopes: ['bus:read', 'bus:write'], resource: RESOURCE, redirectUri: REDIRECT, codeChallenge: sha256Base64Url(VERIFIER)
  }, LIFETIMES)
  return { db, client, newCode }
}

function outcomes (t: Test, settled: Array<PromiseSettledResult<TokenResponse>>, replayMessage: RegExp): void {
  const won = settled.filter((s) => s.status === 'fulfilled')
  const lost = settled.filter((s): s is PromiseRejectedResult => s.status === 'rejected')
  t.equal(won.length, 1, `exactly one of the two interleaved redemptions wins (${settled.map((s) => s.status === 'fulfilled' ? 'tokens' : String(s.reason)).join(' | ')})`)
  t.equal(lost.length, 1, 'the other loses')
  const reason = lost[0]?.reason as unknown
  t.ok(reason instanceof OAuthError && reason.error === 'invalid_grant', 'with invalid_grant')
  t.match(reason instanceof Error ? reason.message : String(reason), replayMessage, 'as a replay')
}

async function grantOfCode (db: Executor, code: string): Promise<{ id: number, revokedReason: string | null }> {
  const [row] = await db.select({ id: oauthGrants.id, revokedReason: oauthGrants.revokedReason })
    .from(oauthCodes).innerJoin(oauthGrants, eq(oauthGrants.id, oauthCodes.grantId)).where(eq(oauthCodes.codeHash, hashSecret(code)))
  if (row === undefined) throw new Error('no grant for the code')
  return row
}

async function raceCode (t: Test, mode: Mode): Promise<void> {
  const { db, client, newCode } = await setUp()
  const code = await newCode()
  const race = interleaved(db, oauthCodes, mode)
  const input = { client, code, codeVerifier: VERIFIER, redirectUri: REDIRECT }
  const settled = await Promise.allSettled([redeemCode(race.db, input, LIFETIMES), redeemCode(race.db, input, LIFETIMES)])
  t.ok(race.met(), 'both redemptions read the unspent code before either spent it')
  outcomes(t, settled, /already used/)
  const grant = await grantOfCode(db, code)
  t.equal(grant.revokedReason, 'code_replay', 'the replay revoked the grant')
  const tokens = await db.select({ kind: oauthTokens.kind }).from(oauthTokens).where(eq(oauthTokens.grantId, grant.id))
  t.same(tokens.map((r) => r.kind).sort(), ['access', 'refresh'], 'one access and one refresh token were issued, no more')
}

/**
 * A refresh is one statement (src/oauth/grants.ts): nothing of ours runs between its read and its
 * write, so the hooks above have nothing to hold. On PostgreSQL the same interleaving is forced
 * with a row lock instead: a third transaction locks the token's row, both refreshes start, read
 * the unrotated token and queue at their UPDATE behind the lock (seen in pg_stat_activity); then
 * the lock goes. The first spends the token; the second's UPDATE re-checks `rotated_at is null`
 * on the spent row. Without that guard it spends the token a second time. The embedded database
 * runs one statement whole before the next, so two refreshes cannot overlap there at all.
 */
async function raceRefresh (t: Test): Promise<void> {
  const { db, client, newCode } = await setUp()
  const code = await newCode()
  const first = await redeemCode(db, { client, code, codeVerifier: VERIFIER, redirectUri: REDIRECT }, LIFETIMES)
  const refreshToken = first.refresh_token as string
  const lock = await lockRow(db, sql`select id from oauth_tokens where token_hash = ${hashSecret(refreshToken)} for update`)
  const input = { client, refreshToken, scopes: undefined, resource: undefined }
  const racing = Promise.allSettled([refreshTokens(db, input, LIFETIMES), refreshTokens(db, input, LIFETIMES)])
  const queued = await lockWaiters(db, 'with presented as', 2, MEETING_MS)
  await lock.release()
  const settled = await racing
  t.equal(queued, 2, 'both refreshes read the unrotated token and waited at their UPDATE before either rotated it')
  outcomes(t, settled, /already used/)
  const grant = await grantOfCode(db, code)
  t.equal(grant.revokedReason, 'refresh_reuse', 'the reuse revoked the grant')
  const refreshes = await db.select({ id: oauthTokens.id }).from(oauthTokens).where(eq(oauthTokens.grantId, grant.id))
  t.equal(refreshes.length, 4, 'the first pair and one rotated pair, no more')
}

t.test('a code redeemed twice, both reading before either writes (nested, any database)', async (t) => { await raceCode(t, 'nested') })
// The embedded database runs one transaction at a time: two open at once would wait for each other forever.
testNeeding(t, 'a code redeemed twice in two concurrent transactions, both reading before either writes', [postgres()], async (t) => { await raceCode(t, 'concurrent') })
// A refresh is one statement: on the embedded database two cannot overlap (see raceRefresh).
testNeeding(t, 'a refresh token used twice, both statements reading it before either rotates it', [postgres()], async (t) => { await raceRefresh(t) })
