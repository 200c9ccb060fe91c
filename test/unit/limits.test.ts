import t from 'tap'
import { assertStorableJson, assertStorableText, BusInputError, CHANNEL_NAME_PATTERN } from '../../src/bus/limits.ts'

t.test('text with NUL or a lone surrogate is refused as an input error', async (t) => {
  t.doesNotThrow(() => { assertStorableText('héllo 👋 \t\n', 'body') })
  const nul = t.throws(() => { assertStorableText('a\u0000b', 'body') }) as Error
  t.type(nul, BusInputError)
  t.match(nul.message, /^body must not contain NUL/)
  const surrogate = t.throws(() => { assertStorableText('a\ud800b', 'body') }) as Error
  t.type(surrogate, BusInputError)
  t.match(surrogate.message, /well-formed Unicode/)
})

t.test('metadata is checked everywhere: values, keys, arrays, numbers, depth', async (t) => {
  t.doesNotThrow(() => { assertStorableJson({ a: [1, 'x', { b: null, c: true }], d: 1.5 }) })
  const cases: Array<[unknown, RegExp]> = [
    [{ a: 'x\u0000' }, /^metadata\.a must not contain NUL/],
    [{ 'k\u0000': 1 }, /^metadata key must not contain NUL/],
    [{ a: ['ok', '\ud800'] }, /^metadata\.a\[1\] must be well-formed/],
    [{ a: Number.NaN }, /^metadata\.a must be a finite number/],
    [{ a: Number.POSITIVE_INFINITY }, /finite number/]
  ]
  for (const [value, message] of cases) {
    const error = t.throws(() => { assertStorableJson(value) }) as Error
    t.type(error, BusInputError)
    t.match(error.message, message)
  }
  let deep: unknown = 'leaf'
  for (let i = 0; i < 40; i++) deep = { d: deep }
  t.throws(() => { assertStorableJson(deep) }, /nested too deeply/)
  let ok: unknown = 'leaf'
  for (let i = 0; i < 30; i++) ok = { d: ok }
  t.doesNotThrow(() => { assertStorableJson(ok) })
})

t.test('channel names', async (t) => {
  for (const name of ['general', 'a', 'deploys.prod', 'team:alpha', 'x_y-z', 'A'.repeat(64)]) t.ok(CHANNEL_NAME_PATTERN.test(name), name)
  for (const name of ['', '-x', '.x', 'has space', 'a/b', 'A'.repeat(65), 'é']) t.notOk(CHANNEL_NAME_PATTERN.test(name), JSON.stringify(name))
})
