import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { BatchLane, ExpiringSet, FailureLimiter } from '../../src/lib/failure-limiter.ts'

t.test('blocks a key after max failures until its window ends', async (t) => {
  const limiter = new FailureLimiter(3, 60_000)
  const now = 1_000_000
  t.equal(limiter.retryAfter('a', now), 0)
  limiter.fail('a', now)
  limiter.fail('a', now)
  t.equal(limiter.retryAfter('a', now), 0, 'two failures are allowed')
  limiter.fail('a', now)
  t.equal(limiter.retryAfter('a', now + 1000), 59, 'the third blocks for the rest of the window')
  t.equal(limiter.retryAfter('b', now), 0, 'other keys are unaffected')
  t.equal(limiter.retryAfter('a', now + 60_000), 0, 'a new window starts clean')
})

t.test('memory stays bounded', async (t) => {
  const limiter = new FailureLimiter(1, 60_000, 100)
  for (let i = 0; i < 1000; i++) limiter.fail(`ip${i}`)
  t.equal(limiter.size, 100)
  const budget = new FailureLimiter(1, 60_000, 100)
  for (let i = 0; i < 1000; i++) {
    budget.take(`ip${i}`)
    budget.release(`ip${i}`)
  }
  t.equal(budget.size, 0, 'attempts leave nothing behind once released')
})

t.test('take admits attempts while failures plus attempts under way stay below max', async (t) => {
  const limiter = new FailureLimiter(3, 60_000)
  const now = 1_000_000
  t.same([limiter.take('a', now), limiter.take('a', now), limiter.take('a', now)], [true, true, true], 'three concurrent attempts')
  t.equal(limiter.take('a', now), false, 'a fourth while they are under way is refused: concurrency cannot overdraw the budget')
  t.equal(limiter.retryAfter('a', now), 0, 'attempts under way are not failures')
  limiter.release('a')
  t.equal(limiter.take('a', now), true, 'an attempt that ended (and succeeded) makes room')
  limiter.release('a')
  limiter.release('a')
  limiter.release('a')
  limiter.fail('a', now)
  limiter.fail('a', now)
  t.same([limiter.take('a', now), limiter.take('a', now)], [true, false], 'two failures and one attempt under way fill a budget of three')
  limiter.release('a')
  limiter.fail('a', now)
  t.equal(limiter.take('a', now + 30_000), false, 'three failures: no attempt for the rest of the window')
  t.equal(limiter.retryAfter('a', now + 30_000), 30, 'retryAfter agrees')
  t.equal(limiter.take('b', now), true, 'other keys have their own budget')
  t.equal(limiter.take('a', now + 60_000), true, 'a new window starts clean')

  const releases = new FailureLimiter(2, 60_000)
  releases.release('x')
  releases.take('x', now)
  releases.release('x')
  releases.release('x')
  t.same([releases.take('x', now), releases.take('x', now), releases.take('x', now)], [true, true, false], 'releasing more than was taken gives nothing extra')
})

t.test('ExpiringSet: entries live ttlMs, the oldest go first, add restarts an entry', async (t) => {
  const set = new ExpiringSet(30_000, 3)
  const now = 1_000_000
  set.add('a', now)
  t.ok(set.has('a', now + 29_999), 'within the TTL')
  t.notOk(set.has('a', now + 30_000), 'gone at the TTL')
  t.equal(set.size, 0, 'an expired entry is dropped when seen')

  set.add('a', now)
  set.add('b', now + 1)
  set.add('c', now + 2)
  set.add('a', now + 3)
  t.equal(set.size, 3, 're-adding does not grow the set')
  set.add('d', now + 4)
  t.equal(set.size, 3, 'bounded')
  t.notOk(set.has('b', now + 4), 'the oldest (b, since a was re-added) was evicted')
  t.ok(set.has('a', now + 30_002), 'a lives 30 s from when it was re-added')
  set.delete('a')
  t.notOk(set.has('a', now + 5))
  set.clear()
  t.equal(set.size, 0)
})

t.test('BatchLane: an idle lane runs at once; busy, one batch per interval of at most batchSize', async (t) => {
  const batches: Array<{ at: number, items: number[] }> = []
  const started = Date.now()
  const lane = new BatchLane<number, string>(async (items) => {
    batches.push({ at: Date.now() - started, items })
    await sleep(5)
    return items.map((i) => `r${i}`)
  }, { intervalMs: 50, batchSize: 4, queueLimit: 10 })
  t.teardown(() => { lane.close() })

  t.equal(await lane.submit(0), 'r0', 'a lone item gets its own result')
  t.ok((batches[0]?.at ?? Infinity) < 40, 'without waiting for an interval')

  const submitted = Array.from({ length: 10 }, (_, i) => lane.submit(i + 1))
  t.equal(lane.submit(99), undefined, 'the eleventh waiting item is refused (queue limit 10)')
  const results = await Promise.all(submitted)
  t.same(results, Array.from({ length: 10 }, (_, i) => `r${i + 1}`), 'every item gets its own result, in order')
  t.same(batches.slice(1).map((b) => b.items.length), [4, 4, 2], 'batches of at most 4')
  const gaps = batches.slice(1).map((b, i) => b.at - (batches[i]?.at ?? 0))
  t.ok(gaps.every((gap) => gap >= 45), `batches start at least one interval apart (gaps ${gaps.join(', ')} ms)`)
  t.equal(lane.waiting, 0)
})

t.test('BatchLane: one batch at a time, a failing batch rejects its items only, close refuses the rest', async (t) => {
  let running = 0
  let most = 0
  let calls = 0
  const lane = new BatchLane<number, number>(async (items) => {
    calls++
    running++
    most = Math.max(most, running)
    await sleep(30)
    running--
    if (items.includes(13)) throw new Error('database down')
    return items
  }, { intervalMs: 1, batchSize: 2, queueLimit: 100 })

  const all = [1, 2, 13, 4, 5, 6].map((i) => lane.submit(i) as Promise<number>)
  const settled = await Promise.allSettled(all)
  t.same(settled.map((s) => s.status), ['fulfilled', 'fulfilled', 'rejected', 'rejected', 'fulfilled', 'fulfilled'], 'the batch with 13 failed, the others did not')
  t.equal(most, 1, 'a batch starts only after the previous one ended, however short the interval')
  t.equal(calls, 3)

  const slow = new BatchLane<number, number>(async (items) => items, { intervalMs: 60_000, batchSize: 1, queueLimit: 10 })
  await slow.submit(1)
  const waiting = slow.submit(2) as Promise<number>
  slow.close()
  await t.rejects(waiting, /shutting down/, 'an item still waiting at close is refused')
  t.equal(slow.submit(3), undefined, 'a closed lane takes nothing')
})
