import { Writable } from 'node:stream'
import Fastify from 'fastify'
import { pino } from 'pino'
import pretty from 'pino-pretty'
import t, { type Test } from 'tap'
import type { LogLevel } from '../../src/config.ts'
import { loggerOptions } from '../../src/logger.ts'

/**
 * One line per request (issue 13, point 8), checked against a real Fastify: the production
 * logger options in JSON (as in production without a TTY, and as tests read them) and through
 * pino-pretty with the options a TTY gets.
 */

interface Line { level: number, msg: string, reqId?: string, listener?: string, req?: Record<string, unknown>, res?: Record<string, unknown>, responseTime?: number, rpc?: Record<string, unknown>, err?: Record<string, unknown> }

async function appWith (t: Test, level: LogLevel, child?: Record<string, string>) {
  const raw: string[] = []
  const root = pino(loggerOptions(level, false), { write: (line: string) => { raw.push(line) } })
  const app = Fastify({ loggerInstance: child === undefined ? root : root.child(child) })
  app.get('/plain', async () => ({ ok: true }))
  app.post('/mcp', async () => ({ jsonrpc: '2.0', id: 1, result: {} }))
  app.post('/oauth/token', async () => ({ access_token: 'x' }))
  app.get('/warns', async (request) => { request.log.warn('something to see'); return { ok: true } })
  await app.ready()
  t.teardown(() => app.close())
  return { app, lines: () => raw.map((l) => JSON.parse(l) as Line) }
}

t.test('info: one JSON line per request, with method, redacted URL, status and duration', async (t) => {
  const { app, lines } = await appWith(t, 'info')
  await app.inject({ method: 'GET', url: '/plain?code=SECRETCODE123&state=SECRETSTATE1&transaction=SECRETTX1&page=2' })
  await app.inject({ method: 'GET', url: '/nowhere' })
  const all = lines()
  t.equal(all.length, 2, 'two requests, two lines')
  const [first, second] = all
  t.equal(first?.level, 30)
  t.match(first?.msg, /^GET \/plain\?code=\[redacted\]&state=\[redacted\]&transaction=\[redacted\]&page=2 200 \d+\.\dms$/)
  t.same(first?.req, { method: 'GET', url: '/plain?code=[redacted]&state=[redacted]&transaction=[redacted]&page=2', host: 'localhost:80', remoteAddress: '127.0.0.1' })
  t.same(first?.res, { statusCode: 200 })
  t.type(first?.responseTime, 'number')
  t.equal(first?.reqId, 'req-1', 'the request id stays in JSON')
  t.notOk('rpc' in (first ?? {}), 'no rpc field off /mcp')
  t.match(second?.msg, /^GET \/nowhere 404 /, 'Fastify\'s default "Route … not found" line is not logged')
  t.notMatch(JSON.stringify(all), /SECRETCODE123|SECRETSTATE1/)
})

t.test('/mcp: the JSON-RPC method, and the tool of a tools/call, from the parsed body', async (t) => {
  const { app, lines } = await appWith(t, 'info')
  const post = async (body: unknown, url = '/mcp'): Promise<void> => {
    await app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json' }, payload: JSON.stringify(body) })
  }
  await post({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'bus_send', arguments: { channel: 'c', text: 'a private message body' } } })
  await post({ jsonrpc: '2.0', id: 2, method: 'tools/list' })
  await post([{ jsonrpc: '2.0', id: 3, method: 'ping' }])
  await post({ jsonrpc: '2.0', id: 4, method: 'evil\n[00:00:00.000] INFO: forged line\u001b[31m', params: {} })
  await post({ jsonrpc: '2.0', id: 5, method: 'tools/call', params: { name: 'x'.repeat(100) } })
  await post({ jsonrpc: '2.0', id: 6, method: 'tools/call', params: { name: 42 } })
  await post({ not: 'json-rpc' })
  await post({ method: 'tools/call', params: { name: 'whoami' } }, '/oauth/token')
  const all = lines()
  t.equal(all.length, 8, 'one line per request')
  t.match(all[0], { msg: /^POST \/mcp 200 \d+\.\dms tools\/call bus_send$/, rpc: { method: 'tools/call', tool: 'bus_send' } })
  t.match(all[1], { msg: /tools\/list$/, rpc: { method: 'tools/list' } })
  t.match(all[2], { msg: / batch$/, rpc: { method: 'batch' } })
  t.equal(all[3]?.rpc?.method, 'evil??00:00:00.000??INFO:?forged?line??31m', 'nothing a terminal interprets reaches the line')
  // eslint-disable-next-line no-control-regex -- no newline or escape may reach the log line
  t.notMatch(all[3]?.msg, /[\n\u001b]/)
  t.equal(all[4]?.rpc?.tool, `${'x'.repeat(64)}…`, 'bounded')
  t.same(all[5]?.rpc, { method: 'tools/call' }, 'a non-string tool name is left out')
  t.notOk('rpc' in (all[6] ?? {}), 'no method, no rpc')
  t.notOk('rpc' in (all[7] ?? {}), 'bodies off /mcp are never read')
  t.notMatch(JSON.stringify(all), /private message body/, 'never the arguments')
})

t.test('debug adds the start of each request; warn logs none; other lines pass untouched', async (t) => {
  const debug = await appWith(t, 'debug')
  await debug.app.inject({ method: 'GET', url: '/plain?token=SECRETTOKEN99' })
  const lines = debug.lines()
  t.same(lines.map((l) => [l.level, l.msg.replace(/\d+\.\dms/, 'Nms')]), [
    [20, 'incoming request: GET /plain?token=[redacted]'],
    [30, 'GET /plain?token=[redacted] 200 Nms']
  ])
  t.notMatch(JSON.stringify(lines), /SECRETTOKEN99/)

  const quiet = await appWith(t, 'warn')
  await quiet.app.inject({ method: 'GET', url: '/plain' })
  await quiet.app.inject({ method: 'GET', url: '/warns' })
  t.same(quiet.lines().map((l) => [l.level, l.msg, l.reqId]), [[40, 'something to see', 'req-2']], 'only the warning, with its request id')
})

t.test('the admin listener\'s child logger (listener: admin) gets the same single line', async (t) => {
  const { app, lines } = await appWith(t, 'info', { listener: 'admin' })
  await app.inject({ method: 'GET', url: '/plain' })
  t.match(lines(), [{ listener: 'admin', msg: /^GET \/plain 200 / }])
})

t.test('"request errored" becomes the request line at error level, keeping err', async (t) => {
  const raw: string[] = []
  const log = pino(loggerOptions('info', false), { write: (line: string) => { raw.push(line) } })
  const reply = { statusCode: 500, request: { method: 'POST', url: '/mcp?code=SECRETCODE', body: { method: 'tools/call', params: { name: 'bus_read' } }, routeOptions: { url: '/mcp' } } }
  log.error({ res: reply, err: new Error('socket hang up'), responseTime: 12.345 }, 'request errored')
  const [line] = raw.map((l) => JSON.parse(l) as Line)
  t.match(line, { level: 50, msg: 'POST /mcp?code=[redacted] 500 12.3ms tools/call bus_read', responseTime: 12.35, err: { message: 'socket hang up' }, res: { statusCode: 500 } })
})

t.test('on a TTY (pino-pretty with the production options): one line per request', async (t) => {
  const options = loggerOptions('info', true)
  const transport = options.transport as { target: string, options: Record<string, unknown> }
  t.equal(transport.target, 'pino-pretty')
  const out: string[] = []
  const destination = new Writable({ write (chunk, _encoding, callback) { out.push(String(chunk)); callback() } })
  const stream = pretty({ ...transport.options, colorize: false, sync: true, destination })
  const { transport: _omit, ...rest } = options
  const root = pino(rest, stream)
  const app = Fastify({ loggerInstance: root })
  app.get('/plain', async () => ({ ok: true }))
  app.post('/mcp', async () => ({ jsonrpc: '2.0', id: 1, result: {} }))
  await app.ready()
  t.teardown(() => app.close())
  await app.inject({ method: 'GET', url: '/plain?code=SECRETCODE123' })
  await app.inject({ method: 'POST', url: '/mcp', headers: { 'content-type': 'application/json' }, payload: { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'whoami' } } })
  const admin = root.child({ listener: 'admin' })
  admin.info('Server listening at http://127.0.0.1:8089')
  const text = out.join('')
  const lines = text.split('\n').filter((l) => l !== '')
  t.equal(lines.length, 3, text)
  t.match(lines[0], /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: GET \/plain\?code=\[redacted\] 200 \d+\.\dms$/)
  t.match(lines[1], /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: POST \/mcp 200 \d+\.\dms tools\/call whoami$/)
  t.match(lines[2], /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: admin: Server listening at http:\/\/127\.0\.0\.1:8089$/)
  t.notMatch(text, /SECRETCODE123/)
})
