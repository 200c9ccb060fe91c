import { sql } from 'drizzle-orm'
import { rowsOf, type Database } from '../db/client.ts'
import { hashSecret, kindOfSecret } from '../lib/secrets.ts'
import { AUTH_NOTIFY_CHANNEL, onLocalAuthChange } from '../principals/store.ts'
import { effectiveScopes } from './scopes.ts'
import type { AuthContext } from './types.ts'

export interface AuthenticatorOptions {
  /** How long a resolved credential is reused without asking the database. */
  cacheTtlMs?: number
  maxCacheEntries?: number
  /** `last_used_at` is written in batches this often, not on every request. */
  touchIntervalMs?: number
}

export interface AuthenticatorSettings extends AuthenticatorOptions {
  /** PUBLIC_URL/mcp: OAuth access tokens for any other resource are refused (RFC 8707). */
  resourceUrl: string
}

interface CacheEntry { context: AuthContext, until: number }

type TokenRow = {
  id: string | number, scopes: string[], expires_at: Date | string | null, revoked_at: Date | string | null,
  principal_id: string | number, principal_name: string, principal_scopes: string[], disabled_at: Date | string | null,
  client_id?: string | null
}

/**
 * Resolves bearer secrets to an AuthContext. The hot path asks the database once per credential
 * per `cacheTtlMs`; revocations and disables NOTIFY every replica, which drops its cache at once,
 * so the TTL only bounds the case of a lost notification (the listener reconnecting also clears).
 */
export class Authenticator {
  private readonly cache = new Map<string, CacheEntry>()
  /** Bumped on every invalidation: a lookup that raced one must not repopulate the cache. */
  private generation = 0
  private readonly touched = new Set<number>()
  private touchTimer: NodeJS.Timeout | undefined
  private unlisten: (() => Promise<void>) | undefined
  private offLocalChange: (() => void) | undefined
  private readonly cacheTtlMs: number
  private readonly maxCacheEntries: number
  private readonly touchIntervalMs: number

  private readonly resourceUrl: string

  private readonly database: Database

  constructor (database: Database, options: AuthenticatorSettings) {
    this.database = database
    this.resourceUrl = options.resourceUrl
    this.cacheTtlMs = options.cacheTtlMs ?? 30_000
    this.maxCacheEntries = options.maxCacheEntries ?? 10_000
    this.touchIntervalMs = options.touchIntervalMs ?? 10_000
  }

  async start (): Promise<void> {
    this.unlisten = await this.database.listen(AUTH_NOTIFY_CHANNEL, () => { this.invalidate() }, () => { this.invalidate() })
    // Revocations made by this process take effect here before their response is sent.
    this.offLocalChange = onLocalAuthChange(() => { this.invalidate() })
    this.touchTimer = setInterval(() => { void this.flushTouches().catch(() => {}) }, this.touchIntervalMs)
    this.touchTimer.unref()
  }

  async stop (): Promise<void> {
    clearInterval(this.touchTimer)
    this.offLocalChange?.()
    this.offLocalChange = undefined
    await this.unlisten?.()
    this.unlisten = undefined
    await this.flushTouches().catch(() => {})
  }

  get cacheSize (): number {
    return this.cache.size
  }

  invalidate (): void {
    this.generation++
    this.cache.clear()
  }

  /** The caller behind a bearer secret, or null if it is unknown, expired, revoked or disabled. */
  async authenticate (secret: string): Promise<AuthContext | null> {
    const kind = kindOfSecret(secret)
    // API tokens and OAuth access tokens are bearer credentials; refresh tokens, codes and
    // client secrets presented as bearers are refused without a lookup. Unprefixed secrets
    // are API tokens issued before prefixes existed.
    if (kind !== undefined && kind !== 'apiToken' && kind !== 'accessToken') return null

    const key = hashSecret(secret)
    const cacheKey = key.toString('base64')
    const now = Date.now()
    const cached = this.cache.get(cacheKey)
    if (cached !== undefined && cached.until > now) {
      return this.usable(cached.context, now)
    }

    const generation = this.generation
    const context = kind === 'accessToken' ? await this.lookupAccessToken(key) : await this.lookupApiToken(key)
    if (context === null) return null
    if (generation === this.generation) {
      if (this.cache.size >= this.maxCacheEntries) {
        const oldest = this.cache.keys().next().value
        if (oldest !== undefined) this.cache.delete(oldest)
      }
      const until = Math.min(now + this.cacheTtlMs, context.expiresAt?.getTime() ?? Infinity)
      this.cache.set(cacheKey, { context, until })
    }
    return this.usable(context, now)
  }

  /** The caller behind a secret if this replica has it cached and it is still usable; never asks the database. */
  fromCache (secret: string): AuthContext | null {
    const cached = this.cache.get(hashSecret(secret).toString('base64'))
    const now = Date.now()
    if (cached === undefined || cached.until <= now) return null
    return this.usable(cached.context, now)
  }

  private usable (context: AuthContext, now: number): AuthContext | null {
    if (context.expiresAt !== null && context.expiresAt.getTime() <= now) return null
    if (context.kind === 'api_token') this.touched.add(context.tokenId)
    return context
  }

  private async lookupApiToken (hash: Buffer): Promise<AuthContext | null> {
    const rows = rowsOf<TokenRow>(await this.database.db.execute(sql`
      select t.id, t.scopes, t.expires_at, t.revoked_at,
        p.id as principal_id, p.name as principal_name, p.scopes as principal_scopes, p.disabled_at
      from api_tokens t join principals p on p.id = t.principal_id
      where t.token_hash = ${hash}`))
    return toContext(rows[0], 'api_token')
  }

  /** The token, its grant and its principal must all be live, and the audience must be this server. */
  private async lookupAccessToken (hash: Buffer): Promise<AuthContext | null> {
    const rows = rowsOf<TokenRow & { resource: string, grant_revoked_at: Date | string | null }>(await this.database.db.execute(sql`
      select t.id, t.scopes, t.expires_at, t.revoked_at, t.resource, g.revoked_at as grant_revoked_at,
        p.id as principal_id, p.name as principal_name, p.scopes as principal_scopes, p.disabled_at,
        c.client_id
      from oauth_tokens t
        join oauth_grants g on g.id = t.grant_id
        join principals p on p.id = g.principal_id
        join oauth_clients c on c.id = g.client_id
      where t.token_hash = ${hash} and t.kind = 'access'`))
    const row = rows[0]
    if (row === undefined || row.grant_revoked_at !== null || row.resource !== this.resourceUrl) return null
    return toContext(row, 'oauth')
  }

  async flushTouches (): Promise<void> {
    if (this.touched.size === 0) return
    const ids = [...this.touched]
    this.touched.clear()
    await this.database.db.execute(sql`
      update api_tokens set last_used_at = now()
      where id in (select unnest(${`{${ids.join(',')}}`}::bigint[]))`)
  }
}

function toContext (row: TokenRow | undefined, kind: AuthContext['kind']): AuthContext | null {
  if (row === undefined || row.revoked_at !== null || row.disabled_at !== null) return null
  const expiresAt = row.expires_at === null ? null : new Date(row.expires_at)
  if (expiresAt !== null && expiresAt.getTime() <= Date.now()) return null
  return {
    kind,
    tokenId: Number(row.id),
    principalId: Number(row.principal_id),
    principalName: row.principal_name,
    clientId: row.client_id ?? null,
    scopes: effectiveScopes(row.scopes, row.principal_scopes),
    expiresAt
  }
}
