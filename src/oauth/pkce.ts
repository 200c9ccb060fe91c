import { constantEquals, sha256Base64Url } from '../lib/secrets.ts'

/** RFC 7636 §4.1: 43–128 characters of [A-Z a-z 0-9 - . _ ~]. */
const VERIFIER = /^[A-Za-z0-9\-._~]{43,128}$/
/** An S256 challenge is base64url(SHA-256): exactly 43 characters without padding. */
const S256_CHALLENGE = /^[A-Za-z0-9\-_]{43}$/

export function isValidCodeVerifier (verifier: string): boolean {
  return VERIFIER.test(verifier)
}

export function isValidS256Challenge (challenge: string): boolean {
  return S256_CHALLENGE.test(challenge)
}

/** RFC 7636 §4.6 with S256 only; the comparison does not leak where the strings differ. */
export function verifyS256 (verifier: string, challenge: string): boolean {
  if (!isValidCodeVerifier(verifier)) return false
  return constantEquals(sha256Base64Url(verifier), challenge, 43)
}
