/**
 * JWT access tokens from an external provider, verified locally with the provider's keys
 * (keys.ts). What jose checks (signature, `alg` in the allowlist, byte-exact `iss`, `aud`, `exp`,
 * `nbf` with the clock tolerance) plus what it does not: no `crit` header, no `iat` in the future,
 * and no OpenID Connect ID token presented as an access token.
 */
import type { JWSHeaderParameters, JWTPayload } from 'jose'
import { decodeProtectedHeader, errors, jwtVerify } from 'jose'
import { ExternalTokenError } from './errors.ts'
import type { ExternalTokenFailure } from './errors.ts'
import type { KeyResolver } from './keys.ts'
import type { IdpProvider } from './types.ts'

/** Larger tokens are refused before any parsing. */
export const MAX_TOKEN_BYTES = 16 * 1024

const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/

/** In UTF-8 bytes (never fewer than the string's UTF-16 length). */
function tooLarge (token: string): boolean {
  return Buffer.byteLength(token) > MAX_TOKEN_BYTES
}

/** Three base64url segments (the signature may be empty, so `alg: none` is still seen as a JWT). */
export function looksLikeJwt (token: string): boolean {
  return !tooLarge(token) && JWT_SHAPE.test(token)
}

/**
 * The payload's `iss`, decoded WITHOUT verification: only to pick the provider whose verifier
 * then checks everything. Undefined when the token is not a JWT or carries no string `iss`.
 */
export function peekIssuer (token: string): string | undefined {
  if (!looksLikeJwt(token)) return undefined
  const payload = token.split('.')[1] as string
  try {
    // A payload of null throws here; arrays, strings and numbers have no own `iss`.
    const { iss } = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { iss?: unknown }
    return typeof iss === 'string' ? iss : undefined
  } catch {
    return undefined
  }
}

const ACCESS_TOKEN_TYPES: ReadonlySet<unknown> = new Set(['at+jwt', 'application/at+jwt'])

/** Verifies a JWT access token of `provider`; returns its claims or throws ExternalTokenError. */
export async function verifyJwtAccessToken (token: string, provider: IdpProvider, keys: KeyResolver, now?: Date): Promise<JWTPayload> {
  const id = provider.id
  if (tooLarge(token)) throw new ExternalTokenError('too_large', `provider ${id}: the token is larger than ${MAX_TOKEN_BYTES} bytes`)
  if (!JWT_SHAPE.test(token)) throw new ExternalTokenError('malformed', `provider ${id}: the token is not a JWT`)
  let header: JWSHeaderParameters
  try {
    header = decodeProtectedHeader(token) as JWSHeaderParameters
  } catch (err) {
    throw new ExternalTokenError('malformed', `provider ${id}: the token's header cannot be decoded`, { cause: err })
  }
  if (header.crit !== undefined) {
    throw new ExternalTokenError('bad_header', `provider ${id}: the token's header has a "crit" parameter`)
  }

  const currentDate = now ?? new Date()
  let payload: JWTPayload
  try {
    const verified = await jwtVerify(token, async (protectedHeader) => keys.getKey(protectedHeader), {
      algorithms: provider.algorithms,
      issuer: provider.issuer,
      audience: provider.audiences,
      clockTolerance: provider.clockToleranceSeconds,
      requiredClaims: ['exp'],
      currentDate
    })
    payload = verified.payload
    header = verified.protectedHeader
  } catch (err) {
    throw mapJoseError(err, id)
  }

  // jose has refused an `iat` that is present but not a number.
  if ((payload.iat ?? 0) > currentDate.getTime() / 1000 + provider.clockToleranceSeconds) {
    throw new ExternalTokenError('not_yet_valid', `provider ${id}: the token was issued in the future (iat)`)
  }

  const typ = header.typ
  if (!ACCESS_TOKEN_TYPES.has(typeof typ === 'string' ? typ.toLowerCase() : typ)) {
    for (const claim of ['nonce', 'at_hash', 'c_hash']) {
      if (payload[claim] !== undefined) {
        throw new ExternalTokenError('id_token', `provider ${id}: an ID token (it has "${claim}") is not an access token`)
      }
    }
    // An ID token carries no scope; Dex's access tokens carry groups. Cloudflare Access tokens
    // carry neither, but there is no ID token for an Access application's audience to confuse.
    const carriesGrant = provider.scopeClaims.some((c) => payload[c] !== undefined) ||
      (provider.groupsClaim !== undefined && payload[provider.groupsClaim] !== undefined)
    if (!carriesGrant && provider.tokenHeader !== 'cf-access-jwt-assertion') {
      const where = [...provider.scopeClaims, ...(provider.groupsClaim !== undefined ? [provider.groupsClaim] : [])]
      throw new ExternalTokenError('id_token', `provider ${id}: the token is not typed at+jwt and carries none of ${where.join(', ')}: taken for an ID token`)
    }
  }
  return payload
}

function mapJoseError (err: unknown, id: string): ExternalTokenError {
  if (err instanceof ExternalTokenError) return err
  const fail = (reason: ExternalTokenFailure, message: string): ExternalTokenError =>
    new ExternalTokenError(reason, `provider ${id}: ${message}`, { cause: err })
  if (err instanceof errors.JWTExpired) {
    return fail('expired', 'the token has expired')
  }
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.reason === 'missing') return fail('claims', `the token has no "${err.claim}" claim`)
    if (err.reason === 'invalid') return fail('malformed', `the token's "${err.claim}" claim is not valid`)
    switch (err.claim) {
      case 'iss': return fail('issuer', 'the token\'s issuer is not the configured issuer')
      case 'aud': return fail('audience', 'the token is not meant for this server (aud)')
      case 'nbf': return fail('not_yet_valid', 'the token is not valid yet (nbf)')
      case 'iat': return fail('not_yet_valid', 'the token was issued in the future (iat)')
      case 'typ': return fail('bad_header', 'the token\'s typ is not accepted')
      default: return fail('claims', `the token's "${err.claim}" claim is not accepted`)
    }
  }
  if (err instanceof errors.JWSSignatureVerificationFailed) return fail('signature', 'the token\'s signature is not valid')
  if (err instanceof errors.JOSEAlgNotAllowed) return fail('bad_header', 'the token\'s algorithm is not accepted')
  if (err instanceof errors.JOSENotSupported) return fail('bad_header', 'the token\'s header is not supported')
  if (err instanceof errors.JWKSNoMatchingKey) return fail('unknown_key', 'no key matches the token')
  if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid) return fail('malformed', 'the token is not a valid JWT')
  if (err instanceof TypeError) return fail('bad_header', 'the token\'s algorithm does not match its key')
  return fail('malformed', 'the token cannot be verified')
}
