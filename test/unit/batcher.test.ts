import t from 'tap'
import { Batcher, type BatcherOptions } from '../../src/lib/batcher.ts'

/** A batcher whose batches are recorded and held until `release()`; results are `item * 10`. */
function recorded (options: Partial<BatcherOptions<number, number>> = {}, fail: (items: number[]) => boolean = () => false) {
  const batches: number[][] = []
  let open: Array<() => void> = []
  const batcher = new Batcher<number, number>({
    maxItems: 100,
    ...options,
    run: async (items) => {
      batches.push(items)
      await new Promise<void>((resolve) => { open.push(resolve) })
      if (fail(items)) throw new Error(`refused ${items.join(',')}`)
      return items.map((i) => i * 10)
    }
  })
  const release = (): void => {
    const waiting = open
    open = []
    for (const resolve of waiting) resolve()
  }
  return { batcher, batches, release }
}

/** Releases batches until every promise settled. */
async function settleAll<T> (promises: Array<Promise<T>>, release: () => void): Promise<Array<PromiseSettledResult<T>>> {
  const all = Promise.allSettled(promises)
  const state = { done: false }
  void all.then(() => { state.done = true })
  while (!state.done) {
    release()
    await new Promise((resolve) => setImmediate(resolve))
  }
  return await all
}

t.test('the first item goes alone at once; the ones that arrive meanwhile go together next', async (t) => {
  const { batcher, batches, release } = recorded()
  const results = batcher.submit(1)
  t.same(batches, [[1]], 'the first batch started at once, alone')
  const later = [2, 3, 4].map(async (i) => await batcher.submit(i))
  t.same(batches, [[1]], 'the others wait for it')
  const settled = await settleAll([results, ...later], release)
  t.same(batches, [[1], [2, 3, 4]])
  t.same(settled.map((s) => s.status === 'fulfilled' ? s.value : s.reason), [10, 20, 30, 40], 'each gets its own result')
})

t.test('bounds: at most maxItems, and at most maxWeight unless an item alone weighs more', async (t) => {
  const counted = recorded({ maxItems: 2 })
  const first = counted.batcher.submit(0)
  const rest = [1, 2, 3, 4, 5].map(async (i) => await counted.batcher.submit(i))
  await settleAll([first, ...rest], counted.release)
  t.same(counted.batches, [[0], [1, 2], [3, 4], [5]], 'maxItems')

  const weighed = recorded({ weight: (i) => i, maxWeight: 10 })
  const head = weighed.batcher.submit(0)
  const tail = [4, 5, 2, 30, 1].map(async (i) => await weighed.batcher.submit(i))
  await settleAll([head, ...tail], weighed.release)
  t.same(weighed.batches, [[0], [4, 5], [2], [30], [1]], 'maxWeight: 4+5 fit 10, 2 does not; 30 goes alone')
})

t.test('items with the same key in one batch are run once and share the result', async (t) => {
  const { batcher, batches, release } = recorded({ key: (i) => String(i % 3), maxItems: 2 })
  const first = batcher.submit(9)
  const rest = [1, 4, 7, 2, 5, 3].map(async (i) => await batcher.submit(i))
  const settled = await settleAll([first, ...rest], release)
  t.same(batches, [[9], [1, 2], [3]], '1, 4 and 7 share a key, as do 2 and 5; the third key waits (maxItems counts distinct items)')
  t.same(settled.map((s) => s.status === 'fulfilled' ? s.value : s.reason), [90, 10, 10, 10, 20, 20, 30], 'the same result for the same key')
})

t.test('a failed batch is retried one item at a time: the failing item fails alone', async (t) => {
  const { batcher, batches, release } = recorded({}, (items) => items.includes(3))
  const first = batcher.submit(0)
  const rest = [1, 2, 3, 4].map(async (i) => await batcher.submit(i))
  const settled = await settleAll([first, ...rest], release)
  t.same(batches, [[0], [1, 2, 3, 4], [1], [2], [3], [4]])
  t.same(settled.map((s) => s.status), ['fulfilled', 'fulfilled', 'fulfilled', 'rejected', 'fulfilled'])
  t.match((settled[3] as PromiseRejectedResult).reason, { message: 'refused 3' }, 'with its own error')

  const lone = recorded({}, () => true)
  const [alone] = await settleAll([lone.batcher.submit(7)], lone.release)
  t.same(lone.batches, [[7]], 'an item that failed alone is not run again')
  t.equal(alone?.status, 'rejected')
})

t.test('a run that answers the wrong number of results fails its items, and the batcher goes on', async (t) => {
  let calls = 0
  const batcher = new Batcher<number, number>({ maxItems: 10, run: async (items) => ++calls === 1 ? [] : items })
  await t.rejects(batcher.submit(1), { message: 'a batch of 1 gave 0 results' })
  t.equal(await batcher.submit(2), 2, 'the next item is run')
})
