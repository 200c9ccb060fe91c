import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { ConfigError, loadConfig } from '../../src/config.ts'
import { loadIdpFile, parseIdpFile } from '../../src/idp/config.ts'

const context = { publicUrl: 'https://bus.example.com', resourceUrl: 'https://bus.example.com/mcp' }
const SECRET = 's3cr3t-VALUE-never-shown'

function parse (providers: unknown[]): ReturnType<typeof parseIdpFile> {
  return parseIdpFile(JSON.stringify({ providers }), context)
}

/** The error for this file: a ConfigError on IDP_FILE, one line, matching `pattern`, no secret. */
function refused (t: Test, text: string, pattern: RegExp, what = pattern.source): void {
  try {
    parseIdpFile(text, context)
    t.fail(`${what}: accepted`)
  } catch (err) {
    t.ok(err instanceof ConfigError, `${what}: a ConfigError`)
    const { variable, message } = err as ConfigError
    t.equal(variable, 'IDP_FILE', `${what}: names IDP_FILE`)
    t.notOk(message.includes('\n'), `${what}: one line`)
    t.notOk(message.includes(SECRET), `${what}: no secret`)
    t.match(message, pattern, what)
  }
}

function refusedProvider (t: Test, fields: Record<string, unknown>, pattern: RegExp, others: unknown[] = []): void {
  refused(t, JSON.stringify({ providers: [...others, { id: 'dex', issuer: 'https://dex.example.com', ...fields }] }), pattern)
}

t.test('a minimal provider gets every default', async (t) => {
  const [dex] = parse([{ id: 'dex', issuer: 'https://dex.example.com' }])
  t.same(dex, {
    id: 'dex',
    issuer: 'https://dex.example.com',
    jwksUri: undefined,
    audiences: ['https://bus.example.com/mcp'],
    algorithms: ['RS256', 'PS256', 'ES256', 'EdDSA'],
    clockToleranceSeconds: 60,
    subjectClaim: 'sub',
    scopeClaims: ['scope', 'scp'],
    scopeMap: undefined,
    groupsClaim: undefined,
    requiredClaims: {},
    allowedClientIds: undefined,
    principals: 'linked',
    nameClaim: 'preferred_username',
    autoScopes: ['bus:read'],
    tokenHeader: 'authorization',
    introspection: undefined,
    advertise: false,
    login: undefined
  })
  t.same(parse([]), [], 'no providers is allowed')
})

t.test('every field is read, snake_case to camelCase', async (t) => {
  const [kc, cf] = parse([{
    id: 'keycloak',
    issuer: 'https://kc.example.com/realms/bus',
    jwks_uri: 'https://kc.example.com/realms/bus/protocol/openid-connect/certs',
    audiences: ['bus', 'bus'],
    algorithms: ['ES256', 'RS512'],
    clock_tolerance_seconds: 0,
    subject_claim: 'oid',
    scope_claims: ['roles'],
    scope_map: { 'bus.writer': ['bus:write', 'bus:read'], admins: ['bus:read'] },
    groups_claim: 'groups',
    required_claims: { tid: 'abc', email_verified: true, level: 2 },
    allowed_client_ids: ['cli'],
    principals: 'auto',
    name_claim: 'email',
    auto_scopes: ['bus:write', 'bus:read'],
    introspection: { endpoint: 'https://kc.example.com/introspect', client_id: 'bus', client_secret: SECRET },
    advertise: true,
    login: { client_id: 'bus-login', client_secret: SECRET, scopes: ['openid', 'profile'], label: 'Company SSO', default: true }
  }, {
    id: 'cf',
    issuer: 'https://team.cloudflareaccess.com',
    token_header: 'Cf-Access-Jwt-Assertion',
    audiences: ['aud-tag'],
    login: { client_id: 'x', client_secret: SECRET }
  }])
  t.match(kc, {
    jwksUri: 'https://kc.example.com/realms/bus/protocol/openid-connect/certs',
    audiences: ['bus'],
    algorithms: ['ES256', 'RS512'],
    clockToleranceSeconds: 0,
    subjectClaim: 'oid',
    scopeClaims: ['roles'],
    scopeMap: { 'bus.writer': ['bus:read', 'bus:write'], admins: ['bus:read'] },
    groupsClaim: 'groups',
    requiredClaims: { tid: 'abc', email_verified: true, level: 2 },
    allowedClientIds: ['cli'],
    principals: 'auto',
    nameClaim: 'email',
    autoScopes: ['bus:read', 'bus:write'],
    introspection: { endpoint: 'https://kc.example.com/introspect', clientId: 'bus', clientSecret: SECRET },
    advertise: true,
    login: { clientId: 'bus-login', clientSecret: SECRET, scopes: ['openid', 'profile'], label: 'Company SSO', default: true }
  })
  t.equal(cf?.tokenHeader, 'cf-access-jwt-assertion', 'token_header is case-insensitive')
  t.same(cf?.login, { clientId: 'x', clientSecret: SECRET, scopes: ['openid'], label: 'cf', default: false }, 'login defaults: scopes openid, label = id')
})

t.test('the file itself', async (t) => {
  refused(t, '', /^IDP_FILE: is not valid JSON/)
  refused(t, `{"providers": [{"id": "a", "login": {"client_secret": "${SECRET}" x}}]}`, /is not valid JSON \(at (line|position)/, 'bad JSON never quotes the text')
  refused(t, `{"providers": [{"client_secret": "${SECRET}`, /is not valid JSON/, 'unterminated JSON')
  refused(t, '[]', /a JSON object \{"providers"/)
  refused(t, '{}', /"providers" array/)
  refused(t, '{"providers": {}}', /"providers" array/)
  refused(t, '{"providers": [], "provider": []}', /the file: unknown field "provider"/)
  refused(t, '{"providers": [1]}', /providers\[0\] must be a JSON object/)
  t.same(parseIdpFile('\uFEFF{"providers": []}', context), [], 'a byte-order mark is fine')
})

t.test('id', async (t) => {
  refused(t, JSON.stringify({ providers: [{ issuer: 'https://a.example' }] }), /providers\[0\]: id must be 1-32 lowercase/)
  for (const id of ['', 'Dex', 'dex_1', 'a'.repeat(33), 3, 'dé']) {
    refused(t, JSON.stringify({ providers: [{ id, issuer: 'https://a.example' }] }), /providers\[0\]: id must be/, `id ${JSON.stringify(id)}`)
  }
  refused(t, JSON.stringify({ providers: [{ id: 'a', issuer: 'https://a.example' }, { id: 'a', issuer: 'https://b.example' }] }), /provider "a": id is used by two providers/)
})

t.test('issuer, jwks_uri and introspection.endpoint: https, or http on loopback', async (t) => {
  const ok = parse([
    { id: 'local', issuer: 'http://127.0.0.1:5556/dex', jwks_uri: 'http://localhost:5556/keys' },
    { id: 'v6', issuer: 'http://[::1]:8080/' }
  ])
  t.equal(ok[0]?.issuer, 'http://127.0.0.1:5556/dex')
  t.equal(ok[1]?.issuer, 'http://[::1]:8080/', 'kept byte for byte (the trailing slash matters for iss)')
  refusedProvider(t, { issuer: undefined }, /provider "dex": issuer is missing/)
  refusedProvider(t, { issuer: 'http://dex.example.com' }, /provider "dex": issuer must use https \(http only on a loopback host/)
  refusedProvider(t, { issuer: 'dex.example.com' }, /issuer is not a URL/)
  refusedProvider(t, { issuer: 'https://dex.example.com?x=1' }, /issuer must not have a query or fragment/)
  refusedProvider(t, { issuer: 'https://dex.example.com#f' }, /issuer must not have a query or fragment/)
  refusedProvider(t, { issuer: 'https://u:p@dex.example.com' }, /issuer must not contain credentials/)
  refusedProvider(t, { issuer: ' https://dex.example.com' }, /issuer must not contain spaces/)
  refusedProvider(t, { issuer: 'ftp://dex.example.com' }, /issuer must use https/)
  refusedProvider(t, { issuer: 5 }, /issuer must be a non-empty string/)
  refusedProvider(t, { issuer: 'https://bus.example.com/' }, /issuer is this server's own issuer/)
  refusedProvider(t, { jwks_uri: 'http://dex.example.com/keys' }, /provider "dex": jwks_uri must use https/)
  refusedProvider(t, { jwks_uri: 'https://dex.example.com/keys?kid=1' }, /jwks_uri must not have a query/)
  refusedProvider(t, { introspection: { endpoint: 'http://dex.example.com/i', client_id: 'a', client_secret: SECRET } }, /introspection\.endpoint must use https/)
  refused(t, JSON.stringify({ providers: [{ id: 'a', issuer: 'https://x.example' }, { id: 'b', issuer: 'https://x.example' }] }),
    /provider "b": issuer is also provider "a"'s/)
})

t.test('audiences and token_header', async (t) => {
  refusedProvider(t, { audiences: [] }, /provider "dex": audiences must not be empty/)
  refusedProvider(t, { audiences: 'bus' }, /audiences must be an array of non-empty strings/)
  refusedProvider(t, { audiences: ['bus', ''] }, /audiences must be an array of non-empty strings/)
  refusedProvider(t, { token_header: 'x-token' }, /token_header must be "authorization" or "cf-access-jwt-assertion"/)
  refusedProvider(t, { token_header: 1 }, /token_header must be/)
  refusedProvider(t, { token_header: 'cf-access-jwt-assertion' }, /audiences is required with token_header "cf-access-jwt-assertion": list the Access application's AUD tag/)
  t.equal(parse([{ id: 'a', issuer: 'https://a.example', token_header: 'AUTHORIZATION' }])[0]?.tokenHeader, 'authorization')
})

t.test('algorithms: asymmetric only', async (t) => {
  refusedProvider(t, { algorithms: ['RS256', 'HS256'] }, /provider "dex": algorithms may not include "HS256": shared-secret/)
  refusedProvider(t, { algorithms: ['hs512'] }, /may not include "hs512": shared-secret/)
  refusedProvider(t, { algorithms: ['none'] }, /algorithms may not include "none": unsigned tokens/)
  refusedProvider(t, { algorithms: ['RSA-OAEP'] }, /algorithms has "RSA-OAEP", which is not one of RS256/)
  refusedProvider(t, { algorithms: [] }, /algorithms must be a non-empty array/)
  refusedProvider(t, { algorithms: 'RS256' }, /algorithms must be a non-empty array/)
  refusedProvider(t, { algorithms: [1] }, /algorithms must only hold one of/)
  t.same(parse([{ id: 'a', issuer: 'https://a.example', algorithms: ['Ed25519', 'Ed25519'] }])[0]?.algorithms, ['Ed25519'])
})

t.test('clock tolerance, claims and scope mapping', async (t) => {
  t.equal(parse([{ id: 'a', issuer: 'https://a.example', clock_tolerance_seconds: 300 }])[0]?.clockToleranceSeconds, 300)
  for (const value of [301, -1, 1.5, '60']) {
    refusedProvider(t, { clock_tolerance_seconds: value }, /clock_tolerance_seconds must be a whole number of seconds from 0 to 300/)
  }
  refusedProvider(t, { subject_claim: '' }, /subject_claim must be a non-empty string/)
  refusedProvider(t, { name_claim: ['x'] }, /name_claim must be a non-empty string/)
  refusedProvider(t, { groups_claim: 1 }, /groups_claim must be a non-empty string/)
  refusedProvider(t, { scope_claims: 'scope' }, /scope_claims must be an array/)
  refusedProvider(t, { scope_map: [] }, /scope_map must be a JSON object/)
  refusedProvider(t, { scope_map: { admins: 'bus:write' } }, /scope_map\["admins"\] must be an array of bus scopes/)
  refusedProvider(t, { scope_map: { admins: ['bus:admin'] } }, /scope_map\["admins"\] must be an array of bus scopes \(bus:read, bus:write\), not "bus:admin"/)
  refusedProvider(t, { scope_map: { admins: [] } }, /scope_map\["admins"\] must name at least one bus scope/)
  refusedProvider(t, { scope_map: { '': ['bus:read'] } }, /scope_map keys must be non-empty/)
  const [proto] = parse([{ id: 'a', issuer: 'https://a.example', scope_map: JSON.parse('{"__proto__": ["bus:read"]}') }])
  t.same(Object.keys(proto?.scopeMap ?? {}), ['__proto__'], '"__proto__" stays a key')
  t.equal(Object.getPrototypeOf(proto?.scopeMap), Object.prototype)
  refusedProvider(t, { required_claims: { tid: ['a'] } }, /required_claims\["tid"\] must be a string, number or boolean/)
  refusedProvider(t, { required_claims: { tid: null } }, /required_claims\["tid"\] must be a string, number or boolean/)
  refusedProvider(t, { required_claims: 'tid' }, /required_claims must be a JSON object/)
  refusedProvider(t, { allowed_client_ids: [] }, /allowed_client_ids must not be empty/)
  refusedProvider(t, { principals: 'manual' }, /provider "dex": principals must be "linked" .* or "auto"/)
  refusedProvider(t, { auto_scopes: [] }, /auto_scopes must name at least one bus scope/)
  refusedProvider(t, { auto_scopes: ['openid'] }, /auto_scopes must be an array of bus scopes \(bus:read, bus:write\), not "openid"/)
  refusedProvider(t, { advertise: 'yes' }, /advertise must be true or false/)
})

t.test('unknown fields are refused at every level', async (t) => {
  refusedProvider(t, { audience: ['x'] }, /provider "dex": unknown field "audience"; the fields are id, issuer/)
  refusedProvider(t, { requried_claims: {} }, /unknown field "requried_claims"/)
  refusedProvider(t, { [`x${SECRET}`]: 1 }, /unknown field/)
  refusedProvider(t, { introspection: { endpoint: 'https://a.example/i', client_id: 'a', client_secret: SECRET, secret: SECRET } },
    /provider "dex": introspection: unknown field "secret"; the fields are endpoint, client_id, client_secret/)
  refusedProvider(t, { login: { client_id: 'a', client_secret: SECRET, lable: 'x' } }, /provider "dex": login: unknown field "lable"/)
  refused(t, JSON.stringify({ providers: [{ id: 'BAD', issuer: 'https://a.example', extra: 1 }] }), /providers\[0\]: unknown field "extra"/, 'an invalid id: named by index')
})

t.test('introspection', async (t) => {
  const introspection = { endpoint: 'https://a.example/i', client_id: 'bus', client_secret: SECRET }
  refusedProvider(t, { introspection: 'https://a.example/i' }, /introspection must be a JSON object/)
  refusedProvider(t, { introspection: { ...introspection, endpoint: undefined } }, /introspection\.endpoint is missing/)
  refusedProvider(t, { introspection: { ...introspection, client_id: undefined } }, /introspection\.client_id is missing/)
  refusedProvider(t, { introspection: { ...introspection, client_secret: undefined } }, /introspection\.client_secret is missing/)
  refusedProvider(t, { introspection: { ...introspection, client_secret: 12345678 } }, /introspection\.client_secret must be a non-empty JSON string/)
  refusedProvider(t, { introspection: { ...introspection, client_secret: [SECRET] } }, /introspection\.client_secret must be a non-empty JSON string/)
  refusedProvider(t, { introspection }, /provider "dex": introspection is also configured for provider "a"; at most one provider/,
    [{ id: 'a', issuer: 'https://a.example', introspection }])
})

t.test('login', async (t) => {
  const login = { client_id: 'bus', client_secret: SECRET }
  refusedProvider(t, { login: true }, /login must be a JSON object/)
  refusedProvider(t, { login: { client_secret: SECRET } }, /login\.client_id is missing; register a client at the provider with the redirect URI PUBLIC_URL\/oauth\/idp\/dex\/callback/)
  refusedProvider(t, { login: { client_id: 'bus' } }, /login\.client_secret is missing/)
  refusedProvider(t, { login: { ...login, client_secret: { value: SECRET } } }, /login\.client_secret must be a non-empty JSON string/)
  refusedProvider(t, { login: { ...login, label: '' } }, /login\.label must be a non-empty string/)
  refusedProvider(t, { login: { ...login, label: 'x'.repeat(65) } }, /login\.label must be at most 64 characters/)
  refusedProvider(t, { login: { ...login, scopes: ['profile'] } }, /login\.scopes must include "openid"/)
  refusedProvider(t, { login: { ...login, scopes: ['openid profile'] } }, /login\.scopes must list one scope per string/)
  refusedProvider(t, { login: { ...login, scopes: [] } }, /login\.scopes must not be empty/)
  refusedProvider(t, { login: { ...login, default: 'yes' } }, /login\.default must be true or false/)
  t.equal(parse([{ id: 'a', issuer: 'https://a.example', login: { ...login, label: 'x'.repeat(64) } }])[0]?.login?.label.length, 64)
  refusedProvider(t, { login: { ...login, default: true } }, /provider "dex": login\.default is also true for provider "a"; at most one/,
    [{ id: 'a', issuer: 'https://a.example', login: { ...login, default: true } }])
})

t.test('loadIdpFile and IDP_FILE in loadConfig', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bus-idp-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const file = join(dir, 'idp.json')
  writeFileSync(file, JSON.stringify({ providers: [{ id: 'dex', issuer: 'https://dex.example.com' }] }))

  const config = loadConfig({ IDP_FILE: file, PUBLIC_URL: 'https://bus.example.com' })
  t.equal(config.idpFile, file)
  t.same(config.identityProviders.map((p) => [p.id, p.audiences]), [['dex', ['https://bus.example.com/mcp']]], 'audiences default to PUBLIC_URL/mcp')
  const unset = loadConfig({})
  t.equal(unset.idpFile, undefined)
  t.same(unset.identityProviders, [], 'no IDP_FILE: no providers')
  t.same(loadConfig({ IDP_FILE: '  ' }).identityProviders, [], 'an empty value counts as unset')

  const problem = (path: string): string => {
    try {
      loadIdpFile(path, context)
    } catch (err) {
      t.ok(err instanceof ConfigError)
      t.equal((err as ConfigError).variable, 'IDP_FILE')
      return (err as ConfigError).message
    }
    return 'accepted'
  }
  t.equal(problem(join(dir, 'missing.json')), `IDP_FILE: ${join(dir, 'missing.json')} does not exist; set IDP_FILE to the JSON file of providers, or unset it`)
  t.match(problem(dir), /^IDP_FILE: .* is a directory/)
  const bad = join(dir, 'bad.json')
  writeFileSync(bad, `{"providers": [{"id": "dex", "issuer": "https://dex.example.com", "login": {"client_id": "a", "client_secret": "${SECRET}"},}]}`)
  const message = problem(bad)
  t.match(message, new RegExp(`^IDP_FILE: ${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: is not valid JSON`), 'names the path')
  t.notOk(message.includes(SECRET))
  writeFileSync(bad, JSON.stringify({ providers: [{ id: 'dex', issuer: 'http://dex.example.com' }] }))
  t.throws(() => loadConfig({ IDP_FILE: bad }), { name: 'ConfigError', variable: 'IDP_FILE', message: /bad\.json: provider "dex": issuer must use https/ }, 'loadConfig stops the start')
  if (process.getuid?.() !== 0) {
    writeFileSync(bad, '{}')
    chmodSync(bad, 0o000)
    t.match(problem(bad), /cannot be read \(permission denied\)/)
  }
})
