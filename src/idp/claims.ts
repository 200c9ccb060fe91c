/**
 * From a verified token's claims (or an introspection answer) to who the caller is at the provider
 * and which bus scopes the token grants: subject, client, required claims, scopes. Pure.
 */
import type { Scope } from '../auth/scopes.ts'
import { isScope, sortScopes } from '../auth/scopes.ts'
import { ExternalTokenError } from './errors.ts'
import type { IdpProvider } from './types.ts'

export interface ExternalIdentity {
  subject: string
  clientId: string | null
  scopes: Scope[]
  name: string | null
  expiresAt: Date | null
}

export const MAX_SUBJECT_LENGTH = 255

type ClaimsProvider = Pick<IdpProvider, 'id' | 'subjectClaim' | 'tokenHeader' | 'allowedClientIds' | 'requiredClaims' | 'scopeClaims' | 'groupsClaim' | 'scopeMap' | 'nameClaim'>

/** C0, DEL, C1 and the Unicode line and paragraph separators. */
function hasControlCharacter (value: string): boolean {
  for (const character of value) {
    const c = character.charCodeAt(0)
    if (c < 0x20 || (c >= 0x7f && c <= 0x9f) || c === 0x2028 || c === 0x2029) return true
  }
  return false
}

function subjectOf (claims: Record<string, unknown>, provider: ClaimsProvider): string {
  let value = claims[provider.subjectClaim]
  // Cloudflare Access service tokens have an empty `sub`; the identity is in `common_name`.
  if ((value === undefined || value === '') && provider.tokenHeader === 'cf-access-jwt-assertion') {
    value = claims.common_name
  }
  const id = provider.id
  if (typeof value !== 'string' || value === '') {
    throw new ExternalTokenError('subject', `provider ${id}: the token has no "${provider.subjectClaim}" string claim to identify its subject`)
  }
  if (value.length > MAX_SUBJECT_LENGTH) {
    throw new ExternalTokenError('subject', `provider ${id}: the token's subject is longer than ${MAX_SUBJECT_LENGTH} characters`)
  }
  if (hasControlCharacter(value)) {
    throw new ExternalTokenError('subject', `provider ${id}: the token's subject contains control characters`)
  }
  return value
}

function clientIdOf (claims: Record<string, unknown>): string | null {
  for (const name of ['client_id', 'azp', 'cid']) {
    const value = claims[name]
    if (typeof value === 'string' && value !== '') return value
  }
  return null
}

function valuesOf (claim: unknown, split: boolean): string[] {
  if (typeof claim === 'string') return split ? claim.split(/\s+/).filter(Boolean) : [claim]
  if (Array.isArray(claim)) return claim.filter((v): v is string => typeof v === 'string')
  return []
}

/** The bus scopes a token grants: its scope (and group) values, mapped by `scopeMap`. */
export function scopesFromClaims (claims: Record<string, unknown>, provider: Pick<IdpProvider, 'scopeClaims' | 'groupsClaim' | 'scopeMap'>): Scope[] {
  const values: string[] = []
  for (const name of provider.scopeClaims) values.push(...valuesOf(claims[name], true))
  if (provider.groupsClaim !== undefined) values.push(...valuesOf(claims[provider.groupsClaim], false))
  const scopes = new Set<Scope>()
  const map = provider.scopeMap
  for (const value of values) {
    if (map === undefined) {
      if (isScope(value)) scopes.add(value)
    } else if (Object.hasOwn(map, value)) {
      for (const scope of map[value] ?? []) scopes.add(scope)
    }
  }
  return sortScopes([...scopes])
}

export function identityFromClaims (claims: Record<string, unknown>, provider: ClaimsProvider): ExternalIdentity {
  const id = provider.id
  const subject = subjectOf(claims, provider)

  const clientId = clientIdOf(claims)
  if (provider.allowedClientIds !== undefined && (clientId === null || !provider.allowedClientIds.includes(clientId))) {
    throw new ExternalTokenError('client', `provider ${id}: the token's client ${clientId === null ? '(none)' : JSON.stringify(clientId)} is not one of allowed_client_ids`)
  }

  for (const [name, wanted] of Object.entries(provider.requiredClaims)) {
    const value = claims[name]
    const ok = Array.isArray(value) ? value.includes(wanted) : value === wanted
    if (!ok) throw new ExternalTokenError('claims', `provider ${id}: the token's "${name}" claim does not have the required value`)
  }

  const name = claims[provider.nameClaim]
  const exp = claims.exp
  return {
    subject,
    clientId,
    scopes: scopesFromClaims(claims, provider),
    name: typeof name === 'string' ? name : null,
    expiresAt: Number.isFinite(exp) ? new Date((exp as number) * 1000) : null
  }
}
