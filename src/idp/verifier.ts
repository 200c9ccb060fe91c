import type { FastifyBaseLogger } from 'fastify'
import { effectiveScopes, SCOPES } from '../auth/scopes.ts'
import type { AuthContext } from '../auth/types.ts'
import type { Database } from '../db/client.ts'
import { ExpiringSet } from '../lib/failure-limiter.ts'
import { hashSecret } from '../lib/secrets.ts'
import { identityFromClaims, type ExternalIdentity } from './claims.ts'
import { ExternalTokenError } from './errors.ts'
import { principalForIdentity, provisionIdentity, type IdentityPrincipal } from './identities.ts'
import { Introspector } from './introspection.ts'
import { looksLikeJwt, MAX_TOKEN_BYTES, peekIssuer, verifyJwtAccessToken } from './jwt.ts'
import { ProviderKeys, type KeyStatus, type KeyStoreOptions } from './keys.ts'
import type { IdpProvider, TokenHeader } from './types.ts'

/**
 * What the token itself grants. A provider configured to read no scopes at all (`scope_claims: []`
 * and no `groups_claim`: Cloudflare Access, whose tokens prove who someone is and nothing more)
 * leaves it to the principal's scopes; otherwise the token's mapped scopes, as for our own tokens.
 */
function tokenScopes (provider: IdpProvider, identity: ExternalIdentity): readonly string[] {
  return provider.scopeClaims.length === 0 && provider.groupsClaim === undefined ? SCOPES : identity.scopes
}

/** The provider could not be asked (no keys yet, introspection down): answer 503 + Retry-After. */
export const UNAVAILABLE = 'unavailable'

export type ExternalResult =
  | { status: 'ok', context: AuthContext }
  | { status: 'refused', provider: string | null, reason: string }
  | { status: typeof UNAVAILABLE, provider: string }

export interface ProviderStatus {
  id: string
  issuer: string
  /** JWT providers: the key set's state. */
  keys: KeyStatus | null
  introspection: boolean
}

export interface ExternalVerifierOptions {
  keys?: KeyStoreOptions
  /** How long a verified token's principal is reused before the database is asked again. */
  cacheTtlMs?: number
  maxCacheEntries?: number
  /** How long a refused token is answered from memory. */
  negativeTtlMs?: number
}

interface CacheEntry { context: AuthContext, until: number }

/**
 * Access tokens of external identity providers (IDP_FILE). A JWT's unverified `iss` picks the
 * one provider that may verify it, with no network call; verification is local (cached keys);
 * a signature failure ends there, it never falls through to another provider. Opaque tokens
 * go to the one provider with introspection, if any. The subject then maps to a principal: a
 * linked identity, or (principals: auto) one provisioned at first sight.
 *
 * Verified tokens are cached by their SHA-256 until they expire or `cacheTtlMs` passes; every
 * auth change (unlink, disable, …) clears the cache, as for our own tokens.
 */
export class ExternalVerifier {
  readonly providers: readonly IdpProvider[]
  private readonly byIssuer = new Map<string, IdpProvider>()
  private readonly keys = new Map<string, ProviderKeys>()
  private readonly introspector: { provider: IdpProvider, client: Introspector } | undefined
  private readonly cache = new Map<string, CacheEntry>()
  private readonly refused: ExpiringSet
  private readonly inFlight = new Map<string, Promise<ExternalResult>>()
  private generation = 0
  private readonly cacheTtlMs: number
  private readonly maxCacheEntries: number
  private readonly database: Database
  private readonly log: FastifyBaseLogger

  constructor (database: Database, providers: readonly IdpProvider[], log: FastifyBaseLogger, options: ExternalVerifierOptions = {}) {
    this.database = database
    this.log = log
    this.providers = providers
    this.cacheTtlMs = options.cacheTtlMs ?? 30_000
    this.maxCacheEntries = options.maxCacheEntries ?? 10_000
    this.refused = new ExpiringSet(options.negativeTtlMs ?? 30_000, this.maxCacheEntries)
    let introspector: ExternalVerifier['introspector']
    for (const provider of providers) {
      this.byIssuer.set(provider.issuer, provider)
      if (provider.introspection !== undefined) {
        introspector = { provider, client: new Introspector(provider) }
      } else {
        this.keys.set(provider.id, new ProviderKeys(provider, options.keys))
      }
    }
    this.introspector = introspector
  }

  get configured (): boolean {
    return this.providers.length > 0
  }

  /** Whether opaque tokens (not ours, not JWTs) can be checked here. */
  get introspects (): boolean {
    return this.introspector !== undefined
  }

  /** Whether some provider's tokens arrive in Cloudflare Access's header. */
  get readsAccessHeader (): boolean {
    return this.providers.some((p) => p.tokenHeader === 'cf-access-jwt-assertion')
  }

  /** Fetches every provider's keys once (warm start); never fails: a provider down is retried in the background. */
  async start (): Promise<void> {
    await Promise.all([...this.keys.values()].map(async (keys) => { await keys.start() }))
    for (const provider of this.providers) {
      const status = this.keys.get(provider.id)?.status()
      if (status !== undefined && !status.usable) {
        this.log.warn({ provider: provider.id, error: status.error }, `identity provider "${provider.id}": no usable keys yet (${status.error ?? 'unknown error'}); its tokens get 503 until they are fetched`)
      }
    }
  }

  stop (): void {
    for (const keys of this.keys.values()) keys.stop()
  }

  status (): ProviderStatus[] {
    return this.providers.map((p) => ({
      id: p.id,
      issuer: p.issuer,
      keys: this.keys.get(p.id)?.status() ?? null,
      introspection: p.introspection !== undefined
    }))
  }

  invalidate (): void {
    this.generation++
    this.cache.clear()
    this.refused.clear()
    this.inFlight.clear()
    this.introspector?.client.clear()
  }

  /** Cached contexts (the metrics' credential count). */
  get cacheSize (): number {
    return this.cache.size
  }

  /**
   * The caller behind a token from `source` (the Authorization header or Cloudflare Access's),
   * a refusal, or UNAVAILABLE. Only providers reading that header are considered.
   */
  async resolve (token: string, source: TokenHeader): Promise<ExternalResult> {
    if (token.length > MAX_TOKEN_BYTES) return { status: 'refused', provider: null, reason: 'the token is larger than 16 KiB' }
    // The header is part of the key: a token accepted from Cloudflare Access's header is not thereby good in Authorization.
    const key = `${source}:${hashSecret(token).toString('base64')}`
    const now = Date.now()
    const cached = this.cache.get(key)
    if (cached !== undefined && cached.until > now) return { status: 'ok', context: cached.context }
    if (this.refused.has(key, now)) return { status: 'refused', provider: null, reason: 'refused lately' }
    let pending = this.inFlight.get(key)
    if (pending === undefined) {
      pending = this.settle(key, this.verify(token, source))
      this.inFlight.set(key, pending)
    }
    return await pending
  }

  private async settle (key: string, verification: Promise<ExternalResult>): Promise<ExternalResult> {
    const generation = this.generation
    try {
      const result = await verification
      if (generation === this.generation) {
        if (result.status === 'ok') {
          if (this.cache.size >= this.maxCacheEntries) {
            const oldest = this.cache.keys().next().value
            if (oldest !== undefined) this.cache.delete(oldest)
          }
          const expires = result.context.expiresAt?.getTime() ?? Infinity
          this.cache.set(key, { context: result.context, until: Math.min(Date.now() + this.cacheTtlMs, expires) })
        } else if (result.status === 'refused') {
          this.refused.add(key)
        }
      }
      return result
    } finally {
      if (generation === this.generation) this.inFlight.delete(key)
    }
  }

  private async verify (token: string, source: TokenHeader): Promise<ExternalResult> {
    let provider: IdpProvider | undefined
    if (looksLikeJwt(token)) {
      const issuer = peekIssuer(token)
      provider = issuer === undefined ? undefined : this.byIssuer.get(issuer)
      if (provider === undefined || provider.tokenHeader !== source || provider.introspection !== undefined) {
        return { status: 'refused', provider: null, reason: 'no configured provider has this issuer' }
      }
    } else {
      provider = this.introspector?.provider
      if (provider === undefined || source !== provider.tokenHeader) return { status: 'refused', provider: null, reason: 'not a JWT, and no provider introspects tokens' }
    }
    try {
      const claims = provider.introspection !== undefined
        ? await (this.introspector as NonNullable<ExternalVerifier['introspector']>).client.introspect(token)
        : await verifyJwtAccessToken(token, provider, this.keys.get(provider.id) as ProviderKeys)
      const identity = identityFromClaims(claims as Record<string, unknown>, provider)
      return await this.principalOf(provider, identity)
    } catch (err) {
      if (!(err instanceof ExternalTokenError)) throw err
      if (err.unavailable) return { status: UNAVAILABLE, provider: provider.id }
      return { status: 'refused', provider: provider.id, reason: err.message }
    }
  }

  private async principalOf (provider: IdpProvider, identity: ExternalIdentity): Promise<ExternalResult> {
    const db = this.database.db
    let principal: IdentityPrincipal | undefined = await principalForIdentity(db, provider.id, identity.subject)
    if (principal === undefined && provider.principals === 'auto') {
      principal = await provisionIdentity(db, { provider: provider.id, subject: identity.subject, name: identity.name, scopes: provider.autoScopes })
      this.log.info({ provider: provider.id, principal: principal.principalName }, 'provisioned a principal for a new external identity')
    }
    if (principal === undefined) {
      return {
        status: 'refused',
        provider: provider.id,
        reason: `subject "${identity.subject}" is not linked to a principal (bus-mcp identity link --provider ${provider.id} --subject '${identity.subject}' --principal NAME)`
      }
    }
    if (principal.disabled) return { status: 'refused', provider: provider.id, reason: `principal "${principal.principalName}" is disabled` }
    return {
      status: 'ok',
      context: {
        kind: 'external',
        provider: provider.id,
        tokenId: principal.identityId,
        principalId: principal.principalId,
        principalName: principal.principalName,
        clientId: identity.clientId,
        scopes: effectiveScopes(tokenScopes(provider, identity), principal.principalScopes),
        expiresAt: identity.expiresAt
      }
    }
  }
}
