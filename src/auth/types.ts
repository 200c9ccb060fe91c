import type { Scope } from './scopes.ts'

export type AuthKind = 'api_token' | 'oauth' | 'external'

/** Who is calling /mcp, resolved from the bearer token by the auth hook. */
export interface AuthContext {
  kind: AuthKind
  /** The external identity provider's id (IDP_FILE) for `external`; null otherwise. */
  provider: string | null
  /** The API token's or OAuth token's id; for `external`, the linked identity's id. */
  tokenId: number
  principalId: number
  principalName: string
  /** The OAuth client the token was issued to; null for API tokens. */
  clientId: string | null
  scopes: Scope[]
  expiresAt: Date | null
}

/** How the audit log and metrics name a caller's authentication: `external:<provider>` for external tokens. */
export function authLabel (auth: Pick<AuthContext, 'kind' | 'provider'>): string {
  return auth.kind === 'external' ? `external:${auth.provider ?? '?'}` : auth.kind
}
