/** RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" */
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/
/** Our own secrets are far shorter; external providers' JWTs may reach MAX_TOKEN_BYTES (src/idp/jwt.ts). */
export const MAX_TOKEN_LENGTH = 512

export type BearerParse =
  | { status: 'missing' }
  | { status: 'unsupported' }
  | { status: 'malformed' }
  | { status: 'ok', token: string }

/**
 * Reads `Authorization: Bearer <token>`. The scheme is case-insensitive (RFC 9110 §11.1).
 * Another scheme (Basic, Digest, …) is `unsupported`: RFC 6750 §3.1 treats it like no
 * credentials at all. A Bearer header that is broken (two headers, an empty, oversized or
 * non-b64token token) is `malformed`.
 */
export function parseBearer (header: string | string[] | undefined, maxLength = MAX_TOKEN_LENGTH): BearerParse {
  if (header === undefined) return { status: 'missing' }
  if (Array.isArray(header)) return { status: 'malformed' }
  if (header.trim() === '') return { status: 'missing' }
  const scheme = /^\s*(\S+)/.exec(header)?.[1] ?? ''
  if (scheme.toLowerCase() !== 'bearer') return { status: /^[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*$/.test(scheme) ? 'unsupported' : 'malformed' }
  const match = /^[A-Za-z]+ +(\S+) *$/.exec(header)
  if (match === null) return { status: 'malformed' }
  const token = match[1] as string
  if (token.length > maxLength || !B64TOKEN.test(token)) return { status: 'malformed' }
  return { status: 'ok', token }
}
