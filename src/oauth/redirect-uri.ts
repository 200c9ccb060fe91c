/**
 * Redirect URI rules (RFC 6749 §3.1.2, RFC 8252 §7, RFC 9700 §4.1, DESIGN.md "Authorization
 * server behaviour"). A registered URI is stored byte for byte and later compared as a string,
 * so registration refuses anything a browser or URL parser would read differently from how it
 * is written, instead of normalising it: what is stored is exactly what was checked.
 */

export type RedirectUriCheck = { ok: true, uri: string } | { ok: false, reason: string }

export const MAX_REDIRECT_URI_LENGTH = 2000

/**
 * RFC 8252 §7.3 / §8.3 loopback hosts, as the WHATWG parser spells them. Only these three: the
 * rest of 127/8 and other spellings of ::1 are not used by real clients, and every extra form
 * is one more way for two strings to mean the same host.
 */
const LOOPBACK_HOSTS: ReadonlySet<string> = new Set(['localhost', '127.0.0.1', '[::1]'])

/**
 * Schemes that run script, read local or browser-internal data, are network schemes other than
 * http(s), or hand the URI to a system handler (mail, phone, Android intents) instead of to the
 * app that asked for the code. None of them can be a native app's private-use scheme.
 */
const REFUSED_SCHEMES: ReadonlySet<string> = new Set([
  'javascript', 'vbscript', 'livescript', 'data', 'file', 'blob', 'about', 'filesystem', 'view-source',
  'jar', 'mhtml', 'ms-its', 'mk', 'res', 'ftp', 'ws', 'wss', 'chrome', 'resource',
  'mailto', 'tel', 'sms', 'intent'
])

/**
 * RFC 3986 characters only: unreserved, reserved and `%`. This leaves out whitespace, control
 * characters (browsers strip tabs and newlines, so `java\tscript:` would run), backslashes
 * (read as `/` in http URLs), non-ASCII and the characters RFC 3986 never allows unencoded.
 */
const URI_CHARACTERS = /^[A-Za-z0-9\-._~:/?#[\]@!$&'()*+,;=%]+$/
const BAD_PERCENT_ESCAPE = /%(?![0-9A-Fa-f]{2})/
/** RFC 3986 §3.1. A scheme cannot contain `%`, so percent-encoded schemes do not match. */
const SCHEME = /^([A-Za-z][A-Za-z0-9+.-]*):/

const refuse = (reason: string): RedirectUriCheck => ({ ok: false, reason })

/** The URL an absolute http(s) URI string stands for, if it is written in the parser's own canonical form. */
function parseCanonicalHttpUrl (uri: string): URL | undefined {
  let url: URL
  try {
    url = new URL(uri)
  } catch {
    return undefined
  }
  if (url.href === uri) return url
  // `https://host` and `https://host?q` are canonical too: the parser only adds the root path.
  if (url.pathname === '/' && uri === url.origin + url.search) return url
  return undefined
}

/**
 * Checks a redirect URI a client wants to register (RFC 7591 `redirect_uris`, or a Client ID
 * Metadata Document). Accepted: https URLs; http URLs on a loopback host (any port, RFC 8252
 * §7.3); private-use schemes of native apps (RFC 8252 §7.1, e.g. `cursor://…`, `com.example.app:/cb`).
 */
export function checkRedirectUriForRegistration (uri: string): RedirectUriCheck {
  if (typeof uri !== 'string' || uri.length === 0) return refuse('the redirect URI is empty')
  if (uri.length > MAX_REDIRECT_URI_LENGTH) return refuse(`the redirect URI is longer than ${MAX_REDIRECT_URI_LENGTH} characters`)
  if (!URI_CHARACTERS.test(uri)) {
    return refuse('the redirect URI contains characters a URI may not hold unencoded (whitespace, control characters, backslashes or non-ASCII)')
  }
  if (BAD_PERCENT_ESCAPE.test(uri)) return refuse('the redirect URI contains a malformed percent-escape')
  if (uri.includes('#')) return refuse('a redirect URI must not contain a fragment (RFC 6749 §3.1.2)')

  const scheme = SCHEME.exec(uri)?.[1]
  if (scheme === undefined) return refuse('the redirect URI must be an absolute URI with a scheme')
  const lowerScheme = scheme.toLowerCase()
  if (REFUSED_SCHEMES.has(lowerScheme)) return refuse(`the "${lowerScheme}:" scheme is not allowed for redirect URIs`)
  if (scheme !== lowerScheme) return refuse('the scheme of a redirect URI must be written in lowercase')

  if (scheme === 'https' || scheme === 'http') return checkHttpRedirectUri(uri, scheme)
  return checkPrivateUseSchemeRedirectUri(uri, scheme)
}

function checkHttpRedirectUri (uri: string, scheme: 'http' | 'https'): RedirectUriCheck {
  if (!uri.startsWith(`${scheme}://`)) return refuse(`an ${scheme} redirect URI must start with "${scheme}://"`)
  const url = parseCanonicalHttpUrl(uri)
  if (url === undefined) {
    return refuse('the redirect URI is not a valid URL in canonical form (lowercase host, no default port, no dot segments, no alternative IP address spellings)')
  }
  if (url.username !== '' || url.password !== '') return refuse('a redirect URI must not contain user information')
  if (scheme === 'http' && !LOOPBACK_HOSTS.has(url.hostname)) {
    return refuse('http redirect URIs are only allowed on a loopback host (localhost, 127.0.0.1 or [::1]); use https')
  }
  return { ok: true, uri }
}

function checkPrivateUseSchemeRedirectUri (uri: string, scheme: string): RedirectUriCheck {
  // One letter would be a Windows drive path (`c:/…`), which a native shell treats as a file.
  if (scheme.length < 2) return refuse('a one-letter scheme is not a private-use URI scheme')
  if (uri.length === scheme.length + 1) return refuse('the redirect URI has nothing after its scheme')
  let url: URL
  try {
    url = new URL(uri)
  } catch {
    return refuse('the redirect URI is not a valid URI')
  }
  if (url.href !== uri) return refuse('the redirect URI is not in canonical form')
  if (url.username !== '' || url.password !== '') return refuse('a redirect URI must not contain user information')
  return { ok: true, uri }
}

/** An http redirect URI on a loopback host, split so that the port can be ignored (RFC 8252 §7.3). */
const LOOPBACK_HTTP = /^http:\/\/(localhost|127\.0\.0\.1|\[::1\])(?::\d+)?([/?].*)?$/

function loopbackWithoutPort (uri: string): string | undefined {
  if (!checkRedirectUriForRegistration(uri).ok) return undefined
  const match = LOOPBACK_HTTP.exec(uri)
  if (match === null) return undefined
  return `http://${match[1] ?? ''}${match[2] ?? ''}`
}

/** Whether a redirect URI is an http URI on a loopback host (a native app's local listener). */
export function isLoopbackRedirect (uri: string): boolean {
  return loopbackWithoutPort(uri) !== undefined
}

/**
 * Whether a redirect URI sent in an authorization or token request matches a registered one:
 * exact string comparison (RFC 9700 §4.1.1), except that for http loopback URIs the port is
 * ignored (RFC 8252 §7.3), because native apps listen on whatever port is free. Scheme, host,
 * path and query must still match exactly, so `localhost` does not match `127.0.0.1`, and a
 * registered port-less URI (Claude Code's `http://localhost/callback`) matches any port.
 */
export function redirectUriMatches (registered: string, requested: string): boolean {
  if (typeof registered !== 'string' || typeof requested !== 'string') return false
  if (registered === requested) return true
  const registeredLoopback = loopbackWithoutPort(registered)
  return registeredLoopback !== undefined && registeredLoopback === loopbackWithoutPort(requested)
}
