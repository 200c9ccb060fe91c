/**
 * A @fastify/rate-limit store shared by every route that uses it. The plugin's own LocalStore
 * gives each route a separate counter, so `/oauth/token` and its fallback alias `/token` (or GET
 * and POST of authorize) would each allow the full limit. Routes name their group
 * (`config.rateLimit.groupId`), which the plugin appends to the key, so one map holds one
 * counter per endpoint and client IP. Fixed windows; memory bounded by evicting the oldest key.
 */
interface Window { current: number, ttl: number, startedAt: number }

export class SharedRateLimitStore {
  private readonly windows = new Map<string, Window>()

  private readonly maxKeys = 50_000

  incr (key: string, callback: (err: Error | null, result: { current: number, ttl: number }) => void, timeWindow: number): void {
    const now = Date.now()
    let window = this.windows.get(key)
    if (window === undefined || window.startedAt + timeWindow <= now) {
      if (window === undefined && this.windows.size >= this.maxKeys) {
        const oldest = this.windows.keys().next().value
        if (oldest !== undefined) this.windows.delete(oldest)
      }
      window = { current: 0, ttl: timeWindow, startedAt: now }
      this.windows.delete(key)
      this.windows.set(key, window)
    }
    window.current++
    window.ttl = timeWindow - (now - window.startedAt)
    callback(null, { current: window.current, ttl: window.ttl })
  }

  read (key: string, callback: (err: Error | null, result: { current: number, ttl: number }) => void, timeWindow: number): void {
    const window = this.windows.get(key)
    const now = Date.now()
    if (window === undefined || window.startedAt + timeWindow <= now) {
      callback(null, { current: 0, ttl: timeWindow })
      return
    }
    callback(null, { current: window.current, ttl: timeWindow - (now - window.startedAt) })
  }

  /** Every route shares this one instance (that is the point). */
  child (): this {
    return this
  }
}
