import t from 'tap'
import {
  CLIENT_METADATA_LIMITS, ClientMetadataError, validateClientMetadata, type ClientMetadataContext, type ValidatedClientMetadata
} from '../../src/oauth/client-metadata.ts'
import { readRequestedScopes } from '../../src/oauth/requested-scopes.ts'

const DOC = 'https://app.example.com/oauth/client-metadata'
const registration: ClientMetadataContext = { source: 'registration' }
const document: ClientMetadataContext = { source: 'metadata-document', clientId: DOC }
const preregistered: ClientMetadataContext = { source: 'preregistered', boundToPrincipal: false }
const bound: ClientMetadataContext = { source: 'preregistered', boundToPrincipal: true }

function refusal (input: unknown, context: ClientMetadataContext): ClientMetadataError {
  try {
    validateClientMetadata(input, context)
  } catch (err) {
    if (err instanceof ClientMetadataError) return err
    throw err
  }
  throw new Error(`accepted: ${JSON.stringify(input)}`)
}

const ok = (input: unknown, context: ClientMetadataContext): ValidatedClientMetadata => validateClientMetadata(input, context)

t.test('the same members, three sources: defaults and what is stored', async (t) => {
  const members = { redirect_uris: ['https://app.example.com/cb'] }
  t.same(ok(members, registration), {
    clientName: 'Unnamed client',
    redirectUris: ['https://app.example.com/cb'],
    tokenEndpointAuthMethod: 'client_secret_basic', // RFC 7591 §2
    grantTypes: ['authorization_code', 'refresh_token'],
    scopes: null,
    metadata: {
      client_name: 'Unnamed client',
      redirect_uris: ['https://app.example.com/cb'],
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code']
    }
  })
  t.same(ok({ ...members, client_id: DOC }, document), {
    clientName: 'app.example.com', // the URL's host
    redirectUris: ['https://app.example.com/cb'],
    tokenEndpointAuthMethod: 'none',
    grantTypes: ['authorization_code'], // RFC 7591 §2 for a document
    scopes: null,
    metadata: { client_name: 'app.example.com', redirect_uris: ['https://app.example.com/cb'], token_endpoint_auth_method: 'none' }
  })
  t.same(ok({ ...members, client_name: ' Agent ' }, preregistered), {
    clientName: 'Agent',
    redirectUris: ['https://app.example.com/cb'],
    tokenEndpointAuthMethod: 'none',
    grantTypes: ['authorization_code', 'refresh_token'],
    scopes: null,
    metadata: {
      client_name: 'Agent', redirect_uris: ['https://app.example.com/cb'], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token']
    }
  })
})

t.test('the object itself', async (t) => {
  for (const input of [null, [], 'x', 7]) {
    t.same(refusal(input, registration).message, 'The registration request must be a JSON object')
    t.equal(refusal(input, registration).code, 'invalid_client_metadata')
    t.same(refusal(input, document).message, 'the document must be a JSON object')
  }
  const unknownMembers = { redirect_uris: ['https://a.example/cb'], client_id: DOC, software_statement: 'x', anything: { nested: true } }
  t.notOk('anything' in ok(unknownMembers, registration).metadata, 'unknown members are ignored (RFC 7591 §2)')
  t.ok(ok(unknownMembers, document))
})

t.test('redirect_uris: the same rule, each source its own error', async (t) => {
  const twentyOne = Array.from({ length: CLIENT_METADATA_LIMITS.redirectUris + 1 }, (_, i) => `https://a.example/cb${i}`)
  const twenty = twentyOne.slice(1)
  t.equal(ok({ redirect_uris: twenty }, registration).redirectUris.length, 20)
  t.equal(ok({ redirect_uris: twenty, client_id: DOC }, document).redirectUris.length, 20)
  t.equal(ok({ redirect_uris: twenty, client_name: 'x' }, preregistered).redirectUris.length, 20)

  t.match(refusal({ redirect_uris: twentyOne }, registration), { code: 'invalid_client_metadata', message: '"redirect_uris" must be an array of at most 20 strings' })
  t.match(refusal({ redirect_uris: twentyOne, client_id: DOC }, document), { message: 'redirect_uris may list at most 20 URIs' })
  t.match(refusal({ redirect_uris: twentyOne, client_name: 'x' }, preregistered), { message: 'at most 20 redirect URIs' })

  const bad = 'http://evil.example/cb'
  t.match(refusal({ redirect_uris: [bad] }, registration), { code: 'invalid_redirect_uri', message: /^Redirect URI refused: http redirect URIs are only allowed on a loopback host/ })
  t.match(refusal({ redirect_uris: [bad], client_id: DOC }, document), { message: /^redirect URI refused: http redirect URIs/ })
  t.match(refusal({ redirect_uris: [bad], client_name: 'x' }, preregistered), { message: /^redirect URI "http:\/\/evil\.example\/cb" refused: http redirect URIs/ })

  t.match(refusal({}, registration), { code: 'invalid_redirect_uri', message: '"redirect_uris" must list at least one redirect URI' })
  t.match(refusal({ redirect_uris: [] }, registration), { code: 'invalid_redirect_uri' })
  t.match(refusal({ client_id: DOC }, document), { message: 'redirect_uris must be a non-empty array' })
  t.match(refusal({ redirect_uris: [], client_id: DOC }, document), { message: 'redirect_uris must be a non-empty array' })
  t.match(refusal({ redirect_uris: ['https://a.example/cb', 7], client_id: DOC }, document), { message: 'redirect_uris must contain only strings' })
  t.match(refusal({ redirect_uris: ['https://a.example/cb', 7] }, registration), { code: 'invalid_client_metadata', message: /array of at most 20 strings/ })

  const long = `https://a.example/${'p'.repeat(CLIENT_METADATA_LIMITS.stringLength)}`
  t.match(refusal({ redirect_uris: [long] }, registration), { code: 'invalid_client_metadata', message: /array of at most 20 strings/ })
  t.match(refusal({ redirect_uris: [long], client_id: DOC }, document), { message: /longer than 2000 characters/ })

  const twice = ['http://localhost/cb', 'https://a.example/cb', 'http://localhost/cb']
  t.same(ok({ redirect_uris: twice }, registration).redirectUris, twice, 'registration keeps the list as sent')
  t.same(ok({ redirect_uris: twice, client_id: DOC }, document).redirectUris, ['http://localhost/cb', 'https://a.example/cb'], 'a document\'s duplicates are dropped')
})

t.test('pre-registered: no redirect URIs only for a confidential client bound to a principal', async (t) => {
  const none = { client_name: 'agent', redirect_uris: [] }
  const confidential = { ...none, token_endpoint_auth_method: 'client_secret_post' }
  t.match(refusal(none, preregistered), { message: /^give at least one --redirect-uri/ })
  t.match(refusal(none, bound), { message: /^give at least one --redirect-uri/ }, 'a public client, even bound')
  t.match(refusal(confidential, preregistered), { message: /^give at least one --redirect-uri/ }, 'confidential but bound to no principal')
  const machine = ok(confidential, bound)
  t.same(machine.grantTypes, ['client_credentials'])
  t.equal(machine.tokenEndpointAuthMethod, 'client_secret_post')
  t.same(ok({ ...confidential, redirect_uris: ['https://a.example/cb'] }, bound).grantTypes, ['authorization_code', 'refresh_token', 'client_credentials'])
  t.same(ok({ ...confidential, redirect_uris: ['https://a.example/cb'] }, preregistered).grantTypes, ['authorization_code', 'refresh_token'])
  t.same(ok({ ...none, redirect_uris: ['https://a.example/cb'] }, bound).grantTypes, ['authorization_code', 'refresh_token'], 'public: no client_credentials')
})

t.test('token_endpoint_auth_method', async (t) => {
  const base = { redirect_uris: ['https://a.example/cb'] }
  for (const method of ['none', 'client_secret_post', 'client_secret_basic']) {
    t.equal(ok({ ...base, token_endpoint_auth_method: method }, registration).tokenEndpointAuthMethod, method)
  }
  t.match(refusal({ ...base, token_endpoint_auth_method: 'private_key_jwt' }, registration), {
    code: 'invalid_client_metadata', message: 'token_endpoint_auth_method must be one of none, client_secret_post, client_secret_basic'
  })
  t.match(refusal({ ...base, token_endpoint_auth_method: 'a'.repeat(65) }, registration), { message: '"token_endpoint_auth_method" must be a string of at most 64 characters' })

  const doc = { ...base, client_id: DOC }
  t.equal(ok({ ...doc, token_endpoint_auth_method: null }, document).tokenEndpointAuthMethod, 'none')
  t.match(refusal({ ...doc, token_endpoint_auth_method: 'client_secret_basic' }, document), { message: /needs a shared secret/ })
  t.match(refusal({ ...doc, token_endpoint_auth_method: 'private_key_jwt' }, document), { message: /must be "none"/ })
  t.match(refusal({ ...doc, client_secret: 'x' }, document), { message: /client_secret/ })
  t.ok(ok({ ...base, client_secret: 'x' }, registration), 'a registration\'s client_secret member is an unknown member')
  t.match(refusal({ ...doc, jwks: { keys: [{ kty: 'oct', k: 'x' }] } }, document), { message: /private or symmetric/ })
  t.ok(ok({ ...doc, jwks: { keys: [{ kty: 'EC', x: 'a', y: 'b' }] } }, document), 'public keys are fine')

  t.equal(ok({ client_name: 'x', redirect_uris: ['https://a.example/cb'] }, preregistered).tokenEndpointAuthMethod, 'none', 'an admin\'s client is public unless confidential')
})

t.test('the document names itself', async (t) => {
  const base = { redirect_uris: ['https://a.example/cb'] }
  t.match(refusal(base, document), { message: 'the document has no client_id' })
  t.match(refusal({ ...base, client_id: `${DOC}/` }, document), { message: /not exactly the URL/ })
  t.ok(ok({ ...base, client_id: 'anything' }, registration), 'a registration\'s client_id member is ignored')
})

t.test('grant_types and response_types', async (t) => {
  const base = { redirect_uris: ['https://a.example/cb'] }
  const doc = { ...base, client_id: DOC }
  const jwt = 'urn:ietf:params:oauth:grant-type:jwt-bearer'
  t.match(refusal({ ...base, grant_types: ['authorization_code', jwt] }, registration), { message: /^grant type "urn:ietf:params:oauth:grant-type:jwt-bearer" cannot be registered dynamically/ })
  t.match(refusal({ ...base, grant_types: ['client_credentials'] }, registration), { message: /client_credentials needs a pre-registered client/ })
  t.match(refusal({ ...base, grant_types: ['refresh_token'] }, registration), { message: 'grant_types must include authorization_code' })
  t.same(ok({ ...base, grant_types: ['authorization_code'] }, registration).grantTypes, ['authorization_code'])
  t.same(ok({ ...doc, grant_types: ['authorization_code', jwt, jwt] }, document).grantTypes, ['authorization_code', jwt], 'a document may list others (never used); duplicates dropped')
  t.match(refusal({ ...doc, grant_types: ['refresh_token'] }, document), { message: /^grant_types must include authorization_code \(a public client/ })
  t.match(refusal({ ...doc, grant_types: ['authorization_code', ''] }, document), { message: 'grant_types must be an array of at most 10 strings' })
  t.match(refusal({ ...base, grant_types: 'authorization_code' }, registration), { message: '"grant_types" must be an array of at most 10 strings' })

  t.match(refusal({ ...base, response_types: ['code', 'token'] }, registration), { message: 'response_types may only contain "code"' })
  t.ok(ok({ ...doc, response_types: ['code', 'token'] }, document), 'a document\'s response_types need only include code')
  t.match(refusal({ ...doc, response_types: ['token'] }, document), { message: 'response_types must include "code"' })
  t.notOk('response_types' in ok({ ...doc, response_types: ['code'] }, document).metadata)
})

t.test('client_name', async (t) => {
  const base = { redirect_uris: ['https://a.example/cb'] }
  const doc = { ...base, client_id: DOC }
  const max = 'C'.repeat(CLIENT_METADATA_LIMITS.clientName)
  t.equal(ok({ ...base, client_name: '  Claude  ' }, registration).clientName, 'Claude', 'registration trims')
  t.equal(ok({ ...base, client_name: '   ' }, registration).clientName, 'Unnamed client')
  t.equal(ok({ ...base, client_name: '\nClaude' }, registration).clientName, 'Claude', 'registration checks the trimmed name')
  t.equal(ok({ ...doc, client_name: '  Claude  ' }, document).clientName, '  Claude  ', 'a document\'s name is kept as written')
  t.equal(ok({ ...doc, client_name: '' }, document).clientName, 'app.example.com')
  t.equal(ok({ ...base, client_name: max }, registration).clientName, max)
  t.equal(ok({ ...doc, client_name: max }, document).clientName, max)
  t.equal(ok({ ...base, client_name: max }, preregistered).clientName, max)
  t.match(refusal({ ...base, client_name: `${max}C` }, registration), { message: '"client_name" must be a string of at most 200 characters' })
  t.match(refusal({ ...doc, client_name: `${max}C` }, document), { message: 'client_name must be a string of at most 200 characters' })
  t.match(refusal({ ...base, client_name: `${max}C` }, preregistered), { message: '--name is 1-200 characters' })
  t.match(refusal({ ...base, client_name: '  ' }, preregistered), { message: '--name is 1-200 characters' }, 'an admin\'s client needs a name')
  for (const context of [registration, document]) {
    t.match(refusal({ ...doc, client_name: 'Claude\u202eelgooG' }, context), { message: 'client_name contains control or text-direction characters' })
  }
  t.match(refusal({ ...base, client_name: 'a\u0000b' }, registration), { message: '"client_name" contains a NUL character' })
  t.match(refusal({ ...doc, client_name: 'a\u0000b' }, document), { message: /control/ })
  // JSON carries a lone surrogate as "\ud800"; jsonb refuses one, so it must be refused before it is stored.
  t.match(refusal({ ...base, client_name: 'a\ud800' }, registration), { code: 'invalid_client_metadata', message: '"client_name" must be well-formed Unicode (it has a lone surrogate)' })
  t.match(refusal({ ...doc, client_name: '\udc00b' }, document), { message: 'client_name must be well-formed Unicode (it has a lone surrogate)' })
  t.match(refusal({ ...base, client_name: 'a\ud800' }, preregistered), { message: '--name must be well-formed Unicode (it has a lone surrogate)' })
  t.equal(ok({ ...base, client_name: 'Claude \ud83e\udd16' }, registration).clientName, 'Claude 🤖', 'a surrogate pair is a character like any other')
})

t.test('scope: the request rule at registration, kept as written in a document, strict for the admin', async (t) => {
  const base = { redirect_uris: ['https://a.example/cb'] }
  const doc = { ...base, client_id: DOC }
  const admin = { ...base, client_name: 'x' }

  t.same(ok({ ...base, scope: 'bus:write bus:read' }, registration).scopes, ['bus:read', 'bus:write'])
  t.equal(ok({ ...base, scope: 'bus:write bus:read' }, registration).metadata.scope, 'bus:read bus:write')
  t.same(ok({ ...base, scope: 'bus:read offline_access' }, registration).scopes, ['bus:read'], 'offline_access is accepted and dropped')
  t.equal(ok({ ...base, scope: 'offline_access' }, registration).scopes, null, 'only offline_access: every scope')
  t.notOk('scope' in ok({ ...base, scope: 'offline_access' }, registration).metadata)
  t.match(refusal({ ...base, scope: 'bus:read admin' }, registration), { code: 'invalid_client_metadata', message: 'Unknown scope "admin"; this server\'s scopes are bus:read bus:write' })
  t.match(refusal({ ...base, scope: 's'.repeat(1001) }, registration), { message: '"scope" must be a string of at most 1000 characters' })

  const written = ok({ ...doc, scope: 'bus:read anything offline_access' }, document)
  t.equal(written.scopeText, 'bus:read anything offline_access', 'a document\'s scope is not judged')
  t.equal(written.scopes, null, 'and not used: every scope')
  t.match(refusal({ ...doc, scope: 'bus:read\u202e' }, document), { message: 'scope must be a string of at most 1000 characters' })

  t.same(ok({ ...admin, scope: 'bus:read,bus:write' }, preregistered).scopes, ['bus:read', 'bus:write'])
  t.equal(ok(admin, preregistered).scopes, null)
  for (const scope of ['offline_access', 'bus:read offline_access', 'admin', '']) {
    t.match(refusal({ ...admin, scope }, preregistered), { message: 'scopes are bus:read, bus:write' }, `${JSON.stringify(scope)}: the admin names known scopes only`)
  }
})

t.test('other members', async (t) => {
  const base = { redirect_uris: ['https://a.example/cb'] }
  const links = { client_uri: 'https://a.example/', logo_uri: 'javascript:alert(1)', tos_uri: 'https://a.example/tos', software_id: 'sw', application_type: 'native' }
  const registered = ok({ ...base, ...links }, registration)
  t.same(registered.metadata, {
    ...registered.metadata, client_uri: 'https://a.example/', logo_uri: 'javascript:alert(1)', tos_uri: 'https://a.example/tos', software_id: 'sw', application_type: 'native'
  }, 'registration keeps them as strings')
  t.match(refusal({ ...base, application_type: 'desktop' }, registration), { message: 'application_type must be "web" or "native"' })
  t.match(refusal({ ...base, policy_uri: 7 }, registration), { message: '"policy_uri" must be a string of at most 2000 characters' })
  t.match(refusal({ ...base, client_uri: '\ud800' }, registration), { code: 'invalid_client_metadata', message: '"client_uri" must be well-formed Unicode (it has a lone surrogate)' })

  const fromDocument = ok({ ...base, ...links, client_id: DOC, application_type: 'desktop' }, document)
  t.equal(fromDocument.clientUri, 'https://a.example/')
  t.equal(fromDocument.logoUri, undefined, 'a document\'s links are kept only when https')
  t.notOk('tos_uri' in fromDocument.metadata)
})

t.test('readRequestedScopes: one rule for authorize, token and registration', async (t) => {
  t.same(readRequestedScopes('bus:write bus:read'), { ok: true, scopes: ['bus:read', 'bus:write'] })
  t.same(readRequestedScopes('bus:read,bus:read'), { ok: true, scopes: ['bus:read'] })
  t.same(readRequestedScopes('offline_access'), { ok: true, scopes: undefined })
  t.same(readRequestedScopes(''), { ok: true, scopes: undefined })
  t.same(readRequestedScopes('offline_access bus:write'), { ok: true, scopes: ['bus:write'] })
  t.same(readRequestedScopes('bus:read admin other'), { ok: false, description: 'Unknown scope "admin"; this server\'s scopes are bus:read bus:write' })
  const long = readRequestedScopes('x'.repeat(300))
  t.equal(long.ok, false)
  if (!long.ok) t.equal(long.description, `Unknown scope "${'x'.repeat(100)}"; this server's scopes are bus:read bus:write`, 'at most 100 characters of it')
})
