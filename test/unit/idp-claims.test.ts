import t from 'tap'
import { identityFromClaims, MAX_SUBJECT_LENGTH, scopesFromClaims } from '../../src/idp/claims.ts'
import { ExternalTokenError } from '../../src/idp/errors.ts'
import { makeProvider, RESOURCE } from '../helpers/idp-fixtures.ts'

function reasonOf (fn: () => unknown): string {
  try {
    fn()
  } catch (err) {
    if (err instanceof ExternalTokenError) return err.reason
    throw err
  }
  throw new Error('expected a refusal')
}

const EXP = 1_900_000_000

t.test('Entra ID v2: oid as the subject, scp as a string, azp as the client', async (t) => {
  const provider = makeProvider({
    id: 'entra',
    issuer: 'https://login.microsoftonline.com/tid/v2.0',
    subjectClaim: 'oid',
    scopeMap: { 'Bus.Read': ['bus:read'], 'Bus.Write': ['bus:read', 'bus:write'] },
    nameClaim: 'preferred_username'
  })
  const identity = identityFromClaims({
    aud: 'api-client-id',
    iss: provider.issuer,
    sub: 'per-app-pairwise',
    oid: '00000000-0000-0000-0000-0000000000aa',
    tid: 'tid',
    azp: 'client-app',
    scp: 'Bus.Read Bus.Write User.Read',
    preferred_username: 'ada@example.com',
    exp: EXP,
    ver: '2.0'
  }, provider)
  t.same(identity, {
    subject: '00000000-0000-0000-0000-0000000000aa', clientId: 'client-app', scopes: ['bus:read', 'bus:write'], name: 'ada@example.com', expiresAt: new Date(EXP * 1000)
  })
})

t.test('Entra ID v1: scp and roles (application permissions)', async (t) => {
  const provider = makeProvider({ subjectClaim: 'oid', scopeClaims: ['scp', 'roles'], scopeMap: { 'Bus.Read': ['bus:read'], 'Bus.Write.All': ['bus:write'] } })
  const delegated = identityFromClaims({ oid: 'u1', appid: 'app-1', scp: 'Bus.Read', exp: EXP, ver: '1.0' }, provider)
  t.same(delegated.scopes, ['bus:read'])
  t.equal(delegated.clientId, null, 'appid is not read')
  const application = identityFromClaims({ oid: 'sp1', roles: ['Bus.Read', 'Bus.Write.All'], exp: EXP }, provider)
  t.same(application.scopes, ['bus:read', 'bus:write'])
  t.equal(application.name, null)
})

t.test('Auth0: scope string, azp; identity mapping without scope_map', async (t) => {
  const provider = makeProvider({ id: 'auth0' })
  const identity = identityFromClaims({
    iss: 'https://tenant.auth0.com/',
    sub: 'auth0|abc',
    aud: [RESOURCE, 'https://tenant.auth0.com/userinfo'],
    azp: 'spa-client',
    scope: 'openid profile bus:write bus:read bus:read',
    exp: EXP
  }, provider)
  t.same(identity, { subject: 'auth0|abc', clientId: 'spa-client', scopes: ['bus:read', 'bus:write'], name: null, expiresAt: new Date(EXP * 1000) })
  t.same(identityFromClaims({ sub: 'x', scope: 'bus:admin read write' }, provider).scopes, [], 'nothing else maps')
  t.equal(identityFromClaims({ sub: 'x' }, provider).expiresAt, null)
})

t.test('Keycloak: scope string and azp, name from preferred_username', async (t) => {
  const provider = makeProvider({ id: 'keycloak', scopeMap: { 'bus-read': ['bus:read'], 'bus-write': ['bus:write'] } })
  const identity = identityFromClaims({
    sub: 'f81d4fae-7dec-11d0-a765-00a0c91e6bf6',
    azp: 'bus-mcp',
    scope: 'openid email bus-read',
    preferred_username: 'ada',
    realm_access: { roles: ['offline_access'] },
    exp: EXP
  }, provider)
  t.same(identity.scopes, ['bus:read'])
  t.equal(identity.clientId, 'bus-mcp')
  t.equal(identity.name, 'ada')
})

t.test('Okta: cid as the client, scp as an array', async (t) => {
  const provider = makeProvider({ id: 'okta' })
  const identity = identityFromClaims({ sub: 'ada@example.com', cid: '0oa123', uid: '00u1', scp: ['bus:read', 'openid'], exp: EXP }, provider)
  t.equal(identity.clientId, '0oa123')
  t.same(identity.scopes, ['bus:read'])
  t.equal(identityFromClaims({ sub: 's', client_id: 'first', azp: 'second', cid: 'third' }, provider).clientId, 'first', 'client_id first')
  t.equal(identityFromClaims({ sub: 's', azp: 'second', cid: 'third' }, provider).clientId, 'second', 'then azp')
  t.equal(identityFromClaims({ sub: 's', client_id: 7, azp: '', cid: 'third' }, provider).clientId, 'third', 'only non-empty strings')
})

t.test('Dex: groups mapped by scope_map, no scope claim', async (t) => {
  const provider = makeProvider({ id: 'dex', groupsClaim: 'groups', scopeMap: { 'org:bus-readers': ['bus:read'], 'org:bus-writers': ['bus:read', 'bus:write'] } })
  const writer = identityFromClaims({ sub: 'CgVhZGFAYhIEbGRhcA', aud: 'bus-mcp', groups: ['org:bus-writers', 'org:other'], name: 'Ada', exp: EXP }, provider)
  t.same(writer.scopes, ['bus:read', 'bus:write'])
  const reader = identityFromClaims({ sub: 's', groups: 'org:bus-readers' }, provider)
  t.same(reader.scopes, ['bus:read'], 'a single group as a string')
  t.same(identityFromClaims({ sub: 's', groups: ['org:other'] }, provider).scopes, [])
  t.same(identityFromClaims({ sub: 's', groups: 'org:bus-readers org:bus-writers' }, provider).scopes, [], 'a groups string is one group, not a list')
  t.same(identityFromClaims({ sub: 's', groups: [1, null, 'org:bus-readers'] }, provider).scopes, ['bus:read'], 'non-strings ignored')
})

t.test('scope_map: unlisted values and prototype names grant nothing', async (t) => {
  const provider = makeProvider({ scopeMap: { reader: ['bus:read'] } })
  t.same(scopesFromClaims({ scope: 'constructor __proto__ toString hasOwnProperty bus:write' }, provider), [], 'bus:write itself is not mapped when a scope_map exists')
  t.same(scopesFromClaims({ scope: 'reader', scp: ['reader'] }, provider), ['bus:read'])
  t.same(scopesFromClaims({ scope: 42, scp: { a: 1 } }, provider), [])
  t.same(scopesFromClaims({ scope: '  bus:write\tbus:read\n' }, makeProvider()), ['bus:read', 'bus:write'], 'any whitespace separates')
})

t.test('Cloudflare Access: a user token (sub + email) and a service token (empty sub, common_name)', async (t) => {
  const provider = makeProvider({ id: 'cf', tokenHeader: 'cf-access-jwt-assertion', nameClaim: 'email' })
  const user = identityFromClaims({ aud: ['aud-tag'], email: 'ada@example.com', sub: '7335d417-61da-459d-899c-0a01c76a2f94', type: 'app', exp: EXP }, provider)
  t.same(user, { subject: '7335d417-61da-459d-899c-0a01c76a2f94', clientId: null, scopes: [], name: 'ada@example.com', expiresAt: new Date(EXP * 1000) })
  const service = identityFromClaims({ aud: ['aud-tag'], sub: '', common_name: '9f1b2c.access', type: 'app', exp: EXP }, provider)
  t.equal(service.subject, '9f1b2c.access')
  t.equal(identityFromClaims({ common_name: 'svc.access' }, provider).subject, 'svc.access', 'sub missing altogether')
  t.equal(reasonOf(() => identityFromClaims({ sub: '', common_name: '' }, provider)), 'subject')
  t.equal(reasonOf(() => identityFromClaims({ sub: '', common_name: 'svc.access' }, makeProvider())), 'subject', 'the fallback is only for Cloudflare Access')
})

t.test('the subject: a non-empty string of at most 255 characters, no control characters', async (t) => {
  const provider = makeProvider()
  t.equal(identityFromClaims({ sub: 'x'.repeat(MAX_SUBJECT_LENGTH) }, provider).subject.length, 255)
  t.equal(identityFromClaims({ sub: 'Zoë 日本' }, provider).subject, 'Zoë 日本')
  const refused: unknown[] = [undefined, '', 42, null, ['a'], { id: 'a' }, 'x'.repeat(256), 'a\nb', 'a\u0000b', 'tab\there', 'del\u007f', 'c1\u0085', 'ls\u2028', 'esc\u001b[31m']
  for (const sub of refused) {
    const label = (JSON.stringify(sub) ?? 'undefined').slice(0, 30).replace(/[^ -~]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
    t.equal(reasonOf(() => identityFromClaims({ sub }, provider)), 'subject', label)
  }
  t.equal(reasonOf(() => identityFromClaims({ sub: 'a', oid: '' }, makeProvider({ subjectClaim: 'oid' }))), 'subject')
})

t.test('allowed_client_ids: the client must be listed', async (t) => {
  const provider = makeProvider({ allowedClientIds: ['agent', 'cli'] })
  t.equal(identityFromClaims({ sub: 's', client_id: 'agent' }, provider).clientId, 'agent')
  t.equal(identityFromClaims({ sub: 's', azp: 'cli' }, provider).clientId, 'cli')
  t.equal(reasonOf(() => identityFromClaims({ sub: 's', client_id: 'other' }, provider)), 'client')
  t.equal(reasonOf(() => identityFromClaims({ sub: 's' }, provider)), 'client', 'no client at all')
  t.equal(reasonOf(() => identityFromClaims({ sub: 's', client_id: 'other', azp: 'agent' }, provider)), 'client', 'client_id wins over azp')
})

t.test('required_claims: equal values, or arrays containing them', async (t) => {
  const provider = makeProvider({ requiredClaims: { tid: 'tenant-1', groups: 'bus-users', email_verified: true, acr: 2 } })
  const ok = { sub: 's', tid: 'tenant-1', groups: ['x', 'bus-users'], email_verified: true, acr: 2 }
  t.ok(identityFromClaims(ok, provider))
  t.ok(identityFromClaims({ ...ok, groups: 'bus-users' }, provider), 'a string equal to the value')
  const wrong: Array<Record<string, unknown>> = [
    { tid: 'tenant-2' },
    { tid: undefined },
    { groups: ['x'] },
    { groups: 'bus-users-2' },
    { email_verified: 'true' },
    { email_verified: false },
    { acr: '2' },
    { acr: [1, 3] }
  ]
  for (const change of wrong) {
    t.equal(reasonOf(() => identityFromClaims({ ...ok, ...change }, provider)), 'claims', JSON.stringify(change))
  }
  t.ok(identityFromClaims({ ...ok, acr: [1, 2] }, provider), 'a number in an array')
})

t.test('name and expiry', async (t) => {
  const provider = makeProvider({ nameClaim: 'name' })
  t.equal(identityFromClaims({ sub: 's', name: 'Ada' }, provider).name, 'Ada')
  t.equal(identityFromClaims({ sub: 's', name: 7 }, provider).name, null)
  t.same(identityFromClaims({ sub: 's', exp: 1.5 }, provider).expiresAt, new Date(1500))
  t.equal(identityFromClaims({ sub: 's', exp: '1900000000' }, provider).expiresAt, null)
})

function refusalOf (fn: () => unknown): ExternalTokenError {
  try {
    fn()
  } catch (err) {
    if (err instanceof ExternalTokenError) return err
    throw err
  }
  throw new Error('expected a refusal')
}

t.test('control characters: C0, DEL to the end of C1, U+2028 and U+2029, and nothing next to them', async (t) => {
  const provider = makeProvider()
  for (const c of [0x00, 0x1f, 0x7f, 0x80, 0x9e, 0x9f, 0x2028, 0x2029]) {
    t.equal(reasonOf(() => identityFromClaims({ sub: `a${String.fromCharCode(c)}b` }, provider)), 'subject', `U+${c.toString(16)}`)
    t.equal(reasonOf(() => identityFromClaims({ sub: String.fromCharCode(c) }, provider)), 'subject', `U+${c.toString(16)} alone`)
  }
  for (const c of [0x20, 0x7e, 0xa0, 0xff, 0x2027, 0x202a, 0xfeff]) {
    t.equal(identityFromClaims({ sub: `a${String.fromCharCode(c)}b` }, provider).subject, `a${String.fromCharCode(c)}b`, `U+${c.toString(16)} is allowed`)
  }
  t.equal(identityFromClaims({ sub: 'emoji 😀' }, provider).subject, 'emoji 😀', 'a surrogate pair')
})

t.test('subject refusals name the provider, the claim and the problem', async (t) => {
  const provider = makeProvider({ id: 'corp', subjectClaim: 'oid' })
  t.equal(refusalOf(() => identityFromClaims({ sub: 's' }, provider)).message, 'provider corp: the token has no "oid" string claim to identify its subject')
  t.equal(refusalOf(() => identityFromClaims({ oid: 'x'.repeat(256) }, provider)).message, 'provider corp: the token\'s subject is longer than 255 characters')
  t.equal(refusalOf(() => identityFromClaims({ oid: 'a\nb' }, provider)).message, 'provider corp: the token\'s subject contains control characters')
})

t.test('client and required-claim refusals name what is wrong', async (t) => {
  const provider = makeProvider({ id: 'corp', allowedClientIds: ['agent'], requiredClaims: { tid: 't1' } })
  const none = refusalOf(() => identityFromClaims({ sub: 's', tid: 't1' }, provider))
  t.equal(none.reason, 'client')
  t.equal(none.message, 'provider corp: the token\'s client (none) is not one of allowed_client_ids')
  t.equal(refusalOf(() => identityFromClaims({ sub: 's', tid: 't1', azp: 'other' }, provider)).message, 'provider corp: the token\'s client "other" is not one of allowed_client_ids')
  t.equal(refusalOf(() => identityFromClaims({ sub: 's', azp: 'agent' }, provider)).message, 'provider corp: the token\'s "tid" claim does not have the required value')
  // A provider whose list (against config validation) held null still refuses a token without a client.
  const withNull = makeProvider({ allowedClientIds: [null as unknown as string] })
  t.equal(reasonOf(() => identityFromClaims({ sub: 's' }, withNull)), 'client')
})

t.test('scope values: empty pieces, non-strings and unconfigured claims grant nothing', async (t) => {
  const mapped = makeProvider({ groupsClaim: 'groups', scopeMap: { '': ['bus:write'], 1: ['bus:write'], null: ['bus:write'], reader: ['bus:read'] } })
  t.same(scopesFromClaims({ scope: ' reader  ' }, mapped), ['bus:read'], 'no empty value from the spaces')
  t.same(scopesFromClaims({ scope: '' }, mapped), [], 'an empty scope claim')
  t.same(scopesFromClaims({ scp: [1, null, 'reader'], groups: [1, null] }, mapped), ['bus:read'], 'non-strings in arrays are skipped, not stringified')
  t.same(scopesFromClaims({ groups: '' }, mapped), ['bus:write'], 'a groups string is taken whole, even empty')
  const plain = makeProvider()
  t.same(scopesFromClaims({ scope: 'bus:read', undefined: 'bus:write' }, plain), ['bus:read'], 'no groups claim configured: nothing else is read')
  t.same(scopesFromClaims({ scp: [['bus:write'], { 0: 'bus:write' }, 'bus:read'] }, plain), ['bus:read'])
})

t.test('expiresAt: a finite number of seconds, else null', async (t) => {
  const provider = makeProvider()
  t.same(identityFromClaims({ sub: 's', exp: EXP }, provider).expiresAt, new Date(EXP * 1000))
  for (const exp of [undefined, null, '1900000000', [EXP], NaN, Infinity, true]) {
    t.equal(identityFromClaims({ sub: 's', exp }, provider).expiresAt, null, String(exp))
  }
})
