import { readFileSync } from 'node:fs'
import { ConfigError } from '../config.ts'
import { isScope, SCOPES, sortScopes, type Scope } from '../auth/scopes.ts'
import { isLoopbackHost } from '../lib/loopback.ts'
import {
  ALLOWED_ALGORITHMS, DEFAULT_ALGORITHMS, type IdpProvider, type IntrospectionSettings, type LoginSettings, type TokenHeader
} from './types.ts'

/**
 * IDP_FILE: the external identity providers (DESIGN.md, "External identity providers"), validated
 * once at start. Every problem is a ConfigError on IDP_FILE whose one line names the provider, the
 * field and the fix, and never a secret's value. Unknown fields are refused at every level: a
 * misspelt `audiences` or `required_claims` would otherwise silently weaken a check.
 */

export interface IdpFileContext {
  /** Our own issuer: an external provider may not claim it. */
  publicUrl: string
  /** The default (and usual) audience of the tokens we accept. */
  resourceUrl: string
}

/** Bigger than any sensible provider list; a bound so a wrong path (a log file) fails fast. */
const MAX_FILE_BYTES = 1024 * 1024
const ID_PATTERN = /^[a-z0-9-]{1,32}$/
const MAX_CLOCK_TOLERANCE = 300
const TOKEN_HEADERS: readonly TokenHeader[] = ['authorization', 'cf-access-jwt-assertion']

const PROVIDER_FIELDS = [
  'id', 'issuer', 'jwks_uri', 'audiences', 'algorithms', 'clock_tolerance_seconds', 'subject_claim', 'scope_claims',
  'scope_map', 'groups_claim', 'required_claims', 'allowed_client_ids', 'principals', 'name_claim', 'auto_scopes',
  'token_header', 'introspection', 'advertise', 'login'
]
const INTROSPECTION_FIELDS = ['endpoint', 'client_id', 'client_secret']
const LOGIN_FIELDS = ['client_id', 'client_secret', 'scopes', 'label', 'default']

type Json = Record<string, unknown>

/** Reads and parses IDP_FILE; a missing, unreadable or malformed file names the path and the problem. */
export function loadIdpFile (path: string, context: IdpFileContext): IdpProvider[] {
  let text: string
  try {
    const bytes = readFileSync(path)
    if (bytes.length > MAX_FILE_BYTES) throw new ConfigError('IDP_FILE', `${path} is larger than ${MAX_FILE_BYTES} bytes; is this the provider file?`)
    text = bytes.toString('utf8')
  } catch (err) {
    if (err instanceof ConfigError) throw err
    throw new ConfigError('IDP_FILE', `${path} ${readProblem(err as NodeJS.ErrnoException)}`)
  }
  try {
    return parseIdpFile(text, context)
  } catch (err) {
    if (err instanceof ConfigError) throw new ConfigError('IDP_FILE', `${path}: ${err.problem}`)
    throw err
  }
}

function readProblem (err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case 'ENOENT': return 'does not exist; set IDP_FILE to the JSON file of providers, or unset it'
    case 'EACCES': case 'EPERM': return 'cannot be read (permission denied); make it readable by the server\'s user'
    case 'EISDIR': return 'is a directory; IDP_FILE names the JSON file itself'
    default: return `cannot be read (${err.code ?? err.message})`
  }
}

/** Parses the file's text: `{"providers": [ … ]}`, every default filled in. */
export function parseIdpFile (text: string, context: IdpFileContext): IdpProvider[] {
  const root = parseJson(text)
  if (!isObject(root)) fail('the file must hold a JSON object {"providers": [ … ]}')
  refuseUnknown(root, ['providers'], 'the file')
  const list = root.providers
  if (!Array.isArray(list)) fail('the file must have a "providers" array ({"providers": [ … ]})')
  const providers = list.map((raw, index) => parseProvider(raw, index, context))
  checkAcrossProviders(providers)
  return providers
}

function parseJson (text: string): unknown {
  try {
    return JSON.parse(text.replace(/^\uFEFF/, ''))
  } catch (err) {
    // V8 quotes the text around the mistake, which could hold a client secret: keep only where.
    const where = /line [0-9]+ column [0-9]+/.exec((err as Error).message)?.[0] ??
      /position [0-9]+/.exec((err as Error).message)?.[0]
    return fail(`is not valid JSON${where === undefined ? '' : ` (at ${where})`}; fix the syntax (a trailing comma, a missing quote)`)
  }
}

function fail (problem: string): never {
  throw new ConfigError('IDP_FILE', problem)
}

function isObject (value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function refuseUnknown (object: Json, known: readonly string[], where: string): void {
  const unknown = Object.keys(object).filter((key) => !known.includes(key))
  if (unknown.length === 0) return
  const field = unknown[0] ?? ''
  // Echoed only when it looks like a field name: a key could be a pasted secret.
  const shown = /^[A-Za-z_]{1,40}$/.test(field) ? `field "${field}"` : 'field (not a field name)'
  fail(`${where}: unknown ${shown}; the fields are ${known.join(', ')} (a misspelt field would silently weaken a check)`)
}

/** Reads one provider's fields, each with a problem prefixed by `provider "ID"` (or its index). */
class Fields {
  readonly raw: Json
  readonly label: string

  constructor (raw: Json, label: string) {
    this.raw = raw
    this.label = label
  }

  fail (field: string, problem: string): never {
    return fail(`${this.label}: ${field} ${problem}`)
  }

  value (path: string): unknown {
    let current: unknown = this.raw
    for (const part of path.split('.')) current = isObject(current) ? current[part] : undefined
    return current
  }

  string (path: string, what: string): string | undefined {
    const value = this.value(path)
    if (value === undefined) return undefined
    if (typeof value !== 'string' || value.trim() === '') this.fail(path, `must be a non-empty string (${what})`)
    return value
  }

  /** A secret: never echoed, whatever is wrong with it. */
  secret (path: string): string {
    const value = this.value(path)
    if (value === undefined) this.fail(path, 'is missing; give the client secret the provider issued (as a JSON string)')
    if (typeof value !== 'string' || value === '') this.fail(path, 'must be a non-empty JSON string (the client secret the provider issued)')
    return value
  }

  strings (path: string, what: string, options: { nonEmpty: boolean }): string[] | undefined {
    const value = this.value(path)
    if (value === undefined) return undefined
    if (!Array.isArray(value) || value.some((v) => typeof v !== 'string' || v.trim() === '')) {
      this.fail(path, `must be an array of non-empty strings (${what})`)
    }
    if (options.nonEmpty && value.length === 0) this.fail(path, `must not be empty (${what}); remove the field to use the default`)
    return [...new Set(value as string[])]
  }

  scopes (path: string, value: unknown, what: string): Scope[] {
    const list = Array.isArray(value) ? value : [value]
    const bad = list.find((s) => typeof s !== 'string' || !isScope(s))
    if (bad !== undefined || !Array.isArray(value)) {
      this.fail(path, `must be an array of bus scopes (${SCOPES.join(', ')})${typeof bad === 'string' && bad.length <= 40 ? `, not "${bad}"` : ''}; ${what}`)
    }
    if (list.length === 0) this.fail(path, `must name at least one bus scope (${SCOPES.join(', ')}); ${what}`)
    return sortScopes(list as Scope[])
  }

  boolean (path: string): boolean | undefined {
    const value = this.value(path)
    if (value === undefined) return undefined
    if (typeof value !== 'boolean') this.fail(path, 'must be true or false')
    return value
  }

  object (path: string): Json | undefined {
    const value = this.value(path)
    if (value === undefined) return undefined
    if (!isObject(value)) this.fail(path, 'must be a JSON object')
    return value
  }

  /** https, or http on a loopback host (tests, a provider on this machine); never a query or fragment. */
  url (path: string, required: boolean): string | undefined {
    const value = this.string(path, 'an https URL')
    if (value === undefined) {
      if (required) this.fail(path, 'is missing; give the provider\'s https URL')
      return undefined
    }
    // URL() would trim it, and the issuer is compared byte for byte: a stray space would never match.
    if (/\s/.test(value)) this.fail(path, 'must not contain spaces')
    let url: URL
    try {
      url = new URL(value)
    } catch {
      return this.fail(path, `is not a URL: "${value.slice(0, 200)}" (expected e.g. https://idp.example.com/realms/bus)`)
    }
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && isLoopbackHost(url.hostname))) {
      this.fail(path, `must use https (http only on a loopback host such as 127.0.0.1), not "${value.slice(0, 200)}"`)
    }
    if (url.username !== '' || url.password !== '') this.fail(path, 'must not contain credentials (user:password@)')
    if (url.search !== '' || url.hash !== '' || value.includes('?') || value.includes('#')) this.fail(path, 'must not have a query or fragment')
    return value
  }
}

function parseProvider (raw: unknown, index: number, context: IdpFileContext): IdpProvider {
  if (!isObject(raw)) fail(`providers[${index}] must be a JSON object with at least "id" and "issuer"`)
  const rawId = raw.id
  const label = typeof rawId === 'string' && ID_PATTERN.test(rawId) ? `provider "${rawId}"` : `providers[${index}]`
  const f: Fields = new Fields(raw, label)
  refuseUnknown(raw, PROVIDER_FIELDS, label)
  if (typeof rawId !== 'string' || !ID_PATTERN.test(rawId)) {
    f.fail('id', 'must be 1-32 lowercase letters, digits or "-" (e.g. "dex"); it names the provider in whoami, the audit log and the CLI')
  }
  const issuer = f.url('issuer', true) ?? ''
  if (issuer.replace(/\/$/, '') === context.publicUrl) {
    f.fail('issuer', `is this server's own issuer (${context.publicUrl}); name the external provider's issuer`)
  }
  const tokenHeader = readTokenHeader(f)
  const audiences = f.strings('audiences', 'the accepted "aud" values', { nonEmpty: true })
  if (audiences === undefined && tokenHeader === 'cf-access-jwt-assertion') {
    f.fail('audiences', 'is required with token_header "cf-access-jwt-assertion": list the Access application\'s AUD tag')
  }
  const principals = f.value('principals') ?? 'linked'
  if (principals !== 'linked' && principals !== 'auto') f.fail('principals', 'must be "linked" (subjects linked with "bus-mcp identity link") or "auto" (a principal per new subject)')
  return {
    id: rawId,
    issuer,
    jwksUri: f.url('jwks_uri', false),
    audiences: audiences ?? [context.resourceUrl],
    algorithms: readAlgorithms(f),
    clockToleranceSeconds: readClockTolerance(f),
    subjectClaim: f.string('subject_claim', 'the claim holding the stable identity, e.g. "sub" or "oid"') ?? 'sub',
    scopeClaims: f.strings('scope_claims', 'the claims holding scopes, e.g. ["scope", "scp"]', { nonEmpty: false }) ?? ['scope', 'scp'],
    scopeMap: readScopeMap(f),
    groupsClaim: f.string('groups_claim', 'the claim holding groups, e.g. "groups"'),
    requiredClaims: readRequiredClaims(f),
    allowedClientIds: f.strings('allowed_client_ids', 'the accepted client ids; remove the field to accept any', { nonEmpty: true }),
    principals,
    nameClaim: f.string('name_claim', 'the claim naming a new principal, e.g. "preferred_username"') ?? 'preferred_username',
    autoScopes: f.value('auto_scopes') === undefined ? ['bus:read'] : f.scopes('auto_scopes', f.value('auto_scopes'), 'what a new principal gets'),
    tokenHeader,
    introspection: readIntrospection(f),
    advertise: f.boolean('advertise') ?? false,
    login: readLogin(f, rawId)
  }
}

function readTokenHeader (f: Fields): TokenHeader {
  const value = f.value('token_header')
  if (value === undefined) return 'authorization'
  const header = typeof value === 'string' ? value.toLowerCase() : undefined
  if (header === undefined || !(TOKEN_HEADERS as readonly string[]).includes(header)) {
    f.fail('token_header', 'must be "authorization" or "cf-access-jwt-assertion" (Cloudflare Access)')
  }
  return header as TokenHeader
}

function readAlgorithms (f: Fields): string[] {
  const value = f.value('algorithms')
  if (value === undefined) return [...DEFAULT_ALGORITHMS]
  if (!Array.isArray(value) || value.length === 0) f.fail('algorithms', `must be a non-empty array such as ["RS256", "ES256"]; allowed: ${ALLOWED_ALGORITHMS.join(', ')}`)
  for (const alg of value) {
    if (typeof alg === 'string' && /^HS/i.test(alg)) {
      f.fail('algorithms', `may not include "${alg.slice(0, 10)}": shared-secret (HS*) algorithms let anyone holding the key mint tokens; use ${DEFAULT_ALGORITHMS.join(', ')}`)
    }
    if (typeof alg === 'string' && alg.toLowerCase() === 'none') f.fail('algorithms', `may not include "none": unsigned tokens are never accepted; use ${DEFAULT_ALGORITHMS.join(', ')}`)
    if (typeof alg !== 'string' || !(ALLOWED_ALGORITHMS as readonly string[]).includes(alg)) {
      f.fail('algorithms', `${typeof alg === 'string' && alg.length <= 20 ? `has "${alg}", which is not` : 'must only hold'} one of ${ALLOWED_ALGORITHMS.join(', ')}`)
    }
  }
  return [...new Set(value as string[])]
}

function readClockTolerance (f: Fields): number {
  const value = f.value('clock_tolerance_seconds')
  if (value === undefined) return 60
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_CLOCK_TOLERANCE) {
    f.fail('clock_tolerance_seconds', `must be a whole number of seconds from 0 to ${MAX_CLOCK_TOLERANCE}`)
  }
  return value
}

function readScopeMap (f: Fields): Record<string, Scope[]> | undefined {
  const map = f.object('scope_map')
  if (map === undefined) return undefined
  // fromEntries defines own properties: a "__proto__" key stays a key, never a prototype.
  return Object.fromEntries(Object.entries(map).map(([key, value]) => {
    if (key.trim() === '') f.fail('scope_map', 'keys must be non-empty IdP scope or group values')
    return [key, f.scopes(`scope_map["${key.slice(0, 40)}"]`, value, 'what this IdP scope or group grants')]
  }))
}

function readRequiredClaims (f: Fields): Record<string, string | number | boolean> {
  const claims = f.object('required_claims')
  if (claims === undefined) return {}
  return Object.fromEntries(Object.entries(claims).map(([key, value]) => {
    if (key.trim() === '') f.fail('required_claims', 'keys must be non-empty claim names')
    if (typeof value !== 'string' && typeof value !== 'boolean' && !(typeof value === 'number' && Number.isFinite(value))) {
      f.fail(`required_claims["${key.slice(0, 40)}"]`, 'must be a string, number or boolean (the value the claim must have, or contain when it is an array)')
    }
    return [key, value]
  }))
}

function readIntrospection (f: Fields): IntrospectionSettings | undefined {
  const introspection = f.object('introspection')
  if (introspection === undefined) return undefined
  refuseUnknown(introspection, INTROSPECTION_FIELDS, `${f.label}: introspection`)
  const clientId = f.string('introspection.client_id', 'the client id this server introspects as')
  if (clientId === undefined) f.fail('introspection.client_id', 'is missing; give the client id this server introspects as')
  return {
    endpoint: f.url('introspection.endpoint', true) ?? '',
    clientId,
    clientSecret: f.secret('introspection.client_secret')
  }
}

function readLogin (f: Fields, id: string): LoginSettings | undefined {
  const login = f.object('login')
  if (login === undefined) return undefined
  refuseUnknown(login, LOGIN_FIELDS, `${f.label}: login`)
  const clientId = f.string('login.client_id', 'the client id registered at the provider for PUBLIC_URL/oauth/idp/ID/callback')
  if (clientId === undefined) f.fail('login.client_id', `is missing; register a client at the provider with the redirect URI PUBLIC_URL/oauth/idp/${id}/callback and give its id`)
  const label = f.string('login.label', 'the name on the "Sign in with …" button') ?? id
  if (label.length > 64) f.fail('login.label', 'must be at most 64 characters')
  const scopes = f.strings('login.scopes', 'OpenID scopes to ask for, e.g. ["openid", "profile"]', { nonEmpty: true }) ?? ['openid']
  if (scopes.some((s) => /\s/.test(s))) f.fail('login.scopes', 'must list one scope per string, without spaces')
  if (!scopes.includes('openid')) f.fail('login.scopes', 'must include "openid" (the sign-in is an OpenID Connect code flow)')
  return {
    clientId,
    clientSecret: f.secret('login.client_secret'),
    scopes,
    label,
    default: f.boolean('login.default') ?? false
  }
}

/** Rules that need the whole list: ids and issuers unique, one introspecting provider, one default login. */
function checkAcrossProviders (providers: IdpProvider[]): void {
  const seenIds = new Set<string>()
  const seenIssuers = new Map<string, string>()
  for (const provider of providers) {
    if (seenIds.has(provider.id)) fail(`provider "${provider.id}": id is used by two providers; give each its own id`)
    seenIds.add(provider.id)
    const other = seenIssuers.get(provider.issuer)
    if (other !== undefined) fail(`provider "${provider.id}": issuer is also provider "${other}"'s; a token's issuer must name exactly one provider`)
    seenIssuers.set(provider.issuer, provider.id)
  }
  const introspecting = providers.filter((p) => p.introspection !== undefined)
  if (introspecting.length > 1) {
    // An opaque token names no issuer: it would be sent to each, leaking it to providers that did not issue it.
    fail(`provider "${introspecting[1]?.id ?? ''}": introspection is also configured for provider "${introspecting[0]?.id ?? ''}"; at most one provider may use introspection (an opaque token would be sent to a provider that did not issue it)`)
  }
  const defaults = providers.filter((p) => p.login?.default === true)
  if (defaults.length > 1) fail(`provider "${defaults[1]?.id ?? ''}": login.default is also true for provider "${defaults[0]?.id ?? ''}"; at most one provider may be the default sign-in`)
}
