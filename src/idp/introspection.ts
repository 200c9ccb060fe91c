/**
 * Opaque tokens of a provider, checked by RFC 7662 token introspection (opt-in per provider).
 * Answers are cached by the token's SHA-256 (never the token itself) for at most `cacheTtlMs`
 * (60 s) and never past the token's `exp`; refusals are cached for `refusalTtlMs` (10 s) so a flood
 * of one bad token does not hammer the provider. A network or HTTP failure is
 * `introspection_unavailable` (503) and is not cached.
 */
import { createHash } from 'node:crypto'
import { ExternalTokenError } from './errors.ts'
import type { FetchLimits } from './fetch.ts'
import { fetchJson } from './fetch.ts'
import { MAX_TOKEN_BYTES } from './jwt.ts'
import type { IdpProvider } from './types.ts'

export interface IntrospectorOptions extends FetchLimits {
  /** Longest an active answer is reused; default (and at most sensible) 60 s. */
  cacheTtlMs?: number
  /** How long a refusal (inactive, wrong issuer, …) is reused; default 10 s. */
  refusalTtlMs?: number
  /** Default 10,000; the oldest entry goes first. */
  maxCacheEntries?: number
  /** Milliseconds since the epoch (tests). */
  now?: () => number
}

export const DEFAULT_INTROSPECTION_CACHE_TTL_MS = 60_000
export const DEFAULT_INTROSPECTION_REFUSAL_TTL_MS = 10_000
export const DEFAULT_INTROSPECTION_CACHE_ENTRIES = 10_000

interface CacheEntry { until: number, claims?: Record<string, unknown>, error?: ExternalTokenError }

/** RFC 6749 §2.3.1: client id and secret are form-urlencoded before HTTP Basic. */
function formEncode (value: string): string {
  return new URLSearchParams([['', value]]).toString().slice(1)
}

export function basicAuthorization (clientId: string, clientSecret: string): string {
  return 'Basic ' + Buffer.from(`${formEncode(clientId)}:${formEncode(clientSecret)}`).toString('base64')
}

export class Introspector {
  readonly #provider: IdpProvider
  readonly #options: IntrospectorOptions
  readonly #now: () => number
  readonly #cache = new Map<string, CacheEntry>()
  readonly #inflight = new Map<string, Promise<Record<string, unknown>>>()

  constructor (provider: IdpProvider, options: IntrospectorOptions = {}) {
    if (provider.introspection === undefined) throw new Error(`provider ${provider.id} has no introspection settings`)
    this.#provider = provider
    this.#options = options
    this.#now = options.now ?? Date.now
  }

  /** The introspection answer (the token's claims) of an active token, or ExternalTokenError. */
  async introspect (token: string): Promise<Record<string, unknown>> {
    const id = this.#provider.id
    // In UTF-8 bytes, never fewer than the string's UTF-16 length.
    if (Buffer.byteLength(token) > MAX_TOKEN_BYTES) {
      throw new ExternalTokenError('too_large', `provider ${id}: the token is larger than ${MAX_TOKEN_BYTES} bytes`)
    }
    const key = createHash('sha256').update(token).digest('base64url')
    const cached = this.#cache.get(key)
    if (cached !== undefined) {
      if (cached.until > this.#now()) {
        if (cached.error !== undefined) throw cached.error
        return cached.claims as Record<string, unknown>
      }
      this.#cache.delete(key)
    }
    let pending = this.#inflight.get(key)
    if (pending === undefined) {
      pending = this.#ask(token, key).finally(() => this.#inflight.delete(key))
      this.#inflight.set(key, pending)
    }
    return pending
  }

  clear (): void {
    this.#cache.clear()
  }

  async #ask (token: string, key: string): Promise<Record<string, unknown>> {
    const provider = this.#provider
    const settings = provider.introspection as NonNullable<IdpProvider['introspection']>
    let answer: Record<string, unknown>
    try {
      answer = await fetchJson(settings.endpoint, this.#options, {
        method: 'POST',
        headers: {
          authorization: basicAuthorization(settings.clientId, settings.clientSecret),
          'content-type': 'application/x-www-form-urlencoded',
          accept: 'application/json'
        },
        body: new URLSearchParams({ token, token_type_hint: 'access_token' }).toString()
      })
    } catch (err) {
      throw new ExternalTokenError('introspection_unavailable', `provider ${provider.id}: introspection failed: ${(err as Error).message}`, { cause: err })
    }
    const now = this.#now()
    let problem: ExternalTokenError | undefined
    try {
      this.#check(answer, now)
    } catch (err) {
      problem = err as ExternalTokenError
    }
    if (problem !== undefined) {
      this.#store(key, { until: now + (this.#options.refusalTtlMs ?? DEFAULT_INTROSPECTION_REFUSAL_TTL_MS), error: problem })
      throw problem
    }
    let until = now + (this.#options.cacheTtlMs ?? DEFAULT_INTROSPECTION_CACHE_TTL_MS)
    if (typeof answer.exp === 'number') until = Math.min(until, answer.exp * 1000)
    this.#store(key, { until, claims: answer })
    return answer
  }

  #check (answer: Record<string, unknown>, now: number): void {
    const provider = this.#provider
    const id = provider.id
    if (answer.active !== true) throw new ExternalTokenError('inactive', `provider ${id}: the token is not active`)
    if (answer.token_use !== undefined && answer.token_use !== 'access_token') {
      // Ory Hydra says what kind of token it is; a refresh token is not an access token.
      throw new ExternalTokenError('inactive', `provider ${id}: the token is not an access token`)
    }
    if (answer.iss !== undefined && answer.iss !== provider.issuer) {
      throw new ExternalTokenError('issuer', `provider ${id}: the introspected issuer is not the configured issuer`)
    }
    // aud is a string or an array; anything else (or a non-string in the array) matches no audience.
    const audiences: readonly unknown[] = provider.audiences
    if (![answer.aud].flat().some((a: unknown) => audiences.includes(a))) {
      throw new ExternalTokenError('audience', `provider ${id}: the token is not meant for this server (aud)`)
    }
    if (answer.exp !== undefined) {
      if (typeof answer.exp !== 'number') throw new ExternalTokenError('malformed', `provider ${id}: the introspected exp is not a number`)
      if (answer.exp * 1000 <= now) throw new ExternalTokenError('expired', `provider ${id}: the token has expired`)
    }
  }

  #store (key: string, entry: CacheEntry): void {
    if (entry.until <= this.#now()) return
    // The key is not in the cache: introspect() has dropped its expired entry before asking.
    const max = this.#options.maxCacheEntries ?? DEFAULT_INTROSPECTION_CACHE_ENTRIES
    while (this.#cache.size >= max) {
      const oldest = this.#cache.keys().next()
      if (oldest.done === true) break
      this.#cache.delete(oldest.value)
    }
    this.#cache.set(key, entry)
  }
}
