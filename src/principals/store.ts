import { and, desc, eq, isNull, sql } from 'drizzle-orm'
import { PRINCIPAL_NAME_PATTERN } from '../config.ts'
import type { Executor } from '../db/client.ts'
import { apiTokens, principals, type ApiToken, type Principal } from '../db/schema.ts'
import { generateSecret, hashSecret, TOKEN_PREFIX } from '../lib/secrets.ts'
import { parseScopes, SCOPES, type Scope } from '../auth/scopes.ts'

/** NOTIFY channel telling every replica to drop cached credentials (revocations, disables). */
export const AUTH_NOTIFY_CHANNEL = 'bus_auth'

/** A request the admin can fix (bad name, unknown principal); the admin API answers 4xx. */
export class AdminInputError extends Error {
  readonly statusCode: 400 | 404 | 409

  constructor (message: string, statusCode: 400 | 404 | 409 = 400) {
    super(message)
    this.statusCode = statusCode
    this.name = 'AdminInputError'
  }
}

export interface PrincipalView { id: number, name: string, scopes: Scope[], disabled: boolean, created_at: string, disabled_at: string | null }
export interface ApiTokenView {
  id: number, principal: string, scopes: Scope[], label: string | null, hint: string,
  created_at: string, expires_at: string | null, revoked_at: string | null, last_used_at: string | null, status: 'active' | 'expired' | 'revoked'
}

/**
 * Caches in this process that must forget credentials at once when this process changes them.
 * The NOTIFY reaches every replica's listener, this one included, but asynchronously (on
 * PostgreSQL a moment after the commit), so without this a request right after a revocation on
 * the same replica could still be served from the cache.
 */
const localAuthChangeListeners = new Set<() => void>()

export function onLocalAuthChange (listener: () => void): () => void {
  localAuthChangeListeners.add(listener)
  return () => { localAuthChangeListeners.delete(listener) }
}

export async function notifyAuthChange (db: Executor, what: string): Promise<void> {
  await db.execute(sql`select pg_notify(${AUTH_NOTIFY_CHANNEL}, ${what})`)
  // Usually called inside the revoking transaction: a lookup between here and the commit could
  // cache the old state again, but the NOTIFY, delivered after the commit, clears that too.
  for (const listener of localAuthChangeListeners) listener()
}

export function checkScopes (raw: string | readonly string[] | undefined, fallback: readonly Scope[] = SCOPES): Scope[] {
  if (raw === undefined) return [...fallback]
  const { scopes, unknown } = parseScopes(raw)
  if (unknown.length > 0) throw new AdminInputError(`unknown scope ${unknown.map((s) => `"${s}"`).join(', ')}; the scopes are ${SCOPES.join(', ')}`)
  if (scopes.length === 0) throw new AdminInputError(`give at least one scope (${SCOPES.join(', ')})`)
  return scopes
}

export async function createPrincipal (db: Executor, name: string, scopes?: string | readonly string[]): Promise<PrincipalView> {
  if (!PRINCIPAL_NAME_PATTERN.test(name)) {
    throw new AdminInputError('principal names are 1-64 characters: letters, digits, "_", "." or "-", starting with a letter or digit')
  }
  const granted = checkScopes(scopes)
  const [row] = await db.insert(principals).values({ name, scopes: granted }).onConflictDoNothing().returning()
  if (row === undefined) throw new AdminInputError(`principal "${name}" already exists`, 409)
  return principalView(row)
}

export async function listPrincipals (db: Executor): Promise<PrincipalView[]> {
  return (await db.select().from(principals).orderBy(principals.name)).map(principalView)
}

export async function findPrincipal (db: Executor, name: string): Promise<Principal> {
  const [row] = await db.select().from(principals).where(eq(principals.name, name))
  if (row === undefined) throw new AdminInputError(`principal "${name}" does not exist`, 404)
  return row
}

/** Disabling takes effect at once on every replica: cached credentials are dropped by NOTIFY. */
export async function setPrincipalDisabled (db: Executor, name: string, disabled: boolean): Promise<PrincipalView> {
  return await db.transaction(async (tx) => {
    const [row] = await tx.update(principals)
      .set({ disabledAt: disabled ? sql`coalesce(${principals.disabledAt}, now())` : null })
      .where(eq(principals.name, name)).returning()
    if (row === undefined) throw new AdminInputError(`principal "${name}" does not exist`, 404)
    await notifyAuthChange(tx, `principal:${row.id}`)
    return principalView(row)
  })
}

export interface IssueTokenInput { principal: string, scopes?: string | readonly string[] | undefined, label?: string | undefined, expiresIn?: number | undefined }

/** Issues an API token; the secret is returned here once and only its hash is stored. */
export async function issueApiToken (db: Executor, input: IssueTokenInput): Promise<ApiTokenView & { token: string }> {
  const principal = await findPrincipal(db, input.principal)
  if (principal.disabledAt !== null) throw new AdminInputError(`principal "${principal.name}" is disabled`, 409)
  const scopes = checkScopes(input.scopes, principal.scopes as Scope[])
  const beyond = scopes.filter((s) => !principal.scopes.includes(s))
  if (beyond.length > 0) throw new AdminInputError(`principal "${principal.name}" does not hold ${beyond.join(', ')}; a token cannot have more scopes than its principal`)
  if (input.label !== undefined && input.label.length > 200) throw new AdminInputError('label is at most 200 characters')
  if (input.expiresIn !== undefined && (!Number.isInteger(input.expiresIn) || input.expiresIn < 60 || input.expiresIn > 10 * 365 * 86400)) {
    throw new AdminInputError('expires-in is a whole number of seconds from 60 to 315360000 (10 years)')
  }
  const token = generateSecret('apiToken')
  const [row] = await db.insert(apiTokens).values({
    tokenHash: hashSecret(token),
    hint: token.slice(TOKEN_PREFIX.apiToken.length, TOKEN_PREFIX.apiToken.length + 4),
    principalId: principal.id,
    scopes,
    label: input.label ?? null,
    expiresAt: input.expiresIn === undefined ? null : new Date(Date.now() + input.expiresIn * 1000)
  }).returning()
  if (row === undefined) throw new Error('token insert returned no row')
  return { token, ...tokenView(row, principal.name) }
}

export async function listApiTokens (db: Executor, principalName?: string): Promise<ApiTokenView[]> {
  const rows = await db.select({ token: apiTokens, principal: principals.name })
    .from(apiTokens).innerJoin(principals, eq(principals.id, apiTokens.principalId))
    .where(principalName === undefined ? undefined : eq(principals.name, principalName))
    .orderBy(desc(apiTokens.id))
  return rows.map((r) => tokenView(r.token, r.principal))
}

export async function revokeApiToken (db: Executor, id: number): Promise<ApiTokenView> {
  return await db.transaction(async (tx) => {
    const [row] = await tx.update(apiTokens).set({ revokedAt: sql`now()` })
      .where(and(eq(apiTokens.id, id), isNull(apiTokens.revokedAt))).returning()
    const current = row ?? (await tx.select().from(apiTokens).where(eq(apiTokens.id, id)))[0]
    if (current === undefined) throw new AdminInputError(`API token ${id} does not exist`, 404)
    await notifyAuthChange(tx, `api_token:${id}`)
    const [owner] = await tx.select({ name: principals.name }).from(principals).where(eq(principals.id, current.principalId))
    return tokenView(current, owner?.name ?? '?')
  })
}

function principalView (row: Principal): PrincipalView {
  return {
    id: row.id,
    name: row.name,
    scopes: row.scopes as Scope[],
    disabled: row.disabledAt !== null,
    created_at: row.createdAt.toISOString(),
    disabled_at: row.disabledAt?.toISOString() ?? null
  }
}

function tokenView (row: ApiToken, principal: string): ApiTokenView {
  const status = row.revokedAt !== null ? 'revoked' : row.expiresAt !== null && row.expiresAt <= new Date() ? 'expired' : 'active'
  return {
    id: row.id,
    principal,
    scopes: row.scopes as Scope[],
    label: row.label,
    hint: `${TOKEN_PREFIX.apiToken}${row.hint}…`,
    created_at: row.createdAt.toISOString(),
    expires_at: row.expiresAt?.toISOString() ?? null,
    revoked_at: row.revokedAt?.toISOString() ?? null,
    last_used_at: row.lastUsedAt?.toISOString() ?? null,
    status
  }
}
