export interface BatcherOptions<I, R> {
  /** Runs a batch; answers one result per item, in the items' order. */
  run: (items: I[]) => Promise<R[]>
  /** Items in one batch at most. */
  maxItems: number
  /** An item's weight (bytes, say) and the most a batch may weigh; an item alone always goes. */
  weight?: (item: I) => number
  maxWeight?: number
  /** Items of one batch with the same key are run once and share the result. */
  key?: (item: I) => string
}

interface Waiting<I, R> { item: I, resolve: (result: R) => void, reject: (err: unknown) => void }

/**
 * One batch at a time (group commit: sends, decision 0031; reads, 0032). An item that finds no
 * batch running goes at once, alone, so an idle system waits for nothing; items that arrive while
 * a batch runs go together in the next, in arrival order. A batch that fails is retried one item
 * at a time, so an item that fails does so alone and the others get their results.
 */
export class Batcher<I, R> {
  private queue: Array<Waiting<I, R>> = []
  private running = false
  private readonly options: BatcherOptions<I, R>

  constructor (options: BatcherOptions<I, R>) {
    this.options = options
  }

  async submit (item: I): Promise<R> {
    return await new Promise<R>((resolve, reject) => {
      this.queue.push({ item, resolve, reject })
      if (!this.running) void this.drain()
    })
  }

  private async drain (): Promise<void> {
    this.running = true
    try {
      while (this.queue.length > 0) {
        const groups = this.take()
        try {
          await this.runGroups(groups)
        } catch (err) {
          if (groups.length === 1) {
            settle(groups[0] as Array<Waiting<I, R>>, { err })
            continue
          }
          for (const group of groups) {
            try {
              await this.runGroups([group])
            } catch (alone) {
              settle(group, { err: alone })
            }
          }
        }
      }
    } finally {
      this.running = false
    }
  }

  /** Runs one item of each group and settles every group with its result. */
  private async runGroups (groups: Array<Array<Waiting<I, R>>>): Promise<void> {
    const results = await this.options.run(groups.map((group) => (group[0] as Waiting<I, R>).item))
    if (results.length !== groups.length) throw new Error(`a batch of ${groups.length} gave ${results.length} results`)
    groups.forEach((group, i) => { settle(group, { result: results[i] as R }) })
  }

  /** The next batch: groups of identical items, in arrival order, within the bounds (at least one). */
  private take (): Array<Array<Waiting<I, R>>> {
    const { maxItems, weight, maxWeight = Infinity, key } = this.options
    const groups: Array<Array<Waiting<I, R>>> = []
    const byKey = new Map<string, Array<Waiting<I, R>>>()
    let weighed = 0
    let taken = 0
    for (const waiting of this.queue) {
      const k = key?.(waiting.item)
      const same = k === undefined ? undefined : byKey.get(k)
      if (same !== undefined) {
        same.push(waiting)
      } else {
        const w = weight?.(waiting.item) ?? 0
        if (groups.length > 0 && (groups.length === maxItems || weighed + w > maxWeight)) break
        weighed += w
        const group = [waiting]
        groups.push(group)
        if (k !== undefined) byKey.set(k, group)
      }
      taken++
    }
    this.queue = this.queue.slice(taken)
    return groups
  }
}

function settle<I, R> (group: Array<Waiting<I, R>>, outcome: { result: R } | { err: unknown }): void {
  for (const waiting of group) {
    if ('result' in outcome) waiting.resolve(outcome.result)
    else waiting.reject(outcome.err)
  }
}
