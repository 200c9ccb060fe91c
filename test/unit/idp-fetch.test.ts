/**
 * fetch.ts rules, one by one at their boundaries: the URL rules, the caller's abort signal, the
 * status ranges, the size cap (declared and streamed), what is a JSON object, and the exact
 * messages (which name the method, the URL and the problem) with their causes.
 */
import t, { type Test } from 'tap'
import { checkFetchUrl, fetchJson } from '../../src/idp/fetch.ts'
import { json, startFakeProvider, type FakeProvider } from '../helpers/idp-fixtures.ts'

async function withProvider (t: Test): Promise<FakeProvider> {
  const fake = await startFakeProvider()
  t.teardown(fake.close)
  return fake
}

async function errorOf (promise: Promise<unknown>): Promise<Error> {
  try {
    await promise
  } catch (err) {
    return err as Error
  }
  throw new Error('expected a rejection')
}

t.test('checkFetchUrl: user information of either kind; http only on a loopback host', async (t) => {
  t.throws(() => checkFetchUrl('https://user@idp.example.com/jwks'), { message: 'https://idp.example.com/jwks: a URL with user information is not fetched' })
  t.throws(() => checkFetchUrl('https://:secret@idp.example.com/jwks'), { message: 'https://idp.example.com/jwks: a URL with user information is not fetched' })
  t.throws(() => checkFetchUrl('http://user@127.0.0.1/jwks'), /user information/)
  t.throws(() => checkFetchUrl('ftp://127.0.0.1/jwks'), { message: 'ftp://127.0.0.1/jwks: only https URLs are fetched (http only on a loopback host)' })
  t.throws(() => checkFetchUrl('ws://localhost/jwks'), /only https/)
  t.throws(() => checkFetchUrl('nope'), { message: '"nope" is not a URL' })
  t.equal(checkFetchUrl('https://10.0.0.1/jwks').hostname, '10.0.0.1', 'https to a private address is fine (operator configuration)')
})

t.test('the caller\'s abort signal stops the fetch', async (t) => {
  const fake = await withProvider(t)
  fake.route('/ok', (_req, res) => json(res, 200, { a: 1 }))
  const err = await errorOf(fetchJson(`${fake.origin}/ok`, {}, { signal: AbortSignal.abort(new Error('caller gave up')) }))
  t.match(err.message, new RegExp(`^GET ${fake.origin}/ok: `))
  t.notMatch(err.message, /no answer within/, 'not the timeout')
  t.equal(fake.count('/ok'), 0)
  t.same(await fetchJson(`${fake.origin}/ok`, {}, { signal: new AbortController().signal }), { a: 1 }, 'a live signal changes nothing')
})

t.test('status ranges: 2xx answers, 3xx is a redirect, the rest an HTTP error', async (t) => {
  const fake = await withProvider(t)
  for (const status of [200, 201, 203, 299, 300, 301, 399, 400, 404, 500]) {
    fake.route(`/s${status}`, (_req, res) => json(res, status, { status }))
  }
  for (const status of [200, 201, 203, 299]) t.same(await fetchJson(`${fake.origin}/s${status}`), { status }, String(status))
  for (const status of [300, 301, 399]) {
    t.equal((await errorOf(fetchJson(`${fake.origin}/s${status}`))).message, `GET ${fake.origin}/s${status}: answered ${status}; redirects are not followed`)
  }
  for (const status of [400, 404, 500]) {
    t.equal((await errorOf(fetchJson(`${fake.origin}/s${status}`))).message, `GET ${fake.origin}/s${status}: answered HTTP ${status}`)
  }
  const post = await errorOf(fetchJson(`${fake.origin}/s500`, {}, { method: 'POST', body: 'x' }))
  t.equal(post.message, `POST ${fake.origin}/s500: answered HTTP 500`, 'the method is named')
})

t.test('a JSON object only; a body-less answer is not JSON', async (t) => {
  const fake = await withProvider(t)
  const bodies: Array<[string, string]> = [['7', 'not a JSON object'], ['"text"', 'not a JSON object'], ['true', 'not a JSON object'], ['null', 'not a JSON object'], ['[]', 'not a JSON object'], ['{', 'not JSON'], ['', 'not JSON']]
  let n = 0
  for (const [body, problem] of bodies) {
    fake.route(`/b${++n}`, (_req, res) => { res.writeHead(200, { 'content-type': 'application/json' }); res.end(body) })
    t.equal((await errorOf(fetchJson(`${fake.origin}/b${n}`))).message, `GET ${fake.origin}/b${n}: the answer is ${problem}`, JSON.stringify(body))
  }
  fake.route('/204', (_req, res) => { res.writeHead(204); res.end() })
  t.equal((await errorOf(fetchJson(`${fake.origin}/204`))).message, `GET ${fake.origin}/204: the answer is not JSON`, 'a 204 has no body at all')
  t.same(await fetchJson(`${fake.origin}/jwks`), { keys: [] })
})

t.test('the size cap: exactly maxBytes is read, one byte more is not (declared or streamed)', async (t) => {
  const fake = await withProvider(t)
  const exact = JSON.stringify({ p: 'x'.repeat(100 - 8) })
  t.equal(exact.length, 100)
  fake.route('/declared', (_req, res) => { res.writeHead(200, { 'content-length': String(exact.length) }); res.end(exact) })
  fake.route('/declared-over', (_req, res) => { res.writeHead(200, { 'content-length': '101' }); res.end(`${exact} `) })
  fake.route('/streamed', (_req, res) => { res.writeHead(200); res.write(exact.slice(0, 50)); setTimeout(() => res.end(exact.slice(50)), 10) })
  fake.route('/streamed-over', (_req, res) => { res.writeHead(200); res.write(exact.slice(0, 50)); setTimeout(() => res.end(`${exact.slice(50)} `), 10) })
  t.same(await fetchJson(`${fake.origin}/declared`, { maxBytes: 100 }), JSON.parse(exact))
  t.same(await fetchJson(`${fake.origin}/streamed`, { maxBytes: 100 }), JSON.parse(exact))
  t.equal((await errorOf(fetchJson(`${fake.origin}/declared-over`, { maxBytes: 100 }))).message, `GET ${fake.origin}/declared-over: the answer (101 bytes) is larger than 100 bytes`)
  const streamed = await errorOf(fetchJson(`${fake.origin}/streamed-over`, { maxBytes: 100 }))
  t.equal(streamed.message, `GET ${fake.origin}/streamed-over: the answer is larger than 100 bytes`, 'our own error is not wrapped again')
  t.equal(streamed.cause, undefined)
})

t.test('timeouts and failures keep their cause; messages describe the cause', async (t) => {
  const fake = await withProvider(t)
  fake.route('/never', () => {})
  fake.route('/slow-body', (_req, res) => { res.writeHead(200, { 'content-type': 'application/json' }); res.write('{"keys":') })
  const never = await errorOf(fetchJson(`${fake.origin}/never`, { timeoutMs: 100 }))
  t.equal(never.message, `GET ${fake.origin}/never: no answer within 100 ms`)
  t.ok(never.cause instanceof Error, 'the abort is the cause')
  const slow = await errorOf(fetchJson(`${fake.origin}/slow-body`, { timeoutMs: 150 }))
  t.equal(slow.message, `GET ${fake.origin}/slow-body: no complete answer within 150 ms`)
  t.ok(slow.cause !== undefined, 'the abort is the cause')

  const closed = await startFakeProvider()
  await closed.close()
  const refused = await errorOf(fetchJson(`${closed.origin}/jwks`, { timeoutMs: 5000 }))
  t.equal(refused.message, `GET ${closed.origin}/jwks: fetch failed (ECONNREFUSED)`, 'the cause\'s code')
  t.ok(refused.cause instanceof TypeError)
  t.equal((await errorOf(fetchJson('http://127.0.0.1:1/jwks'))).message, 'GET http://127.0.0.1:1/jwks: fetch failed: bad port', 'a cause without a code')

  const failing = (error: unknown): typeof fetch => (async () => { throw error }) as typeof fetch
  const url = 'https://idp.example.com/jwks'
  const cases: Array<[unknown, string]> = [
    [new Error('outer', { cause: new Error('inner') }), 'outer: inner'],
    [new Error('outer', { cause: Object.assign(new Error('inner'), { code: 'EFOO' }) }), 'outer (EFOO)'],
    [new Error('alone'), 'alone'],
    [new Error('odd cause', { cause: 'a string' }), 'odd cause'],
    ['a thrown string', 'a thrown string']
  ]
  for (const [error, described] of cases) {
    const err = await errorOf(fetchJson(url, { fetch: failing(error) }))
    t.equal(err.message, `GET ${url}: ${described}`)
    t.equal(err.cause, error)
  }
  const bodyFails = (async () => new Response(new ReadableStream({ pull (controller) { controller.error(new Error('reset', { cause: Object.assign(new Error('x'), { code: 'ECONNRESET' }) })) } }))) as typeof fetch
  const broken = await errorOf(fetchJson(url, { fetch: bodyFails }))
  t.equal(broken.message, `GET ${url}: reset (ECONNRESET)`)
  t.ok(broken.cause instanceof Error)
})

t.test('requests go out without following redirects, with the caller\'s headers', async (t) => {
  let seen: RequestInit | undefined
  const spy = (async (_url: string, init: RequestInit) => { seen = init; return Response.json({ a: 1 }) }) as unknown as typeof fetch
  t.same(await fetchJson('https://idp.example.com/x', { fetch: spy }, { headers: { accept: 'application/json' } }), { a: 1 })
  t.equal(seen?.redirect, 'manual')
  t.same(seen?.headers, { accept: 'application/json' })
  t.ok(seen?.signal instanceof AbortSignal)
})
