import { and, eq, gt, isNull, sql } from 'drizzle-orm'
import { lookupApiToken } from '../auth/authenticator.ts'
import type { Scope } from '../auth/scopes.ts'
import type { Executor } from '../db/client.ts'
import { loginCodes, oauthPendingAuthorizations, type OAuthClient, type Principal } from '../db/schema.ts'
import { generateLoginCode, hashSecret, kindOfSecret, normaliseLoginCode, randomToken } from '../lib/secrets.ts'
import { findPrincipal, principalById } from '../principals/store.ts'

/** How long the consent page may stay open, and how many wrong credentials it tolerates. */
export const PENDING_AUTHORIZATION_TTL_SECONDS = 600
export const MAX_CONSENT_ATTEMPTS = 5
export const LOGIN_CODE_TTL_SECONDS = 600

export interface PendingRequest {
  client: OAuthClient
  redirectUri: string
  state: string | undefined
  codeChallenge: string
  scopes: Scope[]
  resource: string
}

export type PendingAuthorization = typeof oauthPendingAuthorizations.$inferSelect

/**
 * Stores an authorization request waiting for consent. `transaction` goes into the form, `csrf`
 * into a cookie; a submission needs both (a forged POST from another site has neither the
 * transaction of this browser's page nor, with SameSite=Strict, the cookie).
 */
export async function createPendingAuthorization (db: Executor, request: PendingRequest): Promise<{ transaction: string, csrf: string, id: number, expiresAt: Date }> {
  const transaction = randomToken()
  const csrf = randomToken()
  const [row] = await db.insert(oauthPendingAuthorizations).values({
    transactionHash: hashSecret(transaction),
    csrfHash: hashSecret(csrf),
    clientId: request.client.id,
    redirectUri: request.redirectUri,
    state: request.state ?? null,
    codeChallenge: request.codeChallenge,
    scopes: request.scopes,
    resource: request.resource,
    expiresAt: new Date(Date.now() + PENDING_AUTHORIZATION_TTL_SECONDS * 1000)
  }).returning({ id: oauthPendingAuthorizations.id, expiresAt: oauthPendingAuthorizations.expiresAt })
  if (row === undefined) throw new Error('the pending authorization was not stored')
  return { transaction, csrf, id: row.id, expiresAt: row.expiresAt }
}

export async function findPendingAuthorizationById (db: Executor, id: number): Promise<PendingAuthorization | undefined> {
  const [row] = await db.select().from(oauthPendingAuthorizations).where(eq(oauthPendingAuthorizations.id, id))
  return row
}

/**
 * Gives a live pending authorization a new transaction and CSRF secret, and records who signed in
 * at an identity provider (or clears it). The consent page shown after a sign-in is a new page:
 * the sign-in's callback knows the request only by id (the transaction is stored as a hash), and a
 * form from before the sign-in must not approve as the signed-in principal. Undefined when the
 * request was spent or expired meanwhile.
 */
export async function renewPendingAuthorization (
  db: Executor, id: number, signedIn: { principalId: number, provider: string } | null
): Promise<{ transaction: string, csrf: string, previousTransactionHash: Buffer } | undefined> {
  const transaction = randomToken()
  const csrf = randomToken()
  const [previous] = await db.select({ hash: oauthPendingAuthorizations.transactionHash }).from(oauthPendingAuthorizations).where(eq(oauthPendingAuthorizations.id, id))
  const rows = await db.update(oauthPendingAuthorizations).set({
    transactionHash: hashSecret(transaction),
    csrfHash: hashSecret(csrf),
    signedInPrincipalId: signedIn?.principalId ?? null,
    signedInProvider: signedIn?.provider ?? null
  }).where(and(eq(oauthPendingAuthorizations.id, id), isNull(oauthPendingAuthorizations.consumedAt), gt(oauthPendingAuthorizations.expiresAt, sql`now()`)))
    .returning({ id: oauthPendingAuthorizations.id })
  if (rows.length === 0 || previous === undefined) return undefined
  return { transaction, csrf, previousTransactionHash: previous.hash }
}

export async function findPendingAuthorization (db: Executor, transaction: string): Promise<PendingAuthorization | undefined> {
  if (transaction.length > 100) return undefined
  const [row] = await db.select().from(oauthPendingAuthorizations).where(eq(oauthPendingAuthorizations.transactionHash, hashSecret(transaction)))
  return row
}

/** Spends the pending request; false when another submission (a replay, a double click) got there first. */
export async function consumePendingAuthorization (db: Executor, id: number): Promise<boolean> {
  const rows = await db.update(oauthPendingAuthorizations).set({ consumedAt: sql`now()` })
    .where(and(eq(oauthPendingAuthorizations.id, id), isNull(oauthPendingAuthorizations.consumedAt))).returning({ id: oauthPendingAuthorizations.id })
  return rows.length > 0
}

/** Counts a wrong credential; returns the attempts so far. */
export async function recordFailedAttempt (db: Executor, id: number): Promise<number> {
  const [row] = await db.update(oauthPendingAuthorizations).set({ failedAttempts: sql`${oauthPendingAuthorizations.failedAttempts} + 1` })
    .where(eq(oauthPendingAuthorizations.id, id)).returning({ attempts: oauthPendingAuthorizations.failedAttempts })
  return row?.attempts ?? MAX_CONSENT_ATTEMPTS
}

/** `bus-mcp login-code NAME`: a one-time code proving that principal on the consent page. */
export async function createLoginCode (db: Executor, principalName: string): Promise<{ code: string, expires_at: string, principal: string }> {
  const principal = await findPrincipal(db, principalName)
  const code = generateLoginCode()
  const expiresAt = new Date(Date.now() + LOGIN_CODE_TTL_SECONDS * 1000)
  await db.insert(loginCodes).values({ codeHash: hashSecret(normaliseLoginCode(code)), principalId: principal.id, expiresAt })
  return { code, expires_at: expiresAt.toISOString(), principal: principal.name }
}

/**
 * Who a consent-page credential proves: an API token of the principal (used as is, not spent),
 * or a login code (spent atomically, so it works once). Null when it proves nobody.
 */
export async function principalForCredential (db: Executor, credential: string): Promise<Principal | null> {
  const value = credential.trim()
  if (value === '' || value.length > 200) return null
  const kind = kindOfSecret(value)
  if (kind === undefined && /^[0-9A-Za-z-\s]{10,13}$/.test(value)) {
    const [used] = await db.update(loginCodes).set({ usedAt: sql`now()` })
      .where(and(eq(loginCodes.codeHash, hashSecret(normaliseLoginCode(value))), isNull(loginCodes.usedAt), gt(loginCodes.expiresAt, sql`now()`)))
      .returning({ principalId: loginCodes.principalId })
    if (used === undefined) return null
    const principal = await principalById(db, used.principalId)
    return principal !== undefined && principal.disabledAt === null ? principal : null
  }
  if (kind !== undefined && kind !== 'apiToken') return null
  const caller = await lookupApiToken(db, hashSecret(value))
  if (caller === null) return null
  const principal = await principalById(db, caller.principalId)
  return principal !== undefined && principal.disabledAt === null ? principal : null
}
