import { createHash } from 'node:crypto'
import { and, asc, eq, inArray, isNull, like, or, sql } from 'drizzle-orm'
import { PRINCIPAL_NAME_PATTERN } from '../config.ts'
import type { Executor } from '../db/client.ts'
import { externalIdentities, principals, type ExternalIdentityRow } from '../db/schema.ts'
import { notifyAuthChange } from '../auth/invalidation.ts'
import { SCOPES, sortScopes, type Scope } from '../auth/scopes.ts'
import { InputError } from '../lib/input-error.ts'

/**
 * The `external_identities` table: which principal a subject at an external identity provider
 * (IDP_FILE) acts as. Linked by the admin (`bus-mcp identity link`), or created at first sight for
 * a provider with `principals: auto`.
 */

export interface IdentityView { id: number, provider: string, subject: string, principal: string, created_at: string, last_seen_at: string | null }
export interface IdentityPrincipal { identityId: number, principalId: number, principalName: string, principalScopes: Scope[], disabled: boolean }
export interface LinkInput { provider: string, subject: string, principal: string }
export interface ProvisionInput { provider: string, subject: string, name: string | null, scopes: readonly Scope[] }

export const MAX_SUBJECT_LENGTH = 255
/** Names tried before giving up: base, base-2 … base-20, then base-<hash of the subject>. */
const NAME_SUFFIXES = 20

/** Subjects are opaque, but a control character in one is never a real identity (and breaks logs and tables). */
export function checkSubject (subject: string): void {
  if (subject.length === 0 || subject.length > MAX_SUBJECT_LENGTH) {
    throw new InputError(`subject must be 1-${MAX_SUBJECT_LENGTH} characters (the provider's subject claim, e.g. "sub")`)
  }
  if (/\p{Cc}/u.test(subject)) throw new InputError('subject must not contain control characters')
}

/** A provider id that is not in IDP_FILE: a 400 listing those that are. */
export function checkKnownProvider (provider: string, knownProviders: readonly string[]): void {
  if (knownProviders.includes(provider)) return
  const shown = provider.length <= 40 ? `"${provider}"` : `"${provider.slice(0, 40)}…"`
  throw new InputError(knownProviders.length === 0
    ? `provider ${shown} is not in IDP_FILE: no external identity providers are configured (set IDP_FILE and restart)`
    : `provider ${shown} is not in IDP_FILE; the providers are ${knownProviders.join(', ')}`)
}

/** Links a provider's subject to an existing principal; a subject acts as one principal only. */
export async function linkIdentity (db: Executor, input: LinkInput, knownProviders: readonly string[]): Promise<IdentityView> {
  checkKnownProvider(input.provider, knownProviders)
  checkSubject(input.subject)
  return await db.transaction(async (tx) => {
    const [principal] = await tx.select({ id: principals.id, name: principals.name }).from(principals).where(eq(principals.name, input.principal))
    if (principal === undefined) throw new InputError(`principal "${input.principal}" does not exist`, 404)
    const [row] = await tx.insert(externalIdentities)
      .values({ provider: input.provider, subject: input.subject, principalId: principal.id })
      .onConflictDoNothing().returning()
    if (row === undefined) {
      const existing = await identityBySubject(tx, input.provider, input.subject)
      throw new InputError(`subject "${input.subject}" of provider "${input.provider}" is already linked to principal "${existing?.principal ?? '?'}"` +
        ` (identity #${existing?.id ?? '?'}); unlink it first ("bus-mcp identity unlink ${existing?.id ?? 'ID'}")`, 409)
    }
    // A verifier may remember that this subject had no principal: drop that at once, everywhere.
    await notifyAuthChange(tx, `identity:${row.id}`)
    return identityView(row, principal.name)
  })
}

export async function listIdentities (db: Executor, provider?: string): Promise<IdentityView[]> {
  const rows = await db.select({ identity: externalIdentities, principal: principals.name })
    .from(externalIdentities).innerJoin(principals, eq(principals.id, externalIdentities.principalId))
    .where(provider === undefined ? undefined : eq(externalIdentities.provider, provider))
    .orderBy(asc(externalIdentities.provider), asc(externalIdentities.subject))
  return rows.map((r) => identityView(r.identity, r.principal))
}

/** Removes a link; the subject's tokens stop working at once on every replica. */
export async function unlinkIdentity (db: Executor, id: number): Promise<IdentityView> {
  return await db.transaction(async (tx) => {
    const [row] = await tx.delete(externalIdentities).where(eq(externalIdentities.id, id)).returning()
    if (row === undefined) throw new InputError(`identity ${id} does not exist (see "bus-mcp identity list")`, 404)
    await notifyAuthChange(tx, `identity:${id}`)
    const [owner] = await tx.select({ name: principals.name }).from(principals).where(eq(principals.id, row.principalId))
    return identityView(row, owner?.name ?? '?')
  })
}

/** The principal a provider's subject acts as, disabled or not (the caller decides what that means). */
export async function principalForIdentity (db: Executor, provider: string, subject: string): Promise<IdentityPrincipal | undefined> {
  const [row] = await db.select({
    identityId: externalIdentities.id,
    principalId: principals.id,
    principalName: principals.name,
    principalScopes: principals.scopes,
    disabledAt: principals.disabledAt
  }).from(externalIdentities).innerJoin(principals, eq(principals.id, externalIdentities.principalId))
    .where(and(eq(externalIdentities.provider, provider), eq(externalIdentities.subject, subject)))
  if (row === undefined) return undefined
  return {
    identityId: row.identityId,
    principalId: row.principalId,
    principalName: row.principalName,
    principalScopes: row.principalScopes as Scope[],
    disabled: row.disabledAt !== null
  }
}

/** Thrown inside the provisioning transaction when another request linked the subject first. */
class LostRace extends Error {}

/**
 * `principals: auto`: the principal of a subject, created (with `scopes`) at first sight. Concurrent
 * first requests for one subject end with one principal and one identity: each creates its own in a
 * transaction, the identity's unique key lets one win, and the others roll back and read the winner's.
 */
export async function provisionIdentity (db: Executor, input: ProvisionInput): Promise<IdentityPrincipal> {
  checkSubject(input.subject)
  const scopes = sortScopes(input.scopes)
  if (scopes.length === 0) throw new InputError(`give at least one scope (${SCOPES.join(', ')}) for a provisioned principal`)
  for (let attempt = 0; attempt < 3; attempt++) {
    const existing = await principalForIdentity(db, input.provider, input.subject)
    if (existing !== undefined) return existing
    try {
      return await db.transaction(async (tx) => await createLinkedPrincipal(tx, input, scopes))
    } catch (err) {
      if (!(err instanceof LostRace)) throw err
    }
  }
  // Only reached if the winner's identity vanished between its commit and our read (an unlink): rare.
  throw new Error(`could not provision a principal for a subject of provider "${input.provider}"`)
}

async function createLinkedPrincipal (tx: Executor, input: ProvisionInput, scopes: Scope[]): Promise<IdentityPrincipal> {
  const principal = await insertPrincipalNamed(tx, principalNameFor(input), scopes, input.subject)
  const [identity] = await tx.insert(externalIdentities)
    .values({ provider: input.provider, subject: input.subject, principalId: principal.id })
    .onConflictDoNothing().returning({ id: externalIdentities.id })
  // Another request linked this subject first: undo our principal with the transaction.
  if (identity === undefined) throw new LostRace()
  return { identityId: identity.id, principalId: principal.id, principalName: principal.name, principalScopes: scopes, disabled: false }
}

/** The first free name of base, base-2 … base-20, base-<hash>; a clash with a concurrent insert moves on. */
async function insertPrincipalNamed (tx: Executor, base: string, scopes: Scope[], subject: string): Promise<{ id: number, name: string }> {
  const taken = new Set((await tx.select({ name: principals.name }).from(principals)
    .where(or(eq(principals.name, base), like(principals.name, `${escapeLike(base)}-%`)))).map((r) => r.name))
  const candidates = [base, ...Array.from({ length: NAME_SUFFIXES - 1 }, (_, i) => `${base}-${i + 2}`), `${base}-${shortHash(subject)}`]
  for (const name of candidates) {
    if (taken.has(name)) continue
    const [row] = await tx.insert(principals).values({ name, scopes }).onConflictDoNothing().returning({ id: principals.id, name: principals.name })
    if (row !== undefined) return row
  }
  throw new InputError(`every principal name from "${base}" to "${base}-${NAME_SUFFIXES}" is taken; link this subject by hand ("bus-mcp identity link")`, 409)
}

/**
 * A principal name from the IdP's name claim (letters, digits, `_ . -`, at most 64, leaving room for
 * a suffix), or `<provider>-<hash of the subject>` when the claim is missing or has nothing usable.
 */
export function principalNameFor (input: Pick<ProvisionInput, 'provider' | 'subject' | 'name'>): string {
  const cleaned = (input.name ?? '')
    .normalize('NFKD').replace(/\p{M}/gu, '')
    .replace(/[^A-Za-z0-9_.-]+/g, '-')
    .replace(/^[^A-Za-z0-9]+/, '')
    .slice(0, 48)
    .replace(/[-.]+$/, '')
  const name = cleaned !== '' ? cleaned : `${input.provider}-${shortHash(input.subject)}`
  if (!PRINCIPAL_NAME_PATTERN.test(name)) throw new Error(`principal name "${name}" does not match the pattern`)
  return name
}

function shortHash (subject: string): string {
  return createHash('sha256').update(subject).digest('hex').slice(0, 10)
}

function escapeLike (value: string): string {
  return value.replace(/[\\%_]/g, (c) => `\\${c}`)
}

/** Records that these identities were just used (batched by the caller; optional). */
export async function touchIdentities (db: Executor, ids: readonly number[]): Promise<void> {
  if (ids.length === 0) return
  await db.update(externalIdentities).set({ lastSeenAt: sql`now()` }).where(inArray(externalIdentities.id, [...ids]))
}

/** Of these identities, those still linked to an enabled principal, with that principal's scopes now. */
export async function liveIdentities (db: Executor, ids: readonly number[]): Promise<Map<number, Scope[]>> {
  const live = new Map<number, Scope[]>()
  if (ids.length === 0) return live
  const rows = await db.select({ id: externalIdentities.id, scopes: principals.scopes })
    .from(externalIdentities).innerJoin(principals, eq(principals.id, externalIdentities.principalId))
    .where(and(inArray(externalIdentities.id, [...ids]), isNull(principals.disabledAt)))
  for (const row of rows) live.set(row.id, row.scopes as Scope[])
  return live
}

async function identityBySubject (db: Executor, provider: string, subject: string): Promise<IdentityView | undefined> {
  const [row] = await db.select({ identity: externalIdentities, principal: principals.name })
    .from(externalIdentities).innerJoin(principals, eq(principals.id, externalIdentities.principalId))
    .where(and(eq(externalIdentities.provider, provider), eq(externalIdentities.subject, subject)))
  return row === undefined ? undefined : identityView(row.identity, row.principal)
}

function identityView (row: ExternalIdentityRow, principal: string): IdentityView {
  return {
    id: row.id,
    provider: row.provider,
    subject: row.subject,
    principal,
    created_at: row.createdAt.toISOString(),
    last_seen_at: row.lastSeenAt?.toISOString() ?? null
  }
}
