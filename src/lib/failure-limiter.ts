import { normalizeIP } from '@fastify/rate-limit'

/**
 * The key a client's requests are counted under: its IPv4 address (IPv4-mapped IPv6 included),
 * or the /64 prefix of its IPv6 address. One subscriber gets a whole /64, so counting each full
 * IPv6 address separately would let a client reset every limit by changing its interface id.
 */
export function clientKey (ip: string): string {
  return normalizeIP(ip, 64)
}

/**
 * Counts failures (wrong bearer tokens) per key (client IP) in fixed windows, so guessing
 * tokens costs a client `max` tries per window while well-behaved traffic is never counted.
 * Memory is bounded: beyond `maxKeys` the oldest window is dropped. Per replica by design:
 * N replicas allow N × max, which the README states.
 */
export class FailureLimiter {
  private readonly windows = new Map<string, { count: number, resetAt: number }>()

  readonly max: number
  readonly windowMs: number
  private readonly maxKeys: number

  constructor (max: number, windowMs: number, maxKeys = 50_000) {
    this.max = max
    this.windowMs = windowMs
    this.maxKeys = maxKeys
  }

  /** Seconds until `key` may try again, or 0 when it is not blocked. */
  retryAfter (key: string, now = Date.now()): number {
    const window = this.windows.get(key)
    if (window === undefined) return 0
    if (window.resetAt <= now) {
      this.windows.delete(key)
      return 0
    }
    return window.count >= this.max ? Math.ceil((window.resetAt - now) / 1000) : 0
  }

  fail (key: string, now = Date.now()): void {
    const window = this.windows.get(key)
    if (window !== undefined && window.resetAt > now) {
      window.count++
      return
    }
    if (window === undefined && this.windows.size >= this.maxKeys) {
      const oldest = this.windows.keys().next().value
      if (oldest !== undefined) this.windows.delete(oldest)
    }
    this.windows.set(key, { count: 1, resetAt: now + this.windowMs })
  }

  get size (): number {
    return this.windows.size
  }
}
