import { and, eq, isNull, sql } from 'drizzle-orm'
import type { Scope } from '../auth/scopes.ts'
import { rowsOf, type Executor } from '../db/client.ts'
import { oauthCodes, oauthGrants, oauthTokens, principals, type OAuthClient, type OAuthGrant } from '../db/schema.ts'
import { generateSecret, hashSecret, kindOfSecret } from '../lib/secrets.ts'
import { notifyAuthChange } from '../auth/invalidation.ts'
import { markClientUsed } from './client-store.ts'
import { OAuthError } from './errors.ts'
import { verifyS256 } from './pkce.ts'

/** What a refresh needs to know of the presented token, its grant and principal (snake_case: a raw row). */
interface RefreshRow {
  id: string | number
  scopes: string[]
  live: boolean
  rotated_at: Date | string | null
  revoked_at: Date | string | null
  grant_id: string | number
  client_id: string | number
  resource: string
  grant_revoked_at: Date | string | null
  disabled_at: Date | string | null
  /** How many tokens the statement issued: 2 when it spent the presented token, 0 otherwise. */
  inserted: number
}

export interface Lifetimes { accessTokenTtl: number, refreshTokenTtl: number, authCodeTtl: number }

export interface TokenResponse {
  access_token: string
  token_type: 'Bearer'
  expires_in: number
  refresh_token?: string
  scope: string
}

export interface AuthorizationInput {
  client: OAuthClient
  principalId: number
  scopes: Scope[]
  resource: string
  redirectUri: string
  codeChallenge: string
}

/** Approval: a new grant (the token family) and its single-use code. Returns the code. */
export async function createGrantWithCode (db: Executor, input: AuthorizationInput, lifetimes: Lifetimes): Promise<string> {
  const code = generateSecret('authorizationCode')
  await db.transaction(async (tx) => {
    const [grant] = await tx.insert(oauthGrants).values({
      clientId: input.client.id, principalId: input.principalId, scopes: input.scopes, resource: input.resource
    }).returning({ id: oauthGrants.id })
    if (grant === undefined) throw new Error('grant insert returned no row')
    await tx.insert(oauthCodes).values({
      codeHash: hashSecret(code),
      grantId: grant.id,
      redirectUri: input.redirectUri,
      codeChallenge: input.codeChallenge,
      expiresAt: new Date(Date.now() + lifetimes.authCodeTtl * 1000)
    })
    await markClientUsed(tx, input.client.id)
  })
  return code
}

export interface CodeRedemption {
  client: OAuthClient
  code: string
  codeVerifier: string | undefined
  redirectUri: string | undefined
}

/**
 * authorization_code grant. Everything is checked before the code is spent, so a request that
 * fails validation changes nothing; then one atomic UPDATE spends it and the tokens are issued
 * in the same transaction (a code is never consumed without its tokens). A code presented
 * again after it was spent revokes the grant and every token issued from it (RFC 9700 §4.2.4).
 */
export async function redeemCode (db: Executor, input: CodeRedemption, lifetimes: Lifetimes): Promise<TokenResponse> {
  if (kindOfSecret(input.code) !== 'authorizationCode') throw new OAuthError('invalid_grant', 'The authorization code is invalid')
  const hash = hashSecret(input.code)
  const outcome = await db.transaction(async (tx) => {
    const [row] = await tx.select({ code: oauthCodes, grant: oauthGrants, disabledAt: principals.disabledAt })
      .from(oauthCodes)
      .innerJoin(oauthGrants, eq(oauthGrants.id, oauthCodes.grantId))
      .innerJoin(principals, eq(principals.id, oauthGrants.principalId))
      .where(eq(oauthCodes.codeHash, hash))
    if (row === undefined) throw new OAuthError('invalid_grant', 'The authorization code is invalid')
    const { code, grant } = row
    if (grant.clientId !== input.client.id) throw new OAuthError('invalid_grant', 'The authorization code was issued to another client')
    if (code.consumedAt !== null) return { replayOf: grant.id }
    if (grant.revokedAt !== null) throw new OAuthError('invalid_grant', 'The authorization was revoked')
    if (code.expiresAt.getTime() <= Date.now()) throw new OAuthError('invalid_grant', 'The authorization code has expired')
    if (input.redirectUri !== undefined && input.redirectUri !== code.redirectUri) {
      throw new OAuthError('invalid_grant', 'redirect_uri differs from the one in the authorization request')
    }
    if (input.codeVerifier === undefined) throw new OAuthError('invalid_request', 'code_verifier is required (PKCE)')
    if (!verifyS256(input.codeVerifier, code.codeChallenge)) throw new OAuthError('invalid_grant', 'PKCE verification failed: code_verifier does not match the code_challenge')
    if (row.disabledAt !== null) throw new OAuthError('invalid_grant', 'The principal is disabled')
    const spent = await tx.update(oauthCodes).set({ consumedAt: sql`now()` })
      .where(and(eq(oauthCodes.id, code.id), isNull(oauthCodes.consumedAt))).returning({ id: oauthCodes.id })
    // Lost a race with a concurrent redemption of the same code: that is a replay too.
    if (spent.length === 0) return { replayOf: grant.id }
    return { tokens: await issueTokens(tx, grant, grant.scopes as Scope[], true, lifetimes) }
  })
  if (outcome.replayOf !== undefined) {
    await revokeGrant(db, outcome.replayOf, 'code_replay')
    throw new OAuthError('invalid_grant', 'The authorization code was already used; every token issued from it is now revoked')
  }
  return outcome.tokens as TokenResponse
}

export interface RefreshInput {
  client: OAuthClient
  refreshToken: string
  scopes: Scope[] | undefined
  resource: string | undefined
}

/**
 * refresh_token grant with rotation on every use, in one statement: the presented token is
 * looked up, spent by an UPDATE guarded by `rotated_at is null` and replaced by a new pair,
 * so of several concurrent requests exactly one succeeds (the others' UPDATE waits for the
 * winner's commit, re-checks the guard and spends nothing). Presenting a spent token (a
 * replay, or the loser of such a race) revokes the whole grant: refresh tokens of public
 * clients are only safe if a stolen one is noticed (RFC 9700 §4.14.2). One statement rather
 * than a transaction of four: the token endpoint's rotations per second are bound by round
 * trips to the database.
 */
export async function refreshTokens (db: Executor, input: RefreshInput, lifetimes: Lifetimes): Promise<TokenResponse> {
  if (kindOfSecret(input.refreshToken) !== 'refreshToken') throw new OAuthError('invalid_grant', 'The refresh token is invalid')
  const issued = newTokenPair(lifetimes)
  // Scopes travel as an array literal: they are checked scope names (no quotes, commas or spaces).
  const requested = input.scopes === undefined ? null : `{${input.scopes.join(',')}}`
  const [row] = rowsOf<RefreshRow>(await db.execute(sql`
    with presented as (
      select t.id, t.scopes, t.rotated_at, t.revoked_at, t.expires_at > ${issued.issuedAt}::timestamptz as live, g.id as grant_id, g.client_id,
        g.resource, g.revoked_at as grant_revoked_at, p.disabled_at
      from oauth_tokens t join oauth_grants g on g.id = t.grant_id join principals p on p.id = g.principal_id
      where t.token_hash = ${hashSecret(input.refreshToken)} and t.kind = 'refresh'
    ), spent as (
      update oauth_tokens set rotated_at = now()
      where id = (select id from presented
          where client_id = ${input.client.id} and rotated_at is null and revoked_at is null and grant_revoked_at is null
            and live and disabled_at is null and coalesce(${requested}::text[] <@ scopes, true))
        and rotated_at is null and revoked_at is null
      returning grant_id, resource, coalesce(${requested}::text[], scopes) as scopes
    ), inserted as (
      insert into oauth_tokens (token_hash, kind, grant_id, scopes, resource, expires_at)
      select pair.token_hash, pair.kind, spent.grant_id, spent.scopes, spent.resource, pair.expires_at
      from spent, (values (${issued.accessHash}::bytea, 'access', ${issued.accessExpiry}::timestamptz),
        (${issued.refreshHash}::bytea, 'refresh', ${issued.refreshExpiry}::timestamptz)) as pair (token_hash, kind, expires_at)
      returning id
    )
    select presented.*, (select count(*) from inserted)::int as inserted from presented`))
  if (row === undefined) throw new OAuthError('invalid_grant', 'The refresh token is invalid')
  if (Number(row.client_id) !== input.client.id) throw new OAuthError('invalid_grant', 'The refresh token was issued to another client')
  if (row.rotated_at === null) {
    if (row.revoked_at !== null || row.grant_revoked_at !== null) throw new OAuthError('invalid_grant', 'The refresh token was revoked')
    if (!row.live) throw new OAuthError('invalid_grant', 'The refresh token has expired')
    if (row.disabled_at !== null) throw new OAuthError('invalid_grant', 'The principal is disabled')
    const beyond = (input.scopes ?? []).filter((s) => !row.scopes.includes(s))
    if (beyond.length > 0) throw new OAuthError('invalid_scope', `The grant does not include ${beyond.join(' ')}`)
    const scopes = input.scopes ?? row.scopes as Scope[]
    // Every check passed on what the statement read: unless a concurrent refresh spent the token first, this one did.
    if (row.inserted === 2) return tokenResponse(issued, scopes, lifetimes)
  }
  await revokeGrant(db, Number(row.grant_id), 'refresh_reuse')
  throw new OAuthError('invalid_grant', 'The refresh token was already used; the authorization is revoked and the user must connect again')
}

/** client_credentials for a confidential pre-registered client bound to a principal. No refresh token (RFC 6749 §4.4.3). */
export async function clientCredentialsTokens (db: Executor, client: OAuthClient, requested: Scope[] | undefined, resource: string, lifetimes: Lifetimes): Promise<TokenResponse> {
  if (client.kind !== 'preregistered' || client.principalId === null || client.secretHash === null || !client.grantTypes.includes('client_credentials')) {
    throw new OAuthError('unauthorized_client', 'client_credentials is only for confidential clients pre-registered with --principal')
  }
  return await db.transaction(async (tx) => {
    const [principal] = await tx.select().from(principals).where(eq(principals.id, client.principalId ?? 0))
    if (principal === undefined || principal.disabledAt !== null) throw new OAuthError('invalid_grant', 'The principal this client acts as is disabled')
    const allowed = (principal.scopes as Scope[]).filter((s) => client.scopes === null || client.scopes.includes(s))
    const scopes = requested === undefined ? allowed : requested.filter((s) => allowed.includes(s))
    if (scopes.length === 0 || (requested !== undefined && scopes.length !== requested.length)) {
      throw new OAuthError('invalid_scope', `This client may request ${allowed.join(' ') || 'no scopes'}`)
    }
    const [grant] = await tx.insert(oauthGrants).values({ clientId: client.id, principalId: principal.id, scopes, resource }).returning()
    if (grant === undefined) throw new Error('grant insert returned no row')
    await markClientUsed(tx, client.id)
    return await issueTokens(tx, grant, scopes, false, lifetimes)
  })
}

/** A new access token and refresh token, their hashes and expiry times (ISO strings, for SQL). */
interface TokenPair {
  /** When they were made (Date.now(), as an ISO string): the time a presented token's expiry is judged by. */
  issuedAt: string
  accessToken: string
  accessHash: Buffer
  accessExpiry: string
  refreshToken: string
  refreshHash: Buffer
  refreshExpiry: string
}

function newTokenPair (lifetimes: Lifetimes): TokenPair {
  const accessToken = generateSecret('accessToken')
  const refreshToken = generateSecret('refreshToken')
  const now = Date.now()
  return {
    issuedAt: new Date(now).toISOString(),
    accessToken,
    accessHash: hashSecret(accessToken),
    accessExpiry: new Date(now + lifetimes.accessTokenTtl * 1000).toISOString(),
    refreshToken,
    refreshHash: hashSecret(refreshToken),
    refreshExpiry: new Date(now + lifetimes.refreshTokenTtl * 1000).toISOString()
  }
}

function tokenResponse (issued: { accessToken: string, refreshToken?: string }, scopes: Scope[], lifetimes: Lifetimes): TokenResponse {
  return {
    access_token: issued.accessToken,
    token_type: 'Bearer',
    expires_in: lifetimes.accessTokenTtl,
    ...(issued.refreshToken !== undefined ? { refresh_token: issued.refreshToken } : {}),
    scope: scopes.join(' ')
  }
}

async function issueTokens (tx: Executor, grant: Pick<OAuthGrant, 'id' | 'resource'>, scopes: Scope[], withRefresh: boolean, lifetimes: Lifetimes): Promise<TokenResponse> {
  const issued = newTokenPair(lifetimes)
  // Scopes travel as an array literal: they are checked scope names (no quotes, commas or spaces).
  const scopeList = `{${scopes.join(',')}}`
  if (!withRefresh) {
    await tx.execute(sql`
      insert into oauth_tokens (token_hash, kind, grant_id, scopes, resource, expires_at)
      values (${issued.accessHash}, 'access', ${grant.id}, ${scopeList}::text[], ${grant.resource}, ${issued.accessExpiry}::timestamptz)`)
    return tokenResponse({ accessToken: issued.accessToken }, scopes, lifetimes)
  }
  await tx.execute(sql`
    insert into oauth_tokens (token_hash, kind, grant_id, scopes, resource, expires_at)
    values (${issued.accessHash}, 'access', ${grant.id}, ${scopeList}::text[], ${grant.resource}, ${issued.accessExpiry}::timestamptz),
      (${issued.refreshHash}, 'refresh', ${grant.id}, ${scopeList}::text[], ${grant.resource}, ${issued.refreshExpiry}::timestamptz)`)
  return tokenResponse(issued, scopes, lifetimes)
}

/** Revokes a grant and every token of it; every replica drops cached access tokens at once. */
export async function revokeGrant (db: Executor, grantId: number, reason: string): Promise<boolean> {
  return await db.transaction(async (tx) => {
    const revoked = await tx.update(oauthGrants).set({ revokedAt: sql`now()`, revokedReason: reason })
      .where(and(eq(oauthGrants.id, grantId), isNull(oauthGrants.revokedAt))).returning({ id: oauthGrants.id })
    await tx.update(oauthTokens).set({ revokedAt: sql`now()` }).where(and(eq(oauthTokens.grantId, grantId), isNull(oauthTokens.revokedAt)))
    await notifyAuthChange(tx, `grant:${grantId}`)
    return revoked.length > 0
  })
}

/**
 * RFC 7009: revokes a token the client owns. An access token alone goes; a refresh token takes
 * its grant (and so the access tokens issued with it) along. Unknown tokens, tokens of other
 * clients and other kinds of secret are ignored: the response is 200 either way (§2.2).
 */
export async function revokeTokenOfClient (db: Executor, client: OAuthClient, token: string): Promise<void> {
  const kind = kindOfSecret(token)
  if (kind !== 'accessToken' && kind !== 'refreshToken') return
  const [row] = await db.select({ token: oauthTokens, clientId: oauthGrants.clientId })
    .from(oauthTokens).innerJoin(oauthGrants, eq(oauthGrants.id, oauthTokens.grantId))
    .where(eq(oauthTokens.tokenHash, hashSecret(token)))
  if (row === undefined || row.clientId !== client.id) return
  if (row.token.kind === 'refresh') {
    await revokeGrant(db, row.token.grantId, 'revocation')
    return
  }
  await db.transaction(async (tx) => {
    await tx.update(oauthTokens).set({ revokedAt: sql`now()` }).where(and(eq(oauthTokens.id, row.token.id), isNull(oauthTokens.revokedAt)))
    await notifyAuthChange(tx, `oauth_token:${row.token.id}`)
  })
}
