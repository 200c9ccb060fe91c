import t from 'tap'
import { parseBearer } from '../../src/auth/bearer.ts'

t.test('no header, or an empty one, is missing (a challenge without an error code)', async (t) => {
  t.same(parseBearer(undefined), { status: 'missing' })
  t.same(parseBearer(''), { status: 'missing' })
  t.same(parseBearer('   '), { status: 'missing' })
})

t.test('the scheme is case-insensitive (RFC 9110 §11.1)', async (t) => {
  for (const scheme of ['Bearer', 'bearer', 'BEARER', 'bEaReR']) {
    t.same(parseBearer(`${scheme} bus_api_abc`), { status: 'ok', token: 'bus_api_abc' }, scheme)
  }
})

t.test('extra spaces between scheme and token, and trailing spaces, are tolerated', async (t) => {
  t.same(parseBearer('Bearer   abc'), { status: 'ok', token: 'abc' })
  t.same(parseBearer('Bearer abc  '), { status: 'ok', token: 'abc' })
})

t.test('every b64token character is accepted (RFC 6750 §2.1)', async (t) => {
  const token = 'AZaz09-._~+/=='
  t.same(parseBearer(`Bearer ${token}`), { status: 'ok', token })
  const generated = 'bus_api_' + 'x'.repeat(43)
  t.same(parseBearer(`Bearer ${generated}`), { status: 'ok', token: generated })
})

t.test('another scheme is unsupported: like no credentials (RFC 6750 §3.1)', async (t) => {
  for (const header of ['Basic dXNlcjpwYXNz', 'basic dXNlcjpwYXNz', 'Token abc', 'Digest username="a", realm="b"', 'Bearerabc', 'Bear-er abc', 'Negotiate']) {
    t.same(parseBearer(header), { status: 'unsupported' }, header)
  }
})

t.test('broken Bearer headers are malformed, not missing', async (t) => {
  const malformed = [
    'Bearer',
    'Bearer ',
    'Bearer abc def',
    'Bearer a,b',
    'Bearer a"b',
    'Bearer =abc',
    'Bearer abc=def',
    'Bearer ab\tc',
    ' Bearer abc',
    '@#! abc',
    `Bearer ${'a'.repeat(513)}`
  ]
  for (const header of malformed) {
    t.same(parseBearer(header), { status: 'malformed' }, JSON.stringify(header.slice(0, 40)))
  }
})

t.test('a token of exactly 512 characters is accepted; 513 is not', async (t) => {
  t.equal(parseBearer(`Bearer ${'a'.repeat(512)}`).status, 'ok')
  t.equal(parseBearer(`Bearer ${'a'.repeat(513)}`).status, 'malformed')
})

t.test('two Authorization headers are malformed', async (t) => {
  t.same(parseBearer(['Bearer a', 'Bearer b']), { status: 'malformed' })
})

t.test('a scheme is a whole RFC 9110 token: anything else around it is malformed, not another scheme', async (t) => {
  for (const header of ['1Basic abc', '-Basic abc', 'Basic@ abc', 'Basic/ abc', 'Ba(sic abc']) {
    t.same(parseBearer(header), { status: 'malformed' }, header)
  }
  for (const header of ['B abc', "X-Custom!#$%&'*+.^_`|~ abc", 'Basic1 abc']) {
    t.same(parseBearer(header), { status: 'unsupported' }, header)
  }
})
