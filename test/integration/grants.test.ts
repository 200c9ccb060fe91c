import { eq, sql } from 'drizzle-orm'
import t from 'tap'
import type { Scope } from '../../src/auth/scopes.ts'
import type { Executor } from '../../src/db/client.ts'
import { oauthCodes, oauthGrants, oauthTokens, type OAuthClient } from '../../src/db/schema.ts'
import { hashSecret, sha256Base64Url } from '../../src/lib/secrets.ts'
import { createPreregisteredClient, registerDynamicClient } from '../../src/oauth/client-store.ts'
import { OAuthError } from '../../src/oauth/errors.ts'
import { clientCredentialsTokens, createGrantWithCode, redeemCode, refreshTokens, revokeGrant, type TokenResponse } from '../../src/oauth/grants.ts'
import { AUTH_NOTIFY_CHANNEL } from '../../src/auth/invalidation.ts'
import { createPrincipal, setPrincipalDisabled } from '../../src/principals/store.ts'
import { createTestDatabase } from '../helpers/database.ts'
import { postgres, testNeeding } from '../helpers/requirements.ts'
import { lockRow, lockWaiters } from '../helpers/row-lock.ts'

/**
 * Code and refresh-token redemption (src/oauth/grants.ts) called directly on a database: every
 * refusal with its error, what a refusal leaves untouched, what a success writes, and the lost
 * race (another redemption spends the code or token between the read and the update).
 */

const { database } = await createTestDatabase(t)
const db = database.db
const LIFETIMES = { accessTokenTtl: 600, refreshTokenTtl: 7200, authCodeTtl: 60 }
const RESOURCE = 'http://localhost:8088/mcp'
const VERIFIER = 'v'.repeat(43)
const CHALLENGE = sha256Base64Url(VERIFIER)
const REDIRECT = 'https://grants.example/cb'

const notifications: string[] = []
const unlisten = await database.listen(AUTH_NOTIFY_CHANNEL, (payload) => { notifications.push(payload) })
t.teardown(unlisten)

let principalCount = 0
async function newPrincipal (scopes = 'bus:read bus:write'): Promise<{ id: number, name: string }> {
  const name = `gr-${++principalCount}`
  const principal = await createPrincipal(db, name, scopes)
  return { id: principal.id, name }
}

async function newClient (): Promise<OAuthClient> {
  return (await registerDynamicClient(db, { redirect_uris: [REDIRECT], token_endpoint_auth_method: 'none', client_name: 'grants test' })).client
}

async function newCode (client: OAuthClient, principalId: number, scopes: Scope[] = ['bus:read', 'bus:write']): Promise<string> {
  return await createGrantWithCode(db, { client, principalId, scopes, resource: RESOURCE, redirectUri: REDIRECT, codeChallenge: CHALLENGE }, LIFETIMES)
}

async function refusal (promise: Promise<unknown>): Promise<string> {
  try {
    await promise
  } catch (err) {
    if (err instanceof OAuthError) return `${err.error}: ${err.description}`
    throw err
  }
  return 'no error'
}

async function codeRow (code: string) {
  const [row] = await db.select().from(oauthCodes).where(eq(oauthCodes.codeHash, hashSecret(code)))
  return row
}
async function tokenRow (token: string) {
  const [row] = await db.select().from(oauthTokens).where(eq(oauthTokens.tokenHash, hashSecret(token)))
  return row
}
async function grantOf (code: string) {
  const [row] = await db.select().from(oauthGrants).where(eq(oauthGrants.id, (await codeRow(code))?.grantId ?? 0))
  return row
}
async function tokensOfGrant (grantId: number) {
  return await db.select().from(oauthTokens).where(eq(oauthTokens.grantId, grantId))
}

const redeem = async (client: OAuthClient, code: string, overrides: { codeVerifier?: string | undefined, redirectUri?: string | undefined } = {}): Promise<TokenResponse> =>
  await redeemCode(db, { client, code, codeVerifier: VERIFIER, redirectUri: REDIRECT, ...overrides }, LIFETIMES)

/** Runs `fn` with Date.now() frozen at `at`. */
async function at<T> (time: number, fn: () => Promise<T>): Promise<T> {
  const real = Date.now
  Date.now = () => time
  try {
    return await fn()
  } finally {
    Date.now = real
  }
}

/**
 * A database on which, inside a transaction, the first UPDATE of `table` is preceded by `race`
 * (run on the same transaction): as if a concurrent request had committed between this
 * request's SELECT and its UPDATE.
 */
function racing (table: typeof oauthCodes, race: (tx: Executor) => Promise<unknown>): Executor {
  let raced = false
  const wrapTx = (tx: Executor): Executor => new Proxy(tx, {
    get (target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown
      if (prop !== 'update' || typeof value !== 'function') return typeof value === 'function' ? value.bind(target) : value
      return (updated: unknown) => {
        const builder = (value as (t: unknown) => unknown).call(target, updated) as { set: (v: unknown) => { where: (w: unknown) => { returning: (r: unknown) => PromiseLike<unknown> } } }
        if (updated !== table || raced) return builder
        raced = true
        return {
          set: (values: unknown) => ({
            where: (where: unknown) => ({
              returning: (returning: unknown) => ({
                then: (resolve: (v: unknown) => unknown, reject: (e: unknown) => unknown) =>
                  race(target).then(() => builder.set(values).where(where).returning(returning)).then(resolve, reject)
              })
            })
          })
        }
      }
    }
  })
  return new Proxy(db, {
    get (target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown
      if (prop === 'transaction') return async (fn: (tx: Executor) => Promise<unknown>) => await target.transaction(async (tx) => await fn(wrapTx(tx)))
      return typeof value === 'function' ? value.bind(target) : value
    }
  }) as Executor
}

t.test('authorization_code: a success issues an access and a refresh token, and spends the code', async (t) => {
  const { id } = await newPrincipal()
  const client = await newClient()
  const code = await newCode(client, id, ['bus:read', 'bus:write'])
  const before = Date.now()
  const tokens = await redeem(client, code)
  const after = Date.now()
  t.match(tokens, { token_type: 'Bearer', expires_in: 600, scope: 'bus:read bus:write' })
  t.match(tokens.access_token, /^bus_at_/)
  t.match(tokens.refresh_token, /^bus_rt_/)
  const access = await tokenRow(tokens.access_token)
  const refresh = await tokenRow(tokens.refresh_token as string)
  const grant = await grantOf(code)
  t.match(access, { kind: 'access', grantId: grant?.id, scopes: ['bus:read', 'bus:write'], resource: RESOURCE, rotatedAt: null, revokedAt: null })
  t.match(refresh, { kind: 'refresh', grantId: grant?.id, scopes: ['bus:read', 'bus:write'], resource: RESOURCE, rotatedAt: null, revokedAt: null })
  const expiry = (row: typeof access, ttl: number): boolean => row !== undefined && row.expiresAt.getTime() >= before + ttl * 1000 && row.expiresAt.getTime() <= after + ttl * 1000
  t.ok(expiry(access, 600), 'the access token expires after ACCESS_TOKEN_TTL')
  t.ok(expiry(refresh, 7200), 'the refresh token after REFRESH_TOKEN_TTL')
  t.not((await codeRow(code))?.consumedAt, null, 'the code is spent')
  t.equal(grant?.revokedAt, null, 'the grant stands')

  const withoutRedirect = await newCode(client, id, ['bus:read'])
  const narrow = await redeem(client, withoutRedirect, { redirectUri: undefined })
  t.equal(narrow.scope, 'bus:read', 'no redirect_uri in the token request is allowed; the grant\'s scopes are issued')
})

t.test('authorization_code: each refusal names its reason and spends nothing', async (t) => {
  const { id, name } = await newPrincipal()
  const client = await newClient()
  const other = await newClient()
  const code = await newCode(client, id)
  const cases: Array<[string, () => Promise<unknown>, string]> = [
    ['a string that is not a code', async () => await redeem(client, 'bus_rt_xyz'), 'invalid_grant: The authorization code is invalid'],
    ['an unknown code', async () => await redeem(client, 'bus_ac_unknown'), 'invalid_grant: The authorization code is invalid'],
    ['another client', async () => await redeem(other, code), 'invalid_grant: The authorization code was issued to another client'],
    ['another redirect_uri', async () => await redeem(client, code, { redirectUri: `${REDIRECT}/x` }), 'invalid_grant: redirect_uri differs from the one in the authorization request'],
    ['no code_verifier', async () => await redeem(client, code, { codeVerifier: undefined }), 'invalid_request: code_verifier is required (PKCE)'],
    ['another code_verifier', async () => await redeem(client, code, { codeVerifier: 'w'.repeat(43) }), 'invalid_grant: PKCE verification failed: code_verifier does not match the code_challenge']
  ]
  for (const [what, attempt, expected] of cases) t.equal(await refusal(attempt()), expected, what)
  t.equal((await codeRow(code))?.consumedAt, null, 'the code is not spent by any of them')
  t.equal((await grantOf(code))?.revokedAt, null, 'nor its grant revoked')

  await setPrincipalDisabled(db, name, true)
  t.equal(await refusal(redeem(client, code)), 'invalid_grant: The principal is disabled', 'a disabled principal')
  t.equal((await codeRow(code))?.consumedAt, null, 'still not spent')
  await setPrincipalDisabled(db, name, false)
  t.ok((await redeem(client, code)).access_token, 'the code still works for its own client afterwards')
})

t.test('authorization_code: expired at its expiry time, valid one millisecond before', async (t) => {
  const { id } = await newPrincipal()
  const client = await newClient()
  const code = await newCode(client, id)
  const expiresAt = (await codeRow(code))?.expiresAt.getTime() ?? 0
  t.equal(await at(expiresAt, async () => await refusal(redeem(client, code))), 'invalid_grant: The authorization code has expired', 'at expires_at')
  t.equal(await at(expiresAt + 1, async () => await refusal(redeem(client, code))), 'invalid_grant: The authorization code has expired', 'after')
  t.equal((await codeRow(code))?.consumedAt, null, 'not spent')
  t.ok((await at(expiresAt - 1, async () => await redeem(client, code))).access_token, 'one millisecond before: tokens')
})

t.test('authorization_code: a revoked grant\'s code is refused without being spent', async (t) => {
  const { id } = await newPrincipal()
  const client = await newClient()
  const code = await newCode(client, id)
  const grant = await grantOf(code)
  t.equal(await revokeGrant(db, grant?.id ?? 0, 'admin'), true, 'revokeGrant reports that it revoked')
  t.equal(await refusal(redeem(client, code)), 'invalid_grant: The authorization was revoked')
  t.equal((await codeRow(code))?.consumedAt, null, 'not spent')
  t.equal(await revokeGrant(db, grant?.id ?? 0, 'code_replay'), false, 'revoking again reports nothing revoked')
  t.equal((await grantOf(code))?.revokedReason, 'admin', '... and keeps the first reason')
})

t.test('authorization_code: a replay revokes the grant and every token issued from it', async (t) => {
  const { id } = await newPrincipal()
  const client = await newClient()
  const code = await newCode(client, id)
  const tokens = await redeem(client, code)
  const grantId = (await grantOf(code))?.id ?? 0
  notifications.length = 0
  t.equal(await refusal(redeem(client, code)), 'invalid_grant: The authorization code was already used; every token issued from it is now revoked')
  t.match(await grantOf(code), { revokedReason: 'code_replay' })
  t.not((await grantOf(code))?.revokedAt, null)
  t.not((await tokenRow(tokens.access_token))?.revokedAt, null, 'the access token is revoked')
  t.not((await tokenRow(tokens.refresh_token as string))?.revokedAt, null, 'the refresh token is revoked')
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.ok(notifications.includes(`grant:${grantId}`), 'every replica is told (NOTIFY grant:<id>)')

  const unrelated = await newCode(client, id)
  await redeem(client, unrelated)
  t.equal((await grantOf(unrelated))?.revokedAt, null, 'another grant of the same client and principal is untouched')
})

t.test('authorization_code: losing the race to a concurrent redemption is a replay', async (t) => {
  const { id } = await newPrincipal()
  const client = await newClient()
  const code = await newCode(client, id)
  const raced = racing(oauthCodes, async (tx) => await tx.execute(sql`update oauth_codes set consumed_at = now() where code_hash = ${hashSecret(code)}`))
  t.equal(await refusal(redeemCode(raced, { client, code, codeVerifier: VERIFIER, redirectUri: REDIRECT }, LIFETIMES)),
    'invalid_grant: The authorization code was already used; every token issued from it is now revoked')
  t.match(await grantOf(code), { revokedReason: 'code_replay' })
  t.same(await tokensOfGrant((await grantOf(code))?.id ?? 0), [], 'no token was issued')
})

t.test('refresh_token: rotation issues a new pair and spends the old refresh token', async (t) => {
  const { id } = await newPrincipal()
  const client = await newClient()
  const first = await redeem(client, await newCode(client, id))
  const before = Date.now()
  const second = await refreshTokens(db, { client, refreshToken: first.refresh_token as string, scopes: undefined, resource: undefined }, LIFETIMES)
  const after = Date.now()
  t.match(second, { token_type: 'Bearer', expires_in: 600, scope: 'bus:read bus:write' })
  t.match(second.refresh_token, /^bus_rt_/)
  t.not((await tokenRow(first.refresh_token as string))?.rotatedAt, null, 'the old refresh token is spent')
  t.equal((await tokenRow(first.access_token))?.revokedAt, null, 'the old access token lives on until it expires')
  const refresh = await tokenRow(second.refresh_token as string)
  t.ok(refresh !== undefined && refresh.expiresAt.getTime() >= before + 7_200_000 && refresh.expiresAt.getTime() <= after + 7_200_000, 'the new refresh token lives REFRESH_TOKEN_TTL')

  const named = await refreshTokens(db, { client, refreshToken: second.refresh_token as string, scopes: ['bus:write', 'bus:read'], resource: RESOURCE }, LIFETIMES)
  t.equal(named.scope, 'bus:write bus:read', 'every scope of the grant, asked for by name')
  t.same((await tokenRow(named.refresh_token as string))?.scopes, ['bus:write', 'bus:read'], '... stored as asked')
  const narrowed = await refreshTokens(db, { client, refreshToken: named.refresh_token as string, scopes: ['bus:read'], resource: RESOURCE }, LIFETIMES)
  t.equal(narrowed.scope, 'bus:read', 'scopes may be narrowed')
  t.same((await tokenRow(narrowed.refresh_token as string))?.scopes, ['bus:read'], '... and the new refresh token holds only those')
  t.equal(await refusal(refreshTokens(db, { client, refreshToken: narrowed.refresh_token as string, scopes: ['bus:read', 'bus:write'], resource: undefined }, LIFETIMES)),
    'invalid_scope: The grant does not include bus:write', 'a narrowed token cannot widen again')
  t.equal((await tokenRow(narrowed.refresh_token as string))?.rotatedAt, null, '... and is not spent by asking')
  t.equal((await refreshTokens(db, { client, refreshToken: narrowed.refresh_token as string, scopes: ['bus:read'], resource: undefined }, LIFETIMES)).scope, 'bus:read', 'the same scopes again are fine')
})

t.test('refresh_token: each refusal names its reason and spends nothing', async (t) => {
  const { id, name } = await newPrincipal()
  const client = await newClient()
  const other = await newClient()
  const tokens = await redeem(client, await newCode(client, id))
  const refreshToken = tokens.refresh_token as string
  const refresh = async (overrides: { client?: OAuthClient, refreshToken?: string, scopes?: Scope[] } = {}): Promise<TokenResponse> =>
    await refreshTokens(db, { client, refreshToken, scopes: undefined, resource: undefined, ...overrides }, LIFETIMES)
  t.equal(await refusal(refresh({ refreshToken: tokens.access_token })), 'invalid_grant: The refresh token is invalid', 'an access token')
  t.equal(await refusal(refresh({ refreshToken: 'bus_rt_unknown' })), 'invalid_grant: The refresh token is invalid', 'an unknown refresh token')
  t.equal(await refusal(refresh({ client: other })), 'invalid_grant: The refresh token was issued to another client', 'another client')
  t.equal(await refusal(refresh({ scopes: ['bus:read', 'bus:admin' as Scope] })), 'invalid_scope: The grant does not include bus:admin', 'a scope beyond the grant')
  await setPrincipalDisabled(db, name, true)
  t.equal(await refusal(refresh()), 'invalid_grant: The principal is disabled', 'a disabled principal')
  await setPrincipalDisabled(db, name, false)
  const row = await tokenRow(refreshToken)
  t.equal(row?.rotatedAt, null, 'not spent by any of them')
  t.equal(row?.revokedAt, null, 'nor revoked')

  // An access token row presented as a refresh token by its hash: only refresh rows are looked up.
  await db.update(oauthTokens).set({ kind: 'access' }).where(eq(oauthTokens.tokenHash, hashSecret(refreshToken)))
  t.equal(await refusal(refresh()), 'invalid_grant: The refresh token is invalid', 'a token row of kind access, even with the refresh prefix')
  await db.update(oauthTokens).set({ kind: 'refresh' }).where(eq(oauthTokens.tokenHash, hashSecret(refreshToken)))
  t.ok((await refresh()).access_token, 'the token still works afterwards')
})

t.test('refresh_token: expired at its expiry time; a revoked token or grant is refused', async (t) => {
  const { id } = await newPrincipal()
  const client = await newClient()
  const tokens = await redeem(client, await newCode(client, id))
  const refreshToken = tokens.refresh_token as string
  const expiresAt = (await tokenRow(refreshToken))?.expiresAt.getTime() ?? 0
  const refresh = async (): Promise<TokenResponse> => await refreshTokens(db, { client, refreshToken, scopes: undefined, resource: undefined }, LIFETIMES)
  t.equal(await at(expiresAt, async () => await refusal(refresh())), 'invalid_grant: The refresh token has expired', 'at expires_at')
  t.equal((await tokenRow(refreshToken))?.rotatedAt, null, 'not spent')
  t.ok((await at(expiresAt - 1, refresh)).access_token, 'one millisecond before: tokens')

  const again = await redeem(client, await newCode(client, id))
  await db.update(oauthTokens).set({ revokedAt: new Date() }).where(eq(oauthTokens.tokenHash, hashSecret(again.refresh_token as string)))
  t.equal(await refusal(refreshTokens(db, { client, refreshToken: again.refresh_token as string, scopes: undefined, resource: undefined }, LIFETIMES)), 'invalid_grant: The refresh token was revoked', 'the token revoked')

  const third = await redeem(client, await newCode(client, id))
  const [token] = await db.select().from(oauthTokens).where(eq(oauthTokens.tokenHash, hashSecret(third.refresh_token as string)))
  await db.update(oauthGrants).set({ revokedAt: new Date(), revokedReason: 'admin' }).where(eq(oauthGrants.id, token?.grantId ?? 0))
  t.equal(await refusal(refreshTokens(db, { client, refreshToken: third.refresh_token as string, scopes: undefined, resource: undefined }, LIFETIMES)), 'invalid_grant: The refresh token was revoked', 'its grant revoked')
})

t.test('refresh_token: presenting a rotated token revokes the family', async (t) => {
  const { id } = await newPrincipal()
  const client = await newClient()
  const first = await redeem(client, await newCode(client, id))
  const second = await refreshTokens(db, { client, refreshToken: first.refresh_token as string, scopes: undefined, resource: undefined }, LIFETIMES)
  t.equal(await refusal(refreshTokens(db, { client, refreshToken: first.refresh_token as string, scopes: undefined, resource: undefined }, LIFETIMES)),
    'invalid_grant: The refresh token was already used; the authorization is revoked and the user must connect again')
  const row = await tokenRow(second.refresh_token as string)
  const [grant] = await db.select().from(oauthGrants).where(eq(oauthGrants.id, row?.grantId ?? 0))
  t.equal(grant?.revokedReason, 'refresh_reuse')
  t.not(row?.revokedAt, null, 'the current refresh token is revoked')
  t.not((await tokenRow(second.access_token))?.revokedAt, null, 'and the current access token')
})

// A refresh reads and writes in one statement; the embedded database runs one statement whole
// before the next, so only PostgreSQL can commit another writer's change in between.
testNeeding(t, 'refresh_token: losing the race to a concurrent rotation (or revocation) is a reuse', [postgres()], async (t) => {
  for (const column of ['rotated_at', 'revoked_at'] as const) {
    const { id } = await newPrincipal()
    const client = await newClient()
    const tokens = await redeem(client, await newCode(client, id))
    const hash = hashSecret(tokens.refresh_token as string)
    const lock = await lockRow(db, sql`select id from oauth_tokens where token_hash = ${hash} for update`)
    const refused = refusal(refreshTokens(db, { client, refreshToken: tokens.refresh_token as string, scopes: undefined, resource: undefined }, LIFETIMES))
    t.equal(await lockWaiters(db, 'with presented as', 1, 30_000), 1, `${column}: the refresh read the token unspent and waits to spend it`)
    await lock.release(async (tx) => await tx.execute(sql`update oauth_tokens set ${sql.identifier(column)} = now() where token_hash = ${hash}`))
    t.equal(await refused,
      'invalid_grant: The refresh token was already used; the authorization is revoked and the user must connect again', `${column} set concurrently`)
    const [token] = await db.select().from(oauthTokens).where(eq(oauthTokens.tokenHash, hash))
    const [grant] = await db.select().from(oauthGrants).where(eq(oauthGrants.id, token?.grantId ?? 0))
    t.equal(grant?.revokedReason, 'refresh_reuse', `${column}: the family is revoked`)
    t.equal((await tokensOfGrant(grant?.id ?? 0)).length, 2, `${column}: no new token was issued`)
  }
})

t.test('a spent code or rotated refresh token stays a replay after it expires (the family is revoked, not just refused)', async (t) => {
  const { id } = await newPrincipal()
  const client = await newClient()
  const code = await newCode(client, id)
  const first = await redeem(client, code)
  await db.update(oauthCodes).set({ expiresAt: new Date(Date.now() - 3_600_000) }).where(eq(oauthCodes.codeHash, hashSecret(code)))
  t.equal(await refusal(redeem(client, code)), 'invalid_grant: The authorization code was already used; every token issued from it is now revoked')
  t.match(await grantOf(code), { revokedReason: 'code_replay' })

  const other = await redeem(client, await newCode(client, id))
  await refreshTokens(db, { client, refreshToken: other.refresh_token as string, scopes: undefined, resource: undefined }, LIFETIMES)
  await db.update(oauthTokens).set({ expiresAt: new Date(Date.now() - 3_600_000) }).where(eq(oauthTokens.tokenHash, hashSecret(other.refresh_token as string)))
  t.equal(await refusal(refreshTokens(db, { client, refreshToken: other.refresh_token as string, scopes: undefined, resource: undefined }, LIFETIMES)),
    'invalid_grant: The refresh token was already used; the authorization is revoked and the user must connect again')
  const [grant] = await db.select().from(oauthGrants).where(eq(oauthGrants.id, (await tokenRow(other.refresh_token as string))?.grantId ?? 0))
  t.equal(grant?.revokedReason, 'refresh_reuse')
  t.ok(first.access_token)
})

t.test('refresh_token: every scope beyond the grant is named', async (t) => {
  const { id } = await newPrincipal()
  const client = await newClient()
  const tokens = await redeem(client, await newCode(client, id, ['bus:read']))
  t.equal(await refusal(refreshTokens(db, { client, refreshToken: tokens.refresh_token as string, scopes: ['bus:write', 'bus:admin' as Scope], resource: undefined }, LIFETIMES)),
    'invalid_scope: The grant does not include bus:write bus:admin')
})

t.test('client_credentials: an access token only, stored alone', async (t) => {
  const { name } = await newPrincipal('bus:read')
  const { client } = await createPreregisteredClient(db, { name: 'machine', redirectUris: [], principal: name, confidential: true })
  const response = await clientCredentialsTokens(db, client, undefined, RESOURCE, LIFETIMES)
  t.same(Object.keys(response).sort(), ['access_token', 'expires_in', 'scope', 'token_type'], 'no refresh_token member at all')
  t.equal(response.scope, 'bus:read')
  const row = await tokenRow(response.access_token)
  t.match(row, { kind: 'access', scopes: ['bus:read'], resource: RESOURCE, revokedAt: null })
  t.same((await tokensOfGrant(row?.grantId ?? 0)).map((r) => r.kind), ['access'])
})
