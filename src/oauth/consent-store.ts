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
export async function createPendingAuthorization (db: Executor, request: PendingRequest): Promise<{ transaction: string, csrf: string }> {
  const transaction = randomToken()
  const csrf = randomToken()
  await db.insert(oauthPendingAuthorizations).values({
    transactionHash: hashSecret(transaction),
    csrfHash: hashSecret(csrf),
    clientId: request.client.id,
    redirectUri: request.redirectUri,
    state: request.state ?? null,
    codeChallenge: request.codeChallenge,
    scopes: request.scopes,
    resource: request.resource,
    expiresAt: new Date(Date.now() + PENDING_AUTHORIZATION_TTL_SECONDS * 1000)
  })
  return { transaction, csrf }
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
