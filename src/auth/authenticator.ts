import { sql } from 'drizzle-orm'
import { rowsOf, type Database, type Executor } from '../db/client.ts'
import { BatchLane, ExpiringSet, type BatchLaneOptions } from '../lib/failure-limiter.ts'
import { liveIdentities } from '../idp/identities.ts'
import { hashSecret, kindOfSecret, TOKEN_PREFIX } from '../lib/secrets.ts'
import { AUTH_NOTIFY_CHANNEL, onLocalAuthChange } from './invalidation.ts'
import { effectiveScopes } from './scopes.ts'
import type { AuthContext } from './types.ts'

export interface AuthenticatorOptions {
  /** How long a resolved credential is reused without asking the database. */
  cacheTtlMs?: number
  maxCacheEntries?: number
  /** `last_used_at` is written in batches this often, not on every request. */
  touchIntervalMs?: number
  /** How long a refused credential is answered from memory (every auth change clears them all). */
  negativeTtlMs?: number
  maxNegativeEntries?: number
  /** The lane for lookups beyond a client's budget (docs/decisions/0023-bearer-lookup-budget.md). */
  slowLane?: Partial<BatchLaneOptions>
}

/**
 * What one client (an address) may spend on database lookups of tokens this replica knows
 * nothing about: `take` admits a lookup (false when the client has failed too often lately),
 * `release` ends it, whatever it found. The caller counts the client's failures.
 */
export interface LookupBudget {
  take: (client: string) => boolean
  release: (client: string) => void
}

/** `resolve` could not look the token up now: the slow lane is full. Answer 429. */
export const THROTTLED = 'throttled'

/** What follows the prefix of every secret this service issues: 32 random bytes, base64url. */
const ISSUED_SECRET = /^[A-Za-z0-9_-]{43}$/

/** How long a credential that was valid here lets its holder skip the lookup budget. */
const KNOWN_GOOD_TTL_MS = 24 * 3600_000

type LookupKind = 'api' | 'access'
interface Lookup { hash: Buffer, kind: LookupKind }

export interface AuthenticatorSettings extends AuthenticatorOptions {
  /** PUBLIC_URL/mcp: OAuth access tokens for any other resource are refused (RFC 8707). */
  resourceUrl: string
}

interface CacheEntry { context: AuthContext, until: number }

type TokenRow = {
  id: string | number,
  scopes: string[],
  expires_at: Date | string | null,
  revoked_at: Date | string | null,
  principal_id: string | number,
  principal_name: string,
  principal_scopes: string[],
  disabled_at: Date | string | null,
  client_id?: string | null
}

type AccessTokenRow = TokenRow & { resource: string, grant_revoked_at: Date | string | null }

/**
 * Resolves bearer secrets to an AuthContext. The hot path asks the database once per credential
 * per `cacheTtlMs`; revocations and disables NOTIFY every replica, which drops its cache at once,
 * so the TTL only bounds the case of a lost notification (the listener reconnecting also clears).
 *
 * Refused credentials are remembered too, for `negativeTtlMs` (and also dropped on every auth
 * change, since enabling a principal makes its tokens valid again), so a client retrying a
 * revoked token costs one lookup, not one per request. Concurrent requests with the same
 * credential share one lookup. Given a `LookupBudget`, a token this replica knows nothing about
 * is looked up at once only if the budget admits it; otherwise it waits for the slow lane, which
 * looks tokens up in batches at a fixed rate (docs/decisions/0023-bearer-lookup-budget.md).
 */
export class Authenticator {
  private readonly cache = new Map<string, CacheEntry>()
  /** Hashes of credentials the database refused lately: answered without a lookup. */
  private readonly refused: ExpiringSet
  /** Hashes of credentials that were valid here lately: their lookups are never budgeted. */
  private readonly known: ExpiringSet
  /** Lookups under way, shared by concurrent requests with the same credential. */
  private readonly inFlight = new Map<string, Promise<AuthContext | null>>()
  private readonly lane: BatchLane<Lookup, AuthContext | null>
  /** Database queries made to resolve bearer tokens, and the token hashes they asked about. */
  readonly lookups = { queries: 0, hashes: 0, batches: 0 }
  /** Bumped on every invalidation: a lookup that raced one must not repopulate the cache. */
  private generation = 0
  private readonly touched = new Set<number>()
  private readonly invalidationListeners = new Set<() => void>()
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
    this.refused = new ExpiringSet(options.negativeTtlMs ?? 30_000, options.maxNegativeEntries ?? 10_000)
    this.known = new ExpiringSet(KNOWN_GOOD_TTL_MS, this.maxCacheEntries)
    this.lane = new BatchLane(async (items) => await this.lookupMany(items), {
      intervalMs: 100, batchSize: 100, queueLimit: 1000, ...options.slowLane
    })
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
    this.lane.close()
    this.offLocalChange?.()
    this.offLocalChange = undefined
    await this.unlisten?.()
    this.unlisten = undefined
    await this.flushTouches().catch(() => {})
  }

  get cacheSize (): number {
    return this.cache.size
  }

  /** Refused credentials remembered (the negative cache). */
  get refusedSize (): number {
    return this.refused.size
  }

  invalidate (): void {
    this.generation++
    this.cache.clear()
    this.refused.clear()
    this.inFlight.clear()
    for (const listener of this.invalidationListeners) listener()
  }

  /** Runs `listener` after every auth change, made here or on another replica (and after a listener reconnect). */
  onInvalidate (listener: () => void): () => void {
    this.invalidationListeners.add(listener)
    return () => { this.invalidationListeners.delete(listener) }
  }

  /**
   * Of these credentials (held by long-lived streams), the ones still live now, with their
   * scopes as they are now: not revoked or expired, the principal not disabled, the grant of an
   * access token not revoked; of an external token, its identity still linked (its expiry ends
   * the stream by itself). Keyed by `credentialKey`. One query per kind.
   */
  async liveCredentials (contexts: readonly AuthContext[]): Promise<Map<string, AuthContext['scopes']>> {
    const ids = (kind: AuthContext['kind']): string => `{${[...new Set(contexts.filter((c) => c.kind === kind).map((c) => c.tokenId))].join(',')}}`
    const live = new Map<string, AuthContext['scopes']>()
    const collect = (kind: AuthContext['kind'], rows: Array<{ id: string | number, scopes: string[], principal_scopes: string[] }>): void => {
      for (const row of rows) live.set(`${kind}:${Number(row.id)}`, effectiveScopes(row.scopes, row.principal_scopes))
    }
    if (contexts.some((c) => c.kind === 'api_token')) {
      collect('api_token', rowsOf(await this.database.db.execute(sql`
        select t.id, t.scopes, p.scopes as principal_scopes
        from api_tokens t join principals p on p.id = t.principal_id
        where t.id in (select unnest(${ids('api_token')}::bigint[]))
          and t.revoked_at is null and (t.expires_at is null or t.expires_at > now()) and p.disabled_at is null`)))
    }
    if (contexts.some((c) => c.kind === 'oauth')) {
      collect('oauth', rowsOf(await this.database.db.execute(sql`
        select t.id, t.scopes, p.scopes as principal_scopes
        from oauth_tokens t
          join oauth_grants g on g.id = t.grant_id
          join principals p on p.id = g.principal_id
        where t.id in (select unnest(${ids('oauth')}::bigint[])) and t.kind = 'access'
          and t.revoked_at is null and t.expires_at > now() and g.revoked_at is null and p.disabled_at is null`)))
    }
    if (contexts.some((c) => c.kind === 'external')) {
      const ids = [...new Set(contexts.filter((c) => c.kind === 'external').map((c) => c.tokenId))]
      for (const [id, scopes] of await liveIdentities(this.database.db, ids)) live.set(`external:${id}`, scopes)
    }
    return live
  }

  /** The caller behind a bearer secret, or null if it is unknown, expired, revoked or disabled. */
  async authenticate (secret: string): Promise<AuthContext | null> {
    return await this.resolve(secret) as AuthContext | null
  }

  /**
   * The caller behind a bearer secret, null if it is unknown, expired, revoked or disabled, or
   * THROTTLED. A token this replica knows nothing about (not cached, not refused lately, not
   * valid here lately) is looked up at once if `budget` admits it for `client`; otherwise it
   * waits for the slow lane, and only when that is full the answer is THROTTLED. Without a
   * budget every such token is looked up at once.
   */
  async resolve (secret: string, budget?: LookupBudget, client = ''): Promise<AuthContext | null | typeof THROTTLED> {
    const kind = kindOfSecret(secret)
    // API tokens and OAuth access tokens are bearer credentials; refresh tokens, codes and
    // client secrets presented as bearers are refused without a lookup, and so is anything with
    // our prefix that we cannot have issued. Unprefixed secrets are API tokens issued before
    // prefixes existed (of no known shape).
    if (kind !== undefined && kind !== 'apiToken' && kind !== 'accessToken') return null
    if (kind !== undefined && !ISSUED_SECRET.test(secret.slice(TOKEN_PREFIX[kind].length))) return null

    const key = hashSecret(secret)
    const cacheKey = key.toString('base64')
    const now = Date.now()
    const cached = this.cache.get(cacheKey)
    if (cached !== undefined && cached.until > now) {
      return this.usable(cached.context, now)
    }
    if (this.refused.has(cacheKey, now)) return null

    let pending = this.inFlight.get(cacheKey)
    if (pending === undefined) {
      const lookup: Lookup = { hash: key, kind: kind === 'accessToken' ? 'access' : 'api' }
      let started: Promise<AuthContext | null>
      let release: (() => void) | undefined
      if (budget === undefined || this.known.has(cacheKey, now)) {
        started = this.lookupOne(lookup)
      } else if (budget.take(client)) {
        started = this.lookupOne(lookup)
        release = () => { budget.release(client) }
      } else {
        const queued = this.lane.submit(lookup)
        if (queued === undefined) return THROTTLED
        started = queued
      }
      pending = this.settle(cacheKey, started, release)
      this.inFlight.set(cacheKey, pending)
    }
    const context = await pending
    return context === null ? null : this.usable(context, Date.now())
  }

  /** Records what a lookup found (unless an invalidation raced it) and ends its budget admission. */
  private async settle (cacheKey: string, lookup: Promise<AuthContext | null>, release: (() => void) | undefined): Promise<AuthContext | null> {
    const generation = this.generation
    try {
      const context = await lookup
      if (generation === this.generation) {
        if (context === null) {
          this.refused.add(cacheKey)
          this.known.delete(cacheKey)
        } else {
          if (this.cache.size >= this.maxCacheEntries) {
            const oldest = this.cache.keys().next().value
            if (oldest !== undefined) this.cache.delete(oldest)
          }
          const now = Date.now()
          this.cache.set(cacheKey, { context, until: Math.min(now + this.cacheTtlMs, context.expiresAt?.getTime() ?? Infinity) })
          this.known.add(cacheKey, now)
        }
      }
      return context
    } finally {
      // An invalidation cleared the map; a newer lookup of this key may be in it now.
      if (generation === this.generation) this.inFlight.delete(cacheKey)
      release?.()
    }
  }

  private usable (context: AuthContext, now: number): AuthContext | null {
    if (context.expiresAt !== null && context.expiresAt.getTime() <= now) return null
    if (context.kind === 'api_token') this.touched.add(context.tokenId)
    return context
  }

  private async lookupOne ({ hash, kind }: Lookup): Promise<AuthContext | null> {
    this.lookups.queries++
    this.lookups.hashes++
    return kind === 'access' ? await this.lookupAccessToken(hash) : await this.lookupApiToken(hash)
  }

  private async lookupApiToken (hash: Buffer): Promise<AuthContext | null> {
    return await lookupApiToken(this.database.db, hash)
  }

  /** The token, its grant and its principal must all be live, and the audience must be this server. */
  private async lookupAccessToken (hash: Buffer): Promise<AuthContext | null> {
    const rows = rowsOf<AccessTokenRow>(await this.database.db.execute(sql`
      select t.id, t.scopes, t.expires_at, t.revoked_at, t.resource, g.revoked_at as grant_revoked_at,
        p.id as principal_id, p.name as principal_name, p.scopes as principal_scopes, p.disabled_at,
        c.client_id
      from oauth_tokens t
        join oauth_grants g on g.id = t.grant_id
        join principals p on p.id = g.principal_id
        join oauth_clients c on c.id = g.client_id
      where t.token_hash = ${hash} and t.kind = 'access'`))
    return this.accessContext(rows[0])
  }

  private accessContext (row: AccessTokenRow | undefined): AuthContext | null {
    if (row === undefined || row.grant_revoked_at !== null || row.resource !== this.resourceUrl) return null
    return toContext(row, 'oauth')
  }

  /**
   * The slow lane's batch: the same lookups as above for many hashes at once, one query per
   * kind. Hashes travel as one text parameter of hex digests (the same on both drivers).
   */
  private async lookupMany (items: Lookup[]): Promise<Array<AuthContext | null>> {
    const hexes = (kind: LookupKind): string[] => items.filter((i) => i.kind === kind).map((i) => i.hash.toString('hex'))
    const apiHashes = hexes('api')
    const accessHashes = hexes('access')
    this.lookups.batches++
    this.lookups.queries += (apiHashes.length > 0 ? 1 : 0) + (accessHashes.length > 0 ? 1 : 0)
    this.lookups.hashes += items.length
    const hashList = (hexList: string[]): string => `{${hexList.join(',')}}`
    const api = async (): Promise<Array<TokenRow & { hash: string }>> => apiHashes.length === 0
      ? []
      : rowsOf(await this.database.db.execute(sql`
      select encode(t.token_hash, 'hex') as hash, t.id, t.scopes, t.expires_at, t.revoked_at,
        p.id as principal_id, p.name as principal_name, p.scopes as principal_scopes, p.disabled_at
      from api_tokens t join principals p on p.id = t.principal_id
      where t.token_hash = any(array(select decode(h, 'hex') from unnest(${hashList(apiHashes)}::text[]) as h))`))
    const access = async (): Promise<Array<AccessTokenRow & { hash: string }>> => accessHashes.length === 0
      ? []
      : rowsOf(await this.database.db.execute(sql`
      select encode(t.token_hash, 'hex') as hash, t.id, t.scopes, t.expires_at, t.revoked_at, t.resource, g.revoked_at as grant_revoked_at,
        p.id as principal_id, p.name as principal_name, p.scopes as principal_scopes, p.disabled_at,
        c.client_id
      from oauth_tokens t
        join oauth_grants g on g.id = t.grant_id
        join principals p on p.id = g.principal_id
        join oauth_clients c on c.id = g.client_id
      where t.token_hash = any(array(select decode(h, 'hex') from unnest(${hashList(accessHashes)}::text[]) as h)) and t.kind = 'access'`))
    const [apiRows, accessRows] = await Promise.all([api(), access()])
    const apiByHash = new Map(apiRows.map((r) => [r.hash, r]))
    const accessByHash = new Map(accessRows.map((r) => [r.hash, r]))
    return items.map(({ hash, kind }) => kind === 'access'
      ? this.accessContext(accessByHash.get(hash.toString('hex')))
      : toContext(apiByHash.get(hash.toString('hex')), 'api_token'))
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

/**
 * The caller behind an API token's hash, or null if it is unknown, revoked, expired or its
 * principal is disabled. The one API-token lookup: bearer authentication and the consent page's
 * "paste an API token" both use it.
 */
export async function lookupApiToken (db: Executor, hash: Buffer): Promise<AuthContext | null> {
  const rows = rowsOf<TokenRow>(await db.execute(sql`
    select t.id, t.scopes, t.expires_at, t.revoked_at,
      p.id as principal_id, p.name as principal_name, p.scopes as principal_scopes, p.disabled_at
    from api_tokens t join principals p on p.id = t.principal_id
    where t.token_hash = ${hash}`))
  return toContext(rows[0], 'api_token')
}

function toContext (row: TokenRow | undefined, kind: AuthContext['kind']): AuthContext | null {
  if (row === undefined || row.revoked_at !== null || row.disabled_at !== null) return null
  const expiresAt = row.expires_at === null ? null : new Date(row.expires_at)
  if (expiresAt !== null && expiresAt.getTime() <= Date.now()) return null
  return {
    kind,
    provider: null,
    tokenId: Number(row.id),
    principalId: Number(row.principal_id),
    principalName: row.principal_name,
    clientId: row.client_id ?? null,
    scopes: effectiveScopes(row.scopes, row.principal_scopes),
    expiresAt
  }
}

/** Identifies a credential across kinds (API token and OAuth access token ids overlap). */
export function credentialKey (context: Pick<AuthContext, 'kind' | 'tokenId'>): string {
  return `${context.kind}:${context.tokenId}`
}
