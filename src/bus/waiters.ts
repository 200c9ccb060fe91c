/** A subscription to one stream's wake-ups; `cancel` must always be called (in a finally). */
export interface Wait {
  /** Resolves on a wake-up (even one that came before this call), timeout, abort or shutdown. */
  until: (ms: number, signal?: AbortSignal) => Promise<void>
  cancel: () => void
}

interface Entry { woken: boolean, resolve: (() => void) | undefined }

/**
 * Long-poll readers waiting for new messages, keyed by the topic they read (a channel's URI, or
 * a principal's inbox: src/bus/events.ts). In-process only: the database's NOTIFY fans sends
 * out to every replica.
 */
export class Waiters {
  private readonly byKey = new Map<string, Set<Entry>>()
  private shutDown = false

  get isShutDown (): boolean { return this.shutDown }

  /** How many readers are waiting right now (for metrics, and for leak tests). */
  get size (): number {
    let n = 0
    for (const set of this.byKey.values()) n += set.size
    return n
  }

  subscribe (key: string): Wait {
    const entry: Entry = { woken: this.shutDown, resolve: undefined }
    let set = this.byKey.get(key)
    if (set === undefined) this.byKey.set(key, set = new Set())
    set.add(entry)
    let timer: NodeJS.Timeout | undefined
    let onAbort: (() => void) | undefined
    let abortSignal: AbortSignal | undefined
    const cancel = (): void => {
      if (timer !== undefined) clearTimeout(timer)
      if (onAbort !== undefined) abortSignal?.removeEventListener('abort', onAbort)
      const current = this.byKey.get(key)
      if (current?.delete(entry) === true && current.size === 0) this.byKey.delete(key)
      entry.resolve?.()
      entry.resolve = undefined
    }
    return {
      until: async (ms, signal) => {
        if (entry.woken || signal?.aborted === true) return
        await new Promise<void>((resolve) => {
          entry.resolve = resolve
          timer = setTimeout(resolve, ms)
          if (signal !== undefined) {
            abortSignal = signal
            onAbort = resolve
            signal.addEventListener('abort', onAbort, { once: true })
          }
        })
      },
      cancel
    }
  }

  wake (key: string): void {
    const set = this.byKey.get(key)
    if (set !== undefined) for (const entry of set) wakeEntry(entry)
  }

  wakeAll (): void {
    for (const set of this.byKey.values()) for (const entry of set) wakeEntry(entry)
  }

  shutdown (): void {
    this.shutDown = true
    this.wakeAll()
  }
}

function wakeEntry (entry: Entry): void {
  entry.woken = true
  entry.resolve?.()
}
