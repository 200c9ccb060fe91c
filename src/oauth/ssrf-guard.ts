/**
 * The SSRF guard: the one way this server fetches a URL that someone else chose (today, Client ID
 * Metadata Documents; draft-ietf-oauth-client-id-metadata-document §8.6). It refuses:
 *
 * - any scheme but https (http only for a host in `allowPrivateHosts`), user information in the
 *   URL, and ports other than the default (again unless the host is allowed);
 * - hosts that resolve to any special-use address (RFC 6890 and the IANA special-purpose
 *   registries: private, loopback, link-local, CGNAT, benchmarking, documentation, multicast,
 *   reserved; IPv6 ULA, link-local, site-local; and IPv4 special addresses dressed as IPv6);
 * - redirects, responses larger than `maxBytes`, and anything slower than `timeoutMs` in total.
 *
 * The host name is resolved once, every address is checked, and the connection is pinned to the
 * checked addresses (the HTTP client's own DNS lookup is replaced), so a second, different DNS
 * answer (DNS rebinding) is never used. TLS still verifies the certificate against the host name.
 *
 * `allowPrivateHosts` is the explicit allowance for test rigs (config: CIMD_ALLOW_PRIVATE_HOSTS,
 * empty by default): a listed host may be fetched over http, on any port, at any address.
 */
import { lookup as systemLookup } from 'node:dns/promises'
import type { ClientRequest, IncomingMessage } from 'node:http'
import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import type { LookupFunction } from 'node:net'
import { isIP } from 'node:net'

export type SsrfBlockReason =
  | 'invalid-url' | 'scheme' | 'userinfo' | 'port' | 'private-address' | 'no-address'
  | 'redirect' | 'too-large' | 'timeout'

/** The guard refused the request (or cut it short); `reason` names the rule. */
export class SsrfBlockedError extends Error {
  readonly reason: SsrfBlockReason

  constructor (reason: SsrfBlockReason, message: string) {
    super(message)
    this.reason = reason
    this.name = 'SsrfBlockedError'
  }
}

export interface ResolvedAddress { address: string, family: 4 | 6 }

/** Resolves a host name to every address it has. */
export type HostResolver = (hostname: string) => Promise<ResolvedAddress[]>

export interface GuardedFetchOptions {
  maxBytes: number
  /** Covers DNS, connect, headers and body together. */
  timeoutMs: number
  /** Hosts (lowercase, as in the URL) exempt from the address, scheme and port rules. Tests only. */
  allowPrivateHosts?: readonly string[]
  headers?: Record<string, string>
  /** Replaces the system resolver (tests use it to simulate DNS answers). Called at most once per fetch. */
  resolve?: HostResolver
}

export interface GuardedResponse {
  status: number
  /** Response headers, names in lowercase; repeated headers joined with ", ". */
  headers: Record<string, string>
  body: Buffer
}

export const GUARDED_FETCH_USER_AGENT = 'bus-mcp-server (OAuth client metadata fetcher)'

/** Headers a caller may not set: the guard never sends cookies (and sets Host itself, last). */
const CALLER_HEADERS_DROPPED: ReadonlySet<string> = new Set(['cookie', 'cookie2'])

// ---------------------------------------------------------------------------------------------
// Special-use addresses

/** IPv4 special-use ranges that must never be fetched: [first address, prefix length, name]. */
const IPV4_SPECIAL_RANGES: ReadonlyArray<readonly [string, number, string]> = [
  ['0.0.0.0', 8, 'unspecified ("this network")'],
  ['10.0.0.0', 8, 'private'],
  ['100.64.0.0', 10, 'shared address space (CGNAT)'],
  ['127.0.0.0', 8, 'loopback'],
  ['169.254.0.0', 16, 'link-local'],
  ['172.16.0.0', 12, 'private'],
  ['192.0.0.0', 24, 'IETF protocol assignment'],
  ['192.0.2.0', 24, 'documentation'],
  ['192.88.99.0', 24, '6to4 relay anycast'],
  ['192.168.0.0', 16, 'private'],
  ['198.18.0.0', 15, 'benchmarking'],
  ['198.51.100.0', 24, 'documentation'],
  ['203.0.113.0', 24, 'documentation'],
  ['224.0.0.0', 4, 'multicast'],
  ['255.255.255.255', 32, 'broadcast'],
  ['240.0.0.0', 4, 'reserved']
]

const DOTTED_QUAD = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/

/** A strict dotted-quad IPv4 address as an unsigned 32-bit number (resolvers and the URL parser both produce this form). */
function parseIPv4 (address: string): number | undefined {
  if (!DOTTED_QUAD.test(address)) return undefined
  return address.split('.').reduce((value, octet) => value * 256 + Number(octet), 0)
}

const IPV4_RANGES_PARSED = IPV4_SPECIAL_RANGES.map(([first, bits, name]) => ({
  first: parseIPv4(first) as number,
  size: 2 ** (32 - bits),
  name
}))

function specialIPv4Range (value: number): string | undefined {
  return IPV4_RANGES_PARSED.find((range) => value >= range.first && value < range.first + range.size)?.name
}

/**
 * An IPv6 address as eight 16-bit groups; accepts `::` compression, a dotted IPv4 tail and a zone
 * (`%eth0`, ignored). Once `isIP` has vouched for the text, splitting it cannot go wrong: no
 * second validation here.
 */
function parseIPv6 (address: string): number[] | undefined {
  let text = address.startsWith('[') && address.endsWith(']') ? address.slice(1, -1) : address
  text = text.split('%')[0] as string
  if (isIP(text) !== 6) return undefined
  const tail: number[] = []
  if (text.includes('.')) {
    const lastColon = text.lastIndexOf(':')
    const v4 = parseIPv4(text.slice(lastColon + 1))
    if (v4 === undefined) return undefined
    tail.push(Math.floor(v4 / 65536), v4 % 65536)
    text = text.slice(0, lastColon + 1)
    if (!text.endsWith('::')) text = text.slice(0, -1)
  }
  const [before = '', after = ''] = text.split('::')
  const groupsOf = (part: string): number[] => part === '' ? [] : part.split(':').map((group) => parseInt(group, 16))
  const head = groupsOf(before)
  const rest = groupsOf(after)
  return [...head, ...new Array<number>(8 - head.length - rest.length - tail.length).fill(0), ...rest, ...tail]
}

const embeddedIPv4 = (high: number, low: number): number => high * 65536 + low

function specialIPv6Range (g: number[]): string | undefined {
  const [g0 = 0, g1 = 0, g2 = 0, g3 = 0, g4 = 0, g5 = 0, g6 = 0, g7 = 0] = g
  const firstFiveZero = g0 === 0 && g1 === 0 && g2 === 0 && g3 === 0 && g4 === 0
  if (firstFiveZero && g5 === 0xffff) {
    const inner = specialIPv4Range(embeddedIPv4(g6, g7))
    return inner === undefined ? undefined : `IPv4-mapped ${inner}`
  }
  if (firstFiveZero && g5 === 0) {
    if (g6 === 0 && g7 === 0) return 'unspecified'
    if (g6 === 0 && g7 === 1) return 'loopback'
    return 'IPv4-compatible (deprecated)'
  }
  if (g0 === 0x64 && g1 === 0xff9b && g2 === 0 && g3 === 0 && g4 === 0 && g5 === 0) {
    const inner = specialIPv4Range(embeddedIPv4(g6, g7))
    return inner === undefined ? undefined : `NAT64 ${inner}`
  }
  if (g0 === 0x64 && g1 === 0xff9b && g2 === 1) return 'NAT64 local-use'
  if (g0 === 0x2002) {
    const inner = specialIPv4Range(embeddedIPv4(g1, g2))
    return inner === undefined ? undefined : `6to4 ${inner}`
  }
  if (g0 === 0x2001 && g1 === 0x0db8) return 'documentation'
  if (g0 === 0x2001 && g1 < 0x0200) return 'IETF protocol assignment (Teredo, ORCHID, …)'
  if (g0 === 0x3fff && g1 < 0x1000) return 'documentation'
  // Only global unicast (2000::/3) is fetchable; name the common special blocks outside it.
  if (g0 >= 0x2000 && g0 <= 0x3fff) return undefined
  if ((g0 & 0xfe00) === 0xfc00) return 'unique local'
  if ((g0 & 0xffc0) === 0xfe80) return 'link-local'
  if ((g0 & 0xffc0) === 0xfec0) return 'site-local (deprecated)'
  if ((g0 & 0xff00) === 0xff00) return 'multicast'
  if (g0 === 0x0100 && g1 === 0 && g2 === 0 && g3 === 0) return 'discard-only'
  return 'not global unicast'
}

/**
 * The name of the special-use range an IP address belongs to, or undefined for an ordinary
 * public address. Anything that is not a valid IPv4 or IPv6 address counts as special.
 */
export function specialUseRangeOf (address: string): string | undefined {
  const v4 = parseIPv4(address)
  if (v4 !== undefined) return specialIPv4Range(v4)
  const v6 = parseIPv6(address)
  if (v6 !== undefined) return specialIPv6Range(v6)
  return 'not an IP address'
}

export function isPublicAddress (address: string): boolean {
  return specialUseRangeOf(address) === undefined
}

// ---------------------------------------------------------------------------------------------
// The URL

interface FetchTarget {
  url: URL
  /** Host name without IPv6 brackets, lowercase (the URL parser normalises it). */
  hostname: string
  allowPrivate: boolean
}

/**
 * The checks that need no network. The WHATWG parser has already turned every IPv4 spelling
 * (`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`) into a dotted quad and compressed IPv6.
 */
function checkTarget (rawUrl: string, allowPrivateHosts: readonly string[]): FetchTarget {
  let url: URL
  try {
    url = new URL(rawUrl)
  } catch {
    throw new SsrfBlockedError('invalid-url', 'not a valid absolute URL')
  }
  const hostname = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname
  const allowPrivate = allowPrivateHosts.some((host) => host.toLowerCase() === url.hostname || host.toLowerCase() === hostname)
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && allowPrivate)) {
    throw new SsrfBlockedError('scheme', `only https URLs are fetched (got "${url.protocol}")`)
  }
  if (url.username !== '' || url.password !== '') throw new SsrfBlockedError('userinfo', 'URLs with user information are not fetched')
  if (isIP(hostname) !== 0 && !allowPrivate) refuseSpecialAddress(hostname, hostname)
  if (url.port !== '' && !allowPrivate) throw new SsrfBlockedError('port', `only the default port is fetched (got ${url.port})`)
  return { url, hostname, allowPrivate }
}

/**
 * The message names the range but not a resolved address: the text may reach the client, and
 * an attacker should not learn what internal names resolve to.
 */
function refuseSpecialAddress (hostname: string, address: string): void {
  const range = specialUseRangeOf(address)
  if (range === undefined) return
  const subject = hostname === address ? address : `${hostname} resolves to an address that`
  throw new SsrfBlockedError('private-address', `${subject} is in a special-use range (${range}); only public addresses are fetched`)
}

const resolveWithSystem: HostResolver = async (hostname) => {
  const answers = await systemLookup(hostname, { all: true, verbatim: true })
  return answers.map(({ address, family }) => ({ address, family: family === 6 ? 6 : 4 }))
}

/** Resolves once and checks every address, so no answer in the set can be a special-use one. */
async function resolveVetted (target: FetchTarget, resolve: HostResolver): Promise<ResolvedAddress[]> {
  const literal = isIP(target.hostname)
  if (literal !== 0) return [{ address: target.hostname, family: literal === 6 ? 6 : 4 }]
  const addresses = await resolve(target.hostname)
  if (addresses.length === 0) throw new SsrfBlockedError('no-address', `${target.hostname} has no address`)
  if (!target.allowPrivate) for (const { address } of addresses) refuseSpecialAddress(target.hostname, address)
  return addresses
}

/**
 * A `lookup` for node:net that answers with the vetted addresses only, whatever name it is asked
 * for. Node asks for all of them (family auto-selection); asked for one, it gets the first.
 * `addresses` is never empty (resolveVetted refuses a host without one).
 */
function pinnedLookup (addresses: ResolvedAddress[]): LookupFunction {
  const [first] = addresses as [ResolvedAddress]
  return (_hostname, options, callback) => {
    if (options.all === true) {
      callback(null, addresses.map(({ address, family }) => ({ address, family })))
    } else {
      callback(null, first.address, first.family)
    }
  }
}

function requestHeaders (url: URL, callerHeaders: Record<string, string> | undefined): Record<string, string> {
  const headers: Record<string, string> = {
    'user-agent': GUARDED_FETCH_USER_AGENT,
    accept: 'application/json',
    // Compressed bodies would defeat the byte limit (and the caller expects plain bytes).
    'accept-encoding': 'identity'
  }
  for (const [name, value] of Object.entries(callerHeaders ?? {})) {
    const lower = name.toLowerCase()
    if (!CALLER_HEADERS_DROPPED.has(lower) && lower !== 'accept-encoding') headers[lower] = value
  }
  headers.host = url.host
  return headers
}

function flattenHeaders (message: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [name, value] of Object.entries(message.headers)) {
    if (value === undefined) continue
    out[name] = Array.isArray(value) ? value.join(', ') : value
  }
  return out
}

/**
 * The request itself, on a connection pinned to the vetted addresses. TLS checks the certificate
 * against the host name (Node derives the SNI name from the Host header). The caller's signal
 * (the overall timeout) ends it; `signal` is never aborted yet when this starts (the timer cannot
 * fire between the resolution and this call). A promise settles once: a later `fail` only
 * destroys what is left.
 */
function requestPinned (target: FetchTarget, addresses: ResolvedAddress[], options: GuardedFetchOptions, signal: AbortSignal): Promise<GuardedResponse> {
  return new Promise((resolve, reject) => {
    let response: IncomingMessage | undefined
    const fail = (err: Error): void => {
      reject(err)
      response?.destroy()
      req.destroy()
    }
    const isHttps = target.url.protocol === 'https:'
    const req: ClientRequest = (isHttps ? httpsRequest : httpRequest)({
      hostname: target.hostname,
      // '' is the scheme's default port.
      port: target.url.port,
      path: `${target.url.pathname}${target.url.search}`,
      headers: requestHeaders(target.url, options.headers),
      lookup: pinnedLookup(addresses),
      // A fresh connection each time: a pooled socket could belong to an earlier, different resolution.
      agent: false
    })
    signal.addEventListener('abort', () => { fail(signal.reason as Error) })
    req.on('error', fail)
    req.on('response', (res) => {
      response = res
      const status = res.statusCode ?? 0
      if (status >= 300 && status < 400) {
        fail(new SsrfBlockedError('redirect', `the server answered with a redirect (HTTP ${status}); redirects are not followed`))
        return
      }
      const declaredLength = Number(res.headers['content-length'])
      if (Number.isFinite(declaredLength) && declaredLength > options.maxBytes) {
        fail(new SsrfBlockedError('too-large', `the response is ${declaredLength} bytes, more than the ${options.maxBytes} allowed`))
        return
      }
      const chunks: Buffer[] = []
      let received = 0
      res.on('data', (chunk: Buffer) => {
        received += chunk.length
        if (received > options.maxBytes) {
          fail(new SsrfBlockedError('too-large', `the response is larger than the ${options.maxBytes} bytes allowed`))
          return
        }
        chunks.push(chunk)
      })
      // A connection cut mid-body is an 'error' (aborted) on the response.
      res.on('error', fail)
      res.on('end', () => {
        resolve({ status, headers: flattenHeaders(res), body: Buffer.concat(chunks, received) })
      })
    })
    req.end()
  })
}

/**
 * Rejects when the signal aborts, so a step that cannot be cancelled (a DNS lookup) still ends on
 * time. The signal is fresh (not aborted) when this is called; its reason is an Error.
 */
function untilAborted<T> (promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise((resolve, reject) => {
    signal.addEventListener('abort', () => {
      const reason: Error = signal.reason
      reject(reason)
    })
    promise.then(resolve, (err: Error) => { reject(err) })
  })
}

/**
 * GETs a URL chosen by someone else, within the rules above. Resolves with any non-redirect
 * response (the caller decides which statuses it accepts); throws SsrfBlockedError when a rule
 * refuses the request, or the network error when the fetch fails.
 */
export async function guardedFetch (url: string, options: GuardedFetchOptions): Promise<GuardedResponse> {
  const target = checkTarget(url, options.allowPrivateHosts ?? [])
  const controller = new AbortController()
  const timer = setTimeout(() => {
    controller.abort(new SsrfBlockedError('timeout', `no complete response within ${options.timeoutMs} ms`))
  }, options.timeoutMs)
  try {
    const addresses = await untilAborted(resolveVetted(target, options.resolve ?? resolveWithSystem), controller.signal)
    return await requestPinned(target, addresses, options, controller.signal)
  } finally {
    clearTimeout(timer)
  }
}
