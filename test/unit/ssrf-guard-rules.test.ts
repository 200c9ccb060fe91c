import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { getDefaultAutoSelectFamily, setDefaultAutoSelectFamily, Socket, type AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { guardedFetch, isPublicAddress, specialUseRangeOf, SsrfBlockedError, type GuardedFetchOptions } from '../../src/oauth/ssrf-guard.ts'

/**
 * The SSRF guard's rules in detail (test/unit/ssrf-guard.test.ts plays the scenarios): the range
 * every special-use address is put in, at the edges of each range; the exact refusal messages;
 * which port, server name and address a connection is opened with; and the response rules at
 * their boundaries.
 */

t.test('IPv4: each special-use range, at its first and last address, and the public address just outside', async (t) => {
  const cases: Array<[string, string | undefined]> = [
    ['0.0.0.0', 'unspecified ("this network")'], ['0.255.255.255', 'unspecified ("this network")'], ['1.0.0.0', undefined],
    ['9.255.255.255', undefined], ['10.0.0.0', 'private'], ['10.255.255.255', 'private'], ['11.0.0.0', undefined],
    ['100.63.255.255', undefined], ['100.64.0.0', 'shared address space (CGNAT)'], ['100.127.255.255', 'shared address space (CGNAT)'], ['100.128.0.0', undefined],
    ['126.255.255.255', undefined], ['127.0.0.0', 'loopback'], ['127.0.0.1', 'loopback'], ['127.255.255.255', 'loopback'], ['128.0.0.0', undefined],
    ['169.253.255.255', undefined], ['169.254.0.0', 'link-local'], ['169.254.169.254', 'link-local'], ['169.254.255.255', 'link-local'], ['169.255.0.0', undefined],
    ['172.15.255.255', undefined], ['172.16.0.0', 'private'], ['172.31.255.255', 'private'], ['172.32.0.0', undefined],
    ['192.0.0.0', 'IETF protocol assignment'], ['192.0.0.255', 'IETF protocol assignment'], ['192.0.1.0', undefined],
    ['192.0.2.0', 'documentation'], ['192.0.2.255', 'documentation'], ['192.0.3.0', undefined],
    ['192.88.98.255', undefined], ['192.88.99.0', '6to4 relay anycast'], ['192.88.99.255', '6to4 relay anycast'], ['192.88.100.0', undefined],
    ['192.167.255.255', undefined], ['192.168.0.0', 'private'], ['192.168.255.255', 'private'], ['192.169.0.0', undefined],
    ['198.17.255.255', undefined], ['198.18.0.0', 'benchmarking'], ['198.19.255.255', 'benchmarking'], ['198.20.0.0', undefined],
    ['198.51.100.0', 'documentation'], ['198.51.100.255', 'documentation'], ['198.51.101.0', undefined],
    ['203.0.113.0', 'documentation'], ['203.0.113.255', 'documentation'], ['203.0.114.0', undefined],
    ['223.255.255.255', undefined], ['224.0.0.0', 'multicast'], ['239.255.255.255', 'multicast'], ['240.0.0.0', 'reserved'],
    ['255.255.255.254', 'reserved'], ['255.255.255.255', 'broadcast'],
    ['8.8.8.8', undefined], ['8.8.8.205', undefined], ['8.8.8.250', undefined], ['8.8.8.199', undefined], ['93.184.215.14', undefined]
  ]
  for (const [address, range] of cases) t.equal(specialUseRangeOf(address), range, `${address}: ${range ?? 'public'}`)
  t.equal(isPublicAddress('8.8.8.8'), true)
  t.equal(isPublicAddress('10.0.0.1'), false)
  t.equal(isPublicAddress('example.com'), false, 'a name is not a public address')
})

t.test('IPv4 spellings other than the strict dotted quad are not IPv4 addresses', async (t) => {
  for (const address of ['8.8.8.8x', 'x8.8.8.8', '8.8.8.08', '8.8.8.256', '8.8.8', '8.8.8.8.8', '08.8.8.8', '8.8.8.8 ', '']) {
    t.equal(specialUseRangeOf(address), 'not an IP address', JSON.stringify(address))
  }
})

t.test('IPv6: each special block, IPv4 inside IPv6, and the global unicast around them', async (t) => {
  const cases: Array<[string, string | undefined]> = [
    ['::', 'unspecified'], ['::1', 'loopback'], ['0:0:0:0:0:0:0:1', 'loopback'], ['[::1]', 'loopback'], ['::1%eth0', 'loopback'], ['fe80::1%25en0', 'link-local'],
    ['::2', 'IPv4-compatible (deprecated)'], ['::1:0', 'IPv4-compatible (deprecated)'], ['::1:1', 'IPv4-compatible (deprecated)'], ['::127.0.0.1', 'IPv4-compatible (deprecated)'],
    ['::ffff:127.0.0.1', 'IPv4-mapped loopback'], ['::ffff:7f00:1', 'IPv4-mapped loopback'], ['::ffff:169.254.169.254', 'IPv4-mapped link-local'], ['::ffff:8.8.8.8', undefined],
    ['1::ffff:7f00:1', 'not global unicast'], ['0:1::ffff:7f00:1', 'not global unicast'], ['0:0:1::ffff:7f00:1', 'not global unicast'],
    ['0:0:0:1::ffff:7f00:1', 'not global unicast'], ['0:0:0:0:1:ffff:7f00:1', 'not global unicast'], ['0:0:0:0:1:0:0:1', 'not global unicast'], ['::fffe:0:1', 'not global unicast'],
    ['64:ff9b::127.0.0.1', 'NAT64 loopback'], ['64:ff9b::a00:1', 'NAT64 private'], ['64:ff9b::8.8.8.8', undefined],
    ['65:ff9b::8.8.8.8', 'not global unicast'], ['64:ff9a::8.8.8.8', 'not global unicast'], ['64:ff9b:0:1::8.8.8.8', 'not global unicast'],
    ['64:ff9b:0:0:1::8.8.8.8', 'not global unicast'], ['64:ff9b::1:0:808:808', 'not global unicast'], ['64:ff9b::1:808:808', 'not global unicast'],
    ['64:ff9b:1::', 'NAT64 local-use'], ['64:ff9b:1:ffff::1', 'NAT64 local-use'], ['64:ff9b:2::', 'not global unicast'], ['65:ff9b:1::', 'not global unicast'], ['64:ff9c:1::', 'not global unicast'],
    ['2002:7f00:1::', '6to4 loopback'], ['2002:a00:1::', '6to4 private'], ['2002:808:808::', undefined],
    ['2001:db8::1', 'documentation'], ['2001:db8:ffff::', 'documentation'], ['2001:db9::1', undefined], ['2606:db8::1', undefined], ['2001:4860:4860::8888', undefined],
    ['2001::1', 'IETF protocol assignment (Teredo, ORCHID, …)'], ['2001:1ff::', 'IETF protocol assignment (Teredo, ORCHID, …)'], ['2001:200::', undefined],
    ['3fff::1', 'documentation'], ['3fff:fff:ffff::', 'documentation'], ['3fff:1000::', undefined],
    ['2000::', undefined], ['2000::1', undefined], ['3fff:ffff::', undefined], ['1fff:ffff::', 'not global unicast'], ['4000::', 'not global unicast'],
    ['fbff::', 'not global unicast'], ['fc00::', 'unique local'], ['fd12:3456::1', 'unique local'], ['fdff:ffff::', 'unique local'], ['fe00::', 'not global unicast'],
    ['fe7f::', 'not global unicast'], ['fe80::', 'link-local'], ['febf:ffff::', 'link-local'], ['fec0::', 'site-local (deprecated)'], ['feff::', 'site-local (deprecated)'],
    ['ff00::', 'multicast'], ['ff02::1', 'multicast'], ['ffff::', 'multicast'],
    ['100::', 'discard-only'], ['100::ffff:ffff:ffff:ffff', 'discard-only'], ['100:1::', 'not global unicast'], ['100:0:1::', 'not global unicast'], ['100:0:0:1::', 'not global unicast'], ['101::', 'not global unicast'],
    ['2001:0db8:0000:0000:0000:0000:0000:0001', 'documentation'], ['2606:4700:0:0:0:0:0:1111', undefined]
  ]
  for (const [address, range] of cases) t.equal(specialUseRangeOf(address), range, `${address}: ${range ?? 'public'}`)
  for (const address of ['[::1', '::1]', '::1x', '::g', '1::2::3', '12345::', '::ffff:1.2.3', ':::']) {
    t.equal(specialUseRangeOf(address), 'not an IP address', JSON.stringify(address))
  }
})

// ---------------------------------------------------------------------------------------------

const base: GuardedFetchOptions = { maxBytes: 4096, timeoutMs: 5000 }

async function blocked (promise: Promise<unknown>): Promise<SsrfBlockedError> {
  try {
    await promise
  } catch (err) {
    if (err instanceof SsrfBlockedError) return err
    throw err
  }
  throw new Error('not refused')
}

async function failure (promise: Promise<unknown>): Promise<Error> {
  try {
    await promise
  } catch (err) {
    return err as Error
  }
  throw new Error('did not fail')
}

t.test('refusals carry their reason, the error name, and a message that names the rule', async (t) => {
  const cases: Array<[string, GuardedFetchOptions, string, string]> = [
    ['not a url', base, 'invalid-url', 'not a valid absolute URL'],
    ['http://example.com/doc', base, 'scheme', 'only https URLs are fetched (got "http:")'],
    ['ftp://example.com/doc', { ...base, allowPrivateHosts: ['example.com'] }, 'scheme', 'only https URLs are fetched (got "ftp:")'],
    ['https://user@example.com/doc', base, 'userinfo', 'URLs with user information are not fetched'],
    ['https://:secret@example.com/doc', base, 'userinfo', 'URLs with user information are not fetched'],
    ['https://example.com:8443/doc', base, 'port', 'only the default port is fetched (got 8443)'],
    ['https://169.254.169.254/latest', base, 'private-address', '169.254.169.254 is in a special-use range (link-local); only public addresses are fetched'],
    ['https://[::1]/doc', base, 'private-address', '::1 is in a special-use range (loopback); only public addresses are fetched']
  ]
  for (const [url, options, reason, message] of cases) {
    const error = await blocked(guardedFetch(url, options))
    t.equal(error.reason, reason, `${url}: ${reason}`)
    t.equal(error.message, message, `${url}: message`)
    t.equal(error.name, 'SsrfBlockedError', `${url}: name`)
  }
  const resolve = async (hostname: string) => hostname === 'empty.test' ? [] : [{ address: '8.8.8.8', family: 4 as const }, { address: '10.1.2.3', family: 4 as const }]
  const resolved = await blocked(guardedFetch('https://metadata.test/doc', { ...base, resolve }))
  t.equal(resolved.message, 'metadata.test resolves to an address that is in a special-use range (private); only public addresses are fetched', 'a name: the range, never the address')
  const empty = await blocked(guardedFetch('https://empty.test/doc', { ...base, resolve }))
  t.equal(empty.reason, 'no-address')
  t.equal(empty.message, 'empty.test has no address')
})

interface Connect { host?: string, port?: number, servername?: string }
/** Records each outbound connect's options and fails it at once (nothing reaches the network). */
function interceptConnects (t: Test): Connect[] {
  const seen: Connect[] = []
  const original = Socket.prototype.connect
  Socket.prototype.connect = function (this: Socket, ...args: unknown[]) {
    const first = (Array.isArray(args[0]) ? args[0][0] : args[0]) as Connect & { path?: unknown }
    seen.push({ host: first.host, port: Number(first.port), servername: first.servername })
    process.nextTick(() => this.destroy(Object.assign(new Error('test: connection not made'), { code: 'ECONNREFUSED' })))
    return this
  } as typeof Socket.prototype.connect
  t.teardown(() => { Socket.prototype.connect = original })
  return seen
}

t.test('connections go to the checked host on the default port', async (t) => {
  const seen = interceptConnects(t)
  const resolve = async () => [{ address: '93.184.215.14', family: 4 as const }]
  await failure(guardedFetch('https://public.example/doc', { ...base, resolve }))
  await failure(guardedFetch('https://93.184.215.14/doc', { ...base, resolve: async () => { throw new Error('a literal is not resolved') } }))
  await failure(guardedFetch('http://local.test/doc', { ...base, resolve: async () => [{ address: '127.0.0.1', family: 4 }], allowPrivateHosts: ['local.test'] }))
  await failure(guardedFetch('https://local.test:8443/doc', { ...base, resolve: async () => [{ address: '127.0.0.1', family: 4 }], allowPrivateHosts: ['local.test'] }))
  t.same(seen.map(({ host, port }) => ({ host, port })), [
    { host: 'public.example', port: 443 },
    { host: '93.184.215.14', port: 443 },
    { host: 'local.test', port: 80 },
    { host: 'local.test', port: 8443 }
  ])
  t.equal(seen[0]?.servername, 'public.example', 'TLS names the host (SNI, and the certificate checked against it)')
})

function startServer (t: Test, host: string, handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ port: number, closed: () => number }> {
  let closed = 0
  const server = createServer(handler)
  server.on('connection', (socket) => socket.on('close', () => { closed++ }))
  t.teardown(() => {
    server.closeAllConnections()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, host, () => resolve({ port: (server.address() as AddressInfo).port, closed: () => closed }))
  })
}

function routes (req: IncomingMessage, res: ServerResponse): void {
  const path = req.url ?? '/'
  if (path === '/echo') {
    res.writeHead(200, { 'content-type': 'application/json', 'set-cookie': ['a=1', 'b=2'] })
    res.end(JSON.stringify({ method: req.method, headers: req.headers }))
  } else if (path.startsWith('/status/')) {
    res.writeHead(Number(path.slice('/status/'.length)), { location: 'http://127.0.0.1:1/elsewhere' })
    res.end('status')
  } else if (path.startsWith('/declared/')) {
    const size = Number(path.slice('/declared/'.length))
    res.writeHead(200, { 'content-length': String(size) })
    res.end('d'.repeat(size))
  } else if (path === '/chunked') {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.write('c'.repeat(600))
    res.end('c'.repeat(600))
  } else if (path === '/cut') {
    res.writeHead(200, { 'content-length': '100' })
    res.write('{"partial":')
    setTimeout(() => res.socket?.destroy(), 20)
  } else if (path === '/never') {
    // Never answers.
  } else {
    res.writeHead(404)
    res.end()
  }
}

t.test('headers: caller cookies and encodings are dropped, set-cookie repeats are joined', async (t) => {
  const server = await startServer(t, '127.0.0.1', routes)
  const response = await guardedFetch(`http://127.0.0.1:${server.port}/echo`, {
    ...base, allowPrivateHosts: ['127.0.0.1'], headers: { Cookie2: '$Version=1', 'Accept-Encoding': 'gzip', 'X-Kept': 'yes' }
  })
  const echoed = JSON.parse(response.body.toString()) as { method: string, headers: Record<string, string> }
  t.equal(echoed.method, 'GET')
  t.equal(echoed.headers.cookie2, undefined, 'Cookie2 is dropped')
  t.equal(echoed.headers['accept-encoding'], 'identity', 'the caller cannot ask for a compressed body')
  t.equal(echoed.headers['x-kept'], 'yes')
  t.equal(response.headers['set-cookie'], 'a=1, b=2', 'repeated headers, set-cookie included, are joined with ", "')
})

t.test('literal addresses and allowances: no resolver call, brackets and case do not matter', async (t) => {
  const v4 = await startServer(t, '127.0.0.1', routes)
  const v6 = await startServer(t, '::1', routes)
  const never = async (): Promise<never> => { throw new Error('the resolver was called for a literal') }
  t.equal((await guardedFetch(`http://127.0.0.1:${v4.port}/echo`, { ...base, allowPrivateHosts: ['127.0.0.1'], resolve: never })).status, 200, 'IPv4 literal')
  t.equal((await guardedFetch(`http://[::1]:${v6.port}/echo`, { ...base, allowPrivateHosts: ['::1'], resolve: never })).status, 200, 'IPv6 literal, allowance without brackets')
  t.equal((await guardedFetch(`http://[::1]:${v6.port}/echo`, { ...base, allowPrivateHosts: ['[::1]'], resolve: never })).status, 200, 'IPv6 literal, allowance with brackets')
  t.equal((await guardedFetch(`http://local.test:${v4.port}/echo`, { ...base, allowPrivateHosts: ['LOCAL.TEST'], resolve: async () => [{ address: '127.0.0.1', family: 4 }] })).status, 200, 'an allowance in capitals')
  t.equal((await guardedFetch(`http://local.test:${v6.port}/echo`, { ...base, allowPrivateHosts: ['local.test'], resolve: async () => [{ address: '::1', family: 6 }] })).status, 200, 'a name resolving to IPv6')
  t.equal((await guardedFetch(`http://localhost:${v4.port}/echo`, { ...base, allowPrivateHosts: ['localhost'] })).status, 200, 'the system resolver')
})

t.test('without family auto-selection, the pinned lookup answers with the first vetted address', async (t) => {
  const was = getDefaultAutoSelectFamily()
  setDefaultAutoSelectFamily(false)
  t.teardown(() => setDefaultAutoSelectFamily(was))
  const v4 = await startServer(t, '127.0.0.1', routes)
  const response = await guardedFetch(`http://local.test:${v4.port}/echo`, { ...base, allowPrivateHosts: ['local.test'], resolve: async () => [{ address: '127.0.0.1', family: 4 }, { address: '::1', family: 6 }] })
  t.equal(response.status, 200)
})

t.test('redirect statuses are 300 to 399; 400 is an answer', async (t) => {
  const server = await startServer(t, '127.0.0.1', routes)
  const allowed = { ...base, allowPrivateHosts: ['127.0.0.1'] }
  for (const status of [300, 304, 399]) {
    const error = await blocked(guardedFetch(`http://127.0.0.1:${server.port}/status/${status}`, allowed))
    t.equal(error.message, `the server answered with a redirect (HTTP ${status}); redirects are not followed`, String(status))
  }
  for (const status of [299, 400]) t.equal((await guardedFetch(`http://127.0.0.1:${server.port}/status/${status}`, allowed)).status, status, `${status} is returned`)
})

t.test('size: a declared length over the bound is refused before the body; exactly the bound is fine', async (t) => {
  const server = await startServer(t, '127.0.0.1', routes)
  const allowed = { ...base, maxBytes: 1000, allowPrivateHosts: ['127.0.0.1'] }
  t.equal((await guardedFetch(`http://127.0.0.1:${server.port}/declared/1000`, allowed)).body.length, 1000)
  t.equal((await blocked(guardedFetch(`http://127.0.0.1:${server.port}/declared/1001`, allowed))).message, 'the response is 1001 bytes, more than the 1000 allowed')
  t.equal((await blocked(guardedFetch(`http://127.0.0.1:${server.port}/chunked`, allowed))).message, 'the response is larger than the 1000 bytes allowed', 'no declared length: counted as it arrives')
})

t.test('a connection cut mid-body is an error, not a short document', async (t) => {
  const server = await startServer(t, '127.0.0.1', routes)
  const error = await failure(guardedFetch(`http://127.0.0.1:${server.port}/cut`, { ...base, allowPrivateHosts: ['127.0.0.1'] }))
  t.notOk(error instanceof SsrfBlockedError, `an ordinary error (${error.message})`)
})

t.test('a timeout names its bound and closes the connection; a finished fetch leaves no timer behind', async (t) => {
  const server = await startServer(t, '127.0.0.1', routes)
  const error = await blocked(guardedFetch(`http://127.0.0.1:${server.port}/never`, { ...base, timeoutMs: 300, allowPrivateHosts: ['127.0.0.1'] }))
  t.equal(error.message, 'no complete response within 300 ms')
  for (let i = 0; i < 100 && server.closed() === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20))
  t.equal(server.closed(), 1, 'the server sees the connection closed')

  const timers = (): number => process.getActiveResourcesInfo().filter((name) => name === 'Timeout').length
  const before = timers()
  await guardedFetch(`http://127.0.0.1:${server.port}/echo`, { ...base, timeoutMs: 60_000, allowPrivateHosts: ['127.0.0.1'] })
  t.equal(timers(), before, 'the guard\'s timer is cleared')
})
