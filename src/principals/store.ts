import { and, desc, eq, isNull, sql } from 'drizzle-orm'
import { PRINCIPAL_NAME_PATTERN } from '../config.ts'
import type { Executor } from '../db/client.ts'
import { apiTokens, principals, type ApiToken, type Principal } from '../db/schema.ts'
import { generateSecret, hashSecret, TOKEN_PREFIX } from '../lib/secrets.ts'
import { notifyAuthChange } from '../auth/invalidation.ts'
import { parseScopes, SCOPES, type Scope } from '../auth/scopes.ts'
import { InputError } from '../lib/input-error.ts'

export interface PrincipalView { id: number, name: string, scopes: Scope[], disabled: boolean, created_at: string, disabled_at: string | null }
export interface ApiTokenView {
  id: number,
  principal: string,
  scopes: Scope[],
  label: string | null,
  hint: string,
  created_at: string,
  expires_at: string | null,
  revoked_at: string | null,
  last_used_at: string | null,
  status: 'active' | 'expired' | 'revoked'
}

export function checkScopes (raw: string | readonly string[] | undefined, fallback: readonly Scope[] = SCOPES): Scope[] {
  if (raw === undefined) return [...fallback]
  const { scopes, unknown } = parseScopes(raw)
  if (unknown.length > 0) throw new InputError(`unknown scope ${unknown.map((s) => `"${s}"`).join(', ')}; the scopes are ${SCOPES.join(', ')}`)
  if (scopes.length === 0) throw new InputError(`give at least one scope (${SCOPES.join(', ')})`)
  return scopes
}

export async function createPrincipal (db: Executor, name: string, scopes?: string | readonly string[]): Promise<PrincipalView> {
  if (!PRINCIPAL_NAME_PATTERN.test(name)) {
    throw new InputError('principal names are 1-64 characters: letters, digits, "_", "." or "-", starting with a letter or digit')
  }
  const granted = checkScopes(scopes)
  const [row] = await db.insert(principals).values({ name, scopes: granted }).onConflictDoNothing().returning()
  if (row === undefined) throw new InputError(`principal "${name}" already exists`, 409)
  return principalView(row)
}

export async function listPrincipals (db: Executor): Promise<PrincipalView[]> {
  return (await db.select().from(principals).orderBy(principals.name)).map(principalView)
}

export async function findPrincipal (db: Executor, name: string): Promise<Principal> {
  const [row] = await db.select().from(principals).where(eq(principals.name, name))
  if (row === undefined) throw new InputError(`principal "${name}" does not exist`, 404)
  return row
}

/** A principal by id or by name, or undefined: for code that decides itself what a missing one means. */
export async function principalById (db: Executor, id: number): Promise<Principal | undefined> {
  const [row] = await db.select().from(principals).where(eq(principals.id, id))
  return row
}

export async function principalByName (db: Executor, name: string): Promise<Principal | undefined> {
  const [row] = await db.select().from(principals).where(eq(principals.name, name))
  return row
}

/** Disabling takes effect at once on every replica: cached credentials are dropped by NOTIFY. */
export async function setPrincipalDisabled (db: Executor, name: string, disabled: boolean): Promise<PrincipalView> {
  return await db.transaction(async (tx) => {
    const [row] = await tx.update(principals)
      .set({ disabledAt: disabled ? sql`coalesce(${principals.disabledAt}, now())` : null })
      .where(eq(principals.name, name)).returning()
    if (row === undefined) throw new InputError(`principal "${name}" does not exist`, 404)
    await notifyAuthChange(tx, `principal:${row.id}`)
    return principalView(row)
  })
}

export interface IssueTokenInput { principal: string, scopes?: string | readonly string[] | undefined, label?: string | undefined, expiresIn?: number | undefined }

/** Issues an API token; the secret is returned here once and only its hash is stored. */
export async function issueApiToken (db: Executor, input: IssueTokenInput): Promise<ApiTokenView & { token: string }> {
  const principal = await findPrincipal(db, input.principal)
  if (principal.disabledAt !== null) throw new InputError(`principal "${principal.name}" is disabled`, 409)
  const scopes = checkScopes(input.scopes, principal.scopes as Scope[])
  const beyond = scopes.filter((s) => !principal.scopes.includes(s))
  if (beyond.length > 0) throw new InputError(`principal "${principal.name}" does not hold ${beyond.join(', ')}; a token cannot have more scopes than its principal`)
  if (input.label !== undefined && input.label.length > 200) throw new InputError('label is at most 200 characters')
  if (input.expiresIn !== undefined && (!Number.isInteger(input.expiresIn) || input.expiresIn < 60 || input.expiresIn > 10 * 365 * 86400)) {
    throw new InputError('expires-in is a whole number of seconds from 60 to 315360000 (10 years)')
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
    if (current === undefined) throw new InputError(`API token ${id} does not exist`, 404)
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
