import t from 'tap'
import { FailureLimiter } from '../../src/lib/failure-limiter.ts'

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
})
