import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'

/**
 * Every secret this service issues starts with a prefix naming its kind, so the /mcp hook knows
 * which table to ask, and leaked secrets are recognisable by scanners. 32 random bytes follow.
 */
export const TOKEN_PREFIX = {
  apiToken: 'bus_api_',
  accessToken: 'bus_at_',
  refreshToken: 'bus_rt_',
  authorizationCode: 'bus_ac_',
  clientSecret: 'bus_cs_'
} as const

export type TokenKind = keyof typeof TOKEN_PREFIX

export function randomToken (bytes = 32): string {
  return randomBytes(bytes).toString('base64url')
}

export function generateSecret (kind: TokenKind): string {
  return TOKEN_PREFIX[kind] + randomToken()
}

/** Which kind of secret a presented string claims to be; `undefined` means no known prefix. */
export function kindOfSecret (secret: string): TokenKind | undefined {
  for (const [kind, prefix] of Object.entries(TOKEN_PREFIX) as Array<[TokenKind, string]>) {
    if (secret.startsWith(prefix)) return kind
  }
  return undefined
}

/** Secrets are stored only as SHA-256 digests (high-entropy input: no salt or slow hash needed). */
export function hashSecret (secret: string): Buffer {
  return createHash('sha256').update(secret, 'utf8').digest()
}

export function sha256Base64Url (input: string): string {
  return createHash('sha256').update(input, 'ascii').digest('base64url')
}

/**
 * Compares two strings in time that depends only on `minLength` and the longer input, so the
 * comparison reveals neither where they differ nor (for secrets shorter than minLength) how long
 * the expected one is.
 */
export function constantEquals (a: string, b: string, minLength = 0): boolean {
  const length = Math.max(Buffer.byteLength(a), Buffer.byteLength(b), minLength)
  const left = Buffer.alloc(length)
  const right = Buffer.alloc(length)
  left.write(a)
  right.write(b)
  return timingSafeEqual(left, right) && a.length === b.length
}

/** Short human-typed one-time codes (consent page login): 10 characters of Crockford base32, ~50 bits. */
const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'
export function generateLoginCode (): string {
  const bytes = randomBytes(10)
  let code = ''
  for (const byte of bytes) code += CROCKFORD[byte & 31]
  return `${code.slice(0, 5)}-${code.slice(5)}`
}

/** Normalises what a person typed: case, spaces, dashes, and the letters Crockford maps to digits. */
export function normaliseLoginCode (input: string): string {
  const cleaned = input.toUpperCase().replace(/[\s-]/g, '').replace(/O/g, '0').replace(/[IL]/g, '1')
  return cleaned.length === 10 ? `${cleaned.slice(0, 5)}-${cleaned.slice(5)}` : cleaned
}
