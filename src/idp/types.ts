import type { Scope } from '../auth/scopes.ts'

/** Algorithms a provider may be configured with: asymmetric only (`HS*` and `none` never). */
export const ALLOWED_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const
export const DEFAULT_ALGORITHMS = ['RS256', 'PS256', 'ES256', 'EdDSA'] as const

/** Where a provider's tokens arrive: the Authorization header, or Cloudflare Access's own header. */
export type TokenHeader = 'authorization' | 'cf-access-jwt-assertion'

export interface IntrospectionSettings {
  /** RFC 7662 endpoint; https, or http on a loopback host. */
  endpoint: string
  clientId: string
  clientSecret: string
}

export interface LoginSettings {
  clientId: string
  clientSecret: string
  scopes: string[]
  label: string
  /** Skip the choice on the consent page and go straight to this provider. */
  default: boolean
}

/**
 * One external identity provider from IDP_FILE (DESIGN.md, "External identity providers"),
 * validated and with every default filled in. Field names are the file's, in camelCase.
 */
export interface IdpProvider {
  id: string
  /** Compared byte for byte with a token's `iss`. */
  issuer: string
  /** From configuration; undefined means "from the issuer's discovery document". */
  jwksUri: string | undefined
  audiences: string[]
  algorithms: string[]
  clockToleranceSeconds: number
  subjectClaim: string
  scopeClaims: string[]
  /**
   * IdP scope or group value → bus scopes. Undefined: identity (a `bus:read` scope grants
   * `bus:read`, nothing else grants anything).
   */
  scopeMap: Record<string, Scope[]> | undefined
  groupsClaim: string | undefined
  /** Claim → the value it must have (a string, number or boolean; an array claim must contain it). */
  requiredClaims: Record<string, string | number | boolean>
  /** Accepted `client_id` (then `azp`, then `cid`) values; undefined accepts any. */
  allowedClientIds: string[] | undefined
  principals: 'linked' | 'auto'
  nameClaim: string
  autoScopes: Scope[]
  tokenHeader: TokenHeader
  introspection: IntrospectionSettings | undefined
  advertise: boolean
  login: LoginSettings | undefined
}
