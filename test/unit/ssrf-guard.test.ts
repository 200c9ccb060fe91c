import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createServer as createTlsServer } from 'node:tls'
import t, { type Test } from 'tap'
import {
  GUARDED_FETCH_USER_AGENT, guardedFetch, isPublicAddress, specialUseRangeOf, SsrfBlockedError,
  type HostResolver, type SsrfBlockReason
} from '../../src/oauth/ssrf-guard.ts'

const DOCUMENT = JSON.stringify({ hello: 'world' })

/** A loopback server with one route per test need, counting every TCP connection it accepts. */
interface TestServer { server: Server, port: number, connections: () => number, requests: IncomingMessage[] }

function routes (req: IncomingMessage, res: ServerResponse): void {
  const path = req.url ?? '/'
  if (path === '/doc') {
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=60', 'x-multi': ['a', 'b'] })
    res.end(DOCUMENT)
  } else if (path === '/echo') {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify(req.headers))
  } else if (path.startsWith('/redirect/')) {
    res.writeHead(Number(path.slice('/redirect/'.length)), { location: 'http://127.0.0.1:1/elsewhere' })
    res.end()
  } else if (path === '/big-declared') {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100000' })
    res.end('x'.repeat(100000))
  } else if (path === '/big-chunked') {
    res.writeHead(200, { 'content-type': 'application/json' }) // no Content-Length: chunked
    let sent = 0
    const more = (): void => {
      if (sent >= 200) { res.end(); return }
      sent++
      res.write('y'.repeat(1000), () => setImmediate(more))
    }
    more()
  } else if (path === '/exact') {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end('z'.repeat(1024))
  } else if (path === '/slow-headers') {
    // Never answers; the guard's timer must end it.
  } else if (path === '/slow-body') {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.write('{"partial":')
  } else if (path === '/not-found') {
    res.writeHead(404, { 'content-type': 'text/plain' })
    res.end('nope')
  } else {
    res.writeHead(500)
    res.end()
  }
}

async function startServer (host = '127.0.0.1', port = 0): Promise<TestServer> {
  const requests: IncomingMessage[] = []
  let connections = 0
  const server = createServer((req, res) => { requests.push(req); routes(req, res) })
  server.on('connection', () => { connections++ })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => resolve())
  })
  return { server, port: (server.address() as AddressInfo).port, connections: () => connections, requests }
}

async function stopServer (s: TestServer): Promise<void> {
  s.server.closeAllConnections()
  await new Promise<void>((resolve) => s.server.close(() => resolve()))
}

const options = { maxBytes: 4096, timeoutMs: 2000 }

async function refusal (t: Test, promise: Promise<unknown>, reason: SsrfBlockReason, label: string): Promise<void> {
  try {
    await promise
    t.fail(`${label}: expected a refusal (${reason})`)
  } catch (err) {
    t.ok(err instanceof SsrfBlockedError, `${label}: SsrfBlockedError`)
    t.equal((err as SsrfBlockedError).reason, reason, `${label}: ${(err as Error).message}`)
  }
}

/** A resolver that records every name it is asked for and must not be reached in some tests. */
function recordingResolver (answers: (call: number) => Array<{ address: string, family: 4 | 6 }>): HostResolver & { calls: string[] } {
  const calls: string[] = []
  const resolve = async (hostname: string): Promise<Array<{ address: string, family: 4 | 6 }>> => {
    calls.push(hostname)
    return answers(calls.length)
  }
  return Object.assign(resolve, { calls })
}

t.test('special-use address classification', async (t) => {
  const special: string[] = [
    '0.0.0.0', '0.1.2.3', '10.0.0.1', '10.255.255.255', '100.64.0.1', '100.127.255.255', '127.0.0.1', '127.255.255.254',
    '169.254.169.254', '172.16.0.1', '172.31.255.255', '192.0.0.8', '192.0.2.1', '192.88.99.1', '192.168.0.1',
    '198.18.0.1', '198.19.255.255', '198.51.100.7', '203.0.113.9', '224.0.0.1', '239.255.255.255', '240.0.0.1',
    '255.255.255.255',
    '::', '::1', '::ffff:127.0.0.1', '::ffff:7f00:1', '::ffff:10.0.0.1', '::ffff:169.254.169.254', '::127.0.0.1',
    '::8.8.8.8', '64:ff9b::127.0.0.1', '64:ff9b::a9fe:a9fe', '64:ff9b:1::1', '2002:7f00:1::', '2002:a9fe:a9fe::1',
    '2002:c0a8:101::1', 'fc00::1', 'fd12:3456::1', 'fe80::1', 'fe80::1%eth0', 'febf::1', 'fec0::1', 'ff02::1',
    '2001:db8::1', '2001::1', '2001:10::1', '3fff::1', '100::1', '::ffff:0:7f00:1', '1:2:3:4:5:6:7:8',
    'not-an-ip', '1.2.3', '256.1.1.1', '01.2.3.4'
  ]
  for (const address of special) t.not(specialUseRangeOf(address), undefined, `${address}: ${String(specialUseRangeOf(address))}`)
  const ordinary = [
    '8.8.8.8', '1.1.1.1', '160.79.104.1', '100.63.255.255', '100.128.0.0', '172.15.255.255', '172.32.0.0',
    '198.17.255.255', '198.20.0.0', '192.0.1.1', '223.255.255.255', '11.0.0.1',
    '2606:4700:4700::1111', '2a00:1450::1', '::ffff:8.8.8.8', '64:ff9b::808:808', '2002:808:808::1', '2001:200::1'
  ]
  for (const address of ordinary) t.ok(isPublicAddress(address), address)
  t.equal(specialUseRangeOf('169.254.169.254'), 'link-local')
  t.equal(specialUseRangeOf('::ffff:10.0.0.1'), 'IPv4-mapped private')
  t.equal(specialUseRangeOf('100.64.0.1'), 'shared address space (CGNAT)')
})

t.test('URL rules are checked before anything touches the network', async (t) => {
  const resolver = recordingResolver(() => [{ address: '8.8.8.8', family: 4 }])
  const cases: Array<[string, SsrfBlockReason]> = [
    ['not a url', 'invalid-url'],
    ['/relative/path', 'invalid-url'],
    ['http://example.com/doc', 'scheme'],
    ['HTTP://example.com/doc', 'scheme'],
    ['ftp://example.com/doc', 'scheme'],
    ['file:///etc/passwd', 'scheme'],
    ['gopher://example.com/', 'scheme'],
    ['data:application/json,{}', 'scheme'],
    ['javascript:alert(1)', 'scheme'],
    ['ws://example.com/', 'scheme'],
    ['https://user@example.com/doc', 'userinfo'],
    ['https://user:pass@example.com/doc', 'userinfo'],
    ['https://example.com:8443/doc', 'port'],
    ['https://example.com:80/doc', 'port']
  ]
  for (const [url, reason] of cases) await refusal(t, guardedFetch(url, { ...options, resolve: resolver }), reason, url)
  t.same(resolver.calls, [], 'no DNS lookup for a refused URL')
})

t.test('literal private IPs of every class are refused before any connection', async (t) => {
  const target = await startServer()
  t.teardown(() => stopServer(target))
  const resolver = recordingResolver(() => [{ address: '127.0.0.1', family: 4 }])
  const hosts = [
    '127.0.0.1', '2130706433', '0x7f000001', '017700000001', '0177.0.0.1', '0x7f.0.0.1', '127.1', '127.0.1', '%31%32%37.0.0.1',
    '127.255.255.254', '0.0.0.0', '0', '10.0.0.1', '172.16.0.1', '192.168.1.1', '169.254.169.254', '100.64.0.1',
    '198.18.0.1', '192.0.2.1', '198.51.100.1', '203.0.113.1', '192.0.0.1', '192.88.99.1', '224.0.0.1', '240.0.0.1',
    '255.255.255.255',
    '[::1]', '[0:0:0:0:0:0:0:1]', '[::]', '[::ffff:127.0.0.1]', '[::ffff:7f00:1]', '[::ffff:10.0.0.1]', '[::127.0.0.1]',
    '[64:ff9b::127.0.0.1]', '[64:ff9b::a9fe:a9fe]', '[2002:7f00:1::]', '[2002:a9fe:a9fe::1]', '[fc00::1]', '[fd00::1]',
    '[fe80::1]', '[fec0::1]', '[ff02::1]', '[2001:db8::1]'
  ]
  for (const host of hosts) {
    // Both with the default port and with the live server's port: the address rule comes first.
    await refusal(t, guardedFetch(`https://${host}/doc`, { ...options, resolve: resolver }), 'private-address', host)
    await refusal(t, guardedFetch(`https://${host}:${target.port}/doc`, { ...options, resolve: resolver }), 'private-address', `${host}:${target.port}`)
  }
  await refusal(t, guardedFetch(`http://127.0.0.1:${target.port}/doc`, options), 'scheme', 'the live server over http, no allowance')
  t.equal(target.connections(), 0, 'the server saw no connection at all')
  t.same(resolver.calls, [], 'literal addresses are never looked up')
})

t.test('host names resolving to any special-use address are refused before connecting', async (t) => {
  const cases: Array<[string, Array<{ address: string, family: 4 | 6 }>, SsrfBlockReason]> = [
    ['loopback', [{ address: '127.0.0.1', family: 4 }], 'private-address'],
    ['metadata service', [{ address: '169.254.169.254', family: 4 }], 'private-address'],
    ['one bad among good', [{ address: '8.8.8.8', family: 4 }, { address: '10.0.0.5', family: 4 }], 'private-address'],
    ['IPv6 loopback second', [{ address: '2606:4700::1', family: 6 }, { address: '::1', family: 6 }], 'private-address'],
    ['mapped private', [{ address: '::ffff:192.168.0.1', family: 6 }], 'private-address'],
    ['ULA', [{ address: 'fd00::1', family: 6 }], 'private-address'],
    ['no answer', [], 'no-address']
  ]
  for (const [label, answers, reason] of cases) {
    const resolver = recordingResolver(() => answers)
    await refusal(t, guardedFetch('https://client.example/doc', { ...options, resolve: resolver }), reason, label)
    t.same(resolver.calls, ['client.example'], `${label}: resolved once`)
  }
  // The message must not reveal what an internal name resolves to.
  const err = await guardedFetch('https://intranet.example/doc', { ...options, resolve: async () => [{ address: '10.1.2.3', family: 4 }] }).catch((e: unknown) => e)
  t.notMatch((err as Error).message, /10\.1\.2\.3/)
  t.match((err as Error).message, /special-use range \(private\)/)
})

t.test('the system resolver is used by default: localhost is refused without the allowance', async (t) => {
  await refusal(t, guardedFetch('https://localhost/doc', options), 'private-address', 'localhost')
})

t.test('the explicit allowance reaches a local server over http; nothing else is relaxed', async (t) => {
  const target = await startServer()
  t.teardown(() => stopServer(target))

  const byAddress = await guardedFetch(`http://127.0.0.1:${target.port}/doc`, { ...options, allowPrivateHosts: ['127.0.0.1'] })
  t.equal(byAddress.status, 200)
  t.equal(byAddress.body.toString(), DOCUMENT)
  t.equal(byAddress.headers['content-type'], 'application/json')
  t.equal(byAddress.headers['cache-control'], 'max-age=60')
  t.equal(byAddress.headers['x-multi'], 'a, b', 'repeated headers are joined')

  const byName = await guardedFetch(`http://localhost:${target.port}/doc`, { ...options, allowPrivateHosts: ['LOCALHOST'] })
  t.equal(byName.status, 200, 'localhost (allowance compared case-insensitively)')
  // An IPv6 literal may be listed as the URL writes it (bracketed) or bare, in any case.
  for (const allowance of ['[::FFFF:7F00:1]', '::FFFF:7F00:1']) {
    const mapped = await guardedFetch(`http://[::ffff:127.0.0.1]:${target.port}/doc`, { ...options, allowPrivateHosts: [allowance] })
    t.equal(mapped.status, 200, `IPv4-mapped loopback allowed by ${allowance}`)
  }

  const notFound = await guardedFetch(`http://127.0.0.1:${target.port}/not-found`, { ...options, allowPrivateHosts: ['127.0.0.1'] })
  t.equal(notFound.status, 404, 'non-redirect statuses are returned to the caller')

  const before = target.connections()
  await refusal(t, guardedFetch(`http://127.0.0.1:${target.port}/doc`, { ...options, allowPrivateHosts: ['localhost'] }), 'scheme', 'allowance names another host')
  await refusal(t, guardedFetch(`https://127.0.0.1:${target.port}/doc`, { ...options, allowPrivateHosts: ['localhost'] }), 'private-address', 'https, allowance names another host')
  await refusal(t, guardedFetch(`http://user@127.0.0.1:${target.port}/doc`, { ...options, allowPrivateHosts: ['127.0.0.1'] }), 'userinfo', 'userinfo even when allowed')
  t.equal(target.connections(), before, 'refusals made no connection')
})

t.test('request headers: JSON accept, a User-Agent naming the server, no cookies, the original Host', async (t) => {
  const target = await startServer()
  t.teardown(() => stopServer(target))
  const response = await guardedFetch(`http://localhost:${target.port}/echo`, {
    ...options,
    allowPrivateHosts: ['localhost'],
    headers: { Cookie: 'session=1', Host: 'evil.example', 'X-Extra': 'yes' }
  })
  const seen = JSON.parse(response.body.toString()) as Record<string, string>
  t.equal(seen.accept, 'application/json')
  t.equal(seen['user-agent'], GUARDED_FETCH_USER_AGENT)
  t.match(seen['user-agent'], /bus-mcp-server/)
  t.equal(seen['accept-encoding'], 'identity')
  t.equal(seen.cookie, undefined, 'cookies are never sent')
  t.equal(seen.host, `localhost:${target.port}`, 'the Host header is the URL\'s')
  t.equal(seen['x-extra'], 'yes')
})

t.test('redirects are refused, not followed', async (t) => {
  const target = await startServer()
  t.teardown(() => stopServer(target))
  for (const status of [301, 302, 303, 307, 308]) {
    await refusal(t, guardedFetch(`http://127.0.0.1:${target.port}/redirect/${status}`, { ...options, allowPrivateHosts: ['127.0.0.1'] }), 'redirect', String(status))
  }
  t.equal(target.requests.length, 5, 'one request each; the Location was never fetched')
})

t.test('bodies larger than maxBytes are refused, with or without Content-Length', async (t) => {
  const target = await startServer()
  t.teardown(() => stopServer(target))
  const allowed = { ...options, maxBytes: 1024, allowPrivateHosts: ['127.0.0.1'] }
  await refusal(t, guardedFetch(`http://127.0.0.1:${target.port}/big-declared`, allowed), 'too-large', 'declared Content-Length')
  await refusal(t, guardedFetch(`http://127.0.0.1:${target.port}/big-chunked`, allowed), 'too-large', 'chunked, no Content-Length')
  const exact = await guardedFetch(`http://127.0.0.1:${target.port}/exact`, allowed)
  t.equal(exact.body.length, 1024, 'exactly maxBytes is fine')
})

/**
 * `promise`, or a rejection after `ms`: what the guard's timer ends here would otherwise never end
 * (a server that never answers, a lookup that never returns), so a generous bound still tells
 * the guard's timeout from none at all, on a loaded machine too.
 */
async function within<T> (promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`${what}: still pending after ${ms} ms`)) }, ms) })
  try {
    return await Promise.race([promise, late])
  } finally {
    clearTimeout(timer)
  }
}

t.test('one timeout covers waiting for headers and for the body', async (t) => {
  const target = await startServer()
  t.teardown(() => stopServer(target))
  const allowed = { ...options, timeoutMs: 200, allowPrivateHosts: ['127.0.0.1'] }
  for (const path of ['/slow-headers', '/slow-body']) {
    const started = Date.now()
    // /slow-headers never answers and /slow-body never finishes: only the guard's timer ends them.
    await refusal(t, within(guardedFetch(`http://127.0.0.1:${target.port}${path}`, allowed), 10_000, path), 'timeout', path)
    const elapsed = Date.now() - started
    t.ok(elapsed >= 150, `${path} ended after ${elapsed} ms, not before its 200 ms timeout`)
  }
  // A lookup that never returns: the same timer ends the fetch.
  const hangingResolver: HostResolver = async () => await new Promise(() => {})
  const started = Date.now()
  await refusal(t, within(guardedFetch('https://slow-dns.example/doc', { ...options, timeoutMs: 150, resolve: hangingResolver }), 10_000, 'slow DNS'), 'timeout', 'slow DNS')
  t.ok(Date.now() - started >= 100, `a hanging lookup does not hold the fetch (ended after ${Date.now() - started} ms, by its 150 ms timeout)`)
})

t.test('network failures are ordinary errors, not refusals', async (t) => {
  const closed = await startServer()
  const port = closed.port
  await stopServer(closed)
  const err = await guardedFetch(`http://127.0.0.1:${port}/doc`, { ...options, allowPrivateHosts: ['127.0.0.1'] }).catch((e: unknown) => e)
  t.ok(err instanceof Error)
  t.notOk(err instanceof SsrfBlockedError)
  t.match((err as NodeJS.ErrnoException).code, 'ECONNREFUSED')
})

t.test('DNS rebinding: the connection goes to the address that was checked, resolved once', async (t) => {
  const vetted = await startServer('127.0.0.1')
  t.teardown(() => stopServer(vetted))
  // The "rebound" address: a second server on another loopback address, same port.
  let rebound: TestServer | undefined
  try {
    rebound = await startServer('127.0.0.2', vetted.port)
  } catch {
    rebound = undefined // not every system routes all of 127/8 to loopback
  }
  t.teardown(async () => { if (rebound !== undefined) await stopServer(rebound) })

  const resolver = recordingResolver((call) => [{ address: call === 1 ? '127.0.0.1' : '127.0.0.2', family: 4 }])
  const response = await guardedFetch(`http://rebind.test:${vetted.port}/echo`, { ...options, allowPrivateHosts: ['rebind.test'], resolve: resolver })
  t.equal(response.status, 200)
  t.same(resolver.calls, ['rebind.test'], 'resolved exactly once')
  t.equal(vetted.requests.length, 1, 'the vetted address got the request')
  if (rebound !== undefined) t.equal(rebound.connections(), 0, 'the second answer was never used')
  const seen = JSON.parse(response.body.toString()) as Record<string, string>
  t.equal(seen.host, `rebind.test:${vetted.port}`, 'Host header keeps the name')

  // Without the allowance the same name is checked, and one private answer is enough to refuse.
  const strict = recordingResolver(() => [{ address: '127.0.0.1', family: 4 }])
  await refusal(t, guardedFetch('https://rebind.test/echo', { ...options, resolve: strict }), 'private-address', 'rebind.test without allowance')
  t.equal(vetted.requests.length, 1, 'no further request reached the server')
})

t.test('https: TLS is spoken to the pinned address with the original name for SNI', async (t) => {
  const serverNames: string[] = []
  let connections = 0
  // No certificate: the handshake stops at SNI, which is all this test needs to see.
  const tlsServer = createTlsServer({ SNICallback: (name, callback) => { serverNames.push(name); callback(new Error('no certificate')) } })
  tlsServer.on('connection', () => { connections++ })
  await new Promise<void>((resolve) => tlsServer.listen(0, '127.0.0.1', () => resolve()))
  t.teardown(() => new Promise<void>((resolve) => tlsServer.close(() => resolve())))
  const port = (tlsServer.address() as AddressInfo).port
  const resolver = recordingResolver(() => [{ address: '127.0.0.1', family: 4 }])
  const err = await guardedFetch(`https://doc.test:${port}/doc`, { ...options, allowPrivateHosts: ['doc.test'], resolve: resolver }).catch((e: unknown) => e)
  t.ok(err instanceof Error && !(err instanceof SsrfBlockedError), `handshake failed: ${(err as Error).message}`)
  t.equal(connections, 1, 'connected to the pinned address')
  t.same(serverNames, ['doc.test'], 'SNI carries the host name, not the address')
})
