/**
 * A provider's signing keys: from the configured `jwks_uri`, or from the issuer's discovery
 * document. Keys come only from there, never from a token (`jku`, `x5u`, `jwk` and `x5c` headers are
 * ignored; only `kid` and `alg` select a key).
 *
 * The last good key set is kept for ever: a refresh that fails (provider down, bad answer, a set
 * with no usable key) changes nothing but `status().error`. After `start()` the set is refreshed in
 * the background every `refreshIntervalMs`, and every `retryIntervalMs` while no set has been
 * fetched yet. A token whose `kid` is unknown triggers one refetch, at most once per
 * `unknownKidCooldownMs`; concurrent refetches share one request.
 */
import type { CryptoKey, JWK, JWSHeaderParameters } from 'jose'
import { importJWK } from 'jose'
import { ExternalTokenError } from './errors.ts'
import type { FetchLimits } from './fetch.ts'
import { checkFetchUrl, fetchJson } from './fetch.ts'
import type { IdpProvider } from './types.ts'

export interface KeyResolver {
  getKey (header: JWSHeaderParameters): Promise<CryptoKey>
}

export interface KeyStatus {
  /** A key set with at least one usable key is held. */
  usable: boolean
  /** Usable keys in the held set. */
  keys: number
  /** When the held set was fetched. */
  fetchedAt: Date | null
  /** Why the last fetch failed; null when it worked (or none was tried yet). */
  error: string | null
  /** The configured or discovered JWKS URL; null while discovery has not worked. */
  jwksUri: string | null
}

export interface KeyStoreOptions extends FetchLimits {
  /** Background refresh; default 10 minutes. */
  refreshIntervalMs?: number
  /** Background retry while no key set is held; default 30 s. */
  retryIntervalMs?: number
  /** Least time between two refetches caused by tokens (unknown kid, no keys); default 30 s. */
  unknownKidCooldownMs?: number
  /** Milliseconds since the epoch (tests). */
  now?: () => number
}

export const DEFAULT_REFRESH_INTERVAL_MS = 10 * 60_000
export const DEFAULT_RETRY_INTERVAL_MS = 30_000
export const DEFAULT_UNKNOWN_KID_COOLDOWN_MS = 30_000

type KeysProvider = Pick<IdpProvider, 'id' | 'issuer' | 'jwksUri' | 'algorithms'>

/** One usable key of the set, imported once per algorithm it may verify. */
interface UsableKey {
  kid: string | undefined
  /** algorithm → the key imported for it */
  byAlg: Map<string, CryptoKey>
}

interface KeySet { keys: UsableKey[], fetchedAt: Date }

/**
 * The discovery document of `issuer`: `issuer` (without a trailing slash) +
 * `/.well-known/openid-configuration`, then `/.well-known/oauth-authorization-server`. The
 * document's `issuer` must equal `issuer` byte for byte.
 */
export async function discover (issuer: string, limits?: FetchLimits): Promise<Record<string, unknown>> {
  const base = issuer.endsWith('/') ? issuer.slice(0, -1) : issuer
  const problems: string[] = []
  for (const suffix of ['/.well-known/openid-configuration', '/.well-known/oauth-authorization-server']) {
    const url = base + suffix
    try {
      const document = await fetchJson(url, limits, { headers: { accept: 'application/json' } })
      if (document.issuer !== issuer) {
        throw new Error(`${url}: its issuer ${JSON.stringify(document.issuer)} is not the configured issuer ${JSON.stringify(issuer)} (they must be equal byte for byte)`)
      }
      return document
    } catch (err) {
      problems.push((err as Error).message)
    }
  }
  throw new Error(`no discovery document for ${issuer}: ${problems.join('; ')}`)
}

/**
 * Only the public members (string-valued), so that a published private key (or anything odd) is
 * never used. A member that is missing makes the import below fail, and the key is skipped.
 */
function publicPart (jwk: Record<string, unknown>): JWK | undefined {
  const str = (name: string): string | undefined => typeof jwk[name] === 'string' ? jwk[name] : undefined
  const kty = jwk.kty
  if (kty === 'RSA') return { kty, n: str('n'), e: str('e') }
  if (kty === 'EC') return { kty, crv: str('crv'), x: str('x'), y: str('y') }
  if (kty === 'OKP') return { kty, crv: str('crv'), x: str('x') }
  return undefined // oct (symmetric) and unknown key types are never used
}

/**
 * The usable keys of a JWKS document: signature keys of a permitted algorithm. Whether a key fits
 * an algorithm is jose's import: it refuses a key type the algorithm does not use (RSA for RS* and
 * PS*, EC for ES*, OKP for EdDSA) and WebCrypto refuses a curve other than the algorithm's (P-256,
 * P-384, P-521, Ed25519); the tests pin each of these.
 */
async function usableKeys (document: Record<string, unknown>, algorithms: readonly string[]): Promise<UsableKey[]> {
  if (!Array.isArray(document.keys)) throw new Error('the key set has no "keys" array')
  const result: UsableKey[] = []
  for (const entry of document.keys as unknown[]) {
    // Object(): null and primitives become objects without key members, skipped like any such entry.
    const raw = Object(entry) as Record<string, unknown>
    if (raw.use !== undefined && raw.use !== 'sig') continue
    if (raw.key_ops !== undefined && !(Array.isArray(raw.key_ops) && raw.key_ops.includes('verify'))) continue
    if (raw.kid !== undefined && typeof raw.kid !== 'string') continue
    const jwk = publicPart(raw)
    if (jwk === undefined) continue
    // A key's own alg (an alg that is not a string is no permitted algorithm: the key is skipped).
    const candidates = raw.alg !== undefined ? [raw.alg as string] : algorithms
    const byAlg = new Map<string, CryptoKey>()
    for (const alg of candidates) {
      if (!algorithms.includes(alg)) continue
      try {
        // A public JWK imports as a CryptoKey (only an oct key, never passed here, gives bytes).
        byAlg.set(alg, await importJWK(jwk, alg) as CryptoKey)
      } catch {
        // A key the runtime cannot import (a bad curve point, an unsupported curve): skipped.
      }
    }
    if (byAlg.size > 0) result.push({ kid: raw.kid as string | undefined, byAlg })
  }
  return result
}

export class ProviderKeys implements KeyResolver {
  readonly #provider: KeysProvider
  readonly #options: KeyStoreOptions
  readonly #now: () => number
  #set: KeySet | undefined
  #error: string | null = null
  #discoveredJwksUri: string | undefined
  #inflight: Promise<void> | undefined
  /** When a token last caused a refetch (ms); -Infinity: never. */
  #lastOnDemand = -Infinity
  #timer: NodeJS.Timeout | undefined
  #started = false

  constructor (provider: KeysProvider, options: KeyStoreOptions = {}) {
    this.#provider = provider
    this.#options = options
    this.#now = options.now ?? Date.now
  }

  /** Warms the cache (first fetch) and starts the background refresh. Never rejects. */
  async start (): Promise<void> {
    if (this.#started) return
    this.#started = true
    await this.refresh()
  }

  stop (): void {
    this.#started = false
    clearTimeout(this.#timer)
    this.#timer = undefined
  }

  status (): KeyStatus {
    const keys = this.#set?.keys.length ?? 0
    return {
      usable: keys > 0,
      keys,
      fetchedAt: this.#set?.fetchedAt ?? null,
      error: this.#error,
      jwksUri: this.#provider.jwksUri ?? this.#discoveredJwksUri ?? null
    }
  }

  /**
   * Fetches the key set now (sharing a fetch already under way). Never rejects: a failure is
   * recorded in `status().error` and the last good set stays.
   */
  refresh (): Promise<void> {
    if (this.#inflight === undefined) {
      this.#inflight = this.#fetch().finally(() => {
        this.#inflight = undefined
        this.#schedule()
      })
    }
    return this.#inflight
  }

  async getKey (header: JWSHeaderParameters): Promise<CryptoKey> {
    const id = this.#provider.id
    const alg = header.alg
    if (typeof alg !== 'string' || !this.#provider.algorithms.includes(alg)) {
      throw new ExternalTokenError('bad_header', `provider ${id}: the token's algorithm ${JSON.stringify(alg)} is not accepted`)
    }
    const kid = header.kid
    if (kid !== undefined && typeof kid !== 'string') {
      throw new ExternalTokenError('bad_header', `provider ${id}: the token's kid is not a string`)
    }
    // A held set is never empty (#fetch keeps the last good one instead).
    if (this.#set === undefined) await this.#onDemand()
    const set = this.#set
    if (set === undefined) {
      throw new ExternalTokenError('keys_unavailable', `provider ${id}: no signing keys yet${this.#error !== null ? ` (${this.#error})` : ''}`)
    }
    if (kid === undefined) {
      if (set.keys.length > 1) {
        throw new ExternalTokenError('bad_header', `provider ${id}: the token has no kid and the key set holds ${set.keys.length} keys`)
      }
      return this.#forAlg(set.keys[0] as UsableKey, alg)
    }
    let match = set.keys.find((k) => k.kid === kid && k.byAlg.has(alg)) ?? set.keys.find((k) => k.kid === kid)
    if (match === undefined) {
      await this.#onDemand()
      const fresh = this.#set ?? set
      match = fresh.keys.find((k) => k.kid === kid && k.byAlg.has(alg)) ?? fresh.keys.find((k) => k.kid === kid)
    }
    if (match === undefined) {
      throw new ExternalTokenError('unknown_key', `provider ${id}: no key with the token's kid in the key set`)
    }
    return this.#forAlg(match, alg)
  }

  #forAlg (key: UsableKey, alg: string): CryptoKey {
    const crypto = key.byAlg.get(alg)
    if (crypto === undefined) {
      throw new ExternalTokenError('bad_header', `provider ${this.#provider.id}: the token's algorithm ${alg} does not match its key`)
    }
    return crypto
  }

  /** A refetch caused by a token: joins one under way, else at most one per cooldown. */
  async #onDemand (): Promise<void> {
    if (this.#inflight !== undefined) return this.#inflight
    const cooldown = this.#options.unknownKidCooldownMs ?? DEFAULT_UNKNOWN_KID_COOLDOWN_MS
    const now = this.#now()
    if (now - this.#lastOnDemand < cooldown) return
    this.#lastOnDemand = now
    return this.refresh()
  }

  async #fetch (): Promise<void> {
    try {
      const jwksUri = await this.#jwksUri()
      let document: Record<string, unknown>
      try {
        document = await fetchJson(jwksUri, this.#options, { headers: { accept: 'application/json, application/jwk-set+json' } })
      } catch (err) {
        this.#discoveredJwksUri = undefined // discover again next time: the document may have moved
        throw err
      }
      const keys = await usableKeys(document, this.#provider.algorithms)
      if (keys.length === 0) throw new Error(`${jwksUri}: the key set holds no usable signing key for ${this.#provider.algorithms.join(', ')}`)
      this.#set = { keys, fetchedAt: new Date(this.#now()) }
      this.#error = null
    } catch (err) {
      this.#error = (err as Error).message
    }
  }

  async #jwksUri (): Promise<string> {
    if (this.#provider.jwksUri !== undefined) return this.#provider.jwksUri
    if (this.#discoveredJwksUri !== undefined) return this.#discoveredJwksUri
    const document = await discover(this.#provider.issuer, this.#options)
    const uri = document.jwks_uri
    if (typeof uri !== 'string') throw new Error(`the discovery document of ${this.#provider.issuer} has no jwks_uri`)
    try {
      checkFetchUrl(uri)
    } catch (err) {
      throw new Error(`the discovery document of ${this.#provider.issuer}: jwks_uri ${(err as Error).message}`)
    }
    this.#discoveredJwksUri = uri
    return uri
  }

  #schedule (): void {
    if (!this.#started) return
    clearTimeout(this.#timer)
    const delay = this.#set !== undefined
      ? this.#options.refreshIntervalMs ?? DEFAULT_REFRESH_INTERVAL_MS
      : this.#options.retryIntervalMs ?? DEFAULT_RETRY_INTERVAL_MS
    this.#timer = setTimeout(() => { void this.refresh() }, delay)
    this.#timer.unref()
  }
}
