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
  expires_at: Date | string
  rotated_at: Date | string | null
  revoked_at: Date | string | null
  grant_id: string | number
  client_id: string | number
  resource: string
  grant_revoked_at: Date | string | null
  disabled_at: Date | string | null
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
 * refresh_token grant with rotation on every use. The presented token is spent by one atomic
 * UPDATE, so of several concurrent requests exactly one succeeds. Presenting a spent token
 * (a replay, or the loser of such a race) revokes the whole grant: refresh tokens of public
 * clients are only safe if a stolen one is noticed (RFC 9700 §4.14.2).
 */
export async function refreshTokens (db: Executor, input: RefreshInput, lifetimes: Lifetimes): Promise<TokenResponse> {
  if (kindOfSecret(input.refreshToken) !== 'refreshToken') throw new OAuthError('invalid_grant', 'The refresh token is invalid')
  const hash = hashSecret(input.refreshToken)
  const outcome = await db.transaction(async (tx) => {
    // Plain SQL on the hot path of the token endpoint: building this join with the query
    // builder cost more CPU than the rest of a refresh (a profile of the bench's refresh row).
    const [row] = rowsOf<RefreshRow>(await tx.execute(sql`
      select t.id, t.scopes, t.expires_at, t.rotated_at, t.revoked_at, g.id as grant_id, g.client_id, g.resource,
        g.revoked_at as grant_revoked_at, p.disabled_at
      from oauth_tokens t join oauth_grants g on g.id = t.grant_id join principals p on p.id = g.principal_id
      where t.token_hash = ${hash} and t.kind = 'refresh'`))
    if (row === undefined) throw new OAuthError('invalid_grant', 'The refresh token is invalid')
    const grant = { id: Number(row.grant_id), resource: row.resource }
    if (Number(row.client_id) !== input.client.id) throw new OAuthError('invalid_grant', 'The refresh token was issued to another client')
    if (row.rotated_at !== null) return { reuseOf: grant.id }
    if (row.revoked_at !== null || row.grant_revoked_at !== null) throw new OAuthError('invalid_grant', 'The refresh token was revoked')
    if (new Date(row.expires_at).getTime() <= Date.now()) throw new OAuthError('invalid_grant', 'The refresh token has expired')
    if (row.disabled_at !== null) throw new OAuthError('invalid_grant', 'The principal is disabled')
    const token = { id: Number(row.id) }
    let scopes = row.scopes as Scope[]
    if (input.scopes !== undefined) {
      const beyond = input.scopes.filter((s) => !scopes.includes(s))
      if (beyond.length > 0) throw new OAuthError('invalid_scope', `The grant does not include ${beyond.join(' ')}`)
      scopes = input.scopes
    }
    const spent = await tx.update(oauthTokens).set({ rotatedAt: sql`now()` })
      .where(and(eq(oauthTokens.id, token.id), isNull(oauthTokens.rotatedAt), isNull(oauthTokens.revokedAt))).returning({ id: oauthTokens.id })
    if (spent.length === 0) return { reuseOf: grant.id }
    return { tokens: await issueTokens(tx, grant, scopes, true, lifetimes) }
  })
  if (outcome.reuseOf !== undefined) {
    await revokeGrant(db, outcome.reuseOf, 'refresh_reuse')
    throw new OAuthError('invalid_grant', 'The refresh token was already used; the authorization is revoked and the user must connect again')
  }
  return outcome.tokens as TokenResponse
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

async function issueTokens (tx: Executor, grant: Pick<OAuthGrant, 'id' | 'resource'>, scopes: Scope[], withRefresh: boolean, lifetimes: Lifetimes): Promise<TokenResponse> {
  const accessToken = generateSecret('accessToken')
  const refreshToken = withRefresh ? generateSecret('refreshToken') : undefined
  const now = Date.now()
  // Scopes travel as an array literal: they are checked scope names (no quotes, commas or spaces).
  const scopeList = `{${scopes.join(',')}}`
  const accessExpiry = new Date(now + lifetimes.accessTokenTtl * 1000).toISOString()
  if (refreshToken === undefined) {
    await tx.execute(sql`
      insert into oauth_tokens (token_hash, kind, grant_id, scopes, resource, expires_at)
      values (${hashSecret(accessToken)}, 'access', ${grant.id}, ${scopeList}::text[], ${grant.resource}, ${accessExpiry}::timestamptz)`)
  } else {
    const refreshExpiry = new Date(now + lifetimes.refreshTokenTtl * 1000).toISOString()
    await tx.execute(sql`
      insert into oauth_tokens (token_hash, kind, grant_id, scopes, resource, expires_at)
      values (${hashSecret(accessToken)}, 'access', ${grant.id}, ${scopeList}::text[], ${grant.resource}, ${accessExpiry}::timestamptz),
        (${hashSecret(refreshToken)}, 'refresh', ${grant.id}, ${scopeList}::text[], ${grant.resource}, ${refreshExpiry}::timestamptz)`)
  }
  return {
    access_token: accessToken,
    token_type: 'Bearer',
    expires_in: lifetimes.accessTokenTtl,
    ...(refreshToken !== undefined ? { refresh_token: refreshToken } : {}),
    scope: scopes.join(' ')
  }
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
