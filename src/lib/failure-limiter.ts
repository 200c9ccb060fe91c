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
 * Counts failures per key (client IP) in fixed windows, so a client gets `max` of them per
 * window while well-behaved traffic is never counted. Costly attempts that may fail can be
 * reserved: `take` admits one only while failures plus attempts under way stay below `max` (so
 * concurrent attempts cannot overdraw the window) and `release` ends it, whatever its outcome
 * (a failure is then counted with `fail`). Memory is bounded: beyond `maxKeys` the oldest window
 * is dropped. Per replica by design: N replicas allow N × max, which the README states.
 */
export class FailureLimiter {
  private readonly windows = new Map<string, { count: number, resetAt: number }>()
  /** Attempts admitted by `take` and not yet released, per key (bounded by concurrency). */
  private readonly pending = new Map<string, number>()

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

  /** Admits one attempt for `key` unless its failures plus attempts under way reach `max`. */
  take (key: string, now = Date.now()): boolean {
    const pending = this.pending.get(key) ?? 0
    const window = this.windows.get(key)
    const failures = window !== undefined && window.resetAt > now ? window.count : 0
    if (failures + pending >= this.max) return false
    this.pending.set(key, pending + 1)
    return true
  }

  /** Ends an attempt admitted by `take`. */
  release (key: string): void {
    const pending = this.pending.get(key) ?? 0
    if (pending <= 1) this.pending.delete(key)
    else this.pending.set(key, pending - 1)
  }

  get size (): number {
    return this.windows.size
  }
}

/**
 * Keys remembered for `ttlMs` each, at most `maxEntries` of them (the oldest go first). Holds
 * the hashes of refused credentials (the negative cache) and of recently valid ones.
 */
export class ExpiringSet {
  private readonly entries = new Map<string, number>()

  readonly ttlMs: number
  private readonly maxEntries: number

  constructor (ttlMs: number, maxEntries: number) {
    this.ttlMs = ttlMs
    this.maxEntries = maxEntries
  }

  has (key: string, now = Date.now()): boolean {
    const until = this.entries.get(key)
    if (until === undefined) return false
    if (until > now) return true
    this.entries.delete(key)
    return false
  }

  /** Adds `key`, or restarts its time and makes it the newest. */
  add (key: string, now = Date.now()): void {
    if (!this.entries.delete(key) && this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next().value
      if (oldest !== undefined) this.entries.delete(oldest)
    }
    this.entries.set(key, now + this.ttlMs)
  }

  delete (key: string): void {
    this.entries.delete(key)
  }

  clear (): void {
    this.entries.clear()
  }

  get size (): number {
    return this.entries.size
  }
}

export interface BatchLaneOptions {
  /** At least this long between the starts of two batches. */
  intervalMs: number
  /** Items per batch at most. */
  batchSize: number
  /** Items waiting at most; `submit` refuses more. */
  queueLimit: number
}

interface Waiting<T, R> { item: T, resolve: (result: R) => void, reject: (err: unknown) => void }

/**
 * A slow lane: items wait in a bounded FIFO queue and are handed to `run` in batches of at most
 * `batchSize`, one batch at a time, batches at least `intervalMs` apart. However many items
 * arrive, `run` is called at most 1000 / intervalMs times a second; an item waits at most
 * about queueLimit / batchSize intervals. An idle lane runs the first item at once (on the next
 * timer tick, with whatever arrived in the same tick).
 */
export class BatchLane<T, R> {
  private queue: Array<Waiting<T, R>> = []
  private timer: NodeJS.Timeout | undefined
  private running = false
  private lastStart = -Infinity
  private closed = false
  private readonly run: (items: T[]) => Promise<R[]>
  readonly options: BatchLaneOptions

  constructor (run: (items: T[]) => Promise<R[]>, options: BatchLaneOptions) {
    this.run = run
    this.options = options
  }

  /** The item's result once its batch has run, or undefined when the queue is full. */
  submit (item: T): Promise<R> | undefined {
    if (this.closed || this.queue.length >= this.options.queueLimit) return undefined
    const result = new Promise<R>((resolve, reject) => { this.queue.push({ item, resolve, reject }) })
    this.schedule()
    return result
  }

  get waiting (): number {
    return this.queue.length
  }

  /** Refuses new items; items still waiting are refused with an error. */
  close (): void {
    this.closed = true
    clearTimeout(this.timer)
    this.timer = undefined
    const left = this.queue
    this.queue = []
    for (const waiting of left) waiting.reject(new Error('shutting down'))
  }

  private schedule (): void {
    if (this.timer !== undefined || this.running || this.queue.length === 0 || this.closed) return
    const wait = Math.max(0, this.lastStart + this.options.intervalMs - Date.now())
    this.timer = setTimeout(() => {
      this.timer = undefined
      void this.flush()
    }, wait)
  }

  private async flush (): Promise<void> {
    this.running = true
    this.lastStart = Date.now()
    const batch = this.queue.splice(0, this.options.batchSize)
    try {
      const results = await this.run(batch.map((w) => w.item))
      batch.forEach((w, i) => { w.resolve(results[i] as R) })
    } catch (err) {
      for (const w of batch) w.reject(err)
    } finally {
      this.running = false
      this.schedule()
    }
  }
}
