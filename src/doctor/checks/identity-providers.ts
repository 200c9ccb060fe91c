import { discover } from '../../idp/keys.ts'
import { fetchJson } from '../../idp/fetch.ts'
import { basicAuthorization } from '../../idp/introspection.ts'
import { ProviderKeys } from '../../idp/keys.ts'
import type { IdpProvider } from '../../idp/types.ts'
import { fail, info, pass, warn, type CheckResult } from '../result.ts'

// 10. The external identity providers of IDP_FILE: can this host get what the server needs?

/**
 * Each provider of IDP_FILE, as a server on this host would see it: its discovery document
 * (unless `jwks_uri` is configured), its keys through the same key store the server uses, and
 * its introspection credentials. Run on the server's host (or one with the same network view).
 */
export async function checkIdentityProviders (providers: readonly IdpProvider[], timeoutMs: number): Promise<CheckResult[]> {
  const results: CheckResult[] = []
  for (const provider of providers) {
    if (provider.introspection !== undefined) {
      results.push(await checkIntrospection(provider, timeoutMs))
      continue
    }
    if (provider.jwksUri === undefined) results.push(await checkDiscovery(provider, timeoutMs))
    results.push(await checkKeys(provider, timeoutMs))
  }
  return results
}

async function checkDiscovery (provider: IdpProvider, timeoutMs: number): Promise<CheckResult> {
  const name = `idp-${provider.id}-discovery`
  try {
    const document = await discover(provider.issuer, { timeoutMs })
    return pass(name, `the discovery document names issuer ${provider.issuer} byte for byte and jwks_uri ${String(document.jwks_uri)}`)
  } catch (err) {
    return fail(name, (err as Error).message,
      'set "issuer" to exactly the "issuer" of the provider\'s discovery document (a trailing slash matters), or give "jwks_uri" ' +
      '(Entra ID v1 tokens: https://login.microsoftonline.com/TENANT/discovery/keys; Cloudflare Access: https://TEAM.cloudflareaccess.com/cdn-cgi/access/certs)')
  }
}

async function checkKeys (provider: IdpProvider, timeoutMs: number): Promise<CheckResult> {
  const name = `idp-${provider.id}-keys`
  const keys = new ProviderKeys(provider, { timeoutMs })
  try {
    await keys.start()
    const status = keys.status()
    if (status.usable) return pass(name, `${status.keys} usable key(s) at ${status.jwksUri ?? '?'} for ${provider.algorithms.join(', ')}`)
    const published = status.jwksUri === null ? '' : await publishedAlgorithms(status.jwksUri, timeoutMs)
    return fail(name, `no usable key: ${status.error ?? 'none fetched'}${published}`,
      published === ''
        ? 'make the key set reachable from this host (https, no redirect, under 256 KiB), or set "jwks_uri"'
        : 'add the algorithm the provider signs with to "algorithms" (HS* keys are never used)')
  } finally {
    keys.stop()
  }
}

/** "(the set holds RSA/RS256, oct)": what the provider publishes, for a fix that names it. */
async function publishedAlgorithms (jwksUri: string, timeoutMs: number): Promise<string> {
  try {
    const document = await fetchJson(jwksUri, { timeoutMs })
    const keys = Array.isArray(document.keys) ? document.keys as Array<Record<string, unknown>> : []
    if (keys.length === 0) return ''
    const kinds = [...new Set(keys.map((k) => [k.kty, k.alg ?? k.crv].filter((v) => typeof v === 'string').join('/')))]
    return ` (the set holds ${kinds.join(', ')})`
  } catch {
    return ''
  }
}

/** Introspects a made-up token: a provider that knows our credentials answers 200 `{"active": false}`. */
async function checkIntrospection (provider: IdpProvider, timeoutMs: number): Promise<CheckResult> {
  const name = `idp-${provider.id}-introspection`
  const settings = provider.introspection
  if (settings === undefined) return info(name, 'no introspection configured', null)
  try {
    const answer = await fetchJson(settings.endpoint, { timeoutMs }, {
      method: 'POST',
      headers: {
        authorization: basicAuthorization(settings.clientId, settings.clientSecret),
        'content-type': 'application/x-www-form-urlencoded',
        accept: 'application/json'
      },
      body: new URLSearchParams({ token: 'bus-mcp-doctor-probe', token_type_hint: 'access_token' }).toString()
    })
    if (answer.active === false) return pass(name, `${settings.endpoint} answers an unknown token with active: false`)
    return warn(name, `${settings.endpoint} answered a made-up token without "active": false`, 'check that "endpoint" is the RFC 7662 introspection endpoint')
  } catch (err) {
    const message = (err as Error).message
    return fail(name, message, /\b401\b|\b403\b/.test(message)
      ? 'the provider refused "client_id"/"client_secret": register a client allowed to introspect and put its credentials in "introspection"'
      : 'make the introspection endpoint reachable from this host (https, no redirect)')
  }
}
