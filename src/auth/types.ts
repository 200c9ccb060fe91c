import type { Scope } from './scopes.ts'

export type AuthKind = 'api_token' | 'oauth'

/** Who is calling /mcp, resolved from the bearer token by the auth hook. */
export interface AuthContext {
  kind: AuthKind
  tokenId: number
  principalId: number
  principalName: string
  /** The OAuth client the token was issued to; null for API tokens. */
  clientId: string | null
  scopes: Scope[]
  expiresAt: Date | null
}
