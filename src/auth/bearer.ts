/** RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" */
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/
const MAX_TOKEN_LENGTH = 512

export type BearerParse =
  | { status: 'missing' }
  | { status: 'malformed' }
  | { status: 'ok', token: string }

/**
 * Reads `Authorization: Bearer <token>`. The scheme is case-insensitive (RFC 9110 §11.1);
 * anything else (Basic, two headers, an empty or oversized token) is malformed, not missing.
 */
export function parseBearer (header: string | string[] | undefined): BearerParse {
  if (header === undefined) return { status: 'missing' }
  if (Array.isArray(header)) return { status: 'malformed' }
  const match = /^([A-Za-z]+) +(\S+) *$/.exec(header)
  if (match === null) return header.trim() === '' ? { status: 'missing' } : { status: 'malformed' }
  const [, scheme, token] = match as unknown as [string, string, string]
  if (scheme.toLowerCase() !== 'bearer') return { status: 'malformed' }
  if (token.length > MAX_TOKEN_LENGTH || !B64TOKEN.test(token)) return { status: 'malformed' }
  return { status: 'ok', token }
}
