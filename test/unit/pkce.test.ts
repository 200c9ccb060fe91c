import { createHash } from 'node:crypto'
import t from 'tap'
import { isValidCodeVerifier, isValidS256Challenge, verifyS256 } from '../../src/oauth/pkce.ts'

const s256 = (verifier: string): string => createHash('sha256').update(verifier, 'ascii').digest('base64url')

t.test('a code verifier is 43 to 128 characters of [A-Za-z0-9-._~] (RFC 7636 §4.1)', async (t) => {
  const unreserved = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~'
  t.ok(isValidCodeVerifier(unreserved.slice(0, 43)), 'every unreserved character, 43 long')
  t.ok(isValidCodeVerifier(unreserved.slice(23, 66)), 'the rest of them')
  t.ok(isValidCodeVerifier('a'.repeat(43)), '43: the minimum')
  t.ok(isValidCodeVerifier('a'.repeat(128)), '128: the maximum')
  t.notOk(isValidCodeVerifier('a'.repeat(42)), '42: too short')
  t.notOk(isValidCodeVerifier('a'.repeat(129)), '129: too long')
  t.notOk(isValidCodeVerifier(''), 'empty')
  for (const bad of ['+', '/', '=', ' ', '%', '\u0000', 'é', '\n']) {
    t.notOk(isValidCodeVerifier('a'.repeat(43) + bad), `a trailing ${JSON.stringify(bad)}`)
    t.notOk(isValidCodeVerifier(bad + 'a'.repeat(43)), `a leading ${JSON.stringify(bad)}`)
    t.notOk(isValidCodeVerifier('a'.repeat(21) + bad + 'a'.repeat(21)), `${JSON.stringify(bad)} in the middle`)
  }
})

t.test('an S256 challenge is exactly 43 base64url characters', async (t) => {
  t.ok(isValidS256Challenge(s256('a'.repeat(43))))
  t.ok(isValidS256Challenge('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop-'), 'upper, lower and -')
  t.ok(isValidS256Challenge('qrstuvwxyz0123456789_AAAAAAAAAAAAAAAAAAAAAA'), 'lower, digits and _')
  t.notOk(isValidS256Challenge('A'.repeat(42)), '42')
  t.notOk(isValidS256Challenge('A'.repeat(44)), '44')
  t.notOk(isValidS256Challenge(''), 'empty')
  for (const bad of ['+', '/', '=', '.', '~', ' ']) {
    t.notOk(isValidS256Challenge('A'.repeat(42) + bad), `a trailing ${JSON.stringify(bad)} (not base64url, or padding)`)
    t.notOk(isValidS256Challenge(bad + 'A'.repeat(42)), `a leading ${JSON.stringify(bad)}`)
  }
})

t.test('verifyS256 accepts the verifier whose SHA-256 is the challenge, and nothing else', async (t) => {
  const verifier = 'dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk'
  // RFC 7636 Appendix B.
  t.ok(verifyS256(verifier, 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM'), 'the RFC 7636 example')
  t.notOk(verifyS256(verifier, 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN'), 'a challenge one character off')
  t.notOk(verifyS256(`${verifier}x`, 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM'), 'another verifier')
  t.notOk(verifyS256(verifier, verifier), 'the verifier as its own challenge (plain)')
  t.notOk(verifyS256(verifier, 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cMx'), 'the challenge with a character appended')
  t.notOk(verifyS256(verifier, 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-c'), 'the challenge one character short')
  t.notOk(verifyS256(verifier, ''), 'an empty challenge')
  const long = 'b'.repeat(128)
  t.ok(verifyS256(long, s256(long)), 'a 128-character verifier')
})

t.test('verifyS256 refuses a verifier that is not one, even when the hash matches', async (t) => {
  for (const verifier of ['a'.repeat(42), 'a'.repeat(129), `${'a'.repeat(42)}+`, '', `${'a'.repeat(43)} `]) {
    t.notOk(verifyS256(verifier, s256(verifier)), `${JSON.stringify(verifier.slice(0, 10))}… (${verifier.length} characters)`)
  }
})
