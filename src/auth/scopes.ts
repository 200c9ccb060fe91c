/** The scopes of this server. `offline_access` is not one: refresh tokens are always issued. */
export const SCOPES = ['bus:read', 'bus:write'] as const
export type Scope = (typeof SCOPES)[number]

export function isScope (value: string): value is Scope {
  return (SCOPES as readonly string[]).includes(value)
}

/** Parses a space- (or comma-) separated scope list; returns the unknown entries separately. */
export function parseScopes (raw: string | readonly string[]): { scopes: Scope[], unknown: string[] } {
  const parts = typeof raw === 'string' ? raw.split(/[\s,]+/).filter(Boolean) : raw
  const scopes: Scope[] = []
  const unknown: string[] = []
  for (const part of parts) {
    if (isScope(part)) {
      if (!scopes.includes(part)) scopes.push(part)
    } else {
      unknown.push(part)
    }
  }
  return { scopes: sortScopes(scopes), unknown }
}

export function sortScopes (scopes: readonly Scope[]): Scope[] {
  return SCOPES.filter((s) => scopes.includes(s))
}

/** What a credential may do: what it was granted, never more than its principal holds now. */
export function effectiveScopes (granted: readonly string[], principal: readonly string[]): Scope[] {
  return SCOPES.filter((s) => granted.includes(s) && principal.includes(s))
}
